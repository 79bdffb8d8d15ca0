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


async def test_batch_counters_equal_the_report(demo_config, demo_inspectors):
    cell = Cell(demo_config, seed=3, inspectors=demo_inspectors)
    nb = await serve_northbound(cell, OpcuaSpec(allow_anonymous_read=True), 0)
    try:
        report = await run_batch(cell, 150.0)
        nb.refresh()
        async with client(nb) as c:
            await c.load_data_type_definitions()
            P, u, *_ = await machines(c)
            admin = await u.get_child(f"{P}:Admin")
            vals = {n: (await (await admin.get_child(f"{P}:{n}")).read_value())[0]
                    for n in ("ProdProcessedCount", "ProdDefectiveCount", "ProdConsumedCount")}
            cum = await (await admin.get_child(f"{P}:StateCumulativeTime")).read_value()
    finally:
        await nb.stop()
        await cell.close()
    p = report["parts"]
    assert p["packed"] > 0
    assert vals["ProdProcessedCount"].AccCount == p["packed"] + p["rejected"] + p["missed"] == report["oee"]["processed"]
    assert vals["ProdDefectiveCount"].AccCount == p["rejected"] + p["missed"]
    assert vals["ProdProcessedCount"].AccCount - vals["ProdDefectiveCount"].AccCount == p["packed"]
    assert vals["ProdConsumedCount"].AccCount == p["arrived"]
    assert vals["ProdProcessedCount"].Count == vals["ProdProcessedCount"].AccCount  # one Reset at the start
    assert cum[1][State.EXECUTE] == int(report["states"]["Execute"])
