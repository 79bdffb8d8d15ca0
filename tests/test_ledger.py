"""The ledger's running counts equal a count over every record, whatever order the events come in."""

from __future__ import annotations

import random

import pytest

from cell.ledger import Ledger
from skills.facts import TrackedPart


def _part(pid: str, t: float) -> TrackedPart:
    return TrackedPart(id=pid, arrival=t, encoder=0.0, x=0.0, y=0.0)


@pytest.mark.parametrize("seed", range(20))
def test_counts_match_a_full_scan_after_every_event(seed):
    rng = random.Random(seed)
    now = [0.0]
    led = Ledger(lambda: now[0])
    parts: dict[str, TrackedPart] = {}
    for step in range(300):
        now[0] += 0.1
        action = rng.random()
        if action < 0.25 or not parts:
            pid = f"P{rng.randint(0, 60)}"  # ids may come again (a restarted numbering)
            parts[pid] = p = _part(pid, now[0])
            led.on_event("part_arrived", {"part": p})
        else:
            pid = rng.choice(sorted(parts))
            p, rec = parts[pid], led.records[pid]
            if action < 0.55:  # judged, sometimes after the record was closed
                p.verdict = rng.choice(["good", "defective", "none"])
                p.inspected_at = now[0]
                led.on_event("part_inspected", {"part": p})
            elif action < 0.7 and rec.outcome is None:
                p.picked_at = now[0]
                led.on_event("part_picked", {"part": p})
            elif action < 0.8 and rec.outcome is None:
                p.placed_at, p.case_id, p.slot, p.station = now[0], 1, 0, "case"
                led.on_event("part_placed", {"part": p})
            elif rec.outcome is None:
                led.close(pid, rng.choice(["rejected", "missed"]))
            else:
                with pytest.raises(RuntimeError):
                    led.close(pid, "missed")
        assert led.counts() == led.counts_by_scan(), step
        assert {r.id for r in led.open_records()} == {r.id for r in led.records.values() if r.outcome is None}
