"""OEE from PackML state times and part counts (ISO 22400 / OMAC way).

* Planned production time (PPT): time since the first Start, minus planned stops.
* Run time (APT): cumulative Execute time.
* Availability = APT / PPT.
* Performance = processed / (design speed × APT).
* Quality = good / processed.
* OEE = A × P × Q  (= good / (design speed × PPT)).

Downtime is attributed by state: Held (internal, unplanned), Suspended
(external: starved/blocked), Stopped/Stopping/Aborting/Aborted/Clearing
(unplanned unless the stop reason says planned), Resetting/Starting/
Completing (setup), Idle (waiting).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .packml import State

LOSS_BUCKET = {
    State.EXECUTE: "run",
    State.HELD: "held_internal", State.HOLDING: "held_internal", State.UNHOLDING: "held_internal",
    State.SUSPENDED: "suspended_external", State.SUSPENDING: "suspended_external",
    State.UNSUSPENDING: "suspended_external",
    State.STOPPED: "stopped", State.STOPPING: "stopped", State.ABORTING: "stopped", State.ABORTED: "stopped",
    State.CLEARING: "stopped",
    State.RESETTING: "setup", State.STARTING: "setup", State.COMPLETING: "setup", State.COMPLETE: "setup",
    State.IDLE: "idle",
}


@dataclass
class OEE:
    availability: float
    performance: float
    quality: float
    oee: float
    planned_s: float
    run_s: float
    processed: int
    good: int
    defective: int
    design_speed_ppm: float
    losses_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute(state_times: dict[State, float], *, processed: int, good: int, design_speed_ppm: float,
            planned_s: float | None = None, planned_stop_s: float = 0.0) -> OEE:
    """OEE from cumulative state times (seconds) and counts.

    ``planned_s`` defaults to all time outside Stopped-before-start, i.e. the
    sum of every state's time except Stopped/Aborted/Undefined.
    """
    losses: dict[str, float] = {}
    for st, t in state_times.items():
        bucket = LOSS_BUCKET.get(st)
        if bucket:
            losses[bucket] = losses.get(bucket, 0.0) + t
    run = state_times.get(State.EXECUTE, 0.0)
    if planned_s is None:
        planned_s = sum(t for st, t in state_times.items() if st not in (State.STOPPED, State.ABORTED, State.UNDEFINED))
    ppt = max(0.0, planned_s - planned_stop_s)
    availability = run / ppt if ppt > 0 else 0.0
    ideal = design_speed_ppm * run / 60.0
    performance = processed / ideal if ideal > 0 else 0.0
    quality = good / processed if processed else 0.0
    return OEE(availability, performance, quality, availability * performance * quality, ppt, run, processed, good,
               processed - good, design_speed_ppm, losses)
