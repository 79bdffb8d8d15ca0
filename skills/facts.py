"""Shared facts the skills of one cell agree on (a typed blackboard).

The inspection skill appends :class:`TrackedPart` entries, the pick skill
claims them, the place skill fills case slots, and the cell's tracker closes
parts that leave the belt.  Positions are in the cell frame, tied to the
conveyor encoder: a part captured at ``x`` with encoder ``encoder`` is at
``x + flow * (position() - encoder)`` later, ``flow`` being +1 for a belt that
runs towards +x and -1 for one that runs towards -x.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["good", "defective", "none"]
log = logging.getLogger(__name__)


@dataclass
class TrackedPart:
    id: str
    arrival: float
    encoder: float
    variant: str | None = None
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    verdict: Verdict = "none"
    defects: list[str] = field(default_factory=list)
    score: float = 0.0
    inspected_at: float | None = None
    claimed: bool = False
    picked_at: float | None = None
    placed_at: float | None = None
    case_id: int | None = None
    slot: int | None = None
    station: str | None = None
    """The case station the part was placed at."""
    flow: float = 1.0
    """+1: the belt carries the part towards +x; -1: towards -x."""
    meta: dict[str, Any] = field(default_factory=dict)

    def x_at(self, encoder: float) -> float:
        return self.x + self.flow * (encoder - self.encoder)


@dataclass
class CellFacts:
    """Mutable cell state shared by skills (single asyncio thread: no locks needed)."""

    queue: list[TrackedPart] = field(default_factory=list)
    """Parts seen by inspection and still on the belt, oldest first."""
    case_stations: list[str] = field(default_factory=list)
    """The cell's case stations (with a slot pattern), in file order.  With two or more, each has a case
    of its own (fill and id per station); with one or none, every station name means the one case."""
    case_ids: dict[str, int] = field(default_factory=dict)
    case_fills: dict[str, int] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    _seq: int = 0
    _waiters: list[asyncio.Future] = field(default_factory=list, repr=False)
    _judging: deque[tuple[TrackedPart, asyncio.Future, Callable[[asyncio.Future], None]]] = field(
        default_factory=deque, repr=False)
    _pending_ids: set[str] = field(default_factory=set, repr=False)
    _after: dict[str, list[Callable[[], None]]] = field(default_factory=dict, repr=False)
    eager_verdicts: bool = False
    """Apply each verdict as soon as it has come (and those before it), not only where it is needed:
    for a cell that runs in real time (real devices, or a simulation paced for an HMI), where an
    operator expects to see a judgement when it is made. A simulation at full speed keeps it False,
    so that what happens at a simulated instant never depends on how fast the host was."""
    settle_waits: int = 0
    """How often a needed verdict was not ready yet (the clock held for it), and the wall time it took."""
    settle_wait_s: float = 0.0

    # -- the cases, per station ---------------------------------------------------------------
    def _key(self, station: str | None) -> str:
        if len(self.case_stations) <= 1:
            return ""
        return station if station is not None else self.case_stations[0]

    def fill(self, station: str | None = None) -> int:
        """Parts in the case in progress at ``station``."""
        return self.case_fills.get(self._key(station), 0)

    def current_case(self, station: str | None = None) -> int:
        """Id of the case in progress at ``station`` (counted per station from 1)."""
        return self.case_ids.get(self._key(station), 1)

    def add_to_case(self, station: str | None = None) -> tuple[int, int]:
        """Take the next slot of ``station``'s case: (case id, slot)."""
        k = self._key(station)
        slot = self.case_fills.get(k, 0)
        self.case_fills[k] = slot + 1
        return self.current_case(station), slot

    def close_case(self, station: str | None = None) -> tuple[int, int]:
        """The case at ``station`` is done and an empty one is in place: (closed case id, its fill)."""
        k = self._key(station)
        closed = (self.current_case(station), self.fill(station))
        self.case_ids[k] = closed[0] + 1
        self.case_fills[k] = 0
        return closed

    @property
    def case_fill(self) -> int:
        """Fill of the (first) case station's case: the single-case view."""
        return self.fill(None)

    @case_fill.setter
    def case_fill(self, v: int) -> None:
        self.case_fills[self._key(None)] = int(v)

    @property
    def case_id(self) -> int:
        return self.current_case(None)

    @case_id.setter
    def case_id(self, v: int) -> None:
        self.case_ids[self._key(None)] = int(v)

    def new_part_id(self) -> str:
        self._seq += 1
        return f"P{self._seq:06d}"

    def next_pickable(self, *, with_pending: bool = False) -> list[TrackedPart]:
        """Good parts not claimed nor picked, oldest first; ``with_pending``: also those whose verdict
        is still pending (see :meth:`settle`)."""
        pend = self._pending_ids if with_pending else ()
        return [p for p in self.queue
                if (p.verdict == "good" or p.id in pend) and not p.claimed and p.picked_at is None]

    def announce_part(self, part: TrackedPart) -> None:
        """Mark ``part`` (already queued at its trigger) as judged, and wake the skills waiting for one."""
        if part not in self.queue:
            self.queue.append(part)
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_new_part(self) -> None:
        """Resolve at the next :meth:`announce_part`."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    # -- verdicts still being computed (an inspection worker) -------------------------------------
    # A part can be queued (and announced) before its verdict is known: the inspection runs
    # elsewhere while the cell goes on. Its result is applied only by settle(), in capture order
    # and at the simulated instants where a skill or the tracker needs it; the clock is held while
    # settle() waits. So a run gives the same outcome whether a verdict came early or late in wall
    # time, and the same as judging in place.
    def judge_later(self, part: TrackedPart, result: asyncio.Future,
                    apply: Callable[[asyncio.Future], None]) -> None:
        """``part``'s verdict is ``result``; ``apply(result)`` writes it into the part when settled."""
        self._judging.append((part, result, apply))
        self._pending_ids.add(part.id)
        if self.eager_verdicts:
            result.add_done_callback(lambda _r: self._apply_ready())

    def _apply_ready(self) -> None:
        """Apply, in capture order, the verdicts at the head of the line that have come."""
        while self._judging and self._judging[0][1].done():
            self._apply_head()

    def _apply_head(self) -> None:
        part, result, apply = self._judging.popleft()
        self._pending_ids.discard(part.id)
        try:
            apply(result)
            for then in self._after.pop(part.id, ()):
                then()
        except Exception:  # noqa: BLE001 - one part's bookkeeping must not stop the others
            log.exception("applying the verdict of %s failed", part.id)

    def after_judged(self, part: TrackedPart, then: Callable[[], None]) -> None:
        """Call ``then()`` right after ``part``'s pending verdict is applied (at once if it is not pending)."""
        if part.id not in self._pending_ids:
            then()
            return
        self._after.setdefault(part.id, []).append(then)

    def is_pending(self, part: TrackedPart) -> bool:
        """True while ``part``'s verdict has not been applied."""
        return part.id in self._pending_ids

    @property
    def pending_count(self) -> int:
        return len(self._judging)

    async def settle(self, clock: Any, upto: TrackedPart | None = None) -> None:
        """Apply the pending verdicts in capture order, up to and including ``upto`` (None: all).

        Waiting for a verdict holds ``clock`` (``clock.busy()``), so simulated time stands still
        until it is applied. Safe to call from several tasks at once: each verdict is applied once.
        """
        while self._judging:
            if upto is not None and upto.id not in self._pending_ids:
                return
            result = self._judging[0][1]
            if not result.done():
                t0 = time.perf_counter()
                async with clock.busy():
                    await asyncio.wait((result,))
                self.settle_waits += 1
                self.settle_wait_s += time.perf_counter() - t0
                continue  # another task may have applied it meanwhile: look at the head again
            self._apply_head()

    def drop_pending(self) -> None:
        """Forget every verdict not yet applied (the cell is closing)."""
        for _part, result, _apply in self._judging:
            result.cancel()
        self._judging.clear()
        self._pending_ids.clear()
        self._after.clear()

    def remove(self, part: TrackedPart) -> None:
        if part in self.queue:
            self.queue.remove(part)

