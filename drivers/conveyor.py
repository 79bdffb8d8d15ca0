"""Conveyor contract: a belt with an encoder.

``position()`` is the encoder reading converted to metres of belt travel. It
only grows while the belt runs forward, so a part seen at encoder ``e0`` and
cell-frame x ``x0`` is at ``x0 + flow * (position() - e0)`` later — the basis
of conveyor tracking — where ``flow`` is +1 for a belt that carries parts
towards cell +x and -1 for one that carries them towards -x (the cell file's
``line.flow``).  Velocity is the belt speed in m/s along its flow (>= 0).
"""

from __future__ import annotations

import abc

from .base import Device


class Conveyor(Device, contract="conveyor"):
    """A belt conveyor."""

    @abc.abstractmethod
    async def position(self) -> float:
        """Belt travel in metres since connect (encoder)."""

    @abc.abstractmethod
    async def velocity(self) -> float:
        """Current belt speed in m/s along the flow (0 when stopped)."""

    @abc.abstractmethod
    async def start(self, speed: float | None = None) -> None:
        """Run at ``speed`` m/s (or the configured speed). Raises ValueError when out of range."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the belt. Idempotent."""
