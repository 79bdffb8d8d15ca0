"""Serve the API/HMI with uvicorn as a task in the cell's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import uvicorn

from .app import create_app, wrap

if TYPE_CHECKING:
    from ..runtime import Cell

log = logging.getLogger("axcell.api")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # the session owns SIGINT/SIGTERM (clean cell stop); uvicorn must not re-raise them
        yield


class ApiServer:
    """``await start()`` binds host:port (0 = ephemeral) and serves; ``await stop()`` shuts down."""

    def __init__(self, cell: "Cell", *, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 open_reads: bool = True, trend_period_s: float = 1.0) -> None:
        self.cell = cell
        self.host = host
        self.port = port
        self.app = create_app(cell, token=token, open_reads=open_reads)
        self.trend_period_s = trend_period_s
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None
        self._trend_task: asyncio.Task | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise RuntimeError(f"cannot serve the HMI on {self.host}:{self.port}: {e.strerror or e}") from None
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(wrap(self.app), log_level="warning", lifespan="off", ws="websockets-sansio",
                                timeout_graceful_shutdown=3, access_log=False)
        self._server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        for _ in range(500):
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()
        self._trend_task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        trend = self.app.state.trend
        while True:
            try:
                trend.sample()
            except Exception:  # noqa: BLE001
                log.exception("trend sample failed")
            await asyncio.sleep(self.trend_period_s)

    async def stop(self) -> None:
        if self._trend_task is not None:
            self._trend_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trend_task
        self.app.state.closing.set()
        self.app.state.hub.close()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(self._task, timeout=8.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._server.force_exit = True
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
        if self._sock is not None:
            self._sock.close()
