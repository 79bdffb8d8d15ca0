"""The case-sealer twin as a real OPC UA server (asyncua), for the driver's real path.

:class:`SealerModel` is the sealer's controller logic (a small PackML unit, the
same behaviour as :class:`sim.devices.SimMachine`: cycle time, index time, jam
probability, tape, seal temperature, motor current).  :class:`SealerServer`
serves it on 127.0.0.1 over OPC UA and can be broken on purpose:

* ``inject_jam()``           the next cycle jams (Execute → Holding → Held, ``Jam`` true);
* ``go_offline()``           stop serving (listening socket and sessions closed);
* ``restart()``              stop, then serve again on the same port (sessions lost);
* ``hang()`` / ``unhang()``  keep sockets open but never answer (a hung server);
* ``set_bad(signal, code)``  publish the value with a Bad (or Uncertain) status code;
* ``set_wrong_type(signal)`` publish a value of the wrong built-in type.

A cycle is one PackML job: ``Start`` (Idle → Starting → Execute), the seal
(``cycle_time_s``), the case index (``index_time_s``), then SC → Completing →
Complete; the next cycle needs ``Reset`` (Complete → Resetting → Idle).

Time: the model sleeps on the :class:`drivers.clock.Clock` it is given.  In a
simulated cell that is the world's :class:`sim.clock.SimClock`, and the seal
and index happen on the :class:`sim.world.World` at simulated instants.  Run
standalone (``python -m sim.opcua_sealer --port N``) it uses the wall clock;
the ``SimControl`` object then exposes the fault injections as methods.

The address space (namespace :data:`NS_URI`, string NodeIds ``Sealer.<path>``)::

    Objects/Sealer/Status/{StateCurrent Int32, UnitModeCurrent Int32, CurMachSpeed Float, Fault String}
    Objects/Sealer/Admin/{ProdProcessedCount Int32, ProdDefectiveCount Int32, StopReason String}
    Objects/Sealer/Command/{MachSpeed Float (rw), CycleTime Double (rw)}
    Objects/Sealer/Machine/{TapeRemaining, SealTemperature, MotorCurrent Double, Jam Boolean,
                            LastSealTemperature, LastMotorCurrent Double}
    Objects/Sealer/{Reset, Start, Stop, Hold, Unhold, Suspend, Unsuspend, Abort, Clear}()
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from asyncua import Server, ua
from asyncua.server.user_managers import UserManager

from drivers.clock import Clock, WallClock
from drivers.opcua_aspace import AddressSpaceWriter, NotifyGate

from .sim_servers import SealerParams  # defined without asyncua, so `axcell check` can validate the options

log = logging.getLogger("axcell.sim.opcua_sealer")

NS_URI = "urn:axcell:sim:case-sealer"

# -- the sealer's own PackML controller (a PLC has its own state machine; sim never imports cell) ----------
STATES = {
    "Clearing": 1, "Stopped": 2, "Starting": 3, "Idle": 4, "Suspended": 5, "Execute": 6, "Stopping": 7,
    "Aborting": 8, "Aborted": 9, "Holding": 10, "Held": 11, "Unholding": 12, "Suspending": 13,
    "Unsuspending": 14, "Resetting": 15, "Completing": 16, "Complete": 17,
}
STATE_NAMES = {v: k for k, v in STATES.items()}
_STOPPABLE = {"Resetting", "Idle", "Starting", "Execute", "Completing", "Complete", "Holding", "Held",
              "Unholding", "Suspending", "Suspended", "Unsuspending"}
_ABORTABLE = _STOPPABLE | {"Stopped", "Stopping", "Clearing"}
TRANSITIONS: dict[tuple[str, str], str] = {
    ("Reset", "Stopped"): "Resetting", ("Reset", "Complete"): "Resetting", ("Start", "Idle"): "Starting",
    ("Hold", "Execute"): "Holding", ("Unhold", "Held"): "Unholding", ("Suspend", "Execute"): "Suspending",
    ("Unsuspend", "Suspended"): "Unsuspending", ("Clear", "Aborted"): "Clearing",
    **{("Stop", s): "Stopping" for s in _STOPPABLE}, **{("Abort", s): "Aborting" for s in _ABORTABLE},
}
SC = {"Resetting": "Idle", "Starting": "Execute", "Completing": "Complete", "Holding": "Held",
      "Unholding": "Execute", "Suspending": "Suspended", "Unsuspending": "Execute", "Stopping": "Stopped",
      "Aborting": "Aborted", "Clearing": "Stopped"}
COMMANDS = ("Reset", "Start", "Stop", "Hold", "Unhold", "Suspend", "Unsuspend", "Abort", "Clear")




# (signal, NodeId string, variant type) — the machine's variables
VARIABLES: list[tuple[str, str, ua.VariantType]] = [
    ("state", "Sealer.Status.StateCurrent", ua.VariantType.Int32),
    ("mode", "Sealer.Status.UnitModeCurrent", ua.VariantType.Int32),
    ("cur_speed", "Sealer.Status.CurMachSpeed", ua.VariantType.Float),
    ("fault", "Sealer.Status.Fault", ua.VariantType.String),
    ("cycles", "Sealer.Admin.ProdProcessedCount", ua.VariantType.Int32),
    ("jams", "Sealer.Admin.ProdDefectiveCount", ua.VariantType.Int32),
    ("stop_reason", "Sealer.Admin.StopReason", ua.VariantType.String),
    ("speed", "Sealer.Command.MachSpeed", ua.VariantType.Float),
    ("cycle_time", "Sealer.Command.CycleTime", ua.VariantType.Double),
    ("tape_remaining", "Sealer.Machine.TapeRemaining", ua.VariantType.Double),
    ("seal_temperature", "Sealer.Machine.SealTemperature", ua.VariantType.Double),
    ("motor_current", "Sealer.Machine.MotorCurrent", ua.VariantType.Double),
    ("jam", "Sealer.Machine.Jam", ua.VariantType.Boolean),
    ("last_seal_temperature", "Sealer.Machine.LastSealTemperature", ua.VariantType.Double),
    ("last_motor_current", "Sealer.Machine.LastMotorCurrent", ua.VariantType.Double),
]
WRITABLE = {"speed", "cycle_time"}
_VT = {s: vt for s, _, vt in VARIABLES}
_GOOD = ua.StatusCode(ua.StatusCodes.Good)  # compared with, never placed into a node


class IllegalCommand(Exception):
    pass


class SealerModel:
    """The sealer's behaviour, transport-free.  ``on_change()`` fires after every change."""

    def __init__(self, params: SealerParams, clock: Clock, *, name: str = "sealer",
                 rng: Callable[[str], np.random.Generator] | None = None,
                 on_sealed: Callable[[], Any] | None = None, on_indexed: Callable[[], Any] | None = None) -> None:
        self.p = params
        self.clock = clock
        self.name = name
        own: dict[str, np.random.Generator] = {}
        self._rng = rng or (lambda stream: own.setdefault(stream, np.random.default_rng(zlib.crc32(stream.encode()))))
        self.on_sealed = on_sealed
        self.on_indexed = on_indexed
        self.listeners: list[Callable[[], None]] = []
        self.state = "Idle" if params.auto_reset else "Stopped"
        self.fault = ""
        self.stop_reason = ""
        self.cycles = 0
        self.jams = 0
        self.tape = params.tape_length_m
        self.current = 0.3
        self.seal_temp = params.seal_temperature_c
        self.last_seal_temp = 0.0
        self.last_current = 0.0
        self.speed = 60.0 / (params.cycle_time_s + params.index_time_s)
        self.cycle_time = params.cycle_time_s
        self.force_jam = 0
        self._task: asyncio.Task | None = None
        self._sampler: asyncio.Task | None = None
        self.transitions: list[tuple[float, str, str, str]] = []

    # -- values -------------------------------------------------------------------------------
    def values(self) -> dict[str, Any]:
        return {
            "state": STATES[self.state], "mode": 1,
            "cur_speed": self.speed if self.state == "Execute" else 0.0,
            "fault": self.fault, "cycles": self.cycles, "jams": self.jams, "stop_reason": self.stop_reason,
            "speed": self.speed, "cycle_time": self.cycle_time, "tape_remaining": self.tape,
            "seal_temperature": self.seal_temp, "motor_current": self.current, "jam": self.fault == "jam",
            "last_seal_temperature": self.last_seal_temp, "last_motor_current": self.last_current,
        }

    def write(self, signal: str, value: Any) -> None:
        if signal == "speed":
            self.speed = float(value)
        elif signal == "cycle_time":
            if not 0 < float(value) <= 600:
                raise ValueError("cycle time out of range")
            self.cycle_time = float(value)
        else:
            raise KeyError(signal)
        self._changed()

    def _sample(self) -> None:
        rng = self._rng(f"telemetry:{self.name}")
        self.seal_temp = float(self.p.seal_temperature_c + rng.normal(0, 0.8))
        base = self.p.motor_current_a if self.state == "Execute" else 0.3
        if self.fault == "jam":
            base = self.p.motor_current_a * 3.0
        self.current = float(base + rng.normal(0, 0.03))

    def _changed(self) -> None:
        for cb in list(self.listeners):
            cb()

    # -- PackML -------------------------------------------------------------------------------------
    def _go(self, target: str, cause: str) -> None:
        self.transitions.append((self.clock.now(), self.state, target, cause))
        self.state = target
        self._sample()
        self._changed()

    def command(self, cmd: str) -> str:
        target = TRANSITIONS.get((cmd, self.state))
        if target is None:
            raise IllegalCommand(f"{cmd} is not allowed in {self.state}")
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if cmd in ("Stop", "Abort", "Hold", "Suspend") and not self.stop_reason:
            self.stop_reason = f"{cmd.lower()} command"
        self._go(target, cmd)
        self._task = asyncio.get_running_loop().create_task(self._acting(target))
        return target

    async def _acting(self, state: str) -> None:
        if state == "Resetting":
            self.fault, self.stop_reason = "", ""
        if state == "Execute":
            await self._execute()
            return
        if state in SC:
            await self.clock.sleep(self.p.acting_time_s)
            if self.state != state:
                return
            target = SC[state]
            self._go(target, "sc")
            if target == "Execute":
                await self._execute()

    async def _execute(self) -> None:
        p = self.p
        rng = self._rng(f"jam:{self.name}")
        jam = rng.uniform() < p.jam_probability
        if self.force_jam > 0:
            self.force_jam -= 1
            jam = True
        if jam:
            await self.clock.sleep(self.cycle_time * rng.uniform(0.2, 0.8))
            if self.state != "Execute":
                return
            self.jams += 1
            self.fault, self.stop_reason = "jam", "jam in the sealing head"
            self._go("Holding", "jam")
            await self.clock.sleep(p.acting_time_s)
            if self.state == "Holding":
                self._go("Held", "sc")
            return
        await self.clock.sleep(self.cycle_time)
        if self.state != "Execute":
            return
        if self.on_sealed is not None:
            self.on_sealed()
        self.tape = max(0.0, self.tape - p.tape_per_case_m)
        self.cycles += 1
        self._sample()
        self.last_seal_temp, self.last_current = self.seal_temp, self.current
        self._changed()
        await self.clock.sleep(p.index_time_s)
        if self.state != "Execute":
            return
        if self.on_indexed is not None:
            self.on_indexed()
        self._go("Completing", "sc")
        await self.clock.sleep(p.acting_time_s)
        if self.state == "Completing":
            self._go("Complete", "sc")

    async def sample_forever(self) -> None:
        while True:
            await self.clock.sleep(self.p.telemetry_period_s)
            self._sample()
            self._changed()

    def start(self) -> None:
        if self.p.telemetry_period_s > 0 and self._sampler is None:
            self._sampler = asyncio.get_running_loop().create_task(self.sample_forever())

    async def stop(self) -> None:
        for t in (self._task, self._sampler):
            if t is not None and not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self._task = self._sampler = None


