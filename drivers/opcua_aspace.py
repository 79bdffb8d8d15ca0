"""Writing values straight into an asyncua server's own address space.

Shared by the servers axcell runs itself (the simulated sealer, the
northbound PackML unit): a value is placed into the node at once (so a read
right after a change sees it, and injected wrong types or Bad codes reach the
wire exactly as set), and data-change subscribers are notified from one
background task, in order.

:class:`NotifyGate` lets a simulated server and its client in one process keep
simulated time still while a data-change notification is on its way, so a
client that waits for notifications instead of polling stays deterministic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asyncua import ua

log = logging.getLogger("axcell.opcua")


class _Written(ua.DataValue):
    """A DataValue that nobody changes once the writer has placed it (see :meth:`AddressSpaceWriter.put`).

    asyncua's monitored items keep a deep copy of every value they are told about, so that a value
    changed in place later cannot fake or hide a change; that copy (dozens of ``copy.deepcopy``
    calls per value) was the largest single cost of a notification.  A value that is never
    changed is its own copy.  It is still a DataValue: reads and notifications encode it as one.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict) -> "_Written":
        return self


class AddressSpaceWriter:
    """Direct node writes with batched subscriber notification."""

    def __init__(self, after_drain: Callable[[], Awaitable[Any]] | None = None) -> None:
        self._pending: list[tuple[Any, Any, ua.DataValue]] = []
        self._task: asyncio.Task | None = None
        #: run after each batch has reached the subscriptions (the simulated sealer publishes it
        #: at once there instead of at the next publishing-interval tick)
        self.after_drain = after_drain

    @staticmethod
    def unchanged(node: Any, variant: Any, status: ua.StatusCode | None = None) -> bool:
        """``node`` already holds ``variant`` (and ``status``, when given): writing it would notify nobody."""
        return AddressSpaceWriter.holds(node, variant.Value, variant.VariantType, status)

    @staticmethod
    def holds(node: Any, value: Any, vtype: ua.VariantType, status: ua.StatusCode | None = None) -> bool:
        """:meth:`unchanged` for ``ua.Variant(value, vtype)``, without building the Variant.

        A server that offers every value on every change mostly finds them unchanged; a Variant
        built only to be compared and dropped costs more than the comparison (a Variant equals
        another of the same type and value).
        """
        old = node.attributes[ua.AttributeIds.Value].value
        return old is not None and old.Value is not None and (status is None or old.StatusCode == status) \
            and old.Value.VariantType == vtype and old.Value.Value == value

    def put(self, node: Any, dv: ua.DataValue) -> None:
        """Set ``node``'s value to ``dv`` now; its subscribers are told by :meth:`notify`.

        ``dv`` must be a fresh DataValue that the caller does not change afterwards (the node,
        reads and subscriptions all share it from here on).
        """
        if type(dv) is not _Written:
            dv = _Written(dv.Value, dv.StatusCode, dv.SourceTimestamp, dv.ServerTimestamp,
                          dv.SourcePicoseconds, dv.ServerPicoseconds)
        attval = node.attributes[ua.AttributeIds.Value]
        attval.value = dv
        self._pending.extend((k, cb, dv) for k, cb in attval.datachange_callbacks.items())

    def notify(self) -> None:
        """Tell subscribers about everything put so far (from a background task)."""
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            for k, cb, dv in batch:
                try:
                    await cb(k, dv)
                except Exception:  # noqa: BLE001 - one bad subscriber must not stop the others
                    log.exception("datachange callback failed")
            if self.after_drain is not None:
                try:
                    await self.after_drain()
                except Exception:  # noqa: BLE001 - publishing early is an optimisation
                    log.exception("publishing after a change failed")

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def task(self) -> asyncio.Task | None:
        return self._task


class NotifyGate:
    """Simulated time waits for a watched node's change to reach its subscriber.

    For a simulated server and a client in one process that share one simulated clock. A client
    that learns of a change from its subscription instead of reading at clock-time intervals must
    have the change before simulated time moves on, or what it does next would depend on how
    fast the notification travelled. The client :meth:`watch` es a node (by NodeId string); when
    the server writes a new value into a watched node it calls :meth:`changed`, and from then the
    clock stands still (a busy block) until the client reports :meth:`delivered` with that value,
    or ``max_hold_s`` of wall time passes (a lost notification: logged, and the client's safety
    reads still see the change). Unwatched nodes cost nothing. :meth:`release_all` is for a server
    that stops answering (offline, hung) and a client that goes away.
    """

    def __init__(self, clock: Any, *, max_hold_s: float = 2.0) -> None:
        self.clock = clock
        self.max_hold_s = max_hold_s
        self._watched: set[str] = set()
        self._open: dict[str, tuple[asyncio.Future, Any]] = {}  # node → (released, expected value)
        self.holds = 0
        self.lost = 0

    def watch(self, node: str) -> None:
        self._watched.add(node)

    def unwatch(self, node: str) -> None:
        self._watched.discard(node)
        self._release(node)

    def watching(self, node: str) -> bool:
        return node in self._watched

    def pending(self, node: str) -> bool:
        """True while a change of ``node`` has not reached the subscriber."""
        return node in self._open

    def changed(self, node: str, value: Any) -> None:
        """Server side, synchronously as the value is written: hold the clock until it is delivered."""
        if node not in self._watched:
            return
        held = self._open.get(node)
        if held is not None:  # changed again before the first reached the client: wait for this one
            self._open[node] = (held[0], value)
            return
        loop = asyncio.get_running_loop()
        released = loop.create_future()
        self._open[node] = (released, value)
        self.holds += 1

        async def hold() -> None:
            async with self.clock.busy():
                try:
                    await asyncio.wait_for(asyncio.shield(released), self.max_hold_s)
                except (TimeoutError, asyncio.TimeoutError):
                    if self._open.get(node, (None,))[0] is released:
                        self.lost += 1
                        log.warning("no notification of %s within %.1f s of wall time; simulated time goes on",
                                    node, self.max_hold_s)
                        self._release(node)

        # the task is runnable from now on, so the clock cannot move before it holds
        loop.create_task(hold())

    def delivered(self, node: str, value: Any) -> None:
        """Client side: a notification of ``node`` with ``value`` arrived."""
        held = self._open.get(node)
        if held is not None and held[1] == value:
            self._release(node)

    async def settled(self, node: str) -> None:
        """Return once no change of ``node`` is on its way."""
        while (held := self._open.get(node)) is not None:
            await asyncio.shield(held[0])

    def release_all(self) -> None:
        for node in list(self._open):
            self._release(node)

    def _release(self, node: str) -> None:
        held = self._open.pop(node, None)
        if held is not None and not held[0].done():
            held[0].set_result(None)
