"""One OEE code path: the figures of :func:`cell.oee.from_buckets` on hand-computed cases, the tracker's
attribution by state and stop reason, and a batch run whose report, live tracker and stored records agree.

Run one: ``.venv/bin/python -m pytest -q tests/test_oee.py -k worked_example``.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from cell.oee import BUCKETS, OeeTracker, attribute, from_buckets, reason_in_force
from cell.packml import Command, PackMLStateMachine, State

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("availability", "performance", "quality", "oee", "machine_oee")


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# -- the one function ------------------------------------------------------------------------------
def test_worked_example_of_the_reference():
    """packml-opcua-oee.md §4.4: PPT 450 min, Execute 380, Held 40, starved 15, Stopped (unplanned) 15."""
    m = 60.0
    o = from_buckets({"run": 380 * m, "held_internal": 40 * m, "suspended_external": 15 * m,
                      "unplanned_downtime": 15 * m, "not_scheduled": 30 * m},
                     processed=42_000, good=41_370, design_speed_ppm=120.0)
    assert o.planned_s == 450 * m and o.run_s == 380 * m
    assert o.availability == pytest.approx(380 / 450)
    assert o.performance == pytest.approx(42_000 / (120 * 380))
    assert o.quality == pytest.approx(41_370 / 42_000)
    assert round(o.oee, 3) == 0.766
    assert o.oee == pytest.approx(41_370 / (120 * 450))  # the shortcut: good / (design × PPT)
    assert round(o.machine_oee, 3) == 0.793  # starved time removed from PPT: A = 380 / 435
    assert o.defective == 630
    assert list(o.losses_s) == list(BUCKETS) and o.losses_s["planned_downtime"] == 0.0


@pytest.mark.parametrize(("buckets", "processed", "good", "design"), [
    ({}, 0, 0, 16.0),  # nothing happened
    ({"not_scheduled": 300.0}, 0, 0, 16.0),  # never scheduled: no planned time
    ({"not_scheduled": 300.0, "planned_downtime": 60.0}, 3, 3, 16.0),  # parts but no planned time
    ({"idle": 120.0}, 0, 0, 16.0),  # planned but never ran
    ({"run": 0.0, "setup": 5.0}, 2, 1, 16.0),  # parts closed without run time
    ({"run": 60.0}, 0, 0, 16.0),  # ran, made nothing
    ({"run": 60.0}, 10, 0, 16.0),  # ran, all defective
    ({"run": 60.0}, 10, 10, 0.0),  # no design speed configured
])
def test_zero_time_and_zero_count_edges_give_zero_not_an_error(buckets, processed, good, design):
    o = from_buckets(buckets, processed=processed, good=good, design_speed_ppm=design)
    for k in FIGURES:
        v = getattr(o, k)
        assert 0.0 <= v <= 1.0, (k, v)
    assert o.oee == pytest.approx(o.availability * o.performance * o.quality)
    assert o.oee == 0.0
    if processed == 0:
        assert o.quality == 0.0 and o.performance == 0.0
    if buckets.get("run", 0.0) == 0.0:
        assert o.availability == 0.0 and o.performance == 0.0


def test_figures_stay_in_range_and_add_up_on_random_consistent_inputs():
    rng = random.Random(7)
    for _ in range(500):
        buckets = {b: rng.choice([0.0, rng.uniform(0, 5000)]) for b in BUCKETS}
        design = rng.choice([0.0, rng.uniform(1, 200)])
        capacity = int(design * buckets["run"] / 60.0)
        processed = rng.randint(0, capacity) if capacity else 0
        good = rng.randint(0, processed)
        o = from_buckets(buckets, processed=processed, good=good, design_speed_ppm=design)
        for k in FIGURES:
            assert 0.0 <= getattr(o, k) <= 1.0 + 1e-12, (k, o)
        assert o.oee == pytest.approx(o.availability * o.performance * o.quality)
        if o.planned_s > 0 and o.run_s > 0 and processed > 0 and design > 0:
            assert o.oee == pytest.approx(good / (design * o.planned_s / 60.0))
        assert o.machine_oee >= o.oee - 1e-12  # removing external time never lowers it
        assert o.planned_s == pytest.approx(sum(buckets.values()) - buckets["not_scheduled"]
                                            - buckets["planned_downtime"])


def test_performance_above_one_is_reported_not_clipped():
    """More parts than the design speed allows means the design speed is set too low; hiding that is worse."""
    o = from_buckets({"run": 60.0}, processed=20, good=20, design_speed_ppm=10.0)
    assert o.performance == pytest.approx(2.0) and o.availability == 1.0 and o.quality == 1.0


@pytest.mark.parametrize(("buckets", "processed", "good"), [
    ({"running": 1.0}, 0, 0),  # unknown bucket
    ({"run": -1.0}, 0, 0),
    ({"run": 60.0}, 5, 6),  # more good than processed
    ({"run": 60.0}, -1, 0),
])
def test_inconsistent_inputs_are_refused(buckets, processed, good):
    with pytest.raises(ValueError):
        from_buckets(buckets, processed=processed, good=good, design_speed_ppm=16.0)


# -- attribution -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("state", "category", "bucket"), [
    (State.EXECUTE, None, "run"),
    (State.HELD, "unplanned", "held_internal"), (State.HOLDING, None, "held_internal"),
    (State.SUSPENDED, "external", "suspended_external"), (State.UNSUSPENDING, None, "suspended_external"),
    (State.STOPPED, None, "not_scheduled"),  # the operator stopped it
    (State.STOPPED, "planned", "planned_downtime"),
    (State.STOPPED, "unplanned", "unplanned_downtime"), (State.STOPPED, "external", "unplanned_downtime"),
    (State.STOPPING, None, "unplanned_downtime"), (State.ABORTED, None, "unplanned_downtime"),
    (State.CLEARING, None, "unplanned_downtime"), (State.ABORTING, "planned", "planned_downtime"),
    (State.RESETTING, None, "setup"), (State.COMPLETE, None, "setup"),
    (State.IDLE, None, "idle"),
    (State.UNDEFINED, None, "not_scheduled"),
])
def test_attribution_by_state_and_stop_reason(state, category, bucket):
    assert attribute(state, category) == bucket


def test_the_stop_reason_in_force():
    jam, other = ("jam", "unplanned"), ("estop", "unplanned")
    assert reason_in_force(None, State.EXECUTE, State.HOLDING, jam) == jam  # leaving Execute: the first-out
    assert reason_in_force(jam, State.HOLDING, State.HELD, other) == jam  # kept through the stop event
    assert reason_in_force(jam, State.HELD, State.ABORTING, other) == jam  # an escalation keeps the first cause
    assert reason_in_force(None, State.IDLE, State.ABORTING, other) == other  # a stop event outside Execute
    assert reason_in_force(None, State.STOPPED, State.RESETTING, other) is None  # not a stop event
    assert reason_in_force(jam, State.UNHOLDING, State.EXECUTE, other) is None  # producing again


# -- the tracker -----------------------------------------------------------------------------------
def _drive(fsm: PackMLStateMachine, now: FakeTime, first_out: list, steps) -> None:
    for t, what, reason in steps:
        now.t = t
        first_out[0] = reason
        if what == "sc":
            fsm.state_complete()
        else:
            fsm.command(Command[what.upper()])


SHIFT = [  # (time, command or state complete, first-out at that moment)
    (10, "reset", None), (12, "sc", None), (20, "start", None), (21, "sc", None),
    (81, "hold", ("jam", "unplanned")), (82, "sc", ("jam", "unplanned")),
    (100, "unhold", ("jam", "unplanned")), (101, "sc", ("jam", "unplanned")),
    (161, "suspend", ("starved", "external")), (161.5, "sc", ("starved", "external")),
    (191, "unsuspend", ("starved", "external")), (192, "sc", ("starved", "external")),
    (252, "stop", ("changeover", "planned")), (253, "sc", ("changeover", "planned")),
]


def _shift_tracker() -> tuple[OeeTracker, PackMLStateMachine, FakeTime, list]:
    now = FakeTime()
    fsm = PackMLStateMachine(now)
    first_out: list = [None]
    tracker = OeeTracker(now, 15.0, stop_reason=lambda: first_out[0], initial=fsm.state)
    fsm.subscribe(tracker.on_transition)
    return tracker, fsm, now, first_out


def test_tracker_attributes_a_shift_as_computed_by_hand():
    tracker, fsm, now, first_out = _shift_tracker()
    _drive(fsm, now, first_out, SHIFT)
    now.t = 300.0
    o = tracker.oee(processed=40, good=36)
    assert o.losses_s == {"run": 180.0, "held_internal": 20.0, "suspended_external": 31.0,
                          "unplanned_downtime": 0.0, "planned_downtime": 48.0, "setup": 3.0, "idle": 8.0,
                          "not_scheduled": 10.0}
    assert o.planned_s == 242.0
    assert o.availability == pytest.approx(180 / 242)
    assert o.performance == pytest.approx(40 / (15 * 3))
    assert o.quality == pytest.approx(0.9)
    assert o.machine_oee == pytest.approx(180 / 211 * 40 / 45 * 0.9)
    # the tracker's time is the state machine's time, state by state
    cum = fsm.cumulative_times()
    assert o.run_s == cum[State.EXECUTE]
    assert sum(o.losses_s.values()) == pytest.approx(sum(cum.values())) == 300.0
    assert o.losses_s["held_internal"] == cum[State.HOLDING] + cum[State.HELD] + cum[State.UNHOLDING]
    down = {(d["state"], d["reason"], d["bucket"]): (d["seconds"], d["events"]) for d in o.downtime}
    assert down == {
        ("Stopped", "changeover", "planned_downtime"): (47.0, 1),
        ("Stopping", "changeover", "planned_downtime"): (1.0, 1),
        ("Suspended", "starved", "suspended_external"): (29.5, 1),
        ("Suspending", "starved", "suspended_external"): (0.5, 1),
        ("Unsuspending", "starved", "suspended_external"): (1.0, 1),
        ("Held", "jam", "held_internal"): (18.0, 1), ("Holding", "jam", "held_internal"): (1.0, 1),
        ("Unholding", "jam", "held_internal"): (1.0, 1),
        ("Idle", "", "idle"): (8.0, 1), ("Resetting", "", "setup"): (2.0, 1), ("Starting", "", "setup"): (1.0, 1),
    }
    assert [d["seconds"] for d in o.downtime] == sorted((d["seconds"] for d in o.downtime), reverse=True)


def test_tracker_counts_the_current_state_up_to_now():
    tracker, fsm, now, first_out = _shift_tracker()
    _drive(fsm, now, first_out, SHIFT[:6])  # Held since t=82
    now.t = 90.0
    o = tracker.oee(processed=10, good=10)
    assert o.losses_s["held_internal"] == 9.0 and o.run_s == 60.0
    held = next(d for d in o.downtime if d["state"] == "Held")
    assert (held["seconds"], held["events"], held["reason"]) == (8.0, 1, "jam")
    assert tracker.oee(processed=10, good=10, at=85.0).losses_s["held_internal"] == 4.0
    now.t = 95.0  # reading does not consume: the same interval keeps growing
    assert tracker.oee(processed=10, good=10).losses_s["held_internal"] == 14.0


def test_an_abort_outside_execute_keeps_its_alarm_as_the_stop_reason():
    tracker, fsm, now, first_out = _shift_tracker()
    _drive(fsm, now, first_out, [(10, "reset", None), (12, "sc", None),
                                 (30, "abort", ("e-stop", "unplanned")), (31, "sc", ("e-stop", "unplanned")),
                                 (50, "clear", ("e-stop", "unplanned")), (51, "sc", ("e-stop", "unplanned"))])
    now.t = 60.0
    o = tracker.oee(processed=0, good=0)
    # Aborting, Aborted, Clearing and the Stopped after it are the e-stop's unplanned downtime
    assert o.losses_s["unplanned_downtime"] == 30.0 and o.losses_s["not_scheduled"] == 10.0
    assert {d["state"] for d in o.downtime if d["reason"] == "e-stop"} == {"Aborting", "Aborted", "Clearing",
                                                                         "Stopped"}


def test_replaying_recorded_changes_gives_the_live_figures():
    """What the HTML report does with the store's ``states`` rows: the same tracker, fed by record()."""
    tracker, fsm, now, first_out = _shift_tracker()
    recorded = []
    fsm.subscribe(lambda tr: recorded.append((tr.time, tr.source, tr.target, first_out[0])))
    _drive(fsm, now, first_out, SHIFT)
    now.t = 300.0
    replay = OeeTracker(lambda: 300.0, 15.0, initial=State.STOPPED, start=0.0)
    for change in recorded:
        replay.record(*change)
    assert replay.oee(processed=40, good=36) == tracker.oee(processed=40, good=36)


