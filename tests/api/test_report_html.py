"""``axcell report RUN_DIR``: a self-contained HTML report whose OEE adds up from the store's records."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from cell.cli import main
from cell.config import load_cell
from cell.report_html import load_run, oee_until
from cell.session import RunOptions, run_session

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def test_batch_run_writes_report_json_and_html_report_adds_up(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = load_cell(ROOT / "launch/packaging_cell.yaml")
    run_dir = tmp_path / "run"
    asyncio.run(run_session(cfg, RunOptions(duration=150, seed=1, quiet=True, run_dir=run_dir)))
    rep = json.loads((run_dir / "report.json").read_text())
    for k in ("availability", "performance", "quality", "oee"):
        assert k in rep["oee"]
    assert rep["store"]["counts"]["packed"] == rep["parts"]["packed"]

    assert main(["report", str(run_dir)]) == 0
    out = run_dir / "report.html"
    assert str(out) in capsys.readouterr().out
    text = out.read_text()
    assert text.count("<svg") >= 5  # throughput, OEE, histogram, Pareto, timeline
    assert not re.search(r"<script|<link|https?://", text), "the report must be self-contained"
    for title in ("Throughput and OEE over time", "Cycle time", "Rejects by defect", "State timeline"):
        assert title in text
    assert "Case stations" not in text  # one case station: no per-station rows (tests/test_case_stations.py)
    assert "cases_by_station" not in rep["store"]  # nor per-station store figures in report.json

    data = load_run(run_dir)
    o = oee_until(data, data["end"])
    assert o.processed == rep["parts"]["packed"] + rep["parts"]["rejected"] + rep["parts"]["missed"]
    assert abs(o.oee - rep["oee"]["oee"]) < 1e-6  # the same tracker, replayed from the store
    assert abs(o.oee - o.good / (o.design_speed_ppm * o.planned_s / 60.0)) < 1e-9
    assert f"{o.oee * 100:.1f}%" in text


def test_report_of_a_directory_without_store_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "no traceability store" in capsys.readouterr().err
