"""Shutdown of a run is bounded: a device that never finishes closing cannot keep the store open."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from cell.config import in_process_twins

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_a_hanging_device_close_is_cut_off_and_the_store_and_report_are_still_written(tmp_path, monkeypatch, caplog,
                                                                                      demo_inspectors):
    from cell import session
    from cell.config import load_cell
    from cell.runtime import Cell

    del demo_inspectors  # fitted (and cached) once per test session: the run below loads them
    # keep this test to the shutdown path: the sealer as its in-process twin
    cfg = in_process_twins(load_cell(REPO / "launch/packaging_cell.yaml"))
    real_close = Cell.close
    closes: list[str] = []

    async def hanging_close(self) -> None:
        closes.append("called")
        await real_close(self)
        await asyncio.Event().wait()  # e.g. a device waiting on a clock that no longer runs

    monkeypatch.setattr(Cell, "close", hanging_close)
    monkeypatch.setattr(session, "CLOSE_TIMEOUT_S", 0.5)
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.ERROR, logger="axcell.session"):
        rep = asyncio.run(session.run_session(cfg, session.RunOptions(duration=30, seed=1, quiet=True,
                                                                      run_dir=run_dir)))
    assert closes == ["called"]
    assert any("closing the cell's devices took longer" in r.getMessage() for r in caplog.records)
    assert rep is not None and (run_dir / "report.json").exists()
    db = rep["store"]["path"]
    with sqlite3.connect(db) as con:  # closed cleanly: readable, every finished part recorded
        n = con.execute("select count(*) from parts").fetchone()[0]
    done = rep["parts"]["packed"] + rep["parts"]["rejected"] + rep["parts"]["missed"]
    assert n >= done > 0


@pytest.mark.timeout(30)
def test_ctrl_c_keeps_cancelling_a_run_that_swallowed_it_then_lets_it_close(monkeypatch):
    """Python 3.11's asyncio.wait_for can swallow a cancellation; Ctrl-C must still end the run, and
    never cut its closing short."""
    import os
    import signal

    from cell import session

    seen: dict = {"swallowed": 0, "closed": False, "cancels_while_closing": 0}

    async def fake_session(cfg, opts):
        asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGINT)
        try:
            while True:
                try:
                    await asyncio.sleep(0.02)
                except asyncio.CancelledError:
                    seen["swallowed"] += 1
                    if seen["swallowed"] == 1:
                        continue  # lost, as wait_for may lose it
                    raise
        finally:
            opts.interrupt.closing = True
            t_end = asyncio.get_running_loop().time() + 0.8  # closing outlasts the re-cancel period
            while asyncio.get_running_loop().time() < t_end:
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    seen["cancels_while_closing"] += 1
            seen["closed"] = True

    monkeypatch.setattr(session, "run_session", fake_session)
    with pytest.raises(KeyboardInterrupt):
        session.run_interruptibly(None, session.RunOptions())
    assert seen == {"swallowed": 2, "closed": True, "cancels_while_closing": 0}
    assert signal.getsignal(signal.SIGINT) is not None
