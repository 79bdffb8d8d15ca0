"""``axcell replay RUN.mcap``: print a recorded run's part events and final counts again."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="print the part events and final counts of a recorded run (MCAP)")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="one JSON object per part event, then the counts")
    p.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from ..cliargs import UserError
    from .record import BagError, read_bag

    if not args.file.is_file():
        raise UserError(f"no such file: {args.file}" if not args.file.exists() else f"{args.file}: not a file", 2)
    last_status = None
    n = 0
    cases: dict[str, int] | None = None
    try:
        for topic, t, msg in read_bag(args.file):
            last_status = _show(args, topic, t, msg, last_status)
            n += topic.endswith("/parts")
            if topic.endswith("/cases"):  # completed cases per case station
                cases = {kv.key: int(kv.value) for kv in msg.values if kv.key != "total"}
    except BagError as e:
        if not e.messages:
            raise UserError(f"{args.file}: {e}", 2) from None
        print(f"axcell: warning: {args.file}: {e}", file=sys.stderr)  # what was read is shown above
    return _final(args, last_status, n, cases)


def _show(args: argparse.Namespace, topic: str, t: float, msg: Any, last_status: Any) -> Any:
    """Print one part event (or remember the latest cell status); returns the latest status."""
    if topic.endswith("/parts"):
        ev = {"t": round(t, 3), "part": msg.part_id, "variant": msg.variant, "verdict": msg.verdict,
              "outcome": msg.outcome, "defects": list(msg.defects), "case": msg.case_id, "slot": msg.slot}
        station = getattr(msg, "station", "")  # absent in recordings made before it was added
        if station:
            ev["station"] = station
        if args.json:
            print(json.dumps(ev))
        else:
            at = f" at {station}" if station else ""
            extra = f" case {msg.case_id} slot {msg.slot}{at}" if msg.outcome == "packed" else (
                f" ({', '.join(msg.defects)})" if msg.defects else "")
            print(f"{t:9.2f} s  {msg.part_id:<10} {msg.variant:<14} {msg.verdict:<10} {msg.outcome}{extra}")
    elif topic.endswith("/status"):
        last_status = msg
    return last_status


def _final(args: argparse.Namespace, last_status: Any, n: int, cases: dict[str, int] | None = None) -> int:
    if last_status is None:
        print(f"{args.file}: no cell status recorded ({n} part events)")
        return 1
    counts = {k: int(getattr(last_status, k)) for k in
              ("arrived", "inspected", "good", "rejected", "packed", "missed", "cases_completed")}
    counts["state"] = last_status.state
    if cases is not None and len(cases) < 2:
        cases = None  # one case station: its count is cases_completed (output as before)
    if args.json:
        print(json.dumps({"final": counts, "part_events": n} | ({"cases_by_station": cases} if cases else {})))
    else:
        print(f"final: {n} part events; " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if cases:
            print("cases by station: " + ", ".join(f"{k} {v}" for k, v in cases.items()))
    return 0
