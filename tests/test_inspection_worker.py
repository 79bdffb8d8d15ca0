"""The inspection worker: trays judged in a process beside the cell, with the same outcome as in place.

The cell goes on while a tray is judged; a verdict is applied, in capture order, where a skill or
the tracker needs it, with simulated time held until it is there. So a run with the worker must
give exactly the records of a run that judges every tray in the cell's own thread.
"""

from __future__ import annotations

import asyncio
import functools
import os
from types import SimpleNamespace

import numpy as np
import pytest

from cell.batch import run_batch
from cell.config import in_process_twins
from cell.runtime import Cell
from skills import get
from skills.facts import CellFacts, TrackedPart
from skills.vision.worker import InspectionFailed, InspectionWorker, WorkerUnavailable, judge
from sim.clock import SimClock
from tests.conftest import run_sim


def _records(cell: Cell) -> dict:
    return {k: (r.verdict, tuple(r.defects), round(r.score, 9), r.variant, r.outcome, r.reason, r.pick_time,
                r.place_time, r.case_id, r.slot, r.inspected_at)
            for k, r in cell.ledger.records.items()}


def _run(cfg, inspectors, *, worker: bool, duration: float, seed: int = 1, kill_worker_at: float | None = None,
         eager: bool = False):
    async def main():
        cell = Cell(cfg, seed=seed, inspectors=inspectors, inspection_worker=worker)
        cell.facts.eager_verdicts = eager
        killer = None
        if kill_worker_at is not None:
            async def kill():
                await cell.clock.sleep_until(kill_worker_at)
                cell.inspection_worker.proc.kill()
                await asyncio.to_thread(cell.inspection_worker.proc.wait)
            killer = asyncio.ensure_future(kill())
        try:
            report = await run_batch(cell, duration)
            return report, _records(cell), cell.facts.settle_waits, cell.inspection_worker is not None
        finally:
            if killer is not None:
                killer.cancel()
            await cell.close()

    return asyncio.run(main())


def test_a_run_with_the_worker_has_the_records_of_a_run_without(demo_config, demo_inspectors):
    cfg = in_process_twins(demo_config)
    rep0, rec0, waits0, had0 = _run(cfg, demo_inspectors, worker=False, duration=400)
    rep1, rec1, _waits1, had1 = _run(cfg, demo_inspectors, worker=True, duration=400)
    assert not had0 and had1, "the worker did not start"
    assert waits0 == 0
    assert rep1["parts"] == rep0["parts"] and rep0["parts"]["inspected"] > 50
    assert rep0["parts"]["defective"] > 0 and rep0["parts"]["packed"] > 0
    assert rec1 == rec0  # every part: verdict, defects, score, outcome, pick/place times, slot


def test_verdicts_applied_as_they_come_change_nothing(demo_config, demo_inspectors):
    # real time (real devices, a paced simulation): each judgement is applied when it is made
    cfg = in_process_twins(demo_config)
    rep0, rec0, *_ = _run(cfg, demo_inspectors, worker=False, duration=200)
    rep1, rec1, *_ = _run(cfg, demo_inspectors, worker=True, duration=200, eager=True)
    assert rep1["parts"] == rep0["parts"] and rec1 == rec0


