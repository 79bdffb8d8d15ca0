"""A deterministic discrete-event clock that drives asyncio code.

Every simulated wait (``await clock.sleep(dt)``) is a future in one heap
ordered by (time, sequence).  :meth:`SimClock.run` repeatedly lets every
runnable asyncio task run until all are blocked ("settled"), then jumps time to
the earliest pending wake-up and resolves it.  Ties are broken by the order in
which waits were scheduled, so the same program and seed always produce the
same interleaving.

Real I/O (a ROS 2 or OPC UA request) is bracketed by :meth:`busy`; the clock
never advances while a busy block is open, so such requests complete at the
same simulated instant every run.

With ``speed`` set, time advances no faster than ``speed`` × wall time
(``speed=1`` is real time), which is how the HMI demo runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from drivers.clock import Clock


class _Entry:
    __slots__ = ("t", "seq", "fut", "cb", "cancelled")

    def __init__(self, t: float, seq: int, fut: asyncio.Future | None, cb: Callable[[], Any] | None) -> None:
        self.t = t
        self.seq = seq
        self.fut = fut
        self.cb = cb
        self.cancelled = False

    def __lt__(self, other: "_Entry") -> bool:
        return (self.t, self.seq) < (other.t, other.seq)


class TimerHandle:
    """Returned by :meth:`SimClock.call_at`; ``cancel()`` it to drop the callback."""

    __slots__ = ("_entry",)

    def __init__(self, entry: _Entry) -> None:
        self._entry = entry

    def cancel(self) -> None:
        self._entry.cancelled = True

    @property
    def when(self) -> float:
        return self._entry.t


class SimClock(Clock):
    """Simulated time in seconds, starting at 0."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._busy = 0
        self._idle: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._stop = False
        self.events_fired = 0
        #: Optional coordinator for a clock that runs in step with clocks in other processes
        #: (``cell.ros.lockstep``): :meth:`run` asks it before every advance (see :meth:`run`).
        self.sync: Any = None
        #: ``hook(t_old, t_new)`` callables run by :meth:`run` whenever time moves forward, before
        #: the due events fire: observers that sample state as time passes (ROS ``/clock`` and
        #: ``joint_states`` publishers) without clock events of their own.
        self.advance_hooks: list[Callable[[float, float], Any]] = []

    # -- Clock API -------------------------------------------------------------
    def now(self) -> float:
        return self._t

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        entry = self._push(self._t + seconds, fut, None)
        try:
            await fut
        finally:
            entry.cancelled = True

    async def sleep_until(self, t: float) -> None:
        await self.sleep(t - self._t)

    def call_at(self, t: float, callback: Callable[[], Any]) -> TimerHandle:
        """Run ``callback()`` (synchronously) when simulated time reaches ``t``."""
        return TimerHandle(self._push(max(t, self._t), None, callback))

    def call_later(self, dt: float, callback: Callable[[], Any]) -> TimerHandle:
        return self.call_at(self._t + max(0.0, dt), callback)

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            if self._busy == 0 and self._idle is not None:
                self._idle.set()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current instant."""
        self._stop = True
        if self._wake is not None:
            self._wake.set()

    @property
    def pending(self) -> int:
        return sum(1 for e in self._heap if not e.cancelled)

    # -- driving from outside (a clock kept in step with other processes) -------------------------
    def next_time(self) -> float | None:
        """Time of the earliest pending wake-up, or None."""
        e = self._peek()
        return e.t if e is not None else None

    def advance_to(self, t: float) -> bool:
        """Jump to ``t`` (never backwards) and fire what is due; True if time moved.

        For a follower clock that never runs :meth:`run` itself: its leader decides when
        time moves.
        """
        moved = t > self._t
        self._t = max(self._t, t)
        self._fire_due()
        return moved

    async def settle(self) -> None:
        """Return when no asyncio callback is runnable and no busy block is open."""
        if self._idle is None:
            self._idle = asyncio.Event()
        await self._settle()

    # -- internals ---------------------------------------------------------------
    def _push(self, t: float, fut: asyncio.Future | None, cb: Callable[[], Any] | None) -> _Entry:
        entry = _Entry(t, next(self._seq), fut, cb)
        heapq.heappush(self._heap, entry)
        if self._wake is not None:
            self._wake.set()
        return entry

    async def _settle(self) -> None:
        """Yield until no asyncio callback is runnable and no real I/O is in flight."""
        loop = asyncio.get_running_loop()
        ready = loop._ready  # type: ignore[attr-defined]  # CPython's run queue
        while True:
            await asyncio.sleep(0)
            if ready:
                continue
            if self._busy:
                assert self._idle is not None
                self._idle.clear()
                await self._idle.wait()
                continue
            # one more lap: callbacks scheduled by the I/O selector this round
            await asyncio.sleep(0)
            if not ready and not self._busy:
                return

    def _peek(self) -> _Entry | None:
        heap = self._heap
        while heap and (heap[0].cancelled or (heap[0].fut is not None and heap[0].fut.done())):
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _advanced(self, t_old: float) -> None:
        if self.advance_hooks and self._t > t_old:
            for hook in list(self.advance_hooks):
                hook(t_old, self._t)

    def _fire_due(self) -> None:
        t = self._t
        heap = self._heap
        while heap and heap[0].t <= t:
            e = heapq.heappop(heap)
            if e.cancelled:
                continue
            if e.fut is not None:
                if not e.fut.done():
                    e.fut.set_result(None)
                    self.events_fired += 1
            elif e.cb is not None:
                e.cb()
                self.events_fired += 1

    async def run(self, until: float | None = None, *, speed: float | None = None) -> float:
        """Advance time until ``until`` (or until :meth:`stop`); returns the final time.

        ``speed=None`` runs as fast as possible; a number is a real-time factor.

        With :attr:`sync` set, every advance is agreed with the other processes first:
        ``await sync.quiesce(self)`` returns when the whole system is settled (it may run this
        loop's work meanwhile), ``sync.earliest(t)`` folds in their next wake-ups, and
        ``sync.advanced(t)`` is told the new time before this clock fires its due events.
        """
        self._idle = asyncio.Event()
        self._wake = asyncio.Event()
        self._stop = False
        wall0, sim0 = time.monotonic(), self._t
        try:
            while True:
                await self._settle()
                if self._stop:
                    break
                sync = self.sync
                if sync is not None:
                    await sync.quiesce(self)
                    if self._stop:
                        break
                nxt = self._peek()
                target = nxt.t if nxt is not None else None
                if sync is not None:
                    target = sync.earliest(target)
                if until is not None and (target is None or target > until):
                    target = until
                if target is None:
                    if speed is None:
                        break  # nothing will ever happen again
                    target = self._t + 0.05 * speed
                if speed is not None:
                    # pace against the wall clock; wake early if something new is scheduled
                    loop = asyncio.get_running_loop()
                    while True:
                        paced = sim0 + (time.monotonic() - wall0) * speed
                        t_old = self._t
                        self._t = max(self._t, min(target, paced))
                        self._advanced(t_old)
                        if self._t >= target or self._stop:
                            break
                        self._wake.clear()
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), timeout=min((target - self._t) / speed, 0.05))
                        nxt = self._peek()
                        if nxt is not None and nxt.t < target:
                            target = max(nxt.t, self._t)
                        if loop._ready:  # type: ignore[attr-defined]  # outside work (HMI, network): serve it now
                            target = self._t
                            break
                    if self._stop:
                        break
                t_old = self._t
                self._t = max(self._t, target)
                self._advanced(t_old)
                if sync is not None:
                    sync.advanced(self._t)
                self._fire_due()
                if until is not None and self._t >= until:
                    await self._settle()
                    break
        finally:
            self._wake = None
        return self._t
