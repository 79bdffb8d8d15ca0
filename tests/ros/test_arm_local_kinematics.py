"""The arm proxy computes IK and motion-time estimates itself while the arm rests at a known
target, with the twin's answers to the bit; otherwise (unknown state, after stop()) it asks the node."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed; run `make`")
pytest.importorskip("axcell_interfaces.srv", reason="axcell_interfaces not built; run `make`")

pytestmark = pytest.mark.timeout(60, method="thread")


def test_local_ik_and_durations_equal_the_twin_and_fall_back_when_unknown():
    from drivers.errors import UnreachableError, WorkspaceError
    from drivers.types import Pose
    from tests.contracts.ros_rig import ros_rig

    rig = ros_rig()
    arm, twin = rig.devices["arm"], rig.twins["arm"]

    async def main():
        await arm.connect()
        assert arm._model is not None  # the node described its kinematics
        targets = [Pose(x, y, z, math.pi, 0.0, yaw) for x, y, z, yaw in
                   ((0.5, 0.2, 0.3, 0.0), (0.7, -0.1, 0.25, 0.6), (0.35, 0.4, 0.4, -1.2), (0.6, 0.05, 0.15, 3.0))]
        calls0 = arm.local_calls
        await arm.solve_ik(targets[0])  # state unknown before the first goal: asked over the wire
        assert arm.local_calls == calls0
        here = targets[0]
        for i, target in enumerate(targets):
            await arm.move_pose(target, speed=0.8)
            n = arm.local_calls
            for probe in targets:
                for speed in (1.0, 0.5, 0.8):
                    assert await arm.estimate_duration(probe, speed=speed) == \
                        await twin.estimate_duration(probe, speed=speed)
                assert await arm.solve_ik(probe) == await twin.solve_ik(probe)
            assert arm.local_calls == n + 4 * len(targets)
        far = Pose(here.x + 5.0, here.y, here.z, here.roll, here.pitch, here.yaw)
        for fn in (arm.solve_ik, twin.solve_ik):
            with pytest.raises((UnreachableError, WorkspaceError)) as ei:
                await fn(far)
        await arm.stop()  # the arm's state is not known any more: the node answers
        n = arm.local_calls
        assert await arm.estimate_duration(targets[0]) == await twin.estimate_duration(targets[0])
        assert arm.local_calls == n
        assert math.isfinite(rig.cell.clock.now())
        del ei

    try:
        rig.run(main())
    finally:
        rig.teardown()
