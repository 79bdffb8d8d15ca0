"""OEE from PackML state times and part counts (ISO 22400-2 / the OMAC PackML way).

* Planned production time (PPT): time from the first Start on, minus planned
  downtime and minus time the cell was not scheduled (Stopped/Aborted with no
  unplanned stop reason, i.e. the operator or the batch script stopped it).
* Run time (APT): cumulative Execute time.
* Availability = APT / PPT.
* Performance = processed / (design speed × APT)   (MachDesignSpeed, parts/min).
* Quality = good / processed.
* OEE = A × P × Q  (= good / (design speed × PPT)).

Downtime is attributed by state *and* stop reason:

=========================================  ========================================
state                                       bucket
=========================================  ========================================
Execute                                     ``run`` (no loss)
Holding / Held / Unholding                  ``held_internal`` (availability loss)
Suspending / Suspended / Unsuspending       ``suspended_external`` (starved/blocked,
                                            line-caused; excluded from the machine OEE)
Stopping / Aborting / Aborted / Clearing /  ``unplanned_downtime`` when the first-out stop
Stopped                                     reason is an unplanned alarm (always for the
                                            aborting/clearing path), ``planned_downtime``
                                            when its category is ``planned``, else
                                            ``not_scheduled`` (operator stop)
Resetting / Starting / Completing /         ``setup``
Complete
Idle                                        ``idle`` (waiting, availability loss)
=========================================  ========================================

Totals use PackML ``AccCount`` semantics: :class:`AccCounter` never goes
backwards (a counter that drops is treated as reset, PackOS-style), and the
store derives the accumulated counts from its records across restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .packml import State, Transition

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
"""Coarse bucket by state alone (used when no stop reason is known)."""

BUCKETS = ("run", "held_internal", "suspended_external", "unplanned_downtime", "planned_downtime", "setup",
           "idle", "not_scheduled")
"""Fine buckets after stop-reason attribution (see :func:`attribute`)."""

PLANNED_TIME_BUCKETS = frozenset({"run", "held_internal", "suspended_external", "unplanned_downtime", "setup",
                                  "idle"})
"""Buckets inside planned production time (PPT)."""


UNPLANNED_BY_DEFAULT = frozenset({State.STOPPING, State.ABORTING, State.CLEARING, State.ABORTED})
"""Stop states that are unplanned downtime even without a stop reason (Stopped alone is an operator stop)."""


def attribute(state: State, category: str | None) -> str:
    """The loss bucket of time spent in ``state`` with a stop reason of ``category`` (or None)."""
    coarse = LOSS_BUCKET.get(state, "not_scheduled")
    if coarse != "stopped":
        return coarse
    if category == "planned":
        return "planned_downtime"
    if category in ("unplanned", "external"):
        return "unplanned_downtime"
    return "not_scheduled"


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
    machine_oee: float = 0.0
    """OEE with external (starved/blocked) time removed from planned time."""
    downtime: list[dict[str, Any]] = field(default_factory=list)
    """Downtime by state and stop reason: ``{state, reason, category, bucket, seconds, events}``."""
    acc: dict[str, int] = field(default_factory=dict)
    """Non-resetting totals (PackML AccCount): processed, good, defective."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def from_buckets(buckets: dict[str, float], *, processed: int, good: int, design_speed_ppm: float,
                 downtime: list[dict[str, Any]] | None = None, acc: dict[str, int] | None = None) -> OEE:
    """OEE from attributed bucket times (seconds) and counts."""
    run = buckets.get("run", 0.0)
    ppt = sum(t for b, t in buckets.items() if b in PLANNED_TIME_BUCKETS)
    availability = _ratio(run, ppt)
    ideal = design_speed_ppm * run / 60.0
    performance = _ratio(processed, ideal)
    quality = _ratio(good, processed)
    machine_ppt = ppt - buckets.get("suspended_external", 0.0)
    machine = _ratio(run, machine_ppt) * performance * quality
    return OEE(availability, performance, quality, availability * performance * quality, ppt, run, processed, good,
               processed - good, design_speed_ppm, {b: buckets.get(b, 0.0) for b in BUCKETS}, machine,
               list(downtime or []), dict(acc or {}))


def compute(state_times: dict[State, float], *, processed: int, good: int, design_speed_ppm: float,
            planned_s: float | None = None, planned_stop_s: float = 0.0,
            stop_categories: dict[State, str | None] | None = None) -> OEE:
    """OEE from cumulative state times (seconds) and counts.

    Without stop reasons every Stopped/Aborted second is *not scheduled* (the
    operator stopped the cell) and transitional stop states (Stopping,
    Aborting, Clearing) are unplanned downtime.  ``planned_s`` overrides PPT
    (e.g. from a shift schedule); ``planned_stop_s`` is subtracted from it.
    """
    buckets: dict[str, float] = {}
    for st, t in state_times.items():
        if t <= 0:
            continue
        cat = (stop_categories or {}).get(st)
        if cat is None and st in UNPLANNED_BY_DEFAULT:
            cat = "unplanned"
        b = attribute(st, cat)
        buckets[b] = buckets.get(b, 0.0) + t
    o = from_buckets(buckets, processed=processed, good=good, design_speed_ppm=design_speed_ppm)
    if planned_s is not None or planned_stop_s:
        ppt = max(0.0, (planned_s if planned_s is not None else o.planned_s) - planned_stop_s)
        o.planned_s = ppt
        o.availability = _ratio(o.run_s, ppt)
        o.oee = o.availability * o.performance * o.quality
    return o