# -- security -------------------------------------------------------------------------------------
@dataclass
class ServerSecurity:
    """Which endpoints the sim server offers.

    ``policies``: any of ``"None"``, ``"Basic256Sha256_Sign"``, ``"Basic256Sha256_SignAndEncrypt"``.
    ``users``: username → password (empty: anonymous allowed only when ``allow_anonymous``).
    ``trusted_clients``: a directory of DER client certificates; other client certificates are refused.
    """

    policies: tuple[str, ...] = ("None",)
    cert: Path | None = None
    key: Path | None = None
    trusted_clients: Path | None = None
    users: dict[str, str] | None = None
    allow_anonymous: bool = True


class _Users(UserManager):
    def __init__(self, users: dict[str, str], allow_anonymous: bool) -> None:
        self.users = users
        self.allow_anonymous = allow_anonymous

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if username is None:
            return User(role=UserRole.User, name="anonymous") if self.allow_anonymous else None
        if self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


# -- the server ---------------------------------------------------------------------------------
class SealerServer:
    """Serves one :class:`SealerModel` over OPC UA; survives its own restarts."""

    def __init__(self, model: SealerModel, *, host: str = "127.0.0.1", port: int = 0,
                 security: ServerSecurity | None = None, control: bool = False) -> None:
        self.model = model
        self.host = host
        self.port = port
        self.security = security or ServerSecurity()
        self.control = control
        self.server: Server | None = None
        self.ns = 2
        self._nodes: dict[str, ua.NodeId] = {}
        self._nid_strings: dict[str, str] = {}  # signal → its NodeId as a string (what the gate watches)
        self._bad: dict[str, ua.StatusCode] = {}
        self._wrong: set[str] = set()
        self._hung = False
        self._dirty = False
        self._flush_task: asyncio.Task | None = None
        self._writer = AddressSpaceWriter(after_drain=self._publish_now)
        #: a client in this process that waits for notifications (``drivers.opcua_machine``) watches
        #: nodes here, so simulated time stands still until their changes have reached it
        self.notify_gate = NotifyGate(model.clock)
        self.model.listeners.append(self._on_model_change)
        self.starts = 0

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/sealer/"

    @property
    def online(self) -> bool:
        return self.server is not None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> "SealerServer":
        if self.server is not None:
            return self
        sec = self.security
        server = Server(user_manager=_Users(sec.users or {}, sec.allow_anonymous))
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}/sealer/")
        server.set_server_name("axcell simulated case sealer")
        await server.set_application_uri("urn:axcell:sim:sealer")
        policies = {"None": ua.SecurityPolicyType.NoSecurity,
                    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
                    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt}
        server.set_security_policy([policies[p] for p in sec.policies])
        tokens: list[type] = []
        if sec.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if sec.users:
            tokens.append(ua.UserNameIdentityToken)
        server.set_identity_tokens(tokens)
        if sec.cert is not None and sec.key is not None:
            await server.load_certificate(str(sec.cert))
            await server.load_private_key(str(sec.key))
        if sec.trusted_clients is not None:
            from asyncua.crypto.truststore import TrustStore
            from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

            store = TrustStore([Path(sec.trusted_clients)], [])
            await store.load()
            opts = (CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.TIME_RANGE
                    | CertificateValidatorOptions.PEER_CLIENT)
            server.set_certificate_validator(CertificateValidator(opts, store))
        self.ns = await server.register_namespace(NS_URI)
        await self._build(server)
        await self._start_hangable(server)
        self.port = server.bserver.port if server.bserver is not None else self.port
        self.server = server
        self.starts += 1
        self.model.start()
        await self._flush()
        log.info("sim sealer serving at %s", self.endpoint)
        return self

    async def stop(self) -> None:
        """Stop serving (the model keeps its state; ``start()`` serves it again)."""
        server, self.server = self.server, None
        self.notify_gate.release_all()  # nothing more will reach a client
        if server is not None:
            if self._hung:  # let the paused transports close
                self._set_paused(server, False)
            with contextlib.suppress(Exception):
                await server.stop()

    async def close(self) -> None:
        await self.stop()
        await self.model.stop()
        if self._flush_task is not None:
            self._flush_task.cancel()

    async def __aenter__(self) -> "SealerServer":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- faults ---------------------------------------------------------------------------------
    def inject_jam(self, times: int = 1) -> None:
        self.model.force_jam += times

    async def go_offline(self) -> None:
        self._hung = False
        await self.stop()

    async def restart(self) -> None:
        await self.stop()
        self._hung = False
        await self.start()

    def hang(self) -> None:
        """Keep every socket open but stop reading requests (no replies; new connections hang too)."""
        self._hung = True
        self.notify_gate.release_all()  # a hung server sends nothing more
        if self.server is not None:
            self._set_paused(self.server, True)

    def unhang(self) -> None:
        self._hung = False
        if self.server is not None:
            self._set_paused(self.server, False)

    async def set_bad(self, signal: str, code: int = ua.StatusCodes.BadSensorFailure) -> None:
        self._bad[signal] = ua.StatusCode(code)
        await self._flush()

    async def set_wrong_type(self, signal: str) -> None:
        self._wrong.add(signal)
        await self._flush()

    async def clear_faults(self) -> None:
        self._bad.clear()
        self._wrong.clear()
        self.unhang()
        await self._flush()

    # -- internals ------------------------------------------------------------------------------
    @staticmethod
    def _set_paused(server: Server, paused: bool) -> None:
        bserver = server.bserver
        if bserver is None:
            return
        for proto in list(bserver.clients):
            tr = proto.transport
            if tr is not None and not tr.is_closing():
                (tr.pause_reading if paused else tr.resume_reading)()

    async def _start_hangable(self, server: Server) -> None:
        """``server.start()`` with a protocol factory that pauses reading on new connections while hung.

        The listening socket captures its protocol factory when it starts, so the factory is chosen
        before: asyncua's Server builds its BinaryServer from the module attribute during ``start()``.
        """
        from asyncua.server import server as server_mod

        base = server_mod.BinaryServer
        owner = self

        class _HangableBinaryServer(base):  # type: ignore[misc, valid-type]
            def _make_protocol(self) -> Any:
                proto = super()._make_protocol()
                made = proto.connection_made

                def connection_made(transport: Any) -> None:
                    made(transport)
                    if owner._hung:
                        transport.pause_reading()

                proto.connection_made = connection_made  # type: ignore[method-assign]
                return proto

        server_mod.BinaryServer = _HangableBinaryServer
        try:
            await server.start()
        finally:
            server_mod.BinaryServer = base

    async def _build(self, server: Server) -> None:
        ns = self.ns
        objects = server.nodes.objects
        sealer = await objects.add_object(ua.NodeId("Sealer", ns), ua.QualifiedName("Sealer", ns))
        folders = {}
        for f in ("Status", "Admin", "Command", "Machine"):
            folders[f] = await sealer.add_object(ua.NodeId(f"Sealer.{f}", ns), ua.QualifiedName(f, ns))
        values = self.model.values()
        for signal, sid, vt in VARIABLES:
            _, folder, leaf = sid.split(".")
            var = await folders[folder].add_variable(ua.NodeId(sid, ns), ua.QualifiedName(leaf, ns),
                                                      ua.Variant(values[signal], vt), varianttype=vt)
            if signal in WRITABLE:
                await var.set_writable(True)
            self._nodes[signal] = var.nodeid
            self._nid_strings[signal] = var.nodeid.to_string()
        for cmd in COMMANDS:
            await sealer.add_method(ua.NodeId(f"Sealer.{cmd}", ns), ua.QualifiedName(cmd, ns),
                                    self._method(cmd), [], [])
        for signal in WRITABLE:
            server.set_attribute_value_setter(self._nodes[signal], self._setter(signal))
        if self.control:
            ctl = await objects.add_object(ua.NodeId("SimControl", ns), ua.QualifiedName("SimControl", ns))
            for name, fn in (("InjectJam", self._ctl_jam), ("Hang", self._ctl_hang), ("Restart", self._ctl_restart),
                             ("GoOffline", self._ctl_offline), ("ClearFaults", self._ctl_clear)):
                await ctl.add_method(ua.NodeId(f"SimControl.{name}", ns), ua.QualifiedName(name, ns), fn,
                                     [ua.VariantType.Double] if name in ("Hang", "GoOffline") else [], [])
            for name, fn in (("SetBad", self._ctl_bad), ("SetWrongType", self._ctl_wrong)):
                await ctl.add_method(ua.NodeId(f"SimControl.{name}", ns), ua.QualifiedName(name, ns), fn,
                                     [ua.VariantType.String], [])

    def _method(self, cmd: str) -> Callable[..., Any]:
        async def call(parent: ua.NodeId, *args: Any) -> Any:
            try:
                self.model.command(cmd)
            except IllegalCommand:
                return ua.StatusCode(ua.StatusCodes.BadInvalidState)
            await self._flush()
            return []

        return call

    def _setter(self, signal: str) -> Callable[..., Any]:
        def setter(node_data: Any, attr: Any, value: ua.DataValue) -> None:
            v = value.Value
            if v is None or v.VariantType != _VT[signal]:
                raise ua.UaStatusCodeError(ua.StatusCodes.BadTypeMismatch)
            try:
                self.model.write(signal, v.Value)
            except ValueError:
                raise ua.UaStatusCodeError(ua.StatusCodes.BadOutOfRange) from None
            node_data.attributes[attr].value = value

        return setter

    def _on_model_change(self) -> None:
        # write synchronously into the address space so a read right after a change sees it
        self._write_now()

    def _write_now(self) -> None:
        """Put the model's values into the address space now; subscriptions are told right after.

        Values go straight into the node (no type check), so the wrong-type and Bad-status faults
        reach the wire exactly as injected; a read right after a model change sees the new value.
        """
        server = self.server
        if server is None:
            return
        values = self.model.values()
        nodes = server.iserver.aspace._nodes  # noqa: SLF001 - the sim owns this server
        stamp = datetime.now(timezone.utc)
        for signal, _, vt in VARIABLES:
            nid = self._nodes.get(signal)
            if nid is None:
                continue
            value = values[signal]
            if signal in self._wrong:
                value, vt = ("not a number", ua.VariantType.String) if vt != ua.VariantType.String \
                    else (42, ua.VariantType.Int32)
            status = self._bad.get(signal, _GOOD)
            node = nodes[nid]
            if self._writer.holds(node, value, vt, status):  # most values are unchanged by a change
                continue
            node.attributes[ua.AttributeIds.Value].value_callback = None
            self._writer.put(node, ua.DataValue(ua.Variant(value, vt), StatusCode=ua.StatusCode(status.value),
                                                SourceTimestamp=stamp, ServerTimestamp=stamp))
            if not self._hung:
                self.notify_gate.changed(self._nid_strings[signal], value)
        self._writer.notify()

    async def _publish_now(self) -> None:
        """Send the changes just queued to every subscription at once, not at its next publishing
        tick (a client waiting on a change would otherwise hold simulated time for up to one
        publishing interval of wall time)."""
        server = self.server
        if server is None or self._hung:
            return
        for sub in list(server.iserver.subscription_service.subscriptions.values()):
            await sub.publish_results()

    async def _flush(self) -> None:
        self._write_now()

    # -- SimControl methods (standalone process) ---------------------------------------------------
    async def _ctl_jam(self, parent: ua.NodeId) -> list:
        self.inject_jam()
        return []

    async def _ctl_hang(self, parent: ua.NodeId, seconds: ua.Variant) -> list:
        loop = asyncio.get_running_loop()
        loop.call_soon(self.hang)
        loop.call_later(float(seconds.Value), self.unhang)
        return []

    async def _ctl_offline(self, parent: ua.NodeId, seconds: ua.Variant) -> list:
        async def later() -> None:
            await asyncio.sleep(0.05)
            await self.go_offline()
            await asyncio.sleep(float(seconds.Value))
            await self.start()

        self._flush_task = asyncio.get_running_loop().create_task(later())
        return []

    async def _ctl_restart(self, parent: ua.NodeId) -> list:
        async def later() -> None:
            await asyncio.sleep(0.05)
            await self.restart()

        self._flush_task = asyncio.get_running_loop().create_task(later())
        return []

    async def _ctl_clear(self, parent: ua.NodeId) -> list:
        self._bad.clear()
        self._wrong.clear()
        self._write_now()
        return []

    async def _ctl_bad(self, parent: ua.NodeId, signal: ua.Variant) -> list:
        self._bad[str(signal.Value)] = ua.StatusCode(ua.StatusCodes.BadSensorFailure)
        self._write_now()
        return []

    async def _ctl_wrong(self, parent: ua.NodeId, signal: ua.Variant) -> list:
        self._wrong.add(str(signal.Value))
        self._write_now()
        return []


