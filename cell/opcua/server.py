"""Northbound OPC UA server: the cell as a PackML unit (OPC 30050 / PackML 1.01), built in code.

Address space (browse names in the PackML namespace ``http://opcfoundation.org/UA/PackML/``,
instance NodeIds in ``urn:axcell:<cell>``)::

    Objects/PackMLObjects/<cell>                       PackMLBaseObjectType
      Status     UnitModeCurrent, UnitSupportedModes, MachSpeed, CurMachSpeed,
                 EquipmentBlocked, EquipmentStarved
      Admin      ProdProcessedCount, ProdDefectiveCount, ProdConsumedCount (PackMLCountDataType[]:
                 ID, Name, Unit, Count, AccCount), StateCurrentTime, StateCumulativeTime
                 (Int32[mode][state], seconds), StopReason, Alarm[] (PackMLAlarmDataType),
                 AlarmExtent, MachDesignSpeed, AccTimeSinceReset
      BaseStateMachine   CurrentState, AvailableStates, AvailableTransitions, Abort(), Clear()
        MachineState     CurrentState, AvailableStates, AvailableTransitions, Stop(), Reset()
          ExecuteState   CurrentState, AvailableStates, AvailableTransitions,
                         Reset(), Start(), Hold(), Unhold(), Suspend(), Unsuspend(), ToComplete()
      SetUnitMode(), SetMachSpeed(), SetProduct(), SetParameter(), PackMLVersion, TagID

The six PackML ObjectTypes and three DataTypes are declared with the NodeIds of
the published NodeSet (ns=PackML; i=1..6, 11, 14, 15) together with their
state and transition objects, so AvailableStates/AvailableTransitions refer to
real nodes; the types' instance declarations themselves are not reproduced.

Every state method goes through :meth:`cell.runtime.Cell.command` (the one
PackML state machine); an illegal transition returns ``BadInvalidState`` and
changes nothing.  Security: the None endpoint exists only with
``opcua.allow_anonymous_read`` (and then only anonymous reading is possible
without a login); Basic256Sha256 Sign/SignAndEncrypt endpoints always exist.
Users come from ``opcua.users``: ``{name: {role: operator|viewer, password |
password_env}}``.  Operators may call methods; viewers and anonymous clients
may only browse, read and subscribe (a call is refused with BadUserAccessDenied).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.structures104 import new_enum, new_struct, new_struct_field
from asyncua.crypto.permission_rules import USER_TYPES, PermissionRuleset, User, UserRole
from asyncua.server.user_managers import UserManager

from drivers.opcua_aspace import AddressSpaceWriter

from ..packml import State, TransitionError

log = logging.getLogger("axcell.opcua")

PACKML_NS = "http://opcfoundation.org/UA/PackML/"
TYPES = {"PackMLExecuteStateMachineType": 1, "PackMLMachineStateMachineType": 2, "PackMLBaseStateMachineType": 3,
         "PackMLStatusObjectType": 4, "PackMLAdminObjectType": 5, "PackMLBaseObjectType": 6}
DT_MODE, DT_COUNT, DT_ALARM, PACKML_OBJECTS = 11, 14, 15, 72
MODES = ["Invalid", "Produce", "Maintenance", "Manual"]  # ProductionMaintenanceModeEnum (NodeSet 1.01 names)
PRODUCE = 1

# the three nested machines (OPC 30050 §6.3.5): states and transitions with their numbers
BASE_STATES = {"Aborting": 8, "Aborted": 9, "Cleared": 19}
BASE_TRANSITIONS = [("AbortingToAborted", "Aborting", "Aborted"), ("AbortedToCleared", "Aborted", "Cleared"),
                    ("ClearedToAborting", "Cleared", "Aborting")]
MACHINE_STATES = {"Clearing": 1, "Stopped": 2, "Stopping": 7, "Running": 18}
MACHINE_TRANSITIONS = [("ClearingToStopped", "Clearing", "Stopped"), ("StoppedToRunning", "Stopped", "Running"),
                       ("RunningToStopping", "Running", "Stopping"), ("StoppingToStopped", "Stopping", "Stopped")]
EXECUTE_STATES = {"Idle": 4, "Suspended": 5, "Execute": 6, "Held": 11, "Complete": 17, "Starting": 3,
                  "Holding": 10, "Unholding": 12, "Suspending": 13, "Unsuspending": 14, "Resetting": 15,
                  "Completing": 16}
EXECUTE_TRANSITIONS = [
    ("ResettingToIdle", "Resetting", "Idle"), ("IdleToStarting", "Idle", "Starting"),
    ("StartingToExecute", "Starting", "Execute"), ("ExecuteToCompleting", "Execute", "Completing"),
    ("CompletingToComplete", "Completing", "Complete"), ("CompleteToResetting", "Complete", "Resetting"),
    ("ExecuteToHolding", "Execute", "Holding"), ("HoldingToHeld", "Holding", "Held"),
    ("HeldToUnholding", "Held", "Unholding"), ("UnholdingToExecute", "Unholding", "Execute"),
    ("ExecuteToSuspending", "Execute", "Suspending"), ("SuspendingToSuspended", "Suspending", "Suspended"),
    ("SuspendedToUnsuspending", "Suspended", "Unsuspending"), ("UnsuspendingToExecute", "Unsuspending", "Execute"),
    ("StartingToHolding", "Starting", "Holding"), ("UnholdingToHolding", "Unholding", "Holding"),
    ("SuspendingToHolding", "Suspending", "Holding"), ("SuspendedToHolding", "Suspended", "Holding"),
    ("UnsuspendingToHolding", "Unsuspending", "Holding"),
]
# where OPC 30050 puts the state methods, and the cell command each one sends
METHODS = {
    "BaseStateMachine": {"Abort": "abort", "Clear": "clear"},
    "MachineState": {"Stop": "stop", "Reset": "reset"},
    "ExecuteState": {"Reset": "reset", "Start": "start", "Hold": "hold", "Unhold": "unhold", "Suspend": "suspend",
                     "Unsuspend": "unsuspend", "ToComplete": "complete"},
}
_CALL = ua.NodeId(ua.ObjectIds.CallRequest_Encoding_DefaultBinary)
_WRITE_LIKE = {ua.NodeId(i) for i in (ua.ObjectIds.WriteRequest_Encoding_DefaultBinary,
                                      ua.ObjectIds.CallRequest_Encoding_DefaultBinary,
                                      ua.ObjectIds.HistoryUpdateRequest_Encoding_DefaultBinary)}
_USER = {ua.NodeId(i) for i in USER_TYPES}


def split_state(state: State) -> tuple[str, str, str]:
    """(base, machine, execute) sub-states of a PackML state ('' where the sub-machine is inactive)."""
    label = state.label
    if label in ("Aborting", "Aborted"):
        return label, "", ""
    if label in ("Clearing", "Stopped", "Stopping"):
        return "Cleared", label, ""
    if label in EXECUTE_STATES:
        return "Cleared", "Running", label
    return "Cleared", "Stopped", ""  # Undefined: not reachable from the FSM


# -- users and roles ------------------------------------------------------------------------------
class CellUsers(UserManager):
    """Users from the cell file; passwords from the file or (better) from an environment variable."""

    def __init__(self, users: dict[str, dict[str, str]], allow_anonymous: bool) -> None:
        self.allow_anonymous = allow_anonymous
        self.passwords: dict[str, str] = {}
        self.roles: dict[str, str] = {}
        for name, u in users.items():
            role = u.get("role", "viewer")
            if role not in ("operator", "viewer"):
                raise ValueError(f"opcua.users.{name}.role must be operator or viewer, not {role!r}")
            pw = os.environ.get(u["password_env"]) if u.get("password_env") else u.get("password")
            if not pw:
                log.warning("OPC UA user %s has no password (%s unset): disabled", name, u.get("password_env"))
                continue
            self.passwords[name], self.roles[name] = pw, role

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is None:
            return User(role=UserRole.Anonymous, name=None) if self.allow_anonymous else None
        if username in self.passwords and self.passwords[username] == password:
            return User(role=UserRole.User, name=username)
        return None


class CellRules(PermissionRuleset):
    """Operators may call and write; viewers read; anonymous reads only when allowed."""

    def __init__(self, users: CellUsers) -> None:
        self.users = users

    def check_validity(self, user: User, action_type_id: ua.NodeId, body: Any) -> bool:
        if action_type_id not in _USER:
            return False  # address-space changes, server registration: nobody
        if action_type_id in _WRITE_LIKE:
            return user.role == UserRole.User and self.users.roles.get(user.name or "") == "operator"
        if user.role == UserRole.Anonymous:
            return self.users.allow_anonymous
        return user.role == UserRole.User


# -- the server -----------------------------------------------------------------------------------
class NorthboundServer:
    def __init__(self, cell: Any, spec: Any, port: int | None, *, pki_dir: Path | str | None = None,
                 trust_clients: bool | None = None, refresh_s: float = 1.0) -> None:
        self.cell = cell
        self.spec = spec
        self.host = getattr(spec, "host", "127.0.0.1") or "127.0.0.1"
        self.port = int(port if port is not None else (spec.port or 0))
        self.pki_dir = Path(pki_dir) if pki_dir else _default_pki()
        self.trust_clients = trust_clients
        self.refresh_s = refresh_s
        self.server: Server | None = None
        self.users = CellUsers(dict(getattr(spec, "users", {}) or {}), bool(spec.allow_anonymous_read))
        self._vars: dict[str, ua.NodeId] = {}
        self._types: dict[str, Any] = {}
        self._writer = AddressSpaceWriter()
        self._tick_task: asyncio.Task | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._base_counts: dict[str, int] = {}
        self._base_cases: dict[str, int] = {}
        self._stopped = False

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/axcell/"

    async def start(self) -> "NorthboundServer":
        server = Server(user_manager=self.users)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"axcell {self.cell.name} (PackML unit)")
        await server.set_application_uri("urn:axcell:server")
        cert, key = self._certificate()
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        policies = [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt, ua.SecurityPolicyType.Basic256Sha256_Sign]
        if self.spec.allow_anonymous_read:
            policies.insert(0, ua.SecurityPolicyType.NoSecurity)
        server.set_security_policy(policies, permission_ruleset=CellRules(self.users))
        tokens: list[type] = [ua.UserNameIdentityToken]
        if self.spec.allow_anonymous_read:
            tokens.insert(0, ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        trusted = self.pki_dir / "trusted" / "clients" if self.pki_dir else None
        if trusted is not None and trusted.is_dir() and self.trust_clients is not False:
            from asyncua.crypto.truststore import TrustStore
            from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

            store = TrustStore([trusted], [])
            await store.load()
            server.set_certificate_validator(CertificateValidator(
                CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.TIME_RANGE
                | CertificateValidatorOptions.PEER_CLIENT, store))
        self.P = await server.register_namespace(PACKML_NS)
        self.C = await server.register_namespace(f"urn:axcell:{self.cell.name}")
        self.server = server
        await self._build_types()
        await self._build_instance()
        await server.start()
        if server.bserver is not None:
            self.port = server.bserver.port
        self._reset_baseline()
        self.cell.fsm.subscribe(self._on_transition)
        self.cell.ledger.listeners.append(lambda what, rec: self.refresh())
        if len(self.cell.ledger.cases_by_station) > 1:  # per-station cases are served: tell at each seal
            self.cell.listeners.append(lambda kind, data: self.refresh() if kind == "case_completed" else None)
        self.cell.alarms.listeners.append(lambda what, alarm: self.refresh())
        self.refresh()
        self._tick_task = asyncio.get_running_loop().create_task(self._tick())
        log.info("northbound PackML server at %s", self.endpoint)
        return self

    async def stop(self) -> None:
        self._stopped = True
        for t in (self._tick_task, self._writer.task):
            if t is not None and not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        server, self.server = self.server, None
        if server is not None:
            await server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _certificate(self) -> tuple[Path, Path]:
        if self.pki_dir and (self.pki_dir / "server.der").exists() and (self.pki_dir / "server.key.pem").exists():
            return self.pki_dir / "server.der", self.pki_dir / "server.key.pem"
        from drivers.opcua_certs import APPS, make_cert  # no PKI made yet: an ephemeral certificate

        self._tmp = tempfile.TemporaryDirectory(prefix="axcell-opcua-")
        uri, usage = APPS["server"]
        return make_cert(Path(self._tmp.name), "server", uri, usage, days=30)

    # -- model ------------------------------------------------------------------------------------------
    async def _add(self, parent: ua.NodeId, nid: ua.NodeId, name: ua.QualifiedName, nclass: ua.NodeClass,
                   typedef: ua.NodeId | None, *, ref: int = ua.ObjectIds.HasComponent, value: ua.Variant | None = None,
                   datatype: ua.NodeId | None = None, rank: int = ua.ValueRank.Scalar,
                   dims: list[int] | None = None) -> ua.NodeId:
        item = ua.AddNodesItem()
        item.RequestedNewNodeId, item.BrowseName, item.NodeClass = nid, name, nclass
        item.ParentNodeId, item.ReferenceTypeId = parent, ua.NodeId(ref)
        if typedef is not None:
            item.TypeDefinition = typedef
        if nclass == ua.NodeClass.Variable:
            attrs = ua.VariableAttributes()
            attrs.Value = value if value is not None else ua.Variant()
            attrs.DataType = datatype
            attrs.ValueRank = rank
            attrs.ArrayDimensions = dims
            attrs.AccessLevel = attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
            attrs.Historizing = False
        else:
            attrs = ua.ObjectAttributes()
            attrs.EventNotifier = 0
        attrs.DisplayName = ua.LocalizedText(name.Name)
        attrs.Description = ua.LocalizedText(name.Name)
        attrs.WriteMask = attrs.UserWriteMask = 0
        item.NodeAttributes = attrs
        res = await self.server.iserver.isession.add_nodes([item])  # type: ignore[union-attr]
        res[0].StatusCode.check()
        return res[0].AddedNodeId

    async def _build_types(self) -> None:
        s, P = self.server, self.P
        assert s is not None
        base_obj = s.get_node(ua.NodeId(ua.ObjectIds.BaseObjectType))
        fsm = s.get_node(ua.NodeId(ua.ObjectIds.FiniteStateMachineType))
        for name in ("PackMLStatusObjectType", "PackMLAdminObjectType", "PackMLBaseObjectType"):
            await base_obj.add_object_type(ua.NodeId(TYPES[name], P), ua.QualifiedName(name, P))
        self.state_ids: dict[str, dict[str, ua.NodeId]] = {}
        self.transition_ids: dict[str, list[ua.NodeId]] = {}
        for machine, tname, states, transitions in (
                ("BaseStateMachine", "PackMLBaseStateMachineType", BASE_STATES, BASE_TRANSITIONS),
                ("MachineState", "PackMLMachineStateMachineType", MACHINE_STATES, MACHINE_TRANSITIONS),
                ("ExecuteState", "PackMLExecuteStateMachineType", EXECUTE_STATES, EXECUTE_TRANSITIONS)):
            t = await fsm.add_object_type(ua.NodeId(TYPES[tname], P), ua.QualifiedName(tname, P))
            ids: dict[str, ua.NodeId] = {}
            for st, num in states.items():
                nid = await self._add(t.nodeid, ua.NodeId(f"{tname}.{st}", P), ua.QualifiedName(st, P),
                                      ua.NodeClass.Object, ua.NodeId(ua.ObjectIds.StateType))
                await self._add(nid, ua.NodeId(f"{tname}.{st}.StateNumber", P), ua.QualifiedName("StateNumber", 0),
                                ua.NodeClass.Variable, ua.NodeId(ua.ObjectIds.PropertyType), ref=ua.ObjectIds.HasProperty,
                                value=ua.Variant(num, ua.VariantType.UInt32), datatype=ua.NodeId(ua.ObjectIds.UInt32))
                ids[st] = nid
            tids = []
            for i, (tr, a, b) in enumerate(transitions, start=1):
                nid = await self._add(t.nodeid, ua.NodeId(f"{tname}.{tr}", P), ua.QualifiedName(tr, P),
                                      ua.NodeClass.Object, ua.NodeId(ua.ObjectIds.TransitionType))
                await self._add(nid, ua.NodeId(f"{tname}.{tr}.TransitionNumber", P),
                                ua.QualifiedName("TransitionNumber", 0), ua.NodeClass.Variable,
                                ua.NodeId(ua.ObjectIds.PropertyType), ref=ua.ObjectIds.HasProperty,
                                value=ua.Variant(i, ua.VariantType.UInt32), datatype=ua.NodeId(ua.ObjectIds.UInt32))
                node = s.get_node(nid)
                await node.add_reference(ids[a], ua.ObjectIds.FromState)
                await node.add_reference(ids[b], ua.ObjectIds.ToState)
                tids.append(nid)
            self.state_ids[machine], self.transition_ids[machine] = ids, tids
        await new_enum(s, ua.NodeId(DT_MODE, P), ua.QualifiedName("ProductionMaintenanceModeEnum", P), MODES)
        await new_struct(s, ua.NodeId(DT_ALARM, P), ua.QualifiedName("PackMLAlarmDataType", P), [
            new_struct_field("ID", ua.VariantType.Int32), new_struct_field("Value", ua.VariantType.Int32),
            new_struct_field("Message", ua.VariantType.String), new_struct_field("Category", ua.VariantType.Int32),
            new_struct_field("DateTime", ua.VariantType.DateTime),
            new_struct_field("AckDateTime", ua.VariantType.DateTime), new_struct_field("Trigger", ua.VariantType.Boolean)])
        await new_struct(s, ua.NodeId(DT_COUNT, P), ua.QualifiedName("PackMLCountDataType", P), [
            new_struct_field("ID", ua.VariantType.Int32), new_struct_field("Name", ua.VariantType.String),
            new_struct_field("Unit", ua.VariantType.String), new_struct_field("Count", ua.VariantType.Int32),
            new_struct_field("AccCount", ua.VariantType.Int32)])
        loaded = await s.load_data_type_definitions()
        # a second server in one process finds the classes registered already
        self._types = {n: loaded.get(n) or getattr(ua, n) for n in ("PackMLCountDataType", "PackMLAlarmDataType")}

    def _id(self, path: str) -> ua.NodeId:
        return ua.NodeId(f"{self.cell.name}.{path}", self.C)

    async def _var(self, parent: ua.NodeId, path: str, value: Any, vt: ua.VariantType, datatype: ua.NodeId, *,
                   typedef: int = ua.ObjectIds.BaseDataVariableType, prop: bool = False,
                   rank: int = ua.ValueRank.Scalar, dims: list[int] | None = None, key: str | None = None) -> ua.NodeId:
        name = path.rsplit(".", 1)[-1]
        nid = await self._add(parent, self._id(path), ua.QualifiedName(name, self.P if name not in ("Id", "EURange", "CurrentState")
                                                                        else 0),
                              ua.NodeClass.Variable, ua.NodeId(ua.ObjectIds.PropertyType if prop else typedef),
                              ref=ua.ObjectIds.HasProperty if prop else ua.ObjectIds.HasComponent,
                              value=ua.Variant(value, vt), datatype=datatype, rank=rank, dims=dims)
        self._vars[key or path] = nid
        return nid

    async def _build_instance(self) -> None:
        s, P = self.server, self.P
        assert s is not None
        folder = await self._add(ua.NodeId(ua.ObjectIds.ObjectsFolder), ua.NodeId(PACKML_OBJECTS, P),
                                 ua.QualifiedName("PackMLObjects", P), ua.NodeClass.Object,
                                 ua.NodeId(ua.ObjectIds.FolderType), ref=ua.ObjectIds.Organizes)
        unit = await self._add(folder, self._id("Unit"), ua.QualifiedName(self.cell.name, self.C), ua.NodeClass.Object,
                               ua.NodeId(TYPES["PackMLBaseObjectType"], P), ref=ua.ObjectIds.Organizes)
        self.unit = unit
        i32, f32, b, st, nid_t = (ua.NodeId(ua.ObjectIds.Int32), ua.NodeId(ua.ObjectIds.Float),
                                  ua.NodeId(ua.ObjectIds.Boolean), ua.NodeId(ua.ObjectIds.String),
                                  ua.NodeId(ua.ObjectIds.NodeId))
        V = ua.VariantType
        design = float(self.cell.cfg.line.design_speed_ppm)
        await self._var(unit, "PackMLVersion", "TR88.00.02-2015", V.String, st, prop=True)
        await self._var(unit, "TagID", self.cell.name, V.String, st, prop=True)
        # Status
        status = await self._add(unit, self._id("Status"), ua.QualifiedName("Status", P), ua.NodeClass.Object,
                                 ua.NodeId(TYPES["PackMLStatusObjectType"], P))
        await self._var(status, "Status.UnitModeCurrent", PRODUCE, V.Int32, ua.NodeId(DT_MODE, P))
        await self._var(status, "Status.UnitSupportedModes", [ua.NodeId(DT_MODE, P)], V.NodeId, nid_t, prop=True,
                        rank=ua.ValueRank.OneDimension, dims=[0])
        for name, val in (("MachSpeed", design), ("CurMachSpeed", 0.0)):
            v = await self._var(status, f"Status.{name}", val, V.Float, f32, typedef=ua.ObjectIds.AnalogItemType)
            await self._var(v, f"Status.{name}.EURange", ua.Range(0.0, design * 2), V.ExtensionObject,
                            ua.NodeId(ua.ObjectIds.Range), prop=True)
        await self._var(status, "Status.EquipmentBlocked", False, V.Boolean, b)
        await self._var(status, "Status.EquipmentStarved", False, V.Boolean, b)
        await self._var(status, "Status.StateRequested", 0, V.Int32, i32)
        await self._var(status, "Status.StateChangeInProcess", False, V.Boolean, b)
        # Admin
        admin = await self._add(unit, self._id("Admin"), ua.QualifiedName("Admin", P), ua.NodeClass.Object,
                                ua.NodeId(TYPES["PackMLAdminObjectType"], P))
        for name in ("ProdProcessedCount", "ProdDefectiveCount", "ProdConsumedCount"):
            await self._var(admin, f"Admin.{name}", [self._count(0, name, 0, 0)], V.ExtensionObject,
                            ua.NodeId(DT_COUNT, P), rank=ua.ValueRank.OneDimension, dims=[0])
        grid = [[0] * 18 for _ in MODES]
        for name in ("StateCurrentTime", "StateCumulativeTime"):
            await self._var(admin, f"Admin.{name}", grid, V.Int32, i32, rank=2, dims=[0, 0])
        await self._var(admin, "Admin.StopReason", self._alarm(None), V.ExtensionObject, ua.NodeId(DT_ALARM, P))
        await self._var(admin, "Admin.Alarm", [], V.ExtensionObject, ua.NodeId(DT_ALARM, P),
                        rank=ua.ValueRank.OneDimension, dims=[0])
        await self._var(admin, "Admin.AlarmExtent", 0, V.Int32, i32)
        await self._var(admin, "Admin.MachDesignSpeed", design, V.Float, f32)
        await self._var(admin, "Admin.AccTimeSinceReset", 0, V.Int32, i32)
        # the nested state machines
        parent = unit
        for machine, tname in (("BaseStateMachine", "PackMLBaseStateMachineType"),
                               ("MachineState", "PackMLMachineStateMachineType"),
                               ("ExecuteState", "PackMLExecuteStateMachineType")):
            path = {"BaseStateMachine": "BaseStateMachine", "MachineState": "BaseStateMachine.MachineState",
                    "ExecuteState": "BaseStateMachine.MachineState.ExecuteState"}[machine]
            m = await self._add(parent, self._id(path), ua.QualifiedName(machine, P), ua.NodeClass.Object,
                                ua.NodeId(TYPES[tname], P))
            cs = await self._var(m, f"{path}.CurrentState", ua.LocalizedText(""), V.LocalizedText,
                                 ua.NodeId(ua.ObjectIds.LocalizedText), typedef=ua.ObjectIds.FiniteStateVariableType,
                                 key=f"{machine}.CurrentState")
            await self._add(cs, self._id(f"{path}.CurrentState.Id"), ua.QualifiedName("Id", 0), ua.NodeClass.Variable,
                            ua.NodeId(ua.ObjectIds.PropertyType), ref=ua.ObjectIds.HasProperty,
                            value=ua.Variant(ua.NodeId(), V.NodeId), datatype=nid_t)
            self._vars[f"{machine}.CurrentState.Id"] = self._id(f"{path}.CurrentState.Id")
            # OPC UA base names of FiniteStateMachineType children live in namespace 0
            for name, ids in (("AvailableStates", list(self.state_ids[machine].values())),
                              ("AvailableTransitions", self.transition_ids[machine])):
                await self._add(m, self._id(f"{path}.{name}"), ua.QualifiedName(name, 0), ua.NodeClass.Variable,
                                ua.NodeId(ua.ObjectIds.BaseDataVariableType), value=ua.Variant(ids, V.NodeId),
                                datatype=nid_t, rank=ua.ValueRank.OneDimension, dims=[0])
            for mname, cmd in METHODS[machine].items():
                node = s.get_node(m)
                await node.add_method(ua.NodeId(f"{self.cell.name}.{path}.{mname}", self.C),
                                      ua.QualifiedName(mname, P), self._state_method(cmd), [], [])
            parent = m
        unit_node = s.get_node(unit)
        await unit_node.add_method(self._id("SetUnitMode"), ua.QualifiedName("SetUnitMode", P), self._set_unit_mode,
                                   [ua.VariantType.Int32], [])
        await unit_node.add_method(self._id("SetMachSpeed"), ua.QualifiedName("SetMachSpeed", P),
                                   self._set_mach_speed, [ua.VariantType.Float], [])
        await unit_node.add_method(self._id("SetProduct"), ua.QualifiedName("SetProduct", P), self._unsupported, [], [])
        await unit_node.add_method(self._id("SetParameter"), ua.QualifiedName("SetParameter", P), self._unsupported,
                                   [], [])

    def _count(self, i: int, name: str, count: int, acc: int, unit: str = "parts") -> Any:
        c = self._types["PackMLCountDataType"]()
        c.ID, c.Name, c.Unit, c.Count, c.AccCount = i, name, unit, int(count), int(acc)
        return c

    def _alarm(self, a: Any) -> Any:
        x = self._types["PackMLAlarmDataType"]()
        if a is not None:
            x.ID, x.Value, x.Message = int(a.id), 0, f"{a.source}: {a.message}"
            x.Category = {"unplanned": 1, "planned": 2, "external": 3}.get(getattr(a, "category", ""), 0)
            x.DateTime = datetime.now(timezone.utc)
            x.Trigger = bool(a.active)
        return x

    # -- methods ----------------------------------------------------------------------------------------
    def _state_method(self, cmd: str) -> Any:
        async def call(parent: ua.NodeId, *args: Any) -> Any:
            try:
                self.cell.command(cmd, source="opcua")
            except TransitionError as e:
                log.info("OPC UA %s refused: %s", cmd, e)
                return ua.StatusCode(ua.StatusCodes.BadInvalidState)
            return []

        return call

    async def _set_unit_mode(self, parent: ua.NodeId, mode: ua.Variant) -> Any:
        if int(mode.Value) == PRODUCE:
            return []
        return ua.StatusCode(ua.StatusCodes.BadNotSupported)  # the cell supports Produce only

    async def _set_mach_speed(self, parent: ua.NodeId, speed: ua.Variant) -> Any:
        return ua.StatusCode(ua.StatusCodes.BadNotSupported)  # rate follows the infeed, not a setpoint

    async def _unsupported(self, parent: ua.NodeId, *args: Any) -> Any:
        return ua.StatusCode(ua.StatusCodes.BadNotSupported)

    # -- values -----------------------------------------------------------------------------------------
    def _reset_baseline(self) -> None:
        self._base_counts = self._totals()
        self._base_cases = self._case_totals()

    def _case_totals(self) -> dict[str, int]:
        """Completed cases per case station, when the cell has two or more (else empty: nothing extra is served)."""
        by = self.cell.ledger.cases_by_station
        return dict(by) if len(by) > 1 else {}

    def _totals(self) -> dict[str, int]:
        c = self.cell.ledger.counts()
        return {"ProdProcessedCount": c["packed"] + c["rejected"] + c["missed"],
                "ProdDefectiveCount": c["rejected"] + c["missed"], "ProdConsumedCount": c["arrived"]}

    def _on_transition(self, tr: Any) -> None:
        if tr.target == State.RESETTING:
            self._reset_baseline()  # Count restarts with each Reset; AccCount never does
        self.refresh()

    def values(self) -> dict[str, ua.Variant]:
        V = ua.VariantType
        cell = self.cell
        state = cell.fsm.state
        base, machine, execute = split_state(state)
        out: dict[str, ua.Variant] = {}
        for m, sub in (("BaseStateMachine", base), ("MachineState", machine), ("ExecuteState", execute)):
            out[f"{m}.CurrentState"] = ua.Variant(ua.LocalizedText(sub), V.LocalizedText)
            out[f"{m}.CurrentState.Id"] = ua.Variant(self.state_ids[m].get(sub, ua.NodeId()), V.NodeId)
        totals = self._totals()
        for i, name in enumerate(("ProdProcessedCount", "ProdDefectiveCount", "ProdConsumedCount")):
            out[f"Admin.{name}"] = ua.Variant([self._count(0, "primary", totals[name] - self._base_counts.get(name, 0),
                                                           totals[name])], V.ExtensionObject)
        # Several case stations: their completed cases as further entries of Admin.ProdProcessedCount[].
        # TR88 / OPC 30050 make ProdProcessedCount an array of PackMLCountDataType so that a unit can count
        # more than one output stream ("index 0 should be reserved for ... the primary production stream");
        # each case station is such a stream (its own cases, its own sealer).  Entries 1..n (ID = index,
        # Name = the station, Unit = "cases", Count since the last Reset, AccCount never reset) keep the
        # standard type and the Count/AccCount semantics, so any PackML client that reads the array sees
        # them, and entry 0 (parts, which OEE uses) is untouched.  A vendor folder of extra variables would
        # be outside the companion model; ProdDefectiveCount/ProdConsumedCount get no entries because cases
        # are neither defective nor consumed material.  One case station: the array stays one entry long.
        cases = self._case_totals()
        if cases:
            entries = [self._count(0, "primary", totals["ProdProcessedCount"]
                                   - self._base_counts.get("ProdProcessedCount", 0), totals["ProdProcessedCount"])]
            entries += [self._count(i, n, k - self._base_cases.get(n, 0), k, unit="cases")
                        for i, (n, k) in enumerate(cases.items(), start=1)]
            out["Admin.ProdProcessedCount"] = ua.Variant(entries, V.ExtensionObject)
        cum = cell.fsm.cumulative_times()
        cum_row = [min(int(cum.get(State(s), 0.0)), 2**31 - 1) if s <= 17 else 0 for s in range(18)]
        cur_row = [0] * 18
        cur_row[int(state)] = min(int(cell.fsm.time_in_state()), 2**31 - 1)
        zeros = [0] * 18
        out["Admin.StateCumulativeTime"] = ua.Variant([zeros, cum_row, zeros, zeros], V.Int32)
        out["Admin.StateCurrentTime"] = ua.Variant([zeros, cur_row, zeros, zeros], V.Int32)
        active = cell.alarms.active()
        out["Admin.Alarm"] = ua.Variant([self._alarm(a) for a in active], V.ExtensionObject)
        out["Admin.AlarmExtent"] = ua.Variant(len(active), V.Int32)
        out["Admin.StopReason"] = ua.Variant(self._alarm(cell.alarms.stop_reason), V.ExtensionObject)
        out["Admin.AccTimeSinceReset"] = ua.Variant(min(int(cell.clock.now()), 2**31 - 1), V.Int32)
        run_min = cum.get(State.EXECUTE, 0.0) / 60.0
        speed = totals["ProdProcessedCount"] / run_min if run_min > 0 and state == State.EXECUTE else 0.0
        out["Status.CurMachSpeed"] = ua.Variant(float(speed), V.Float)
        out["Status.StateChangeInProcess"] = ua.Variant(state.label.endswith("ing") and state != State.EXECUTE,
                                                        V.Boolean)
        return out

    def refresh(self) -> None:
        """Write every changed value into the address space now; subscribers are told at once."""
        server = self.server
        if server is None or self._stopped:
            return
        nodes = server.iserver.aspace._nodes  # noqa: SLF001 - our own server
        stamp = datetime.now(timezone.utc)
        for key, v in self.values().items():
            nid = self._vars.get(key)
            if nid is None or self._writer.unchanged(nodes[nid], v):
                continue
            self._writer.put(nodes[nid], ua.DataValue(v, SourceTimestamp=stamp, ServerTimestamp=stamp))
        self._writer.notify()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)  # wall time: a transport, not part of the simulation
            self.refresh()


def _default_pki() -> Path | None:
    env = os.environ.get("AXCELL_OPCUA_PKI")
    if env:
        return Path(env)
    p = Path("build/opcua-pki")
    return p if p.is_dir() else None


async def serve_northbound(cell: Any, spec: Any, port: int | None = None, **kw: Any) -> NorthboundServer:
    return await NorthboundServer(cell, spec, port, **kw).start()
