"""Machine contract: a PLC-controlled station (case sealer, press, screwdriver).

The machine follows the PackML state model on its own controller.  The cell
sends PackML commands (``reset``, ``start``, ``stop``, ``hold``, ``unhold``,
``abort``, ``clear``) and asks for work with ``cycle()``.
"""

from __future__ import annotations

import abc
from typing import Any

from .base import Device
from .types import CycleResult, MachineStatus

COMMANDS = ("reset", "start", "stop", "hold", "unhold", "suspend", "unsuspend", "abort", "clear")


class Machine(Device, contract="machine"):
    """A machine controller.

    ``cycle()`` runs one work cycle (e.g. seal the case and index an empty
    one) and returns a :class:`CycleResult`.  A jam or fault raises
    DeviceFaultError and leaves the machine in a faulted state until
    ``command("reset")``/``"clear"``.  A lost connection raises
    DeviceOfflineError; no answer within ``timeout`` raises DeviceTimeoutError.
    """

    @abc.abstractmethod
    async def status(self) -> MachineStatus:
        """State, fault flag, cycle counter and latest telemetry."""

    @abc.abstractmethod
    async def command(self, command: str, *, timeout: float | None = None) -> None:
        """Send a PackML command (one of :data:`COMMANDS`). Raises ValueError for unknown commands."""

    @abc.abstractmethod
    async def cycle(self, *, timeout: float | None = None, params: dict[str, Any] | None = None) -> CycleResult:
        """Run one cycle and wait for it to finish."""

    async def telemetry(self) -> dict[str, float]:
        """Analog process values (e.g. ``seal_temperature``, ``motor_current``)."""
        return dict((await self.status()).telemetry)