# -- the whole cell: report, live tracker and stored records agree ----------------------------------
@pytest.mark.timeout(180)
def test_batch_run_report_live_tracker_and_store_replay_agree(tmp_path: Path):
    from cell.config import load_cell
    from cell.report_html import load_run, oee_series, oee_until
    from cell.session import RunOptions, run_session

    cfg = load_cell(REPO / "launch/packaging_cell.yaml").model_copy(deep=True)
    sealer = cfg.device("sealer")  # jams give Held time with a stop reason
    if sealer.kind == "sim.machine":
        sealer.options = {**sealer.options, "jam_probability": 0.3}
    else:  # the OPC UA sealer in its sim profile
        sealer.options = {**sealer.options, "sim": {**sealer.options.get("sim", {}), "jam_probability": 0.3}}
    run_dir = tmp_path / "run"
    got: dict = {}
    rep = asyncio.run(run_session(cfg, RunOptions(duration=150, seed=2, quiet=True, run_dir=run_dir,
                                                  on_ready=lambda ops: got.setdefault("ops", ops))))
    o = rep["oee"]
    states = rep["states"]
    assert states.get("Held", 0) > 0, "the run must exercise loss attribution"
    assert any(d["bucket"] == "held_internal" and "jam" in d["reason"] and d["category"] == "unplanned"
               for d in o["downtime"])

    # the report's figures are the live tracker's (what /api/oee and the HMI read) at the end of the run
    ops = got["ops"]
    ops.store = None  # closed with the run; the API's acc totals are checked below
    live = ops.oee()
    for k in (*FIGURES, "planned_s", "run_s", "processed", "good", "defective", "design_speed_ppm"):
        assert o[k] == pytest.approx(live[k], abs=1e-6), k
    assert o["losses_s"] == pytest.approx(live["losses_s"], abs=1e-6)
    assert o["downtime"] == live["downtime"]
    assert o["acc"] == rep["store"]["acc_counts"] and o["acc"]["processed"] == o["processed"]

    # ... and they add up against the state machine's own time accounting and the part counts
    p = rep["parts"]
    assert o["processed"] == p["packed"] + p["rejected"] + p["missed"] and o["good"] == p["packed"]
    assert o["run_s"] == pytest.approx(states["Execute"], abs=1e-6)
    assert o["losses_s"]["held_internal"] == pytest.approx(
        sum(states.get(s, 0.0) for s in ("Holding", "Held", "Unholding")), abs=1e-6)
    assert sum(o["losses_s"].values()) == pytest.approx(sum(states.values()), abs=1e-5)
    assert o["oee"] == pytest.approx(o["availability"] * o["performance"] * o["quality"], abs=1e-6)
    assert o["oee"] == pytest.approx(o["good"] / (o["design_speed_ppm"] * o["planned_s"] / 60.0), abs=1e-6)

    # the HTML report replays the stored state changes through the same tracker: the same figures
    data = load_run(run_dir)
    h = oee_until(data, data["end"]).to_dict()
    for k in (*FIGURES, "planned_s", "run_s", "processed", "good"):
        assert h[k] == pytest.approx(o[k], abs=1e-6), k
    assert h["losses_s"] == pytest.approx(o["losses_s"], abs=1e-6)
    assert h["downtime"] == o["downtime"]
    series = oee_series(data, [data["end"] / 3, 2 * data["end"] / 3, data["end"]])
    assert series[-1].to_dict() == oee_until(data, data["end"]).to_dict()
    assert [s.run_s for s in series] == sorted(s.run_s for s in series)
