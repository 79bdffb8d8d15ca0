"""OEE from PackML state times and part counts (ISO 22400-2 / the OMAC PackML way).

There is one OEE code path.  :class:`OeeTracker` attributes every second of
cell time to a loss bucket (by state and stop reason, see below) and
:func:`from_buckets` turns those bucket times and the part counts into the
figures.  The cell owns one tracker fed live from its state machine
(``Cell.oee()``: run report, API, HMI, status); the HTML report replays the
state changes recorded in the store through another one.

* Planned production time (PPT): every bucket except ``planned_downtime`` and
  ``not_scheduled`` (Stopped/Aborted with no unplanned stop reason, i.e. the
  operator or the batch script stopped it).
* Run time (APT): Execute time.
* Availability = APT / PPT.
* Performance = processed / (design speed × APT)   (MachDesignSpeed, parts/min).
  Not clipped: above 1 means the design speed is set too low.
* Quality = good / processed.
* OEE = A × P × Q  (= good / (design speed × PPT)).
* Machine OEE: the same with ``suspended_external`` time removed from PPT.

A ratio with a zero denominator (no planned time, no run time, no parts) is 0.

Downtime is attributed by state *and* stop reason:

=========================================  ========================================
state                                       bucket
=========================================  ========================================
Execute                                     ``run`` (no loss)
Holding / Held / Unholding                  ``held_internal`` (availability loss)
Suspending / Suspended / Unsuspending       ``suspended_external`` (starved/blocked,
                                            line-caused; excluded from the machine OEE)
Stopping / Aborting / Aborted / Clearing /  ``unplanned_downtime`` when the stop reason
Stopped                                     in force is unplanned or external (always
                                            for the aborting/clearing path),
                                            ``planned_downtime`` when its category is
                                            ``planned``, else ``not_scheduled``
                                            (operator stop)
Resetting / Starting / Completing /         ``setup``
Complete
Idle                                        ``idle`` (waiting, availability loss)
=========================================  ========================================

The stop reason in force (:func:`reason_in_force`) is the first-out alarm
when the cell left Execute, or, for a stop event that did not start in
Execute, when it began; it is kept until the cell is back in Execute.

Totals use PackML ``AccCount`` semantics: :class:`AccCounter` never goes
backwards (a counter that drops is treated as reset, PackOS-style), and the
store derives the accumulated counts from its records across restarts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .packml import State, Transition

Reason = tuple[str, str]
"""A stop reason: (message, category), as ``AlarmList.stop_reason_info`` gives it."""

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
"""Coarse bucket by state alone; ``stopped`` is refined by the stop reason (see :func:`attribute`)."""

BUCKETS = ("run", "held_internal", "suspended_external", "unplanned_downtime", "planned_downtime", "setup",
           "idle", "not_scheduled")
"""Fine buckets after stop-reason attribution (see :func:`attribute`)."""

PLANNED_TIME_BUCKETS = frozenset({"run", "held_internal", "suspended_external", "unplanned_downtime", "setup",
                                  "idle"})
"""Buckets inside planned production time (PPT)."""

UNPLANNED_BY_DEFAULT = frozenset({State.STOPPING, State.ABORTING, State.CLEARING, State.ABORTED})
"""Stop states that are unplanned downtime even without a stop reason (Stopped alone is an operator stop)."""

STOP_EVENT_TARGETS = frozenset({State.ABORTING, State.HOLDING, State.SUSPENDING, State.STOPPING})
"""Entering one of these begins a stop event (its reason is captured if none is in force yet)."""

NO_LOSS_BUCKETS = frozenset({"run", "not_scheduled"})
"""Buckets left out of the downtime list."""


def attribute(state: State, category: str | None) -> str:
    """The loss bucket of time spent in ``state`` with a stop reason of ``category`` (or None)."""
    coarse = LOSS_BUCKET.get(state, "not_scheduled")
    if coarse != "stopped":
        return coarse
    if category is None and state in UNPLANNED_BY_DEFAULT:
        category = "unplanned"
    if category == "planned":
        return "planned_downtime"
    if category in ("unplanned", "external"):
        return "unplanned_downtime"
    return "not_scheduled"


def reason_in_force(current: Reason | None, source: State, target: State, first_out: Reason | None) -> Reason | None:
    """The stop reason in force after a ``source`` → ``target`` transition.

    ``current`` is the reason in force before it and ``first_out`` the alarm
    list's first-out at the moment of the transition.  Leaving Execute takes
    the first-out; a stop event that begins elsewhere (e.g. an abort from
    Idle) takes it only if no reason is in force; back in Execute clears it.
    """
    if target == State.EXECUTE:
        return None
    if source == State.EXECUTE or (current is None and target in STOP_EVENT_TARGETS):
        return first_out
    return current


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
    """The OEE figures of attributed bucket times (seconds, keys from :data:`BUCKETS`) and part counts.

    The one place the OEE arithmetic lives (see the module docstring).  Pure:
    the same inputs give the same figures.  Availability, quality and the OEE
    stay in [0, 1] for consistent inputs; a zero denominator gives 0.

    Raises:
        ValueError: an unknown bucket, a negative time or count, or more good parts than processed ones.
    """
    unknown = set(buckets) - set(BUCKETS)
    if unknown:
        raise ValueError(f"unknown OEE bucket(s) {sorted(unknown)} (known: {', '.join(BUCKETS)})")
    if any(t < 0 for t in buckets.values()):
        raise ValueError(f"negative bucket time in {buckets}")
    if processed < 0 or good < 0 or good > processed:
        raise ValueError(f"counts must satisfy 0 <= good <= processed (good {good}, processed {processed})")
    run = buckets.get("run", 0.0)
    ppt = sum(t for b, t in buckets.items() if b in PLANNED_TIME_BUCKETS)
    availability = _ratio(run, ppt)
    performance = _ratio(processed, design_speed_ppm * run / 60.0)
    quality = _ratio(good, processed)
    machine = _ratio(run, ppt - buckets.get("suspended_external", 0.0)) * performance * quality
    return OEE(availability, performance, quality, availability * performance * quality, ppt, run, processed, good,
               processed - good, design_speed_ppm, {b: buckets.get(b, 0.0) for b in BUCKETS}, machine,
               list(downtime or []), dict(acc or {}))


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

    Feed it state changes: live, subscribe :meth:`on_transition` to the PackML
    state machine (the stop reason is read from ``stop_reason()``, which
    returns the first-out ``(message, category)`` or None); from records, call
    :meth:`record` with the stop reason stored with each change.  Either way
    :meth:`oee` evaluates :func:`from_buckets` on the times so far, the
    current state included up to ``clock()`` (or ``at``).

    Readers may run on another thread (the API reads from a worker thread),
    so updates and reads hold a lock.
    """

    def __init__(self, clock: Callable[[], float], design_speed_ppm: float,
                 stop_reason: Callable[[], Reason | None] | None = None,
                 initial: State = State.STOPPED, start: float | None = None) -> None:
        self.clock = clock
        self.design_speed_ppm = design_speed_ppm
        self.stop_reason = stop_reason or (lambda: None)
        self.state = initial
        self.entered = clock() if start is None else start
        self.reason: Reason | None = None
        self.buckets: dict[str, float] = {}
        self.by_reason: dict[tuple[str, str, str, str], list[float]] = {}
        """(state, reason, category, bucket) → [seconds, events] of closed intervals."""
        self._lock = threading.Lock()

    def _close(self, until: float, buckets: dict[str, float],
               reasons: dict[tuple[str, str, str, str], list[float]]) -> None:
        """Add the current state's time up to ``until`` (one event if it lasted) to ``buckets``/``reasons``."""
        dt = until - self.entered
        if dt <= 0:
            return
        msg, cat = self.reason if self.reason is not None else ("", "")
        b = attribute(self.state, cat or None)
        buckets[b] = buckets.get(b, 0.0) + dt
        if b not in NO_LOSS_BUCKETS:
            cur = reasons.setdefault((self.state.label, msg, cat, b), [0.0, 0])
            cur[0] += dt
            cur[1] += 1

    def record(self, t: float, source: State, target: State, first_out: Reason | None) -> None:
        """A state change at cell time ``t``; ``first_out`` is the stop reason at that moment."""
        with self._lock:
            self._close(t, self.buckets, self.by_reason)
            self.reason = reason_in_force(self.reason, source, target, first_out)
            self.state = target
            self.entered = max(t, self.entered)

    def on_transition(self, tr: Transition) -> None:
        self.record(tr.time, tr.source, tr.target, self.stop_reason())

    def current(self, at: float | None = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """Buckets and downtime list up to ``at`` (default now), the current state included."""
        until = self.clock() if at is None else at
        with self._lock:
            buckets = dict(self.buckets)
            reasons = {k: list(v) for k, v in self.by_reason.items()}
            self._close(until, buckets, reasons)
        downtime = [{"state": s, "reason": r, "category": c, "bucket": b, "seconds": round(v[0], 6),
                     "events": int(v[1])} for (s, r, c, b), v in reasons.items()]
        downtime.sort(key=lambda d: -d["seconds"])
        return buckets, downtime

    def oee(self, *, processed: int, good: int, acc: dict[str, int] | None = None, at: float | None = None) -> OEE:
        """The figures now (or at ``at``) for ``processed``/``good`` parts (see :func:`from_buckets`)."""
        buckets, downtime = self.current(at)
        return from_buckets(buckets, processed=processed, good=good, design_speed_ppm=self.design_speed_ppm,
                            downtime=downtime, acc=acc)
