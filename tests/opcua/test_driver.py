"""The OPC UA machine driver against a real asyncua sim sealer server: cycles and every fault."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from drivers.errors import DeviceFaultError, DeviceOfflineError, DeviceTimeoutError
from drivers.opcua_machine import NodeMapError, NodeSpec

from .conftest import make_driver, wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]


async def test_normal_cycles_and_telemetry(driver, sealer):
    before = sealer.model.cycles
    for _ in range(3):
        res = await driver.cycle(timeout=5)
        assert res.ok and res.finished >= res.started
        assert set(res.telemetry) == {"seal_temperature", "motor_current", "tape_remaining", "jam"}
        assert 170 < res.telemetry["seal_temperature"] < 190
        assert res.telemetry["motor_current"] > 1.0  # sampled during the seal, not at rest
    assert sealer.model.cycles == before + 3
    st = await driver.status()
    assert st.state == "Complete" and not st.faulted and st.cycles == sealer.model.cycles
    assert set(st.telemetry) == {"seal_temperature", "motor_current", "tape_remaining", "jam"}
    # the subscription feeds the state cache too
    await wait_until(lambda: driver.health().get("state") == "Complete", 3)


async def test_writes_use_the_server_datatype(driver, sealer):
    await driver.write("cycle_time", 0.05)          # Double on the server
    await driver.write("speed", 30)                 # Float on the server: an int is encoded as Float
    assert sealer.model.cycle_time == pytest.approx(0.05) and sealer.model.speed == pytest.approx(30.0)
    with pytest.raises(ValueError):
        await driver.write("speed", "fast")
    with pytest.raises(KeyError):
        await driver.write("state", 3)              # not a write signal of the map
    await driver.write("cycle_time", 0.08)


async def test_illegal_command_is_a_fault_not_a_silent_success(driver):
    with pytest.raises(DeviceFaultError, match="BadInvalidState"):
        await driver.command("unhold")               # Idle: Unhold is illegal in PackML
    with pytest.raises(ValueError):
        await driver.command("dance")


async def test_jam_faults_the_cycle_and_reset_recovers(driver, sealer):
    sealer.inject_jam()
    with pytest.raises(DeviceFaultError, match="jam"):
        await driver.cycle(timeout=5)
    st = await driver.status()
    assert st.state == "Held" and st.faulted and st.fault == "jam" and st.telemetry["jam"] == 1.0
    await driver.command("reset")                    # Held -> Stop -> Stopped -> Reset -> Idle
    assert (await driver.status()).state == "Idle"
    assert (await driver.cycle(timeout=5)).ok


async def test_bad_status_is_never_used_as_good(driver, sealer):
    await sealer.set_bad("seal_temperature")
    with pytest.raises(DeviceFaultError, match="Bad status"):
        await driver.telemetry()
    # on the subscription path too
    await wait_until(lambda: "seal_temperature" in driver.health().get("bad_values", {}), 3)
    await sealer.clear_faults()
    assert (await driver.telemetry())["seal_temperature"] > 100


async def test_uncertain_is_refused_by_default(driver, sealer):
    from asyncua import ua

    await sealer.set_bad("motor_current", ua.StatusCodes.UncertainLastUsableValue)
    with pytest.raises(DeviceFaultError, match="Uncertain"):
        await driver.status()
    await sealer.clear_faults()


async def test_wrong_data_type_on_the_wire(driver, sealer):
    await sealer.set_wrong_type("motor_current")
    with pytest.raises(DeviceFaultError, match="String, expected Double"):
        await driver.status()
    await sealer.clear_faults()
    await driver.status()


async def test_node_map_mismatches_are_all_reported_at_connect(sealer):
    d = make_driver(sealer.endpoint, nodes={
        "seal_temperature": NodeSpec(path="Sealer/Machine/SealTemperature", type="Float"),
        "tape_remaining": NodeSpec(path="Sealer/Machine/NoSuchTape", type="Double"),
        "stop": NodeSpec(path="Sealer/Status/StateCurrent", direction="method"),
        "speed": NodeSpec(path="Sealer/Status/CurMachSpeed", type="Float", direction="write"),
        "fault": NodeSpec(node="ns=2;s=Sealer.Nope", type="String"),
    })
    with pytest.raises(NodeMapError) as ei:
        await d.connect()
    probs = "\n".join(ei.value.problems)
    assert len(ei.value.problems) == 5, probs
    assert "seal_temperature" in probs and "DataType Double, the map expects Float" in probs
    assert "tape_remaining" in probs and "not found" in probs
    assert "stop" in probs and "expected a Method" in probs
    assert "speed" in probs and "not writable" in probs
    assert "fault" in probs and "does not exist" in probs
    assert not d.connected


async def test_namespace_uri_nodeids_resolve(sealer):
    d = make_driver(sealer.endpoint, nodes={
        "state": NodeSpec(node="nsu=urn:axcell:sim:case-sealer;s=Sealer.Status.StateCurrent", type="Int32")})
    await d.connect()
    try:
        assert (await d.status()).state in ("Idle", "Complete", "Held", "Stopped")
    finally:
        await d.close()


async def test_hung_server_is_detected_within_5_s_and_recovered(driver, sealer):
    sealer.hang()
    t0 = time.perf_counter()
    try:
        with pytest.raises((DeviceTimeoutError, DeviceOfflineError)):
            await driver.status()
        await wait_until(lambda: any(k == "offline" for _, k, _ in driver.events), 5)
        assert time.perf_counter() - t0 < 5.0
        assert not driver.online
        with pytest.raises(DeviceOfflineError):
            await driver.cycle()
    finally:
        sealer.unhang()
    await wait_until(lambda: driver.online, 10)
    assert ("sealer", "online") in [(d, k) for d, k, _ in driver.events]
    await driver.command("reset")
    assert (await driver.cycle(timeout=5)).ok


async def test_hung_server_detected_by_the_watchdog_while_idle(driver, sealer):
    sealer.hang()
    try:
        elapsed = await wait_until(lambda: any(k == "offline" for _, k, _ in driver.events), 5)
        assert elapsed < 5.0
    finally:
        sealer.unhang()
    await wait_until(lambda: driver.online, 10)


async def test_offline_then_back(driver, sealer):
    await sealer.go_offline()
    with pytest.raises((DeviceOfflineError, DeviceTimeoutError)):
        await driver.status()
    assert not driver.online and driver.events[0][1] == "offline"
    with pytest.raises(DeviceOfflineError):
        await driver.cycle()
    await sealer.start()
    await wait_until(lambda: driver.online, 10)
    await driver.command("reset")
    assert (await driver.cycle(timeout=5)).ok


async def test_server_restart_reconnects_with_a_fresh_session(driver, sealer):
    connects = driver.connects
    cycles = sealer.model.cycles
    await sealer.restart()
    await wait_until(lambda: driver.connects > connects and driver.online, 10)
    await driver.command("reset")
    assert (await driver.cycle(timeout=5)).ok
    assert sealer.model.cycles == cycles + 1  # the PLC kept its state across the restart


async def test_hung_server_also_hangs_new_connections(sealer):
    """hang() pauses the connections the server has and every one it accepts while hung."""
    from asyncua import Client

    sealer.hang()
    try:
        c = Client(sealer.endpoint, timeout=0.5)
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(c.connect(), 1.5)
        with contextlib.suppress(Exception):
            await c.disconnect()
    finally:
        sealer.unhang()
    c = Client(sealer.endpoint, timeout=2.0)
    await c.connect()
    try:
        assert await c.nodes.server_state.read_value() is not None
    finally:
        await c.disconnect()
