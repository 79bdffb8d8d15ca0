"""Alarms: raised by devices, skills and the supervisor; acknowledged by operators.

Each alarm has an id, severity, message, source, cell time and wall time
(PackML ``PackMLAlarmDataType``: ID, Message, Category, DateTime, AckDateTime).
The first error raised after the cell last entered Execute becomes the
*first-out* stop reason (PackML ``Admin.StopReason``: "the first event captured
during an abort, held, suspended or stop event"); :meth:`AlarmList.rearm_first_out`
(called when the cell is back in Execute, and on Reset) arms it for the next
stop event.  ``category`` classifies the stop for OEE: ``unplanned``,
``planned`` or ``external`` (starved/blocked).  The history is kept in memory
for the run and persisted by the store (cell/store.py) through ``listeners``.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

Severity = Literal["info", "warning", "error", "critical"]
Category = Literal["unplanned", "planned", "external"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "error", "critical")
STOPPING_SEVERITIES = frozenset({"error", "critical"})


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Alarm:
    id: int
    code: str
    severity: Severity
    message: str
    source: str
    time: float
    first_out: bool = False
    acked_at: float | None = None
    acked_by: str | None = None
    cleared_at: float | None = None
    category: Category = "unplanned"
    wall_time: str = field(default_factory=lambda: _utc(_time.time()))
    acked_wall: str | None = None

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    @property
    def acked(self) -> bool:
        return self.acked_at is not None

    def to_dict(self) -> dict[str, Any]:
        """Deterministic view (cell time only: same seed, same report)."""
        d = asdict(self)
        d.pop("wall_time")
        d.pop("acked_wall")
        return {**d, "active": self.active, "acked": self.acked}

    def to_record(self) -> dict[str, Any]:
        """Everything, wall-clock times included (for the store and the HMI)."""
        return {**asdict(self), "active": self.active, "acked": self.acked}


class AlarmList:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.history: list[Alarm] = []
        self.stop_reason: Alarm | None = None
        self.listeners: list[Callable[[str, Alarm], None]] = []

    def raise_(self, code: str, message: str, *, source: str, severity: Severity = "error",
               category: Category = "unplanned") -> Alarm:
        if severity not in SEVERITIES:
            raise ValueError(f"unknown alarm severity {severity!r} (one of {', '.join(SEVERITIES)})")
        alarm = Alarm(len(self.history) + 1, code, severity, message, source, self.clock(), category=category)
        if self.stop_reason is None and severity in STOPPING_SEVERITIES:
            alarm.first_out = True
            self.stop_reason = alarm
        self.history.append(alarm)
        for cb in list(self.listeners):
            cb("raised", alarm)
        return alarm

    def ack(self, alarm_id: int, by: str = "operator") -> Alarm:
        alarm = self.get(alarm_id)
        if alarm.acked_at is None:
            alarm.acked_at, alarm.acked_by, alarm.acked_wall = self.clock(), by, _utc(_time.time())
            for cb in list(self.listeners):
                cb("acked", alarm)
        return alarm

    def clear(self, alarm_id: int) -> None:
        alarm = self.get(alarm_id)
        if alarm.cleared_at is None:
            alarm.cleared_at = self.clock()
            for cb in list(self.listeners):
                cb("cleared", alarm)

    def clear_all(self) -> None:
        for a in self.history:
            if a.active:
                self.clear(a.id)

    def reset_first_out(self) -> None:
        self.stop_reason = None

    def rearm_first_out(self) -> None:
        """Arm the first-out for the next stop event (the cell is producing again)."""
        self.stop_reason = None

    def stop_reason_info(self) -> tuple[str, str] | None:
        """(message, category) of the first-out alarm, for OEE loss attribution."""
        a = self.stop_reason
        return (f"{a.code}: {a.message}", a.category) if a is not None else None

    def clear_acked(self) -> list[Alarm]:
        """Clear every acknowledged alarm (the operator dealt with it and restarted the cell)."""
        done = [a for a in self.history if a.active and a.acked]
        for a in done:
            self.clear(a.id)
        return done

    def unacked(self) -> list[Alarm]:
        return [a for a in self.history if a.active and not a.acked]

    def get(self, alarm_id: int) -> Alarm:
        if not 1 <= alarm_id <= len(self.history):
            raise KeyError(f"no alarm {alarm_id}")
        return self.history[alarm_id - 1]

    def active(self) -> list[Alarm]:
        return [a for a in self.history if a.active]
