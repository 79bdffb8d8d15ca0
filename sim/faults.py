"""Fault injection for simulated devices.

Every sim twin owns a :class:`FaultHooks`.  Tests and scenario files arm a
fault (``timeout``, ``disconnect``, ``fault``) for the next N operations, or
for a window of simulated time; each device operation calls
``await self.faults.check(op)`` first, which raises the matching typed error
from :mod:`drivers.errors`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ConfigDict, Field

from drivers.clock import Clock
from drivers.configmodel import ConfigModel
from drivers.errors import DeviceFaultError, DeviceOfflineError, DeviceTimeoutError

FaultKind = Literal["timeout", "disconnect", "fault"]


class FaultSpec(ConfigModel):
    """A fault scheduled from the cell file's ``sim.faults`` list."""

    model_config = ConfigDict(extra="forbid")
    device: str
    kind: Literal["timeout", "disconnect", "fault", "jam"]
    at: float = Field(ge=0, description="simulated seconds after start")
    duration: float | None = Field(default=None, gt=0, description="seconds the fault lasts (None: `times` operations)")
    times: int = Field(default=1, ge=1)
    op: str | None = Field(default=None, description="only this operation (e.g. 'capture'); None = any")
    message: str = ""


@dataclass
class _Armed:
    kind: FaultKind
    remaining: float  # operations left (inf while time-windowed)
    until: float      # simulated end time (inf for count-based)
    op: str | None
    message: str


@dataclass
class FaultHooks:
    """Per-device fault state."""

    device: str
    clock: Clock
    timeout_s: float = 1.0
    armed: list[_Armed] = field(default_factory=list)
    injected: int = 0

    def inject(
        self,
        kind: FaultKind,
        *,
        times: int = 1,
        duration: float | None = None,
        op: str | None = None,
        message: str = "",
    ) -> None:
        """Arm a fault for the next ``times`` operations, or for ``duration`` seconds."""
        if kind not in ("timeout", "disconnect", "fault"):
            raise ValueError(f"unknown fault kind {kind!r}")
        until = self.clock.now() + duration if duration is not None else math.inf
        self.armed.append(_Armed(kind, math.inf if duration is not None else times, until, op, message))

    def clear(self) -> None:
        self.armed.clear()

    @property
    def offline(self) -> bool:
        now = self.clock.now()
        return any(a.kind == "disconnect" and a.until > now and a.remaining > 0 for a in self.armed)

    async def check(self, op: str) -> None:
        """Raise the armed fault for ``op``, if any (timeouts first wait ``timeout_s``)."""
        if not self.armed:
            return
        now = self.clock.now()
        self.armed = [a for a in self.armed if a.remaining > 0 and a.until > now]
        for a in self.armed:
            if a.op is not None and a.op != op:
                continue
            a.remaining -= 1
            self.injected += 1
            msg = a.message or f"injected {a.kind} during {op}"
            if a.kind == "timeout":
                await self.clock.sleep(self.timeout_s)
                raise DeviceTimeoutError(msg, device=self.device)
            if a.kind == "disconnect":
                raise DeviceOfflineError(msg, device=self.device)
            raise DeviceFaultError(msg, device=self.device)
