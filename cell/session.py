"""One ``axcell run``: prepare, start the transports asked for, run, report, clean up."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CellConfig


@dataclass
class RunOptions:
    duration: float | None = None
    seed: int | None = None
    speed: float | None = None
    report: Path | None = None
    transport: str = "local"
    hmi_port: int | None = None
    opcua_port: int | None = None
    record: Path | None = None
    quiet: bool = False
    run_dir: Path | None = None
    processes: bool = False


def default_run_dir(cfg: CellConfig) -> Path:
    return Path("runs") / f"{cfg.cell.name}-{time.strftime('%Y%m%d-%H%M%S')}"


async def run_session(cfg: CellConfig, opts: RunOptions) -> dict[str, Any] | None:
    from .batch import progress_bar, run_batch
    from .runtime import Cell
    from .vision_models import prepare_inspectors

    say = (lambda msg: None) if opts.quiet else (lambda msg: print(msg, file=sys.stderr))
    inspectors = prepare_inspectors(cfg, log=say)
    cell = Cell(cfg, seed=opts.seed, run_dir=opts.run_dir, inspectors=inspectors)
    try:
        duration = opts.duration if opts.duration is not None else 8 * 3600.0
        report = await run_batch(cell, duration, speed=opts.speed,
                                 progress=None if opts.quiet else progress_bar())
    finally:
        await cell.close()
    if opts.report is not None:
        opts.report.parent.mkdir(parents=True, exist_ok=True)
        opts.report.write_text(json.dumps(report, indent=2, default=str))
    return report
