"""Part records: every part that tripped the photo-eye gets exactly one outcome.

The ledger listens to skill events (arrived, inspected, picked, placed) and
to the tracker (parts that left the belt), and closes each record once, as
``packed``, ``rejected`` or ``missed``.  Closing twice is a bug and raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from skills.facts import TrackedPart

Outcome = Literal["packed", "rejected", "missed"]


@dataclass
class PartRecord:
    id: str
    arrival: float
    variant: str | None = None
    verdict: str = "none"
    defects: list[str] = field(default_factory=list)
    score: float = 0.0
    inspect_ms: float | None = None
    inspected_at: float | None = None
    pick_time: float | None = None
    place_time: float | None = None
    case_id: int | None = None
    slot: int | None = None
    outcome: Outcome | None = None
    closed_at: float | None = None
    reason: str = ""
    telemetry: dict[str, float] = field(default_factory=dict)
    truth_defects: list[str] | None = None
    image_path: str | None = None
    image_sha256: str | None = None
    station: str | None = None
    """The case station the part was packed at."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TALLY = ("arrived", "inspected", "good", "defective", "rejected", "packed", "missed", "open")


class Ledger:
    """In-memory index of part records; the store persists what it reports."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.records: dict[str, PartRecord] = {}
        self.listeners: list[Callable[[str, PartRecord], None]] = []
        self.cases_completed = 0
        self.cases_by_station: dict[str, int] = {}
        """Completed cases per case station (their sum is ``cases_completed``)."""
        self.latest_telemetry: dict[str, float] = {}
        self._open: dict[str, PartRecord] = {}  # records without an outcome yet
        self._closed_tally: dict[str, int] = dict.fromkeys(_TALLY, 0)  # what closed records add to counts()

    @staticmethod
    def _contribution(rec: PartRecord) -> tuple[str, ...]:
        keys = ["arrived"]
        if rec.inspected_at is not None:
            keys.append("inspected")
        if rec.verdict in ("good", "defective"):
            keys.append(rec.verdict)
        if rec.outcome is None:
            keys.append("open")
        elif rec.outcome in ("rejected", "packed", "missed"):
            keys.append(rec.outcome)
        return tuple(keys)

    def _tally(self, rec: PartRecord, sign: int) -> None:
        for k in self._contribution(rec):
            self._closed_tally[k] += sign

    def _notify(self, what: str, rec: PartRecord) -> None:
        for cb in list(self.listeners):
            cb(what, rec)

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        part: TrackedPart | None = data.get("part")
        if kind == "case_completed":
            self.cases_completed += 1
            station = data.get("station")
            if station is not None:
                self.cases_by_station[station] = self.cases_by_station.get(station, 0) + 1
            self.latest_telemetry = dict(data.get("telemetry") or {})
            case_id = data.get("case_id")
            for rec in self.records.values():  # the seal that closed their case
                if (rec.case_id == case_id and rec.outcome == "packed"
                        and (station is None or rec.station is None or rec.station == station)):
                    rec.telemetry = dict(self.latest_telemetry)
                    self._notify("telemetry", rec)
            return
        if part is None:
            return
        rec = self.records.get(part.id)
        if kind == "part_arrived":
            rec = PartRecord(id=part.id, arrival=part.arrival)
            old = self.records.get(part.id)
            if old is not None and old.outcome is not None:  # an id seen again: its old record is replaced
                self._tally(old, -1)
            self.records[part.id] = rec
            self._open[part.id] = rec
            self._notify("arrived", rec)
            return
        if rec is None:
            return
        if kind == "part_inspected":
            closed = rec.outcome is not None
            if closed:  # judged after it was closed (e.g. missed meanwhile): keep the tally true
                self._tally(rec, -1)
            rec.variant, rec.verdict, rec.defects = part.variant, part.verdict, list(part.defects)
            rec.score, rec.inspected_at = part.score, part.inspected_at
            if closed:
                self._tally(rec, +1)
            rec.inspect_ms = part.meta.get("inspect_ms")
            self._notify("inspected", rec)
        elif kind == "part_picked":
            rec.pick_time = part.picked_at
            self._notify("picked", rec)
        elif kind == "part_placed":
            rec.place_time, rec.case_id, rec.slot = part.placed_at, part.case_id, part.slot
            rec.station = part.station
            rec.telemetry = dict(self.latest_telemetry)
            self.close(rec.id, "packed", "placed in case")

    def close(self, part_id: str, outcome: Outcome, reason: str = "") -> PartRecord:
        rec = self.records[part_id]
        if rec.outcome is not None:
            raise RuntimeError(f"part {part_id} already closed as {rec.outcome}; refusing {outcome}")
        rec.outcome, rec.closed_at, rec.reason = outcome, self.clock(), reason
        self._open.pop(part_id, None)
        self._tally(rec, +1)
        if not rec.telemetry:
            rec.telemetry = dict(self.latest_telemetry)
        self._notify("closed", rec)
        return rec

    def open_records(self) -> list[PartRecord]:
        return [r for r in self._open.values() if r.outcome is None]

    def counts(self) -> dict[str, int]:
        """Part counts: the closed records' running tally plus a pass over the open ones (a few on the
        belt), so the cost does not grow with the run (the ROS cell node publishes these often)."""
        out = dict(self._closed_tally)
        for r in self._open.values():
            for k in self._contribution(r):
                out[k] += 1
        return out

    def counts_by_scan(self) -> dict[str, int]:
        """:meth:`counts` from one pass over every record (the reference the tally is tested against)."""
        recs = list(self.records.values())
        inspected = 0
        verdicts = {"good": 0, "defective": 0}
        outcomes: dict[Any, int] = {"rejected": 0, "packed": 0, "missed": 0, None: 0}
        for r in recs:
            if r.inspected_at is not None:
                inspected += 1
            v = r.verdict
            if v in verdicts:
                verdicts[v] += 1
            o = r.outcome
            if o in outcomes:
                outcomes[o] += 1
        return {
            "arrived": len(recs),
            "inspected": inspected,
            "good": verdicts["good"],
            "defective": verdicts["defective"],
            "rejected": outcomes["rejected"],
            "packed": outcomes["packed"],
            "missed": outcomes["missed"],
            "open": outcomes[None],
        }
