"""The README's demo command, determinism, and reports that add up."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cell.batch import run_batch
from cell.runtime import Cell

REPO = Path(__file__).resolve().parents[1]


def readme_demo_command() -> list[str]:
    """The `axcell run ...` line the Makefile's demo target runs (the README points at it)."""
    make = (REPO / "Makefile").read_text()
    m = re.search(r"^demo:.*\n\t\$\(BIN\)/(axcell run [^\n]+)", make, re.M)
    assert m, "Makefile demo target not found"
    return m.group(1).split()


def check_report_adds_up(report: dict) -> None:
    p = report["parts"]
    assert p["arrived"] == p["packed"] + p["rejected"] + p["missed"] + p["on_belt_at_end"]
    assert p["arrived"] > 0 and p["packed"] > 0
    assert p["inspected"] <= p["arrived"]
    truth = report.get("sim_truth")
    if truth:
        assert truth.get("case", 0) == p["packed"], "every packed record is a tray in a case in the world"
        assert report["inspection"]["passed_eye"] == p["arrived"], "every tray past the eye has a record"
        assert report["inspection"]["unmatched_records"] == 0
    o = report["oee"]
    assert o["oee"] == pytest.approx(o["availability"] * o["performance"] * o["quality"], abs=1e-5)
    for k in ("availability", "quality"):
        assert 0.0 <= o[k] <= 1.0


def test_readme_demo_command_runs_and_every_part_has_one_outcome(tmp_path: Path):
    cmd = readme_demo_command()
    assert cmd[:3] == ["axcell", "run", "launch/packaging_cell.yaml"]
    report_path = tmp_path / "demo.json"
    args = [a for a in cmd[1:]]
    i = args.index("--report")
    args[i + 1] = str(report_path)
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "cell.cli", *args, "--run-dir", str(tmp_path / "run")], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "parts arrived" in proc.stdout and "OEE" in proc.stdout
    report = json.loads(report_path.read_text())
    for key in ("cell", "seed", "sim_seconds", "wall_seconds", "throughput_ppm"):
        assert key in report
    for key in ("arrived", "inspected", "good", "rejected", "packed", "missed"):
        assert key in report["parts"]
    for key in ("true_positive", "false_positive", "false_negative", "true_negative"):
        assert key in report["inspection"]
    assert report["cases"]["completed"] >= 1
    assert report["cycle_time_s"]["mean"] > 0 and report["cycle_time_s"]["p95"] >= report["cycle_time_s"]["mean"] * 0.5
    check_report_adds_up(report)


def _batch(cfg, inspectors, seed: int, duration: float = 240.0) -> dict:
    async def main():
        cell = Cell(cfg, seed=seed, inspectors=inspectors)
        try:
            return await run_batch(cell, duration)
        finally:
            await cell.close()

    return asyncio.run(main())


def test_same_seed_same_report_different_seed_different_report(demo_config, demo_inspectors):
    a = _batch(demo_config, demo_inspectors, seed=7)
    b = _batch(demo_config, demo_inspectors, seed=7)
    c = _batch(demo_config, demo_inspectors, seed=8)
    for r in (a, b, c):
        r.pop("wall_seconds")
        check_report_adds_up(r)
    assert json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    assert a["parts"] != c["parts"] or a["inspection"] != c["inspection"]


@pytest.mark.parametrize("seed,duration", [(3, 1800.0), (1, 3600.0)])   # (1, 3600): the foundation issue's run
def test_inspection_catches_the_sims_defects(demo_config, demo_inspectors, seed, duration):
    r = _batch(demo_config, demo_inspectors, seed=seed, duration=duration)
    ins = r["inspection"]
    assert ins["true_positive"] + ins["false_negative"] >= 20, "too few defects to judge"
    assert ins["recall"] > 0.9, ins
    assert ins["precision"] > 0.9, ins


def test_jam_holds_the_cell_and_the_operator_recovers(demo_config, demo_inspectors):
    cfg = demo_config.model_copy(deep=True)
    sealer = cfg.device("sealer")
    if sealer.kind == "sim.machine":
        sealer.options = {**sealer.options, "jam_probability": 0.5}
    else:  # the OPC UA sealer in its sim profile
        sealer.options = {**sealer.options, "sim": {**sealer.options.get("sim", {}), "jam_probability": 0.5}}
    r = _batch(cfg, demo_inspectors, seed=2, duration=600.0)
    assert r["states"].get("Held", 0) > 0
    assert any("jam" in a["message"] for a in r["alarms"])
    assert r["oee"]["availability"] < 1.0
    check_report_adds_up(r)
