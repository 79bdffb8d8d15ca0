"""The conveyor proxy computes position/velocity from the latched belt state; faults fall back to the service."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed; run `make`")
pytest.importorskip("axcell_interfaces.srv", reason="axcell_interfaces not built; run `make`")

pytestmark = pytest.mark.timeout(60, method="thread")


def test_belt_state_reads_are_local_exact_and_faults_go_to_the_twin():
    from drivers.errors import DeviceFaultError, DeviceOfflineError
    from tests.contracts.ros_rig import ros_rig

    rig = ros_rig()
    conv, twin = rig.devices["conveyor"], rig.twins["conveyor"]
    clock = rig.cell.clock
    node_calls = []

    async def main():
        await conv.connect()
        p0 = await conv.position()
        await conv.start(0.25)
        assert await conv.velocity() == 0.25  # read-your-writes: the state after our own start
        for _ in range(5):
            await clock.sleep(0.7)
            assert await conv.position() == twin.belt.travel()  # same floats, same formula
        node_calls.append(conv.state_reads)
        assert await conv.position() - p0 == pytest.approx(0.25 * 3.5)

        twin.faults.inject("fault", times=2, op="position")  # armed on the twin: the proxy must see it
        with pytest.raises(DeviceFaultError):
            await conv.position()
        assert await conv.velocity() == 0.25  # over the service (op filter: velocity passes)
        with pytest.raises(DeviceFaultError):
            await conv.position()
        reads = conv.state_reads
        await clock.sleep(1.0)
        assert await conv.position() == twin.belt.travel()
        assert conv.state_reads == reads + 1  # faults used up: local again

        twin.faults.inject("disconnect", duration=2.0)
        with pytest.raises(DeviceOfflineError):
            await conv.velocity()
        await clock.sleep(2.5)
        assert await conv.velocity() == 0.25  # window over
        await conv.stop()
        p1 = await conv.position()
        await clock.sleep(3.0)
        assert await conv.position() == p1 and await conv.velocity() == 0.0
        assert rig.cell.clock.now() > 0

    try:
        rig.run(main())
    finally:
        rig.teardown()
    assert node_calls[0] >= 6
