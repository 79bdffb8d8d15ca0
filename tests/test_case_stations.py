"""Several case stations: a case in progress per station, routing by product, per-station counts.

``tests/cells/two_case_cell.yaml`` is the packaging cell with two case stations: bulgogi trays go
into 2x3 cases closed by the OPC UA sealer, kimchi trays into 2x2 cases at another frame closed by
an in-process ``sim.machine``.  ``place_in_pattern`` has no ``station:``: each tray goes to the
station whose ``products:`` list takes it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cell.config import CellFileError, load_cell, parse_cell
from cell.runtime import Cell
from tests.conftest import run_cell_batch

HERE = Path(__file__).resolve().parent
TWO = HERE / "cells" / "two_case_cell.yaml"
TAKES = {"case_out": "bulgogi_tray", "kimchi_case": "kimchi_tray"}
SLOTS = {"case_out": 6, "kimchi_case": 4}


@pytest.fixture(scope="module")
def cfg():
    return load_cell(TWO)


@pytest.fixture(scope="module")
def inspectors(cfg):
    from cell.vision_models import prepare_inspectors

    return prepare_inspectors(cfg)


def _batch(cfg, inspectors, *, seed: int = 1, duration: float = 200.0) -> tuple[dict, Cell]:
    return run_cell_batch(cfg, inspectors, seed=seed, duration=duration)


@pytest.fixture(scope="module")
def run(cfg, inspectors):
    return _batch(cfg, inspectors)


# -- a short simulated run ---------------------------------------------------------------------------
def test_every_packed_part_is_in_a_case_of_its_products_station(run):
    r, cell = run
    world = cell.world
    assert set(world.case_stations) == {"case_out", "kimchi_case"}
    cased = [p for p in world.parts.values() if p.state == "case"]
    assert {p.variant.name for p in cased} == {"bulgogi_tray", "kimchi_tray"}, "both products were packed"
    for p in cased:  # the simulator's ground truth: where the part lies
        assert TAKES[p.station] == p.variant.name, (p.id, p.variant.name, p.station)
    for name, st in world.case_stations.items():
        for case in st.done + ([st.case] if st.case is not None else []):
            assert case.station == name
            assert {world.parts[pid].variant.name for pid in case.slots.values()} <= {TAKES[name]}
    # the ledger agrees with the world, station by station
    packed = r["cases"]["packed_by_station"]
    assert packed == {n: sum(p.station == n for p in cased) for n in TAKES}
    assert sum(packed.values()) == r["parts"]["packed"] == r["sim_truth"]["case"]
    recs = [rec for rec in cell.ledger.records.values() if rec.outcome == "packed"]
    assert all(rec.station in TAKES and TAKES[rec.station] == rec.variant for rec in recs)


def test_both_machines_cycle_and_cases_are_counted_per_station(run):
    r, cell = run
    by = r["cases"]["by_station"]
    assert set(by) == {"case_out", "kimchi_case"}
    assert by["case_out"] >= 2 and by["kimchi_case"] >= 2, by
    assert sum(by.values()) == r["cases"]["completed"]
    truth = cell.world.cases_by_station()
    for name, n in by.items():
        assert truth[name] - 1 <= n <= truth[name], (name, n, truth)  # a seal may be cut by the end of the run
        # each station's cases are closed full, with its own pattern's slot count, and numbered 1, 2, ...
        done = cell.world.case_stations[name].done
        assert [len(c.slots) for c in done] == [SLOTS[name]] * len(done)
        assert [c.id for c in done] == list(range(1, len(done) + 1))
    # the case in progress of each station holds what the skills' facts say
    for name, st in cell.world.case_stations.items():
        assert len(st.case.slots) == cell.facts.fill(name)
        assert st.case.id == cell.facts.current_case(name)
    assert cell.snapshot()["cases_by_station"] == by


def test_every_part_has_exactly_one_outcome(run):
    r, cell = run
    p = r["parts"]
    assert p["arrived"] >= 30
    assert p["arrived"] == p["packed"] + p["rejected"] + p["missed"] + p["on_belt_at_end"]
    records = list(cell.ledger.records.values())
    assert len(records) == p["arrived"]
    assert sum(rec.outcome is None for rec in records) == p["on_belt_at_end"] <= 2
    assert p["packed"] >= 0.6 * p["arrived"], p


def test_same_seed_same_report(cfg, inspectors, run):
    r1 = dict(run[0])
    r2, _ = _batch(cfg, inspectors)
    for r in (r1, r2):
        r.pop("wall_seconds", None)
        r.pop("store", None)
        r.pop("run_dir", None)
    assert r1 == r2


# -- the world and the facts, one case per station ----------------------------------------------------
def test_world_seals_only_the_machines_station():
    from sim.world import CaseGeometry, InfeedConfig, VariantSpec, World, WorldConfig

    w = World(WorldConfig(infeed=InfeedConfig(conveyor="c", mix={"a": 1.0})),
              {"a": VariantSpec("a", 0.1, 0.1, 0.05)})
    g = CaseGeometry(x=0, y=0, z=0, yaw=0, rows=1, cols=2, pitch_x=0.2, pitch_y=0.2)
    w.set_case_station(g, "one", machine="m1")
    w.set_case_station(CaseGeometry(x=1, y=0, z=0, yaw=0, rows=1, cols=1, pitch_x=0.2, pitch_y=0.2), "two",
                       machine="m2")
    assert w.machine_station("m2") == "two" and w.machine_station("m1") == "one" and w.machine_station("x") is None
    sealed = w.seal_case(w.machine_station("m2"))
    w.index_new_case("two")
    assert sealed.station == "two" and w.cases_by_station() == {"one": 0, "two": 1}
    assert w.case_stations["two"].case.id == 2 and w.case_stations["one"].case.id == 1
    assert w.case is w.case_stations["one"].case and w.case_geometry is g  # the single-case view


def test_facts_keep_one_shared_case_with_one_station_and_one_per_station_with_more():
    from skills.facts import CellFacts

    one = CellFacts(case_stations=["case_out"])
    one.add_to_case("case_out")
    assert one.case_fill == 1 and one.fill("anything") == 1
    two = CellFacts(case_stations=["a", "b"])
    assert two.add_to_case("b") == (1, 0) and two.add_to_case("b") == (1, 1)
    assert (two.fill("a"), two.fill("b")) == (0, 2)
    assert two.close_case("b") == (1, 2) and (two.current_case("b"), two.fill("b"), two.current_case("a")) == (2, 0, 1)


# -- what check refuses ------------------------------------------------------------------------------
def _problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(CellFileError) as e:
        parse_cell(text, "t.yaml")
    return [(p.path, p.message) for p in e.value.problems]


def test_the_two_station_file_checks():
    assert parse_cell(TWO.read_text(), "t.yaml").stations["kimchi_case"].products == ["kimchi_tray"]


def test_a_product_no_case_station_takes_is_refused():
    text = TWO.read_text().replace("    products: [kimchi_tray]\n", "    products: []\n")
    probs = _problems(text)
    assert any("no case station takes product 'kimchi_tray'" in m for _, m in probs), probs


def test_a_product_two_stations_claim_is_refused():
    probs = _problems(TWO.read_text().replace("products: [kimchi_tray]", "products: [kimchi_tray, bulgogi_tray]"))
    assert any(path == "stations.kimchi_case.products.1" and "several case stations" in m for path, m in probs), probs


def test_an_unknown_product_is_refused():
    probs = _problems(TWO.read_text().replace("products: [kimchi_tray]", "products: [kimchi_tray, salad]"))
    assert ("stations.kimchi_case.products.1", "no such product") in probs, probs


def test_a_machine_that_is_not_a_machine_is_refused():
    probs = _problems(TWO.read_text().replace("    machine: kimchi_sealer\n", "    machine: infeed\n"))
    assert ("stations.kimchi_case.machine", "device is a conveyor, not a machine") in probs, probs


def test_one_machine_for_two_case_stations_is_refused():
    probs = _problems(TWO.read_text().replace("    machine: kimchi_sealer\n", "    machine: sealer\n"))
    assert any(path == "stations.kimchi_case.machine" and "already serves" in m for path, m in probs), probs


def test_a_cycle_whose_case_is_unknown_is_refused():
    text = TWO.read_text().replace("    machine: kimchi_sealer\n", "")
    probs = _problems(text)
    assert any(path.endswith("devices.machine") and "no case station names this machine" in m
               for path, m in probs), probs
    # and a cycle told to close another machine's station
    text = TWO.read_text().replace("                devices: {machine: kimchi_sealer}",
                                   "                devices: {machine: kimchi_sealer}\n                with: {station: case_out}")
    probs = _problems(text)
    assert any(path.endswith("with.station") and "closes the case of kimchi_case" in m for path, m in probs), probs


def test_several_stations_without_a_list_beside_one_with_are_refused():
    text = TWO.read_text().replace("    products: [kimchi_tray]\n", "").replace("    products: [bulgogi_tray]\n", "")
    text = text.replace("  reject_bin: {kind: reject", "  third:\n    kind: case\n    frame: {x: 0.75, y: -0.4}\n"
                        "    pattern: {rows: 1, cols: 1, pitch_mm: [200, 150]}\n    products: [kimchi_tray]\n"
                        "  reject_bin: {kind: reject")
    probs = _problems(text)
    assert any("several case stations have no `products:` list" in m for _, m in probs), probs


def test_part_is_names_a_product():
    text = TWO.read_text().replace("          - skill: place_in_pattern\n",
                                   "          - skill: part_is\n            with: {product: sushi}\n"
                                   "          - skill: place_in_pattern\n")
    probs = _problems(text)
    assert any(path.endswith("with.product") and m == "no such product" for path, m in probs), probs


def test_place_without_station_needs_routing_when_there_are_several_case_stations():
    text = TWO.read_text().replace("    products: [kimchi_tray]\n", "").replace("    products: [bulgogi_tray]\n", "")
    probs = _problems(text)
    assert any("list in each case station the `products:`" in m for _, m in probs), probs


def test_case_not_full_needs_its_station_when_there_are_several():
    probs = _problems(TWO.read_text().replace("with: {station: kimchi_case}", "with: {slots: 4}"))
    assert any("each case station has a case of its own" in m for _, m in probs), probs


# -- the store, the HTML report and the old schema ---------------------------------------------------
@pytest.fixture(scope="module")
def session_run(cfg, tmp_path_factory):
    """A short session run of the two-station cell with its store in a run directory."""
    from cell.session import RunOptions, run_session

    run_dir = tmp_path_factory.mktemp("two_run")
    asyncio.run(run_session(cfg, RunOptions(duration=150, seed=1, quiet=True, run_dir=run_dir)))
    return run_dir, json.loads((run_dir / "report.json").read_text())


def test_the_store_records_each_packed_parts_station_and_each_case(session_run):
    import sqlite3

    from cell.store import SCHEMA_VERSION, station_counts

    run_dir, rep = session_run
    by, packed = rep["cases"]["by_station"], rep["cases"]["packed_by_station"]
    assert all(n >= 1 for n in by.values()) and len(by) == 2, by
    # the report's per-station figures agree with the store's (checked in the run, reported beside them)
    assert rep["store"]["cases_by_station"] == by and rep["store"]["packed_by_station"] == packed
    conn = sqlite3.connect(run_dir / "cell.sqlite")
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        rid = json.loads((run_dir / "run.json").read_text())["run_id"]
        sc = station_counts(conn, rid)
        assert sc == {"cases": by, "packed": packed}
        rows = conn.execute("SELECT station, variant, case_id FROM parts WHERE run_id = ? AND outcome = 'packed'",
                            (rid,)).fetchall()
        assert rows and all(TAKES[st] == v and cid >= 1 for st, v, cid in rows), rows
        # case ids count from 1 at each station
        for name, n in by.items():
            ids = [r[0] for r in conn.execute("SELECT case_id FROM cases WHERE run_id = ? AND station = ? "
                                              "ORDER BY case_id", (rid, name))]
            assert ids == list(range(1, n + 1))
    finally:
        conn.close()


def test_the_html_report_has_a_row_per_case_station(session_run):
    import re

    from cell.report_html import build_html, load_run

    run_dir, rep = session_run
    data = load_run(run_dir)
    assert data["stations"] == {n: {"cases": rep["cases"]["by_station"][n],
                                    "packed": rep["cases"]["packed_by_station"][n]} for n in TAKES}
    text = build_html(data)
    assert "<h2>Case stations</h2>" in text
    for n in TAKES:
        assert re.search(rf"<tr><td>{n}</td><td>{data['stations'][n]['cases']}</td>"
                         rf"<td>{data['stations'][n]['packed']}</td></tr>", text), n
    # one case station: no per-station rows
    one = dict(data, stations={"case_out": data["stations"]["case_out"]})
    assert "Case stations" not in build_html(one)


OLD_PARTS = """CREATE TABLE parts (
  run_id TEXT NOT NULL, part_id TEXT NOT NULL, seq INTEGER NOT NULL,
  arrival REAL, variant TEXT, verdict TEXT, defects TEXT, score REAL, inspect_ms REAL, inspected_at REAL,
  pick_time REAL, place_time REAL, case_id INTEGER, slot INTEGER,
  outcome TEXT CHECK (outcome IS NULL OR outcome IN ('packed', 'rejected', 'missed')),
  closed_at REAL, closed_wall TEXT, reason TEXT, telemetry TEXT,
  image_path TEXT, image_sha256 TEXT,
  PRIMARY KEY (run_id, part_id)
);"""


def _old_store(path: Path) -> None:
    """A store as the previous schema wrote it (no parts.station, no cases table, user_version 0)."""
    import sqlite3

    from cell.store import SCHEMA

    old = SCHEMA.replace(SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS parts"):SCHEMA.index("CREATE INDEX")],
                         OLD_PARTS + "\n")
    old = old[:old.index("CREATE TABLE IF NOT EXISTS cases")] + old[old.index("CREATE TABLE IF NOT EXISTS counters"):]
    assert "station" not in old and "cases" not in old
    conn = sqlite3.connect(path)
    conn.executescript(old)
    conn.execute("INSERT INTO runs (run_id, cell, started_wall, seed, meta) VALUES "
                 "('old', 'packaging_cell', '2026-01-01T00:00:00Z', 1, '{\"design_speed_ppm\": 30}')")
    conn.executemany("INSERT INTO parts (run_id, part_id, seq, arrival, variant, verdict, defects, outcome, "
                     "closed_at, place_time, case_id, slot) VALUES ('old', ?, ?, ?, 'bulgogi_tray', 'good', '[]', "
                     "'packed', ?, ?, 1, ?)", [(f"p{i}", i, 10.0 * i, 10.0 * i + 5, 10.0 * i + 5, i)
                                                for i in range(1, 4)])
    conn.execute("INSERT INTO states (run_id, seq, t, wall, source, target, cause) "
                 "VALUES ('old', 1, 0, '2026-01-01T00:00:00Z', 'Idle', 'Execute', 'start')")
    conn.commit()
    conn.close()


def test_a_store_of_the_old_schema_still_reports_and_is_migrated_on_open(tmp_path):
    import sqlite3

    from cell.report_html import build_html, load_run
    from cell.store import SCHEMA_VERSION, Store, verify

    db = tmp_path / "cell.sqlite"
    _old_store(db)
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "old", "store": str(db)}))
    data = load_run(tmp_path)  # read-only: the old schema as it is
    assert data["stations"] == {} and len(data["parts"]) == 3
    assert "Case stations" not in build_html(data)
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 0  # the report wrote nothing

    store = Store(db, cell="packaging_cell", run_id="new")  # opening it for writing migrates it
    try:
        assert store.migrated_from == 0
        store.on_part("closed", {"id": "q1", "arrival": 1.0, "variant": "kimchi_tray", "outcome": "packed",
                                 "closed_at": 2.0, "case_id": 1, "slot": 0, "station": "kimchi_case"})
        store.on_case("kimchi_case", 1, 4, 3.0)
        assert store.flush()
        assert store.station_counts() == {"cases": {"kimchi_case": 1}, "packed": {"kimchi_case": 1}}
        assert store.station_counts("old") == {"cases": {}, "packed": {}}  # old rows: no station
        assert store.counts("old")["packed"] == 3
    finally:
        store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "station" in {r[1] for r in conn.execute("PRAGMA table_info(parts)")}
    conn.close()
    assert verify(db)["integrity"] == "ok"
    assert load_run(tmp_path)["stations"] == {}  # the old run still opens, now in a migrated store
    Store(db, cell="packaging_cell", run_id="again").close()  # reopening a migrated store is a no-op
