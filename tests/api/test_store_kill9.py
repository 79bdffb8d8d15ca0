"""SIGKILL the cell while parts flow; reopen the store: nothing acknowledged is lost or doubled.

The child runs the demo cell flat out with the store's ack log on: after each
commit the writer appends the committed part records to a side file, so the
side file lists exactly what had been acknowledged.  While it runs, this test
reads the AccCount counters through its own connection.  After the kill:
integrity_check ok, no duplicate (run, part), every acknowledged record
present with its acknowledged outcome, image hashes match their files, the
counters equal the records and are not below anything read before the kill.
A second run on the same store keeps counting upwards.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cell.store import verify

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(240)

CHILD = """
import asyncio, sys
from pathlib import Path
from cell.config import load_cell
from cell.session import RunOptions, run_session
cfg = load_cell("launch/packaging_cell.yaml")
cfg = cfg.model_copy(update={"store": cfg.store.model_copy(update={"sample_good_images": 0.2})})
asyncio.run(run_session(cfg, RunOptions(duration=float(sys.argv[3]), seed=int(sys.argv[4]), quiet=True,
                                        run_dir=Path(sys.argv[1]), store_ack_log=Path(sys.argv[2]))))
"""


def _acked(path: Path) -> tuple[dict[str, str], int]:
    """part id -> last acknowledged outcome ('-' while open); and the number of lines."""
    out: dict[str, str] = {}
    n = 0
    if not path.exists():
        return out, 0
    for line in path.read_text().splitlines():
        f = line.split("\t")
        if f[0] == "part" and len(f) == 3:  # a torn last line (killed mid-write) has fewer fields
            n += 1
            if out.get(f[1], "-") == "-":
                out[f[1]] = f[2]
    return out, n


def _counters(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {r[0]: r[1] for r in conn.execute("SELECT name, value FROM counters")}
    finally:
        conn.close()


def _run_child(run_dir: Path, ack: Path, duration: float, seed: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir), str(ack), str(duration), str(seed)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkill_while_parts_flow_loses_nothing_acknowledged(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ack = tmp_path / "acked.tsv"
    db = run_dir / "cell.sqlite"
    proc = _run_child(run_dir, ack, 1e6, 1)
    seen_max: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail("child ended early: " + proc.stderr.read().decode()[-2000:])  # type: ignore[union-attr]
            acked, _ = _acked(ack)
            if db.exists():
                try:
                    for k, v in _counters(db).items():
                        seen_max[k] = max(seen_max.get(k, 0), v)
                except sqlite3.Error:
                    pass
            if sum(1 for o in acked.values() if o != "-") >= 40:
                break
            time.sleep(0.05)
        else:
            pytest.fail("parts did not flow")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    acked, lines = _acked(ack)
    assert lines > 0
    v = verify(db)
    assert v["integrity"] == "ok"
    assert v["duplicates"] == 0
    assert v["bad_hash"] == [] and v["missing_images"] == []
    assert v["counters_match"], v["acc"]
    conn = sqlite3.connect(db)
    rows = {r[0]: r[1] for r in conn.execute("SELECT part_id, outcome FROM parts")}
    n_images = conn.execute("SELECT COUNT(*) FROM parts WHERE image_path IS NOT NULL").fetchone()[0]
    conn.close()
    missing = [p for p in acked if p not in rows]
    assert not missing, f"acknowledged parts lost: {missing[:10]}"
    wrong = [p for p, o in acked.items() if o != "-" and rows[p] != o]
    assert not wrong, f"acknowledged outcomes changed: {wrong[:10]}"
    assert n_images > 0
    after = v["acc"]
    assert after["counter_processed"] >= seen_max.get("processed", 0)
    assert after["counter_good"] >= seen_max.get("good", 0)
    assert after["processed"] >= sum(1 for o in acked.values() if o != "-")

    # restart on the same store: the counters continue from where they were, never backwards
    proc2 = _run_child(run_dir, tmp_path / "acked2.tsv", 120.0, 2)
    out, err = proc2.communicate(timeout=120)
    assert proc2.returncode == 0, err.decode()[-2000:]
    v2 = verify(db)
    assert v2["integrity"] == "ok" and v2["duplicates"] == 0 and v2["counters_match"]
    assert v2["acc"]["processed"] > after["processed"]
    assert v2["acc"]["good"] >= after["good"]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(DISTINCT run_id) FROM parts").fetchone()[0] == 2
    conn.close()