# -- bound to a simulated world -------------------------------------------------------------------
async def start_for_world(world: Any, name: str, params: dict[str, Any], *, host: str = "127.0.0.1",
                          port: int = 0) -> SealerServer:
    """Start a sealer server whose time, randomness, seal and index are the world's."""
    def sealed() -> Any:  # the case station this machine serves (the first one when none names it)
        return world.seal_case(world.machine_station(name))

    def indexed() -> Any:
        return world.index_new_case(world.machine_station(name))

    model = SealerModel(SealerParams.model_validate(params), world.clock, name=name, rng=world.rng,
                        on_sealed=sealed, on_indexed=indexed)
    return await SealerServer(model, host=host, port=port).start()


# -- standalone process ---------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.opcua_sealer", description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cycle-time", type=float, default=1.0)
    ap.add_argument("--index-time", type=float, default=0.2)
    ap.add_argument("--jam-probability", type=float, default=0.0)
    ap.add_argument("--telemetry-period", type=float, default=0.5)
    ap.add_argument("--policy", action="append", choices=["None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"])
    ap.add_argument("--cert", type=Path)
    ap.add_argument("--key", type=Path)
    ap.add_argument("--trusted-clients", type=Path)
    ap.add_argument("--user", action="append", default=[], help="NAME:PASSWORD")
    ap.add_argument("--no-anonymous", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    async def run() -> None:
        seeds: dict[str, np.random.Generator] = {}

        def rng(stream: str) -> np.random.Generator:
            return seeds.setdefault(stream, np.random.default_rng([args.seed, zlib.crc32(stream.encode())]))

        params = SealerParams(cycle_time_s=args.cycle_time, index_time_s=args.index_time,
                              jam_probability=args.jam_probability, telemetry_period_s=args.telemetry_period)
        sec = ServerSecurity(policies=tuple(args.policy or ["None"]), cert=args.cert, key=args.key,
                             trusted_clients=args.trusted_clients,
                             users=dict(u.split(":", 1) for u in args.user) or None,
                             allow_anonymous=not args.no_anonymous)
        server = SealerServer(SealerModel(params, WallClock(), rng=rng), host=args.host, port=args.port,
                              security=sec, control=True)
        await server.start()
        print(f"READY {server.endpoint}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
