"""DigitalIO contract: named boolean channels (photo-eyes, valves, stack lights)."""

from __future__ import annotations

import abc

from .base import Device


class DigitalIO(Device, contract="io"):
    """A set of named digital inputs and outputs.

    ``wait_edge()`` returns the cell-clock time of the first edge *after* the
    call (rising: False→True).  Unknown channels raise KeyError; writing an
    input raises PermissionError.
    """

    @property
    @abc.abstractmethod
    def channels(self) -> dict[str, str]:
        """Channel name → ``"in"`` or ``"out"``."""

    @abc.abstractmethod
    async def read(self, channel: str) -> bool:
        """Current level of ``channel``."""

    @abc.abstractmethod
    async def write(self, channel: str, value: bool) -> None:
        """Set an output."""

    @abc.abstractmethod
    async def wait_edge(self, channel: str, *, rising: bool = True, timeout: float | None = None) -> float:
        """Wait for the next edge on ``channel``; returns its time. Raises DeviceTimeoutError."""
