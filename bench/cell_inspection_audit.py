"""Audit the cell's inspector against the simulator's ground truth, tray by tray.

    python bench/cell_inspection_audit.py [--duration 1800] [--seed 3] [--out build/audit]

Runs the demo cell in-process and writes, for every wrong verdict (false
reject or escape), the crop the inspector saw (PNG, with the overlay) and a
JSON line with the truth, the verdict, the named defects and the score — the
evidence needed to improve the inspector without guessing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cell.batch import run_batch  # noqa: E402
from cell.config import load_cell  # noqa: E402
from cell.runtime import Cell  # noqa: E402
from cell.vision_models import prepare_inspectors  # noqa: E402
from skills.vision import draw_overlay  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cell", default=str(REPO / "launch" / "packaging_cell.yaml"))
    ap.add_argument("--duration", type=float, default=1800)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "audit")
    args = ap.parse_args()
    cfg = load_cell(args.cell)
    inspectors = prepare_inspectors(cfg)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []

    async def run() -> dict:
        cell = Cell(cfg, seed=args.seed, inspectors=inspectors)
        truth_by_eye = {}

        def on_event(kind: str, data: dict) -> None:
            if kind != "part_inspected":
                return
            part = data["part"]
            world = cell.world
            if not truth_by_eye:
                pass
            truth = next((p for p in world.parts.values() if p.eye_time == part.arrival), None)
            if truth is None:
                return
            bad_truth = bool(truth.defects)
            said_bad = part.verdict != "good"
            if bad_truth == said_bad:
                return
            crop, _, _ = part.meta.get("crop", (None, 0, 0))
            res = part.meta.get("result")
            name = f"{part.id}_{'FP' if said_bad else 'FN'}_{'-'.join(truth.defects) or 'good'}"
            if crop is not None and res is not None:
                cv2.imwrite(str(args.out / f"{name}.png"), draw_overlay(crop, res))
                cv2.imwrite(str(args.out / f"{name}_raw.png"), crop)
            rows.append({"part": part.id, "variant_truth": truth.variant.name, "variant_seen": part.variant,
                         "truth": list(truth.defects), "verdict": part.verdict, "defects": part.defects,
                         "score": part.score, "threshold": getattr(res, "threshold", None),
                         "measurements": getattr(res, "measurements", {}), "file": name})

        cell.listeners.append(on_event)
        try:
            return await run_batch(cell, args.duration)
        finally:
            await cell.close()

    report = asyncio.run(run())
    (args.out / "errors.jsonl").write_text("".join(json.dumps(r, default=float) + "\n" for r in rows))
    ins = report["inspection"]
    print(f"TP {ins['true_positive']} FP {ins['false_positive']} FN {ins['false_negative']} TN {ins['true_negative']} "
          f"precision {ins['precision']} recall {ins['recall']}; {len(rows)} errors written to {args.out}")
    for r in rows:
        print(f"  {r['file']:<40} seen as {r['variant_seen']:<14} defects {r['defects']} score {r['score']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
