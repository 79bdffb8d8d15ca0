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
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["good", "defective", "none"]


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

    def next_pickable(self) -> list[TrackedPart]:
        return [p for p in self.queue if p.verdict == "good" and not p.claimed and p.picked_at is None]

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

    def remove(self, part: TrackedPart) -> None:
        if part in self.queue:
            self.queue.remove(part)

