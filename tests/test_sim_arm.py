"""The simulated arm twin (sim.arm.SimArm) under a discrete-event SimClock."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from pydantic import ValidationError

from drivers import kinematics as kin
from drivers.base import DeviceContext, device_class
from drivers.errors import (
    DeviceFaultError,
    DeviceOfflineError,
    DeviceTimeoutError,
    InvalidTargetError,
    JointLimitError,
    MotionTargetError,
    NotConnectedError,
    UnreachableError,
    WorkspaceError,
)
from drivers.types import Pose
from sim.arm import SimArm
from sim.clock import SimClock
from sim.motion import plan

def make_arm(**cfg) -> tuple[SimArm, SimClock]:
    clock = SimClock()
    arm = SimArm("arm", SimArm.Config(**cfg), DeviceContext(clock=clock))
    return arm, clock


async def connected(**cfg) -> tuple[SimArm, SimClock]:
    arm, clock = make_arm(**cfg)
    await arm.connect()
    return arm, clock


TARGET = (0.4, -1.3, 1.2, -1.4, -1.57, 0.3)


@pytest.mark.asyncio
async def test_registered_kind() -> None:
    assert device_class("sim.arm") is SimArm
    assert SimArm.contract == "arm"


@pytest.mark.asyncio
async def test_move_takes_planned_sim_time() -> None:
    arm, clock = await connected()
    expected = plan(arm.home, TARGET, arm.limits).duration
    done: dict[str, float] = {}

    async def mover() -> None:
        await arm.move_joints(TARGET)
        done["t"] = clock.now()

    task = asyncio.create_task(mover())
    await clock.run(until=10)
    assert task.done() and task.exception() is None
    assert done["t"] == pytest.approx(expected, abs=1e-12)
    assert clock.now() == 10
    assert await arm.joints() == pytest.approx(TARGET, abs=1e-12)


@pytest.mark.asyncio
async def test_state_is_a_function_of_time() -> None:
    arm, clock = await connected()
    traj = plan(arm.home, TARGET, arm.limits)
    task = asyncio.create_task(arm.move_joints(TARGET))
    await clock.run(until=traj.duration / 3)
    assert arm.moving
    assert np.allclose(await arm.joints(), traj.at(traj.duration / 3)[0])
    pose = await arm.pose()
    assert pose.position == pytest.approx(kin.fk(arm.model, traj.at(traj.duration / 3)[0])[:3, 3])
    assert arm.pose_sync() == pose
    await clock.run(until=10)
    assert task.done() and not arm.moving


@pytest.mark.asyncio
async def test_speed_and_speed_scale_lengthen_motion() -> None:
    durations = []
    for speed, scale in ((1.0, 1.0), (0.5, 1.0), (1.0, 0.25)):
        arm, clock = await connected(speed_scale=scale)
        task = asyncio.create_task(arm.move_joints(TARGET, speed=speed))
        stamps: list[float] = []
        task.add_done_callback(lambda _t, c=clock, s=stamps: s.append(c.now()))
        await clock.run(until=60)
        durations.append(stamps[0])
    assert durations[1] == pytest.approx(2 * durations[0])
    assert durations[2] == pytest.approx(4 * durations[0])


@pytest.mark.asyncio
async def test_move_pose_reaches_target_in_cell_frame() -> None:
    arm, clock = await connected(base=(0.5, -0.2, 0.1, math.pi / 2), tool_z=0.15)
    here = await arm.pose()
    target = here.translated(0.1, -0.15, -0.25)
    est = await arm.estimate_duration(target)
    t0 = clock.now()
    task = asyncio.create_task(arm.move_pose(target))
    await clock.run(until=est + 1)
    assert task.done() and task.exception() is None
    got = await arm.pose()
    assert got.position == pytest.approx(target.position, abs=1e-9)
    assert np.allclose(Pose.from_matrix(target.matrix()).rotation(), got.rotation(), atol=1e-9)
    assert est > 0 and t0 == 0


@pytest.mark.asyncio
async def test_estimate_duration_is_exact_from_moving_state() -> None:
    arm, clock = await connected()
    asyncio.create_task(arm.move_joints(TARGET))
    await clock.run(until=0.3)
    target = arm.fk_pose(arm.home)
    est = await arm.estimate_duration(target)
    start = clock.now()
    stamps: list[float] = []
    task = asyncio.create_task(arm.move_pose(target))
    task.add_done_callback(lambda _t: stamps.append(clock.now()))
    await clock.run(until=20)
    assert stamps[0] - start == pytest.approx(est, abs=1e-12)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "q, err",
    [
        ((math.nan, 0, 0, 0, 0, 0), InvalidTargetError),
        ((math.inf, 0, 0, 0, 0, 0), InvalidTargetError),
        ((0.0,) * 5, InvalidTargetError),
        ((7.0, 0, 0, 0, 0, 0), JointLimitError),
    ],
)
async def test_bad_joint_targets_refused_without_motion(q, err) -> None:
    arm, clock = await connected()
    before = await arm.joints()
    with pytest.raises(err):
        await arm.move_joints(q)
    assert await arm.joints() == before and arm.moves == 0


@pytest.mark.asyncio
async def test_bad_pose_targets_refused_without_motion() -> None:
    arm, clock = await connected(workspace={"min": [-1.5, -1.5, -0.2], "max": [1.5, 1.5, 1.5]})
    before = await arm.joints()
    here = await arm.pose()
    cases = [
        (Pose(math.nan, 0, 0.3), InvalidTargetError),
        (Pose(0.3, 0.2, math.inf), InvalidTargetError),
        (Pose(0.3, 0.2, 2.0), WorkspaceError),
        (Pose(1.45, 1.45, 1.4, math.pi, 0, 0), UnreachableError),
    ]
    for pose, err in cases:
        with pytest.raises(err):
            await arm.move_pose(pose)
        with pytest.raises(err):
            await arm.estimate_duration(pose)
    with pytest.raises(InvalidTargetError):
        await arm.move_pose(here, speed=0.0)
    assert await arm.joints() == before and arm.moves == 0


@pytest.mark.asyncio
async def test_joint_limit_override_enforced() -> None:
    arm, clock = await connected(joint_limits_deg={"lower": [-20, -180, -150, -270, -270, -360],
                                                   "upper": [20, 0, 150, 90, 90, 360]})
    assert arm.limits.upper[0] == pytest.approx(math.radians(20))
    with pytest.raises(JointLimitError):
        await arm.move_joints((1.0, -1.5, 1.5, -1.5, -1.5, 0))
    # behind the robot: both shoulder branches need the base joint beyond ±20° (nearest branch: 26.7°)
    behind = arm.fk_pose((math.pi, -1.5, 1.5, -1.5, -1.5, 0))
    with pytest.raises(UnreachableError, match="none within the joint limits"):
        await arm.move_pose(behind)
    assert arm.moves == 0


@pytest.mark.asyncio
async def test_move_path_validates_every_target_first() -> None:
    arm, clock = await connected()
    here = await arm.pose()
    good = [here.translated(0.1), here.translated(0.1, 0.1), here.translated(0, 0, -0.1)]
    with pytest.raises(UnreachableError):
        await arm.move_path([*good[:2], Pose(5.0, 0, 0, math.pi, 0, 0)])
    with pytest.raises(InvalidTargetError):
        await arm.move_path([good[0], Pose(0, math.nan, 0)])
    assert arm.moves == 0
    task = asyncio.create_task(arm.move_path(good, speed=0.5))
    await clock.run(until=30)
    assert task.done() and task.exception() is None
    assert arm.moves == 3
    assert (await arm.pose()).position == pytest.approx(good[-1].position, abs=1e-9)


@pytest.mark.asyncio
async def test_cancel_mid_motion_freezes_at_cancel_instant() -> None:
    arm, clock = await connected()
    traj = plan(arm.home, TARGET, arm.limits)
    t_cancel = traj.duration * 0.4
    task = asyncio.create_task(arm.move_joints(TARGET))
    clock.call_at(t_cancel, task.cancel)
    await clock.run(until=10)
    assert task.cancelled()
    q = np.array(await arm.joints())
    assert np.allclose(q, traj.at(t_cancel)[0], atol=1e-12)
    await clock.run(until=20)
    assert np.array_equal(np.array(await arm.joints()), q) and not arm.moving


@pytest.mark.asyncio
async def test_stop_freezes_and_interrupts_the_move() -> None:
    arm, clock = await connected()
    traj = plan(arm.home, TARGET, arm.limits)
    task = asyncio.create_task(arm.move_joints(TARGET))
    await clock.run(until=traj.duration / 2)
    await arm.stop()
    await arm.stop()  # idempotent
    await clock.run(until=10)
    assert isinstance(task.exception(), DeviceFaultError)
    assert np.allclose(await arm.joints(), traj.at(traj.duration / 2)[0])


@pytest.mark.asyncio
async def test_new_move_replans_from_moving_state() -> None:
    arm, clock = await connected()
    first = asyncio.create_task(arm.move_joints(TARGET))
    await clock.run(until=0.4)
    second = asyncio.create_task(arm.move_joints(arm.home))
    await clock.run(until=20)
    assert isinstance(first.exception(), DeviceFaultError)
    assert second.exception() is None
    assert await arm.joints() == pytest.approx(arm.home, abs=1e-12)


@pytest.mark.asyncio
async def test_timeout_stops_and_raises() -> None:
    arm, clock = await connected()
    traj = plan(arm.home, TARGET, arm.limits)
    task = asyncio.create_task(arm.move_joints(TARGET, timeout=traj.duration / 4))
    await clock.run(until=10)
    assert isinstance(task.exception(), DeviceTimeoutError)
    assert np.allclose(await arm.joints(), traj.at(traj.duration / 4)[0])


@pytest.mark.asyncio
async def test_connect_close_idempotent_and_not_connected() -> None:
    arm, clock = make_arm()
    with pytest.raises(NotConnectedError):
        await arm.joints()
    with pytest.raises(NotConnectedError):
        await arm.pose()
    with pytest.raises(NotConnectedError):
        await arm.move_joints(TARGET)
    with pytest.raises(NotConnectedError):
        await arm.solve_ik(Pose(0.5, 0.2, 0.3, math.pi, 0, 0))
    with pytest.raises(NotConnectedError):
        await arm.stop()
    await arm.close()  # never connected: fine
    await arm.connect()
    await arm.connect()
    assert arm.connected
    await arm.close()
    await arm.close()
    assert not arm.connected
    with pytest.raises(NotConnectedError):
        await arm.move_joints(TARGET)


@pytest.mark.asyncio
async def test_fault_hooks() -> None:
    arm, clock = await connected()
    arm.faults.inject("disconnect", op="move")
    with pytest.raises(DeviceOfflineError):
        await arm.move_joints(TARGET)
    assert arm.moves == 0
    arm.faults.inject("fault")
    with pytest.raises(DeviceFaultError):
        await arm.joints()


@pytest.mark.asyncio
async def test_home_default_is_tool_down() -> None:
    arm, _ = await connected()
    t = kin.fk(arm.model, arm.home)
    assert t[:3, 2] == pytest.approx([0, 0, -1], abs=1e-9)
    assert arm.health()["model"] == "ur10e"


def test_config_validation_messages() -> None:
    with pytest.raises(ValidationError, match=r"unknown robot model 'kuka'.*ur10e.*ur5e"):
        SimArm.Config(model="kuka")
    with pytest.raises(ValidationError, match="must be less than upper"):
        SimArm.Config(joint_limits_deg={"lower": [10, 0, 0, 0, 0, 0], "upper": [5, 1, 1, 1, 1, 1]})
    with pytest.raises(ValidationError, match="exceeds the ur10e hard limits"):
        SimArm.Config(joint_limits_deg={"lower": [-400, 0, 0, 0, 0, 0], "upper": [1] * 6})
    with pytest.raises(ValidationError, match="needs 6 values"):
        SimArm.Config(joint_limits_deg={"lower": [0] * 5, "upper": [1] * 5})
    with pytest.raises(ValidationError, match="home needs 6"):
        SimArm.Config(home=[0.0] * 3)
    with pytest.raises(ValidationError, match="outside"):
        SimArm.Config(home=[2.0, 0, 0, 0, 0, 0], joint_limits_deg={"lower": [-90] * 6, "upper": [90] * 6})
    with pytest.raises(ValidationError):
        SimArm.Config(speed_scale=0.0)
    with pytest.raises(ValidationError):
        SimArm.Config(speed_scale=1.5)
    with pytest.raises(ValidationError):
        SimArm.Config(tool_z=math.nan)
    with pytest.raises(ValidationError, match="greater than min"):
        SimArm.Config(workspace={"min": [0, 0, 0], "max": [1, -1, 1]})
    with pytest.raises(ValidationError):
        SimArm.Config(bogus=1)
    cfg = SimArm.Config(model="ur5e", home=[0, -1.5, 1.5, -1.5, -1.5, 0])
    assert cfg.model == "ur5e"