def test_an_eager_line_applies_a_verdict_without_anyone_asking():
    facts = CellFacts(eager_verdicts=True)
    applied: list[str] = []

    async def main():
        _parts, futs = _pending_line(facts, 2, lambda p: applied.append(p.id))
        futs[1].set_result(None)
        await asyncio.sleep(0)
        assert applied == []  # the second came first: it waits for the first, in capture order
        futs[0].set_result(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return list(applied), facts.pending_count

    assert asyncio.run(main()) == (["P0", "P1"], 0)


def test_the_verdicts_of_parts_in_flight_are_settled_when_the_cell_stops(demo_config, demo_inspectors):
    # a short run ends with trays just captured: their verdicts still count in the report
    cfg = in_process_twins(demo_config)
    rep0, rec0, *_ = _run(cfg, demo_inspectors, worker=False, duration=37)
    rep1, rec1, *_ = _run(cfg, demo_inspectors, worker=True, duration=37)
    assert rep1["parts"] == rep0["parts"] and rec1 == rec0


def test_a_worker_that_dies_costs_only_the_parts_it_held(demo_config, demo_inspectors, caplog):
    cfg = in_process_twins(demo_config)
    rep, rec, *_ = _run(cfg, demo_inspectors, worker=True, duration=300, kill_worker_at=100.0)
    assert "inspection worker" in caplog.text
    # trays captured after the death were judged in the cell's thread: inspection went on
    late = [r for r in rec.values() if r[10] is not None and r[10] > 120.0]
    assert late and all(r[0] in ("good", "defective") for r in late)
    assert rep["parts"]["packed"] > 30
    # a part whose verdict was lost is never packed
    lost = [r for r in rec.values() if "inspection_failed" in r[1]]
    assert all(r[4] != "packed" for r in lost)


def test_worker_judges_like_judge_in_place_and_reports_a_bad_image(demo_inspectors):
    rng = np.random.default_rng(3)
    from sim import render  # noqa: F401 - the inspectors' products render in the sim

    images = [np.clip(rng.normal(120, 30, (259, 294, 3)), 0, 255).astype(np.uint8) for _ in range(3)]
    names = list(demo_inspectors)

    async def main():
        w = InspectionWorker(demo_inspectors)
        await w.start()
        try:
            futs = [w.submit(img, names) for img in images]
            bad = w.submit(np.zeros((0, 0, 3), np.uint8), names)  # not an image: the worker says so, goes on
            after = w.submit(images[0], names)
            results = [await f for f in futs]
            with pytest.raises(InspectionFailed):
                await bad
            return results, await after
        finally:
            w.close()

    results, after = asyncio.run(main())
    last = None
    for img, (name, res, _ms) in zip(images, results):
        name0, res0, _ = judge(demo_inspectors, img, names, last)
        last = name0
        assert name == name0 and res.score == res0.score and res.defective == res0.defective
    assert after[1].score == results[0][1].score


@pytest.mark.parametrize("shared", [True, False], ids=["shared-memory", "pipe-only"])
def test_images_and_answers_cross_intact_through_shared_memory_or_the_pipe(monkeypatch, shared):
    from skills.vision import worker as W

    monkeypatch.setattr(W._Arena, "SIZE", 1 << 20)  # room for four crops in flight: the others take the pipe
    if not shared:  # as where there is no memfd
        monkeypatch.setattr(W, "_make_arena", lambda: None)
    taken: list[bool] = []

    def take(self, seq, n, _take=W._Arena.take):
        at = _take(self, seq, n)
        taken.append(at is not None)
        return at

    monkeypatch.setattr(W._Arena, "take", take)
    # stand-ins whose answer is an array made from the image: as big as it (back through its room in shared
    # memory), or twice as big (back through the pipe)
    inspectors = {"same": SimpleNamespace(inspect=np.copy),
                  "twice": SimpleNamespace(inspect=functools.partial(np.repeat, repeats=2, axis=0))}
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (410, 512, 3), dtype=np.uint8)
    jobs = [(frame[y:y + 259, x:x + 294], ["same" if i % 3 else "twice"])  # crops, as the inspect skill sends
            for i, (y, x) in enumerate(rng.integers(0, 100, (14, 2)))]
    jobs += [(rng.integers(0, 256, (1024, 1280, 3), dtype=np.uint8), ["same"]),  # larger than the arena
             (rng.random((64, 80), dtype=np.float32), ["same"]), (frame[::2, ::3, 1], ["twice"])]

    async def main():
        w = InspectionWorker(inspectors)
        await w.start()
        try:
            futs = [w.submit(img, names) for img, names in jobs]  # all in flight at once: the ring wraps round
            results = [await f for f in futs]
            assert (not w._arena.rooms) if shared else w._arena is None
            return results
        finally:
            w.close()

    for (img, names), (name, res, _ms) in zip(jobs, asyncio.run(main())):
        want = inspectors[names[0]].inspect(img)
        assert name == names[0] and res.dtype == want.dtype and np.array_equal(res, want)
    assert (any(taken) and not all(taken)) if shared else not taken


