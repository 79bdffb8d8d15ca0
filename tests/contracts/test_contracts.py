"""Contract suites: every implementation of a contract must pass the same tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivers import Arm, Camera, Conveyor, DigitalIO, Gripper, Machine, Pose
from drivers.errors import (
    DeviceFaultError, DeviceOfflineError, DeviceTimeoutError, GraspError, InvalidTargetError, JointLimitError,
    NotConnectedError, WorkspaceError,
)


class TestArm:
    def test_lifecycle_is_idempotent_and_guarded(self, rig):
        arm: Arm = rig.devices["arm"]

        async def main():
            with pytest.raises(NotConnectedError):
                await arm.joints()
            await arm.connect()
            await arm.connect()
            q = await arm.joints()
            assert len(q) == len(arm.joint_names) == arm.limits.dof
            await arm.close()
            await arm.close()

        rig.run(main())

    def test_move_joints_takes_time_and_arrives(self, rig):
        arm: Arm = rig.devices["arm"]
        clock = rig.cell.clock

        async def main():
            await arm.connect()
            q0 = np.array(await arm.joints())
            target = q0 + np.radians([20, -10, 15, 5, -5, 30])
            t0 = clock.now()
            await arm.move_joints(target)
            assert clock.now() - t0 > 0.1
            assert np.allclose(await arm.joints(), target, atol=1e-6)

        rig.run(main())

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_non_finite_joint_targets_are_refused_before_motion(self, rig, bad):
        arm: Arm = rig.devices["arm"]

        async def main():
            await arm.connect()
            q0 = await arm.joints()
            t0 = rig.cell.clock.now()
            with pytest.raises(InvalidTargetError):
                await arm.move_joints([bad, *q0[1:]])
            assert await arm.joints() == q0 and rig.cell.clock.now() == t0

        rig.run(main())

    def test_joint_limit_and_workspace_and_pose_nan(self, rig):
        arm: Arm = rig.devices["arm"]

        async def main():
            await arm.connect()
            q0 = await arm.joints()
            with pytest.raises(JointLimitError):
                await arm.move_joints([arm.limits.upper[0] + 0.1, *q0[1:]])
            with pytest.raises(WorkspaceError):
                await arm.move_pose(Pose(5.0, 0.0, 0.3, math.pi, 0, 0))
            with pytest.raises(InvalidTargetError):
                await arm.move_pose(Pose(0.5, math.nan, 0.3, math.pi, 0, 0))
            with pytest.raises(InvalidTargetError):
                await arm.move_joints(q0[:3])
            assert await arm.joints() == q0

        rig.run(main())

    def test_move_pose_reaches_the_tcp_target(self, rig):
        arm: Arm = rig.devices["arm"]

        async def main():
            await arm.connect()
            target = Pose(0.5, 0.3, 0.2, math.pi, 0.0, 0.3)
            await arm.move_pose(target)
            got = await arm.pose()
            assert np.allclose(got.position, target.position, atol=1e-4)
            assert np.allclose(got.rotation(), target.rotation(), atol=1e-4)

        rig.run(main())


    def test_move_path_settles_at_each_target_in_turn(self, rig):
        arm: Arm = rig.devices["arm"]
        clock = rig.cell.clock

        async def main():
            await arm.connect()
            start = Pose(0.45, 0.25, 0.25, math.pi, 0.0, 0.2)
            above, down = Pose(0.55, 0.1, 0.25, math.pi, 0.0, 0.5), Pose(0.55, 0.1, 0.12, math.pi, 0.0, 0.5)
            await arm.move_pose(start)  # a known rest state (the ROS proxy then sends one goal)
            t0 = clock.now()
            t_above = await arm.estimate_duration(above)
            await arm.move_path([above, down])
            got = await arm.pose()
            assert np.allclose(got.position, down.position, atol=1e-4)
            assert clock.now() - t0 > t_above + 0.05  # it went to `above` first, then down

        rig.run(main())

    @pytest.mark.parametrize("bad", [Pose(0.5, math.nan, 0.2, math.pi, 0, 0), Pose(5.0, 0.0, 0.3, math.pi, 0, 0)])
    def test_move_path_checks_every_target_before_moving(self, rig, bad):
        arm: Arm = rig.devices["arm"]

        async def main():
            await arm.connect()
            await arm.move_pose(Pose(0.45, 0.25, 0.25, math.pi, 0.0, 0.2))
            q0, t0 = await arm.joints(), rig.cell.clock.now()
            with pytest.raises((InvalidTargetError, WorkspaceError)):
                await arm.move_path([Pose(0.55, 0.1, 0.25, math.pi, 0.0, 0.5), bad])
            with pytest.raises(InvalidTargetError):
                await arm.move_path([])
            assert await arm.joints() == q0 and rig.cell.clock.now() == t0

        rig.run(main())


class TestGripper:
    def test_grip_over_nothing_fails_and_holds_nothing(self, rig):
        grip: Gripper = rig.devices["gripper"]
        arm: Arm = rig.devices["arm"]

        async def main():
            await arm.connect()
            await grip.connect()
            await arm.move_pose(Pose(0.5, -0.3, 0.1, math.pi, 0, 0))
            with pytest.raises(GraspError):
                await grip.grip()
            assert not await grip.is_holding()
            await grip.release()  # safe when holding nothing

        rig.run(main())

    def test_grip_a_tray_on_the_stopped_belt_and_release_it(self, rig):
        grip: Gripper = rig.devices["gripper"]
        arm: Arm = rig.devices["arm"]
        conveyor: Conveyor = rig.devices["conveyor"]
        world = rig.cell.world

        async def main():
            for d in (arm, grip, conveyor):
                await d.connect()
            world.start_infeed()
            await conveyor.start()
            while not any(world.part_xy(p)[0] > 0.4 for p in world.parts_on_belt()):
                await rig.cell.clock.sleep(0.1)
            await conveyor.stop()
            part = max(world.parts_on_belt(), key=lambda p: world.part_xy(p)[0])
            x, y = world.part_xy(part)
            await arm.move_pose(Pose(x, y, part.z + 0.05, math.pi, 0, 0))
            await arm.move_pose(Pose(x + 0.005, y - 0.005, part.z, math.pi, 0, 0))
            await grip.grip()
            assert await grip.is_holding()
            await arm.move_pose(Pose(x, y, part.z + 0.1, math.pi, 0, 0))
            await grip.release()
            assert not await grip.is_holding()

        rig.run(main())


class TestCamera:
    def test_capture_returns_a_calibrated_frame_now(self, rig):
        cam: Camera = rig.devices["camera"]

        async def main():
            await cam.connect()
            t0 = rig.cell.clock.now()
            frame = await cam.capture()
            cal = cam.calibration
            assert frame.image.dtype == np.uint8 and frame.image.shape[:2] == (cal.height, cal.width)
            assert t0 <= frame.stamp <= rig.cell.clock.now()
            u, v = cal.plane_to_pixel(*cal.pixel_to_plane(100.0, 50.0, 0.0), 0.0)
            assert (u, v) == pytest.approx((100.0, 50.0), abs=1e-6)

        rig.run(main())

    def test_injected_timeout_and_disconnect(self, rig):
        cam: Camera = rig.devices["camera"]
        twin = rig.twins["camera"]

        async def main():
            await cam.connect()
            twin.faults.inject("timeout")
            with pytest.raises(DeviceTimeoutError):
                await cam.capture()
            twin.faults.inject("disconnect")
            with pytest.raises(DeviceOfflineError):
                await cam.capture()
            assert (await cam.capture()).image.size > 0  # faults were one-shot

        rig.run(main())


class TestConveyor:
    def test_encoder_integrates_speed(self, rig):
        conv: Conveyor = rig.devices["conveyor"]

        async def main():
            await conv.connect()
            p0 = await conv.position()
            await conv.start(0.25)
            assert await conv.velocity() == pytest.approx(0.25)
            await rig.cell.clock.sleep(4.0)
            assert await conv.position() - p0 == pytest.approx(1.0)
            await conv.stop()
            p1 = await conv.position()
            await rig.cell.clock.sleep(2.0)
            assert await conv.position() == p1 and await conv.velocity() == 0.0

        rig.run(main())

    @pytest.mark.parametrize("speed", [-0.1, 0.0, 99.0, math.nan])
    def test_out_of_range_speed_is_refused(self, rig, speed):
        conv: Conveyor = rig.devices["conveyor"]

        async def main():
            await conv.connect()
            with pytest.raises(ValueError):
                await conv.start(speed)
            assert await conv.velocity() == 0.0

        rig.run(main())


class TestDigitalIO:
    def test_channels_read_write_and_permissions(self, rig):
        io: DigitalIO = rig.devices["io"]

        async def main():
            await io.connect()
            ins = [c for c, d in io.channels.items() if d == "in"]
            outs = [c for c, d in io.channels.items() if d == "out"]
            assert ins and outs
            with pytest.raises(KeyError):
                await io.read("no_such_channel")
            with pytest.raises(PermissionError):
                await io.write(ins[0], True)
            await io.write(outs[0], True)
            assert await io.read(outs[0]) is True

        rig.run(main())

    def test_wait_edge_returns_the_edge_time_and_times_out(self, rig):
        io: DigitalIO = rig.devices["io"]
        conv: Conveyor = rig.devices["conveyor"]
        world = rig.cell.world

        async def main():
            await io.connect()
            await conv.connect()
            eye = next(c for c, d in io.channels.items() if d == "in")
            with pytest.raises(DeviceTimeoutError):
                await io.wait_edge(eye, timeout=1.0)
            world.start_infeed()
            await conv.start()
            t = await io.wait_edge(eye, timeout=60.0)
            assert t == rig.cell.clock.now() and await io.read(eye) is True
            part = next(p for p in world.parts.values() if p.eye_time is not None)
            assert part.eye_time == t
            t_fall = await io.wait_edge(eye, rising=False, timeout=60.0)
            assert t_fall > t and await io.read(eye) is False

        rig.run(main())


class TestMachine:
    def test_cycle_status_and_telemetry(self, rig):
        m: Machine = rig.devices["machine"]

        async def main():
            await m.connect()
            await m.command("reset")
            st = await m.status()
            assert not st.faulted and st.state == "Idle"
            res = await m.cycle(timeout=30)
            assert res.ok and res.finished > res.started
            tele = await m.telemetry()
            assert {"seal_temperature", "motor_current", "tape_remaining"} <= set(tele)
            assert (await m.status()).cycles == st.cycles + 1

        rig.run(main())

    def test_jam_faults_and_reset_recovers(self, rig):
        m: Machine = rig.devices["machine"]
        twin = rig.twins["machine"]

        async def main():
            await m.connect()
            await m.command("reset")
            twin.faults.inject("fault", message="jam in the sealing head")
            with pytest.raises(DeviceFaultError):
                await m.cycle(timeout=30)
            await m.command("reset")
            assert (await m.cycle(timeout=30)).ok

        rig.run(main())

    def test_unknown_command_and_offline(self, rig):
        m: Machine = rig.devices["machine"]
        twin = rig.twins["machine"]

        async def main():
            await m.connect()
            with pytest.raises(ValueError):
                await m.command("explode")
            twin.faults.inject("disconnect", duration=5.0)
            with pytest.raises(DeviceOfflineError):
                await m.status()

        rig.run(main())
