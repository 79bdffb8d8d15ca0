"""The device base class and the registry of implementations by ``kind``.

A device implementation subclasses one contract (``Arm``, ``Camera`` …) and
names itself with a class keyword::

    class SimArm(Arm, kind="sim.arm"):
        class Config(DeviceConfig):
            model: str = "ur10e"

The registry maps ``kind`` → class.  The composition root in :mod:`cell`
loads provider modules through the ``axcell.devices`` entry-point group (the
prefix before the dot names the group entry), so adding a driver never means
editing a factory.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import ConfigDict

from .clock import Clock
from .configmodel import ConfigModel
from .errors import ConfigurationError, NotConnectedError


class DeviceConfig(ConfigModel):
    """Base of every driver's options model.  Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class DeviceContext:
    """What a device receives at construction.

    ``clock`` is the cell's clock.  ``devices`` holds the devices this one
    declared in :meth:`Device.requires` (already built).  ``resources`` holds
    shared objects created by the composition root, such as the simulated
    world (key ``"world"``).
    """

    clock: Clock
    devices: dict[str, "Device"] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    cell: str = "cell"


_REGISTRY: dict[str, type["Device"]] = {}


class Device(abc.ABC):
    """Base of every device contract.

    Contract:
      * ``connect()`` and ``close()`` are idempotent and safe to call in any order.
      * Every other coroutine raises :class:`NotConnectedError` before connect.
      * Timeouts are keyword-only, in seconds of the cell clock; ``None`` means
        the implementation's default.
      * Errors are subclasses of :class:`drivers.errors.DeviceError`.
    """

    kind: ClassVar[str] = ""
    """Registry key, ``"<provider>.<name>"``, e.g. ``"sim.arm"``."""
    contract: ClassVar[str] = ""
    """Contract name: arm, gripper, camera, conveyor, io or machine."""
    Config: ClassVar[type[DeviceConfig]] = DeviceConfig

    def __init_subclass__(cls, kind: str | None = None, contract: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if contract:
            cls.contract = contract
        if kind:
            if kind in _REGISTRY and _REGISTRY[kind] is not cls:
                raise ConfigurationError(f"device kind {kind!r} registered twice")
            cls.kind = kind
            _REGISTRY[kind] = cls

    def __init__(self, name: str, config: DeviceConfig, ctx: DeviceContext) -> None:
        self.name = name
        self.config = config
        self.ctx = ctx
        self.clock = ctx.clock
        self._connected = False
        self._connecting: asyncio.Future | None = None  # the attempt in progress, shared by overlapping callers

    # -- dependencies -------------------------------------------------------
    @classmethod
    def requires(cls, config: DeviceConfig) -> list[str]:
        """Names of other devices this one needs built first (e.g. a photo-eye's conveyor)."""
        return []

    # -- lifecycle ----------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        """Open the connection. Idempotent; callers that overlap (a cell node activating while the cell
        resets) share one attempt instead of opening the connection twice, and all see its error."""
        while not self._connected:
            attempt = self._connecting
            if attempt is None:
                attempt = self._connecting = asyncio.ensure_future(self._connect())
                attempt.add_done_callback(self._connect_done)
            await asyncio.shield(attempt)

    def _connect_done(self, attempt: asyncio.Future) -> None:
        if self._connecting is attempt:
            self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._connected = True

    async def close(self) -> None:
        """Release the connection. Idempotent; never raises for an unconnected device."""
        if self._connected:
            self._connected = False
            await self._close()

    async def _connect(self) -> None:  # pragma: no cover - trivial default
        return None

    async def _close(self) -> None:  # pragma: no cover - trivial default
        return None

    def _require_connected(self) -> None:
        if not self._connected:
            raise NotConnectedError("not connected", device=self.name)

    def _report(self, event: str, detail: str = "") -> None:
        """Tell the cell of a connection event (``offline``/``online``) through ``ctx.resources
        ["device_events"]``, when the composition root gave one (the cell raises or clears an alarm)."""
        notify = self.ctx.resources.get("device_events")
        if notify is not None:
            notify(self.name, event, detail)

    def health(self) -> dict[str, Any]:
        """A cheap, synchronous status summary for diagnostics."""
        return {"connected": self._connected}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} kind={self.kind}>"


def registered_kinds() -> dict[str, type[Device]]:
    """A copy of the kind → class registry (only providers already imported)."""
    return dict(_REGISTRY)


def device_class(kind: str) -> type[Device] | None:
    return _REGISTRY.get(kind)