def _pending_line(facts: CellFacts, n: int, apply) -> tuple[list[TrackedPart], list[asyncio.Future]]:
    """``n`` queued parts whose verdicts are futures still to be set (call inside a running loop)."""
    loop = asyncio.get_running_loop()
    parts = [TrackedPart(id=f"P{i}", arrival=0.0, encoder=0.0) for i in range(n)]
    futs = [loop.create_future() for _ in parts]
    for p, f in zip(parts, futs):
        facts.judge_later(p, f, lambda r, p=p: apply(p))
        facts.announce_part(p)
    return parts, futs


def test_a_closed_worker_refuses_work():
    async def main():
        w = InspectionWorker({"x": object()})
        fut = w.submit(np.zeros((4, 4, 3), np.uint8), ["x"])
        with pytest.raises(WorkerUnavailable):
            await fut

    asyncio.run(main())


def test_settle_applies_in_capture_order_and_holds_the_clock():
    clock = SimClock()
    facts = CellFacts()
    applied: list[str] = []

    def apply(p: TrackedPart) -> None:
        applied.append(p.id)
        p.verdict = "good"

    async def main():
        parts, futs = _pending_line(facts, 3, apply)
        assert facts.next_pickable() == [] and len(facts.next_pickable(with_pending=True)) == 3
        then = []
        facts.after_judged(parts[1], lambda: then.append(clock.now()))
        # the results come back in another order, in wall time, while simulated time must stand still
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, futs[1].set_result, None)
        loop.call_later(0.04, futs[0].set_result, None)
        t0 = clock.now()
        await facts.settle(clock, upto=parts[1])
        assert clock.now() == t0, "simulated time moved while a verdict was awaited"
        assert applied == ["P0", "P1"] and then == [t0] and facts.is_pending(parts[2])
        futs[2].set_result(None)
        await facts.settle(clock)
        assert applied == ["P0", "P1", "P2"] and facts.pending_count == 0

    async def ticking():
        for _ in range(100):
            await clock.sleep(0.1)

    async def both():
        t = asyncio.ensure_future(ticking())
        await main()
        t.cancel()

    run_sim(clock, both(), until=100.0)


def test_inspect_on_its_own_answers_with_the_verdict(demo_config, demo_inspectors):
    """An inspect goal from outside the process tree (API, ROS 2 action) waits for its verdict."""
    cell = Cell(in_process_twins(demo_config), seed=2, inspectors=demo_inspectors, inspection_worker=True)

    async def main():
        try:
            await cell.connect_devices()
            assert cell.inspection_worker is not None
            await cell.devices["infeed"].start(0.2)
            cell.world.start_infeed()
            ctx_roles = {"camera": cell.devices["top_camera"], "conveyor": cell.devices["infeed"],
                         "io": cell.devices["eyes"]}
            from skills import SkillContext

            ctx = SkillContext(devices=ctx_roles, clock=cell.clock, facts=cell.facts, emit=cell.emit,
                               config=cell.lookups)
            w = await get("wait_for_part")().run(ctx, {"channel": "infeed_eye", "eye_x": -0.405, "lead_m": -0.095,
                                                      "lane_y": 0.6})
            assert w.ok, w.message
            r = await get("inspect")().run(ctx, {"plane_z": 0.045})
            return r
        finally:
            await cell.close()

    r = run_sim(cell.clock, main(), until=120.0)
    assert r.ok and r.data["verdict"] in ("good", "defective")
    assert cell.facts.pending_count == 0


@pytest.mark.skipif(not hasattr(os, "pipe"), reason="needs pipes")
def test_the_worker_leaves_no_process_behind(demo_inspectors):
    async def main():
        w = InspectionWorker(demo_inspectors)
        await w.start()
        proc = w.proc
        w.close()
        return proc

    proc = asyncio.run(main())
    assert proc.poll() is not None
