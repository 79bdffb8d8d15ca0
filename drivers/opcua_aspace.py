"""Writing values straight into an asyncua server's own address space.

Shared by the servers axcell runs itself (the simulated sealer, the
northbound PackML unit): a value is placed into the node at once (so a read
right after a change sees it, and injected wrong types or Bad codes reach the
wire exactly as set), and data-change subscribers are notified from one
background task, in order.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asyncua import ua

log = logging.getLogger("axcell.opcua")


class AddressSpaceWriter:
    """Direct node writes with batched subscriber notification."""

    def __init__(self) -> None:
        self._pending: list[tuple[Any, Any, ua.DataValue]] = []
        self._task: asyncio.Task | None = None

    @staticmethod
    def unchanged(node: Any, variant: Any, status: ua.StatusCode | None = None) -> bool:
        old = node.attributes[ua.AttributeIds.Value].value
        return old is not None and old.Value == variant and (status is None or old.StatusCode == status)

    def put(self, node: Any, dv: ua.DataValue) -> None:
        """Set ``node``'s value to ``dv`` now; its subscribers are told by :meth:`notify`."""
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

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def task(self) -> asyncio.Task | None:
        return self._task
