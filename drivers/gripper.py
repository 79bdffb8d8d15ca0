"""Gripper contract: vacuum cups or fingers that hold one object at a time."""

from __future__ import annotations

import abc

from .base import Device


class Gripper(Device, contract="gripper"):
    """An end effector with a binary grasp.

    ``grip()`` returns once the object is held and raises
    :class:`drivers.errors.GraspError` when nothing was acquired (for vacuum:
    no vacuum level reached).  ``release()`` returns once the object is free.
    Both are idempotent.  Timeouts are seconds on the cell clock.
    """

    @abc.abstractmethod
    async def grip(self, *, timeout: float | None = None) -> None:
        """Acquire the object under the tool. Raises GraspError, DeviceTimeoutError."""

    @abc.abstractmethod
    async def release(self, *, timeout: float | None = None) -> None:
        """Release whatever is held. Safe when holding nothing."""

    @abc.abstractmethod
    async def is_holding(self) -> bool:
        """True while an object is held (vacuum switch on / fingers closed on an object)."""