class AccCounter:
    """A PackML AccCount: a non-resetting total fed with (possibly resetting) counts.

    ``update(count)`` adds the increase since the last reading; a decrease is a
    reset of the source counter, so the new value counts from zero
    (1000 → 0 → 1002 adds +2 after the reset, PackOS-style).  Int32 rollover
    of the source is handled the same way.
    """

    def __init__(self, start: int = 0) -> None:
        self.acc = int(start)
        self._last: int | None = None

    def update(self, count: int) -> int:
        count = int(count)
        if self._last is None:
            self._last = count
            return self.acc
        delta = count - self._last if count >= self._last else count
        self.acc += max(0, delta)
        self._last = count
        return self.acc


class OeeTracker:
    """Attributes every second of cell time to a loss bucket, by state and stop reason.

    Subscribe :meth:`on_transition` to the PackML state machine.  The stop
    reason of a stop event is the alarm list's first-out alarm at the moment
    the cell left Execute (``stop_reason()`` returns ``(message, category)``
    or None); it is kept until the cell is back in Execute.
    """

    def __init__(self, clock: Callable[[], float], design_speed_ppm: float,
                 stop_reason: Callable[[], tuple[str, str] | None] | None = None,
                 initial: State = State.STOPPED) -> None:
        self.clock = clock
        self.design_speed_ppm = design_speed_ppm
        self.stop_reason = stop_reason or (lambda: None)
        self.state = initial
        self.entered = clock()
        self.reason: tuple[str, str] | None = None
        self.buckets: dict[str, float] = {}
        self.by_reason: dict[tuple[str, str, str, str], list[float]] = {}
        self.samples: list[dict[str, Any]] = []

    def _bucket(self, state: State) -> str:
        cat = self.reason[1] if self.reason else None
        if cat is None and state in UNPLANNED_BY_DEFAULT:
            cat = "unplanned"
        return attribute(state, cat)

    def _account(self, until: float, into: dict[str, float] | None = None,
                 reasons: dict[tuple[str, str, str, str], list[float]] | None = None, new_event: bool = False) -> None:
        dt = max(0.0, until - self.entered)
        b = self._bucket(self.state)
        tgt = self.buckets if into is None else into
        tgt[b] = tgt.get(b, 0.0) + dt
        if b not in ("run", "not_scheduled"):
            key = (self.state.label, self.reason[0] if self.reason else "", self.reason[1] if self.reason else "", b)
            rs = self.by_reason if reasons is None else reasons
            cur = rs.setdefault(key, [0.0, 0])
            cur[0] += dt
            cur[1] += 1 if new_event else 0

    def on_transition(self, tr: Transition) -> None:
        self._account(tr.time, new_event=True)
        if tr.source == State.EXECUTE or tr.target in (State.ABORTING, State.HOLDING, State.SUSPENDING,
                                                       State.STOPPING):
            if self.reason is None or tr.source == State.EXECUTE:
                self.reason = self.stop_reason()
        if tr.target == State.EXECUTE:
            self.reason = None
        self.state = tr.target
        self.entered = tr.time

    def current(self) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Buckets and downtime list up to now (the current state included)."""
        buckets = dict(self.buckets)
        reasons = {k: list(v) for k, v in self.by_reason.items()}
        saved = self.entered
        self._account(self.clock(), into=buckets, reasons=reasons)
        self.entered = saved
        downtime = [{"state": s, "reason": r, "category": c, "bucket": b, "seconds": round(v[0], 6),
                     "events": int(v[1])} for (s, r, c, b), v in reasons.items() if v[0] > 0]
        downtime.sort(key=lambda d: -d["seconds"])
        return buckets, downtime

    def oee(self, *, processed: int, good: int, acc: dict[str, int] | None = None) -> OEE:
        buckets, downtime = self.current()
        return from_buckets(buckets, processed=processed, good=good, design_speed_ppm=self.design_speed_ppm,
                            downtime=downtime, acc=acc)

    def sample(self, *, processed: int, good: int, max_samples: int = 2000) -> dict[str, Any]:
        """Record a point of the OEE trend (for the HMI and the report)."""
        o = self.oee(processed=processed, good=good)
        pt = {"t": round(self.clock(), 3), "availability": round(o.availability, 4),
              "performance": round(o.performance, 4), "quality": round(o.quality, 4), "oee": round(o.oee, 4),
              "processed": processed, "good": good}
        self.samples.append(pt)
        if len(self.samples) > max_samples:
            del self.samples[: len(self.samples) - max_samples]
        return pt
