"""Skills against the simulated cell: the same code that runs the demo, one skill at a time."""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from cell.cli import main as cli_main
from cell.runtime import Cell
from drivers.types import Pose
from skills import SkillContext, Status, get, registry
from skills.facts import TrackedPart
from tests.conftest import run_sim


@pytest.fixture
def cell(demo_config, demo_inspectors):
    return Cell(demo_config, inspectors=demo_inspectors)


def ctx_for(cell: Cell, **roles: str) -> SkillContext:
    return SkillContext(devices={r: cell.devices[d] for r, d in roles.items()}, clock=cell.clock, facts=cell.facts,
                        emit=cell.emit, config=cell.tctx.lookups)


async def connect_all(cell: Cell) -> None:
    for d in cell.devices.values():
        await d.connect()


def test_registry_lists_every_skill_with_a_schema(capsys):
    names = set(registry())
    assert {"move", "pick_tracking", "place_in_pattern", "inspect", "wait_for_part", "machine_cycle",
            "reject_decision", "case_not_full"} <= names
    assert cli_main(["skills", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {s["name"] for s in listed} == names
    assert all("properties" in s["params_schema"] or s["params_schema"].get("type") == "object" for s in listed)


def test_invalid_params_are_a_precondition_failure(cell):
    async def main():
        await connect_all(cell)
        return await get("move")().run(ctx_for(cell, arm="robot"), {"speed": 2.0, "joints_deg": [0] * 6})

    res = run_sim(cell.clock, main())
    assert res.status is Status.PRECONDITION_FAILURE and "speed" in res.message


def test_move_refuses_nan_pose_without_moving(cell):
    async def main():
        await connect_all(cell)
        arm = cell.devices["robot"]
        q0 = await arm.joints()
        res = await get("move")().run(ctx_for(cell, arm="robot"), {"pose": {"x": math.nan, "y": 0, "z": 0.3}})
        return res, q0, await arm.joints()

    res, q0, q1 = run_sim(cell.clock, main())
    # refused by the skill's parameter model, before the arm is asked (the arm's own check is the contract tests')
    assert res.status is Status.PRECONDITION_FAILURE and "finite number" in res.message and q0 == q1


def test_cancel_stops_the_arm_where_it_is(cell):
    async def main():
        await connect_all(cell)
        arm = cell.devices["robot"]
        q0 = await arm.joints()
        task = asyncio.ensure_future(get("move")().run(
            ctx_for(cell, arm="robot"), {"joints_deg": [math.degrees(q0[0]) + 90, -90, 90, -90, -90, 0]}))
        await cell.clock.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        q_stop = await arm.joints()
        await cell.clock.sleep(1.0)
        return q0, q_stop, await arm.joints()

    q0, q_stop, q_later = run_sim(cell.clock, main())
    assert q_stop != q0 and q_stop == q_later  # moved a bit, then stayed put


def test_timeout_budget_gives_timeout_status(cell):
    async def main():
        await connect_all(cell)
        return await get("move")().run(ctx_for(cell, arm="robot"),
                                       {"joints_deg": [170, -90, 90, -90, -90, 0]}, timeout=0.2)

    assert run_sim(cell.clock, main()).status is Status.TIMEOUT


def test_wait_inspect_pick_place_one_tray(cell):
    world = cell.world
    facts = cell.facts
    events: list[str] = []
    cell.listeners.append(lambda k, d: events.append(k))

    async def main():
        await connect_all(cell)
        await cell.devices["infeed"].start()
        world.start_infeed()
        wait = get("wait_for_part")()
        while True:
            r = await wait.run(ctx_for(cell, io="eyes", conveyor="infeed"),
                               {"channel": "infeed_eye", "eye_x": -0.405, "lead_m": -0.095, "lane_y": 0.6,
                                "timeout_s": 60})
            assert r.ok, r.message
            r = await get("inspect")().run(ctx_for(cell, camera="top_camera", conveyor="infeed"), {"plane_z": 0.045})
            assert r.ok, r.message
            part: TrackedPart = facts.queue[-1]
            truth = next(p for p in world.parts.values() if p.eye_time == part.arrival)
            if not truth.defective and part.verdict == "good":
                break
        tx, ty = world.part_xy(truth)
        assert math.hypot(part.x_at(await cell.devices["infeed"].position()) - tx, part.y - ty) < 0.005
        r = await get("pick_tracking")().run(ctx_for(cell, arm="robot", gripper="cup", conveyor="infeed"),
                                            {"window": [0.15, 0.85]})
        assert r.ok, r.message
        assert truth.state == "gripped"
        # the pick records the cup's yaw on the tray, which the place turns the tray from: it is the arm's
        held = cell.facts.values["holding"]
        here = await cell.devices["robot"].pose()
        assert abs(math.remainder(here.yaw - held.meta["tool_yaw"], 2 * math.pi)) < 1e-6
        r = await get("place_in_pattern")().run(ctx_for(cell, arm="robot", gripper="cup"), {"station": "case_out"})
        assert r.ok, r.message
        return truth

    truth = run_sim(cell.clock, main())
    assert truth.state == "case" and truth.slot == 0 and facts.case_fill == 1
    assert {"part_arrived", "part_inspected", "part_picked", "part_placed"} <= set(events)


def test_pick_fails_cleanly_when_nothing_to_pick(cell):
    async def main():
        await connect_all(cell)
        return await get("pick_tracking")().run(ctx_for(cell, arm="robot", gripper="cup", conveyor="infeed"),
                                               {"window": [0.15, 0.85], "wait_s": 1.0})

    r = run_sim(cell.clock, main())
    assert r.status is Status.EXECUTION_FAILURE and "no pickable tray" in r.message


def test_machine_cycle_jam_raises_an_alarm(cell):
    from drivers.base import DeviceContext
    from sim.devices import SimMachine

    sealer = SimMachine("sealer_twin", SimMachine.Config(jam_probability=1.0),
                        DeviceContext(clock=cell.clock, resources={"world": cell.world}))

    async def main():
        await sealer.connect()
        ctx = SkillContext(devices={"machine": sealer}, clock=cell.clock, facts=cell.facts)
        first = await get("machine_cycle")().run(ctx, {})
        second = await get("machine_cycle")().run(ctx, {})
        return first, second

    first, second = run_sim(cell.clock, main())
    assert first.status is Status.EXECUTION_FAILURE and first.alarm and "jam" in first.alarm
    assert second.status is Status.PRECONDITION_FAILURE  # faulted until reset


def test_reject_decision_routes_by_verdict(cell):
    async def main():
        for verdict, route in (("good", "pack"), ("defective", "reject"), ("none", "reject")):
            cell.facts.queue.append(TrackedPart(id=verdict, arrival=0.0, encoder=0.0, verdict=verdict))
            r = await get("reject_decision")().run(ctx_for(cell), {})
            assert r.data["route"] == route

    run_sim(cell.clock, main())


def test_arm_pose_target_motion_is_checked_before_anything_moves(cell):
    async def main():
        await connect_all(cell)
        arm = cell.devices["robot"]
        q0 = await arm.joints()
        r = await get("move")().run(ctx_for(cell, arm="robot"), {"pose": {"x": 3.0, "y": 0.0, "z": 0.3}})
        assert r.status is Status.EXECUTION_FAILURE and "workspace" in r.message
        assert await arm.joints() == q0
        assert isinstance(await arm.pose(), Pose)

    run_sim(cell.clock, main())
