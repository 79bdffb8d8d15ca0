"""The clock contract: every wait in a device or skill goes through one of these.

Skills and drivers never call ``time.time()`` or ``asyncio.sleep(seconds)``
directly.  They ask the clock, so the same code runs against wall time on a
real cell and against the simulated, discrete-event time of :mod:`sim` (where
an hour of production passes in a second or two).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

T = TypeVar("T")


class Clock(abc.ABC):
    """A source of time (seconds, float) and of waits measured in it."""

    @abc.abstractmethod
    def now(self) -> float:
        """Current time in seconds. Monotonic; its origin is implementation-defined."""

    @abc.abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time. ``seconds <= 0`` yields once."""

    async def sleep_until(self, t: float) -> None:
        """Wait until ``now() >= t``."""
        await self.sleep(t - self.now())

    async def wait_for(self, aw: Awaitable[T], timeout: float | None) -> T:
        """Await ``aw`` but give up after ``timeout`` seconds of clock time.

        Raises :class:`TimeoutError` (the builtin) on expiry and cancels ``aw``.
        """
        if timeout is None:
            return await aw
        task = asyncio.ensure_future(aw)
        timer = asyncio.ensure_future(self.sleep(timeout))
        try:
            done, _ = await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            timer.cancel()
            raise
        if task in done:
            timer.cancel()
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise TimeoutError(f"timed out after {timeout:g} s")

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        """Mark real (non-simulated) I/O in flight.

        A simulated clock does not advance time while any ``busy`` block is
        open, so a request over a real transport (ROS 2, OPC UA) finishes at
        the same simulated instant on every run.  Wall clocks ignore it.
        """
        yield


class WallClock(Clock):
    """Real time from :func:`time.monotonic`; used with real hardware."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
