"""The cell as an OPC UA PackML unit: browse, subscribe, command, roles, counters, and the official model."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
import pytest_asyncio
from asyncua import Client, ua

from cell.batch import run_batch
from cell.config import OpcuaSpec
from cell.opcua import serve_northbound
from cell.packml import State
from cell.runtime import Cell

from .conftest import NODESET, wait_until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]
PACKML = "http://opcfoundation.org/UA/PackML/"
USERS = {"op": {"role": "operator", "password": "op-pw"}, "viewer": {"role": "viewer", "password": "v-pw"}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def unit(demo_config):
    """A demo cell (its clock paced at 20x real time) served as a PackML unit."""
    cell = Cell(demo_config, seed=1)
    nb = await serve_northbound(cell, OpcuaSpec(allow_anonymous_read=True, users=USERS), 0)
    clock = asyncio.ensure_future(cell.clock.run(speed=20.0))
    yield cell, nb
    cell.clock.stop()
    await clock
    await nb.stop()
    await cell.close()


def client(nb, user=None, pw=None) -> Client:
    c = Client(nb.endpoint, timeout=5)
    if user:
        c.set_user(user)
        c.set_password(pw)
    return c


async def machines(c: Client):
    P = await c.get_namespace_index(PACKML)
    folder = await c.nodes.objects.get_child(f"{P}:PackMLObjects")
    (u,) = await folder.get_children()
    base = await u.get_child(f"{P}:BaseStateMachine")
    machine = await base.get_child(f"{P}:MachineState")
    execute = await machine.get_child(f"{P}:ExecuteState")
    return P, u, base, machine, execute


async def test_browse_the_unit(unit):
    cell, nb = unit
    assert nb.endpoint.endswith("/axcell/") and nb.endpoint.startswith("opc.tcp://127.0.0.1:")
    async with client(nb) as c:  # anonymous read-only browsing is allowed by this cell file
        P, u, base, machine, execute = await machines(c)
        assert (await u.read_browse_name()).Name == cell.name
        status = await u.get_child(f"{P}:Status")
        names = {(await n.read_browse_name()).Name for n in await status.get_children()}
        assert {"UnitModeCurrent", "UnitSupportedModes", "MachSpeed", "CurMachSpeed", "EquipmentBlocked",
                "EquipmentStarved"} <= names
        admin = await u.get_child(f"{P}:Admin")
        names = {(await n.read_browse_name()).Name for n in await admin.get_children()}
        assert {"ProdProcessedCount", "ProdDefectiveCount", "ProdConsumedCount", "StateCurrentTime",
                "StateCumulativeTime", "StopReason", "Alarm", "MachDesignSpeed"} <= names
        await c.load_data_type_definitions()
        (count,) = await (await admin.get_child(f"{P}:ProdProcessedCount")).read_value()
        assert hasattr(count, "Count") and hasattr(count, "AccCount")
        for m, expect in ((base, "Cleared"), (machine, "Stopped"), (execute, "")):
            assert (await (await m.get_child("0:CurrentState")).read_value()).Text == expect
            states = await (await m.get_child("0:AvailableStates")).read_value()
            trans = await (await m.get_child("0:AvailableTransitions")).read_value()
            assert states and trans
        exec_states = {(await c.get_node(n).read_browse_name()).Name
                       for n in await (await execute.get_child("0:AvailableStates")).read_value()}
        assert {"Idle", "Execute", "Held", "Complete"} <= exec_states
        methods = {(await n.read_browse_name()).Name for n in await execute.get_methods()}
        assert {"Reset", "Start", "Hold", "Unhold", "Suspend", "Unsuspend", "ToComplete"} <= methods
        assert {"Abort", "Clear"} <= {(await n.read_browse_name()).Name for n in await base.get_methods()}
        assert {"Stop", "Reset"} <= {(await n.read_browse_name()).Name for n in await machine.get_methods()}


async def test_anonymous_and_viewer_cannot_command(unit):
    cell, nb = unit
    before = cell.fsm.state
    for user, pw in ((None, None), ("viewer", "v-pw")):
        async with client(nb, user, pw) as c:
            P, u, base, machine, execute = await machines(c)
            with pytest.raises(ua.uaerrors.BadUserAccessDenied):
                await machine.call_method(f"{P}:Reset")
            assert (await (await machine.get_child("0:CurrentState")).read_value()).Text  # reading is fine
    assert cell.fsm.state == before
    bad = client(nb, "op", "wrong")
    with pytest.raises(ua.UaError):
        await bad.connect()


async def test_operator_commands_and_a_subscriber_sees_execute(unit):
    cell, nb = unit
    seen: list[str] = []

    class Handler:
        def datachange_notification(self, node, val, data):
            seen.append(val.Text)

    async with client(nb, "op", "op-pw") as c:
        P, u, base, machine, execute = await machines(c)
        sub = await c.create_subscription(10, Handler())
        await sub.subscribe_data_change(await execute.get_child("0:CurrentState"))
        with pytest.raises(ua.uaerrors.BadInvalidState):
            await execute.call_method(f"{P}:Start")      # Stopped: Start is illegal
        assert cell.fsm.state == State.STOPPED
        await machine.call_method(f"{P}:Reset")
        await wait_until(lambda: cell.fsm.state == State.IDLE, 20)
        await execute.call_method(f"{P}:Start")
        await wait_until(lambda: "Execute" in seen, 10)
        assert seen.index("Idle") < seen.index("Execute")
        with pytest.raises(ua.uaerrors.BadInvalidState):
            await execute.call_method(f"{P}:Unhold")     # Execute: Unhold is illegal, nothing changes
        assert cell.fsm.state == State.EXECUTE
        await machine.call_method(f"{P}:Stop")
        await wait_until(lambda: cell.fsm.state == State.STOPPED, 20)
        assert (await (await machine.get_child("0:CurrentState")).read_value()).Text == "Stopped"
        with pytest.raises(ua.uaerrors.BadNotSupported):
            await u.call_method(f"{P}:SetMachSpeed", ua.Variant(10.0, ua.VariantType.Float))
        await sub.delete()


async def test_no_none_endpoint_without_the_allowance(demo_config, pki):
    cell = Cell(demo_config, seed=1)
    nb = await serve_northbound(cell, OpcuaSpec(allow_anonymous_read=False, users=USERS), 0, pki_dir=pki)
    try:
        probe = Client(nb.endpoint, timeout=5)
        eps = await probe.connect_and_get_server_endpoints()
        assert eps and all(e.SecurityMode != ua.MessageSecurityMode.None_ for e in eps)
        assert all(t.TokenType != ua.UserTokenType.Anonymous for e in eps for t in e.UserIdentityTokens)
        with pytest.raises(Exception):
            async with Client(nb.endpoint, timeout=5):
                pass
        c = Client(nb.endpoint, timeout=5)
        c.application_uri = "urn:axcell:client"
        await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{pki / 'client.der'},{pki / 'client.key.pem'}")
        c.set_user("op")
        c.set_password("op-pw")
        async with c:
            P, u, base, machine, execute = await machines(c)
            await machine.call_method(f"{P}:Reset")
            assert cell.fsm.state == State.RESETTING
    finally:
        await nb.stop()
        await cell.close()


# -- the official model (read-only reference, never committed) ---------------------------------------------------------
def _nodeset():
    if not NODESET.exists():
        pytest.skip(f"official PackML NodeSet not present at {NODESET}")
    ns = {"u": "http://opcfoundation.org/UA/2011/03/UANodeSet.xsd"}
    root = ET.parse(NODESET).getroot()
    assert root.find("u:NamespaceUris/u:Uri", ns).text == PACKML
    aliases = {a.get("Alias"): a.text for a in root.find("u:Aliases", ns)}
    nodes = {}
    for el in root:
        tag = el.tag.split("}")[1]
        if tag.startswith("UA"):
            refs = [(r.get("ReferenceType"), r.get("IsForward", "true") != "false", r.text)
                    for r in (el.find("u:References", ns) or [])]
            nodes[el.get("NodeId")] = {"cls": tag[2:], "bn": el.get("BrowseName"), "dt": el.get("DataType"),
                                       "refs": refs}

    def children(nid):
        out = {}
        for rt, fwd, t in nodes[nid]["refs"]:
            if fwd and t in nodes and rt not in ("HasTypeDefinition", "HasModellingRule", "HasSubtype",
                                                 "GeneratesEvent", "HasCause", "HasEffect", "FromState", "ToState"):
                rule = next((x for r, f, x in nodes[t]["refs"] if r == "HasModellingRule"), None)
                out[nodes[t]["bn"].split(":")[-1]] = (t, rule, nodes[t])
        return out

    return nodes, aliases, children


async def test_matches_the_official_nodeset(unit):
    nodes, aliases, children = _nodeset()
    cell, nb = unit
    ids = {nodes[k]["bn"].split(":")[1]: int(k.split("i=")[1]) for k in nodes
           if nodes[k]["cls"] in ("ObjectType", "DataType") and k.startswith("ns=1;")}
    async with client(nb) as c:
        P, u, base, machine, execute = await machines(c)

        async def check(node, type_name):
            td = await node.read_type_definition()
            assert td == ua.NodeId(ids[type_name], P), f"{type_name}: type definition {td}"
            tid = f"ns=1;i={ids[type_name]}"
            by_name = {}
            for n in await node.get_children():
                q = await n.read_browse_name()
                by_name[q.Name] = (q, n)
            for name, (nid, rule, spec) in children(tid).items():
                if spec["cls"] == "Object" and rule is None:
                    continue  # state/transition objects are part of the type, not instantiated
                if rule == "i=78" or name in by_name:  # mandatory, or optional and implemented
                    assert name in by_name, f"{type_name}: mandatory {name} missing"
                    q, n = by_name[name]
                    want_ns = 0 if spec["bn"].count(":") == 0 else P
                    assert q.NamespaceIndex == want_ns, f"{type_name}.{name}: browse name namespace"
                    assert (await n.read_node_class()).name == spec["cls"], f"{type_name}.{name}: node class"
                    if spec["cls"] == "Variable":
                        dt = spec["dt"]
                        want = ua.NodeId(ids[dt], P) if dt in ids else \
                            ua.NodeId.from_string(aliases.get(dt, dt) if "=" in aliases.get(dt, dt) else f"i={getattr(ua.ObjectIds, dt)}")
                        got = await n.read_data_type()
                        chain = [got]  # an instance may use a subtype of the declared DataType
                        while chain[-1] != want and chain[-1] != ua.NodeId(ua.ObjectIds.BaseDataType):
                            sup = await c.get_node(chain[-1]).get_references(ua.ObjectIds.HasSubtype,
                                                                             ua.BrowseDirection.Inverse)
                            if not sup:
                                break
                            chain.append(sup[0].NodeId)
                        assert want in chain, f"{type_name}.{name}: DataType {got}, expected {want}"
            return by_name

        top = await check(u, "PackMLBaseObjectType")
        await check(top["Status"][1], "PackMLStatusObjectType")
        await check(top["Admin"][1], "PackMLAdminObjectType")
        await check(base, "PackMLBaseStateMachineType")
        await check(machine, "PackMLMachineStateMachineType")
        await check(execute, "PackMLExecuteStateMachineType")
        # the state numbers and transition names of the model
        for m, tname in ((base, "PackMLBaseStateMachineType"), (machine, "PackMLMachineStateMachineType"),
                         (execute, "PackMLExecuteStateMachineType")):
            official = children(f"ns=1;i={ids[tname]}")
            for sid in await (await m.get_child("0:AvailableStates")).read_value():
                name = (await c.get_node(sid).read_browse_name()).Name
                assert name in official, f"{tname}: state {name} not in the model"
                num = await (await c.get_node(sid).get_child("0:StateNumber")).read_value()
                onum = children(official[name][0])["StateNumber"]
                del onum  # the NodeSet carries numbers as values; compare with OPC 30050's table instead
                assert num == {**{"Cleared": 19, "Running": 18}, **{s.label: int(s) for s in State}}[name]
            mine_tr = {(await c.get_node(t).read_browse_name()).Name
                       for t in await (await m.get_child("0:AvailableTransitions")).read_value()}
            official_tr = {n for n, (_, _, spec) in official.items() if spec["cls"] == "Object" and "To" in n}
            assert mine_tr == official_tr, f"{tname}: transitions differ: {mine_tr ^ official_tr}"
