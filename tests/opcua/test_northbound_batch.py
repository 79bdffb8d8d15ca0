"""A batch run with the northbound server: the PackML counters at the end equal the report."""

from __future__ import annotations

import pytest
from asyncua import Client  # noqa: F401

from cell.batch import run_batch
from cell.config import OpcuaSpec
from cell.opcua import serve_northbound
from cell.packml import State
from cell.runtime import Cell

from .test_northbound import client, machines

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


async def _batch_then_admin(cell: Cell, seconds: float) -> tuple[dict, dict]:
    """Run ``cell`` as a batch with the northbound server, then read its Admin counters and cumulative state
    times: ``(report, {variable name: value})``."""
    nb = await serve_northbound(cell, OpcuaSpec(allow_anonymous_read=True), 0)
    try:
        report = await run_batch(cell, seconds)
        nb.refresh()
        async with client(nb) as c:
            await c.load_data_type_definitions()
            P, u, *_ = await machines(c)
            admin = await u.get_child(f"{P}:Admin")
            values = {n: await (await admin.get_child(f"{P}:{n}")).read_value()
                      for n in ("ProdProcessedCount", "ProdDefectiveCount", "ProdConsumedCount", "StateCumulativeTime")}
    finally:
        await nb.stop()
        await cell.close()
    return report, values


async def test_batch_counters_equal_the_report(demo_config, demo_inspectors):
    report, values = await _batch_then_admin(Cell(demo_config, seed=3, inspectors=demo_inspectors), 150.0)
    cum = values.pop("StateCumulativeTime")
    arrays = values
    vals = {n: a[0] for n, a in arrays.items()}
    p = report["parts"]
    assert p["packed"] > 0
    assert vals["ProdProcessedCount"].AccCount == p["packed"] + p["rejected"] + p["missed"] == report["oee"]["processed"]
    assert vals["ProdDefectiveCount"].AccCount == p["rejected"] + p["missed"]
    assert vals["ProdProcessedCount"].AccCount - vals["ProdDefectiveCount"].AccCount == p["packed"]
    assert vals["ProdConsumedCount"].AccCount == p["arrived"]
    assert vals["ProdProcessedCount"].Count == vals["ProdProcessedCount"].AccCount  # one Reset at the start
    assert cum[1][State.EXECUTE] == int(report["states"]["Execute"])
    assert [len(a) for a in arrays.values()] == [1, 1, 1]  # one case station: no per-station entries


async def test_two_case_stations_add_their_cases_to_prod_processed_count():
    from pathlib import Path

    from cell.config import load_cell
    from cell.vision_models import prepare_inspectors

    cfg = load_cell(Path(__file__).resolve().parents[1] / "cells" / "two_case_cell.yaml")
    report, values = await _batch_then_admin(Cell(cfg, seed=1, inspectors=prepare_inspectors(cfg)), 150.0)
    processed = values["ProdProcessedCount"]
    others = [values[n] for n in ("ProdDefectiveCount", "ProdConsumedCount")]
    by = report["cases"]["by_station"]
    assert len(by) == 2 and all(n >= 1 for n in by.values()), by
    p = report["parts"]
    primary, *stations = processed
    assert (primary.ID, primary.Name, primary.Unit) == (0, "primary", "parts")
    assert primary.AccCount == p["packed"] + p["rejected"] + p["missed"]  # index 0 is still the parts
    assert [(e.ID, e.Name, e.Unit) for e in stations] == [(i, n, "cases") for i, n in enumerate(by, start=1)]
    assert {e.Name: e.AccCount for e in stations} == by
    assert {e.Name: e.Count for e in stations} == by  # one Reset at the start
    assert [len(a) for a in others] == [1, 1]
