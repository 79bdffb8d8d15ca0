"""Alarms: raised by devices, skills and the supervisor; acknowledged by operators.

Each alarm has an id, severity, message, source and time.  The first alarm
raised while the cell was producing becomes the *first-out* stop reason
(PackML ``Admin.StopReason``) until the cell is reset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["info", "warning", "error", "critical"]


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
    category: Literal["unplanned", "planned", "external"] = "unplanned"

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "active": self.active}


class AlarmList:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.history: list[Alarm] = []
        self.stop_reason: Alarm | None = None
        self.listeners: list[Callable[[str, Alarm], None]] = []

    def raise_(self, code: str, message: str, *, source: str, severity: Severity = "error",
               category: Literal["unplanned", "planned", "external"] = "unplanned") -> Alarm:
        alarm = Alarm(len(self.history) + 1, code, severity, message, source, self.clock(), category=category)
        if self.stop_reason is None and severity in ("error", "critical"):
            alarm.first_out = True
            self.stop_reason = alarm
        self.history.append(alarm)
        for cb in list(self.listeners):
            cb("raised", alarm)
        return alarm

    def ack(self, alarm_id: int, by: str = "operator") -> Alarm:
        alarm = self.get(alarm_id)
        if alarm.acked_at is None:
            alarm.acked_at, alarm.acked_by = self.clock(), by
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

    def get(self, alarm_id: int) -> Alarm:
        if not 1 <= alarm_id <= len(self.history):
            raise KeyError(f"no alarm {alarm_id}")
        return self.history[alarm_id - 1]

    def active(self) -> list[Alarm]:
        return [a for a in self.history if a.active]
