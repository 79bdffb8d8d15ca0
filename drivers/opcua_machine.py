"""OPC UA machine driver (kind ``opcua.machine``): a PackML machine behind an OPC UA server.

The cell file maps *logical signals* to server nodes::

    - name: sealer
      kind: opcua.machine
      options:
        endpoint: opc.tcp://10.0.0.20:4840/
        username: axcell
        password_env: SEALER_PASSWORD
        security: {policy: Basic256Sha256, mode: SignAndEncrypt, pki_dir: build/opcua-pki}
        nodes:                         # merged over the built-in map of the axcell sealer
          state: {path: Sealer/Status/StateCurrent, type: Int32}
          seal_temperature: {node: "nsu=urn:axcell:sim:case-sealer;s=Sealer.Machine.SealTemperature", type: Double}
          cycle_time: {path: Sealer/Command/CycleTime, type: Double, direction: write}
          start: {path: Sealer/Start, direction: method}

At connect every node of the map is resolved (NodeId or browse path), its
NodeClass, DataType and access level are checked, and *every* mismatch is
reported at once in a :class:`NodeMapError` (a ConfigurationError) before the
cell starts.  Values are checked on every read and notification: a Bad (or,
by default, Uncertain) status or a value of the wrong built-in type is never
used as good; it raises :class:`DeviceFaultError`.  Writes use the DataType the
server declared.  Method calls and reads have timeouts (wall time: they are
network round trips).

Connection supervision: asyncua's watchdog probes the server every
``watchdog_s`` (with a timeout of ``watchdog_s``); a request or probe that
fails or times out marks the machine offline (a hung server is detected within
``watchdog_s + request_timeout_s``), reports ``offline`` through
``ctx.resources["device_events"]`` (the cell raises an alarm and holds), and a
reconnect loop opens a *fresh* client until the server answers again
(asyncua#1660: never reuse a client after a loss).

A timeout is only evidence of a lost server if the event loop was running
while it elapsed.  One small monitor task per event loop sleeps
:data:`LAG_PERIOD_S` of wall time and records how late it wakes; wake-ups more
than :data:`LAG_MIN_S` late are kept, timestamped, as stalls (CPU-bound work,
first-run imports, GC, a loaded machine: the loop — and an in-process simulated
server — did not run).  When asyncua's probe times out and the loop stood still
for at least half the probe timeout within the last ``watchdog_s +
request_timeout_s``, the loss is not reported at once: a warning names the
stall, the driver opens a fresh client quietly (requests wait for it), and it
goes offline — event, alarm, reconnect loop — only if that reconnect fails
within ``request_timeout_s`` (tried a second time only if another stall
explains the first failure).  Likewise a read or write whose timeout a stall
explains is sent once more, and a method call is failed with
:class:`DeviceTimeoutError` without marking the machine offline (its outcome is
unknown; a command is never resent).  Closed sockets, refused connections and
timeouts while the loop ran are reported at once, as before, so a stopped or
hung server is still reported within ``watchdog_s + request_timeout_s``.
``health()`` shows ``quiet_reconnects`` and ``loop_lag_max_s``.  The monitor
uses the loop's own monotonic clock, never the device clock: it keeps no
simulated clock busy and creates no simulated-clock events; it is cancelled
when the last driver using it closes.

Determinism under a simulated clock: every request is bracketed by
``clock.busy()`` so simulated time stands still while it is on the wire.  A
state change is waited for in one of two ways.  Against a simulated server in
this process that offers a :class:`~drivers.opcua_aspace.NotifyGate` (the sim
sealer does), the driver watches the state node there: simulated time then
stands still from the server's change until the notification has reached the
driver, so the waiter wakes on the notification at the very instant of the
change, and the state comes from the subscription's cache instead of a read
(reads every ``event_poll_interval_s`` of clock time stay as the safety net).
Otherwise completion is detected by reads at clock-time intervals
(``poll_interval_s``), never by the arrival time of a notification.  On a wall
clock a data-change notification also wakes the waiter at once.

``simulate: true`` (the sim profile) asks the composition root for a
simulated server: ``ctx.resources["sim_servers"]("opcua.sealer", name, sim)``
returns a started server bound to the simulated world, with an ``endpoint``
and ``close()``.  This module never imports :mod:`sim`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from asyncua import Client, Node, ua
from asyncua.crypto import security_policies
from pydantic import Field, model_validator

from .base import DeviceConfig, DeviceContext
from .clock import WallClock
from .errors import (
    ConfigurationError, DeviceError, DeviceFaultError, DeviceOfflineError, DeviceTimeoutError,
)
from .machine import COMMANDS, Machine
from .types import CycleResult, MachineStatus

log = logging.getLogger("axcell.drivers.opcua")

SEALER_NS = "urn:axcell:sim:case-sealer"
PACKML_STATES = {
    0: "Undefined", 1: "Clearing", 2: "Stopped", 3: "Starting", 4: "Idle", 5: "Suspended", 6: "Execute",
    7: "Stopping", 8: "Aborting", 9: "Aborted", 10: "Holding", 11: "Held", 12: "Unholding", 13: "Suspending",
    14: "Unsuspending", 15: "Resetting", 16: "Completing", 17: "Complete",
}
_ST = {v: k for k, v in PACKML_STATES.items()}
_INT_RANGES = {
    ua.VariantType.SByte: (-2**7, 2**7 - 1), ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-2**15, 2**15 - 1), ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-2**31, 2**31 - 1), ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-2**63, 2**63 - 1), ua.VariantType.UInt64: (0, 2**64 - 1),
}
_FLOATS = {ua.VariantType.Float, ua.VariantType.Double}
_COMM_ERRORS = (OSError, ConnectionError, EOFError, ua.uaerrors.BadSessionIdInvalid, ua.uaerrors.BadSessionClosed,
                ua.uaerrors.BadSecureChannelClosed, ua.uaerrors.BadConnectionClosed,
                ua.uaerrors.BadServerNotConnected)
_TIMEOUTS = (asyncio.TimeoutError, TimeoutError)

#: Wall period of the event-loop lag monitor (20 wake-ups a second: about 0.3 % of a slow core).
LAG_PERIOD_S = 0.05
#: A wake-up later than this is recorded as a stall of the event loop.
LAG_MIN_S = 0.05
#: Stalls are kept this long (wall seconds).
LAG_KEEP_S = 60.0


class NodeMapError(ConfigurationError):
    """The server does not match the node map; ``problems`` lists every mismatch."""

    def __init__(self, problems: list[str], *, device: str | None = None) -> None:
        self.problems = problems
        super().__init__("node map does not match the server:\n  - " + "\n  - ".join(problems), device=device)


class SecurityRefusedError(ConfigurationError):
    """The server refused our security settings, certificate or credentials."""


class NodeSpec(DeviceConfig):
    """One logical signal: where it is and what it must be."""

    node: str | None = Field(None, description="NodeId, e.g. 'ns=2;s=X' or 'nsu=<namespace uri>;s=X'")
    path: str | None = Field(None, description="browse path below Objects, '/'-separated; names without "
                                               "'<ns>:' are in the device's `namespace`")
    type: str | None = Field(None, description="expected DataType (Boolean, Int32, UInt32, Float, Double, String …)")
    direction: Literal["read", "write", "method"] = "read"

    @model_validator(mode="after")
    def _one_address(self) -> "NodeSpec":
        if (self.node is None) == (self.path is None):
            raise ValueError("give exactly one of `node` or `path`")
        if self.direction != "method":
            if self.type is None:
                raise ValueError("variables need the expected `type`")
            if not isinstance(getattr(ua.ObjectIds, self.type, None), int) or self.type not in ua.VariantType.__members__:
                raise ValueError(f"unknown data type {self.type!r}")
        return self


def _v(path: str, type_: str, direction: str = "read") -> NodeSpec:
    return NodeSpec(path=path, type=type_, direction=direction)  # type: ignore[arg-type]


def default_sealer_map() -> dict[str, NodeSpec]:
    """The node map of the axcell case sealer (and of :mod:`sim.opcua_sealer`)."""
    m = {
        "state": _v("Sealer/Status/StateCurrent", "Int32"),
        "fault": _v("Sealer/Status/Fault", "String"),
        "cycles": _v("Sealer/Admin/ProdProcessedCount", "Int32"),
        "stop_reason": _v("Sealer/Admin/StopReason", "String"),
        "tape_remaining": _v("Sealer/Machine/TapeRemaining", "Double"),
        "seal_temperature": _v("Sealer/Machine/SealTemperature", "Double"),
        "motor_current": _v("Sealer/Machine/MotorCurrent", "Double"),
        "jam": _v("Sealer/Machine/Jam", "Boolean"),
        "last_seal_temperature": _v("Sealer/Machine/LastSealTemperature", "Double"),
        "last_motor_current": _v("Sealer/Machine/LastMotorCurrent", "Double"),
        "speed": _v("Sealer/Command/MachSpeed", "Float", "write"),
        "cycle_time": _v("Sealer/Command/CycleTime", "Double", "write"),
    }
    for cmd in COMMANDS:
        m[cmd] = NodeSpec(path=f"Sealer/{cmd.capitalize()}", direction="method")
    return m


class SecurityConfig(DeviceConfig):
    policy: Literal["none", "Basic256Sha256"] = "Basic256Sha256"
    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    allow_none: bool = Field(False, description="must be true to use policy none (tests and the sim profile)")
    pki_dir: str | None = Field(None, description="directory made by `python -m drivers.opcua_certs`")
    certificate: str | None = Field(None, description="client certificate (DER); default <pki_dir>/client.der")
    private_key: str | None = Field(None, description="client key (PEM); default <pki_dir>/client.key.pem")
    trusted_servers: str | None = Field(None, description="server certificates accepted; default "
                                                          "<pki_dir>/trusted/servers")
    application_uri: str = "urn:axcell:client"

    @model_validator(mode="after")
    def _explicit_none(self) -> "SecurityConfig":
        if self.policy == "none" and not self.allow_none:
            raise ValueError("security policy none is refused unless `allow_none: true` is set explicitly")
        if self.policy != "none" and self.pki_dir is None and (self.certificate is None or self.private_key is None):
            raise ValueError("a secure policy needs `pki_dir` or `certificate` + `private_key`")
        return self

    def files(self) -> tuple[Path, Path, Path | None]:
        d = Path(self.pki_dir) if self.pki_dir else None
        cert = Path(self.certificate) if self.certificate else d / "client.der"  # type: ignore[operator]
        key = Path(self.private_key) if self.private_key else d / "client.key.pem"  # type: ignore[operator]
        trusted = Path(self.trusted_servers) if self.trusted_servers else (d / "trusted" / "servers" if d else None)
        return cert, key, trusted


class LoopLagMonitor:
    """How late the running event loop wakes a short periodic sleep: its recent stalls.

    One per event loop, shared by every driver of this module (:meth:`acquire` /
    :meth:`release`).  Wall time only (the loop's monotonic clock): it never touches a device
    clock, so under a simulated clock it keeps nothing busy and schedules no simulated events.
    """

    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, "LoopLagMonitor"] = \
        weakref.WeakKeyDictionary()

    def __init__(self, period: float = LAG_PERIOD_S, min_stall: float = LAG_MIN_S, keep: float = LAG_KEEP_S) -> None:
        self.period = period
        self.min_stall = min_stall
        self.keep = keep
        self.stalls: deque[tuple[float, float]] = deque()  # (start, end) in loop time, oldest first
        self.max_lag = 0.0  # the longest stall seen since start
        self._last: float | None = None  # loop time of the last wake-up
        self._task: asyncio.Task | None = None
        self._users = 0

    @classmethod
    def acquire(cls) -> "LoopLagMonitor":
        """The running loop's monitor, started; pair with :meth:`release`."""
        loop = asyncio.get_running_loop()
        mon = cls._per_loop.get(loop)
        if mon is None:
            mon = cls._per_loop[loop] = cls()
        mon._users += 1
        mon.start()
        return mon

    async def release(self) -> None:
        """One user fewer; the last one stops (and awaits) the monitor task."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            await self.stop()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="opcua-loop-lag-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._last = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._last = loop.time()
        while True:
            await asyncio.sleep(self.period)
            now = loop.time()
            lag = now - self._last - self.period
            if lag >= self.min_stall:
                self.stalls.append((now - lag, now))
                self.max_lag = max(self.max_lag, lag)
                while self.stalls and self.stalls[0][1] < now - self.keep:
                    self.stalls.popleft()
            self._last = now

    def spans(self, since: float) -> list[tuple[float, float]]:
        """The stalls (start, end) that overlap ``[since, now]``, with the one still in progress.

        A loss reported right after a stall may run before the monitor has woken up to record
        it; the gap since its last wake-up is that stall.
        """
        now = asyncio.get_running_loop().time()
        out = [(start, end) for start, end in self.stalls if end > since]
        if self._last is not None and now - self._last - self.period >= self.min_stall:
            out.append((self._last + self.period, now))
        return out

    def stalled(self, since: float) -> float:
        """Seconds of ``[since, now]`` (loop time) during which the loop did not run."""
        return sum(end - max(start, since) for start, end in self.spans(since))

    def longest(self, since: float) -> float:
        """The whole length of the longest stall that overlaps ``[since, now]``."""
        return max((end - start for start, end in self.spans(since)), default=0.0)


class _SubHandler:
    def __init__(self, driver: "OpcuaMachine") -> None:
        self.driver = driver

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.driver._on_datachange(node, data.monitored_item.Value)

    def status_change_notification(self, status: Any) -> None:
        self.driver._on_subscription_status(status)


class OpcuaMachine(Machine, kind="opcua.machine"):
    """A PackML machine over OPC UA (see the module docstring)."""

    @classmethod
    def sim_server(cls, config: "OpcuaMachine.Config") -> tuple[str, str] | None:
        """(simulated server profile, options key) when ``simulate: true``: the composition root validates
        ``config.sim`` against the profile's options model (this driver does not import :mod:`sim`)."""
        return ("opcua.sealer", "sim") if config.simulate else None

    class Config(DeviceConfig):
        endpoint: str | None = Field(None, description="opc.tcp://host:port/path (not with simulate)")
        simulate: bool = Field(False, description="sim profile: the cell starts the simulated server")
        sim: dict[str, Any] = Field(default_factory=dict, description="options of the simulated server "
                                                                      "(cycle_time_s, jam_probability …)")
        namespace: str = Field(SEALER_NS, description="namespace URI of unqualified browse-path names")
        default_map: bool = Field(True, description="start from the built-in sealer map")
        nodes: dict[str, NodeSpec] = Field(default_factory=dict)
        telemetry: list[str] = Field(default_factory=lambda: ["seal_temperature", "motor_current",
                                                              "tape_remaining", "jam"])
        cycle_telemetry: dict[str, str] = Field(
            default_factory=lambda: {"seal_temperature": "last_seal_temperature",
                                     "motor_current": "last_motor_current", "tape_remaining": "tape_remaining",
                                     "jam": "jam"},
            description="CycleResult.telemetry key → signal read when the cycle completes")
        security: SecurityConfig = Field(default_factory=SecurityConfig)
        username: str | None = None
        password: str | None = Field(None, description="prefer password_env")
        password_env: str | None = Field(None, description="environment variable holding the password")
        accept_uncertain: bool = Field(False, description="use Uncertain values (never Bad ones)")
        request_timeout_s: float = Field(2.0, gt=0, le=60, description="wall seconds per request")
        watchdog_s: float = Field(1.0, gt=0, le=30, description="server liveness probe period (wall)")
        reconnect_interval_s: float = Field(1.0, gt=0, le=300, description="clock seconds between reconnects")
        poll_interval_s: float = Field(0.05, gt=0, le=10, description="clock seconds between completion reads")
        event_poll_interval_s: float = Field(1.0, gt=0, le=60, description="clock seconds between safety reads "
                                             "while state changes are notified (a simulated server's gate)")
        publishing_interval_ms: float = Field(50.0, ge=0, le=60000)
        cycle_timeout_s: float = Field(60.0, gt=0)

        @model_validator(mode="after")
        def _where(self) -> "OpcuaMachine.Config":
            if self.simulate and self.endpoint:
                raise ValueError("give either `endpoint` or `simulate: true`, not both")
            if not self.simulate and not self.endpoint:
                raise ValueError("`endpoint` is required (or `simulate: true` in a simulated cell)")
            if self.password is not None and self.password_env is not None:
                raise ValueError("give `password` or `password_env`, not both")
            m = self.signal_map()
            missing = [s for s in ("state", "start", "reset") if s not in m]
            if missing:
                raise ValueError(f"node map lacks required signals {missing}")
            for s in list(self.telemetry) + list(self.cycle_telemetry.values()):
                if s not in m:
                    raise ValueError(f"telemetry signal {s!r} is not in the node map")
            return self

        def signal_map(self) -> dict[str, NodeSpec]:
            return {**(default_sealer_map() if self.default_map else {}), **self.nodes}

    config: Config

    def __init__(self, name: str, config: Config, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)
        self.map = config.signal_map()
        self.client: Client | None = None
        self.sim_server: Any = None
        self.endpoint = config.endpoint or ""
        self._nodes: dict[str, ua.NodeId] = {}
        self._objects: dict[str, ua.NodeId] = {}  # method signal → owning object
        self._vtypes: dict[str, ua.VariantType] = {}
        self._latest: dict[str, ua.DataValue] = {}
        self._bad_notifications: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._state_changed = asyncio.Event()  # a notification of the state signal arrived
        self._gate: Any = None  # the simulated server's NotifyGate while the state node is watched there
        self._online = False
        self._reconnect_task: asyncio.Task | None = None
        self._sub: Any = None
        self._handles: dict[Any, str] = {}
        self.offline_reason = ""
        self.connects = 0
        self._wall = isinstance(self.clock, WallClock)
        self._closing = False
        self._lag = LoopLagMonitor()  # replaced by the loop's shared monitor while connected
        self._recovery: asyncio.Task | None = None  # a quiet reconnect after a stall-explained loss
        self.quiet_reconnects = 0

    # -- lifecycle ------------------------------------------------------------------------------
    async def _connect(self) -> None:
        self._closing = False
        if self.config.simulate and self.sim_server is None:
            factory: Callable[..., Any] | None = self.ctx.resources.get("sim_servers")
            if factory is None:
                raise ConfigurationError("simulate: true needs a simulated cell (the cell file's `sim:` section)",
                                         device=self.name)
            async with self.clock.busy():  # starting a server takes wall time, not simulated time
                self.sim_server = await factory("opcua.sealer", self.name, dict(self.config.sim))
            self.endpoint = self.sim_server.endpoint
        await self._open()
        self._lag = LoopLagMonitor.acquire()

    async def _close(self) -> None:
        self._closing = True
        for attr in ("_reconnect_task", "_recovery"):
            task = getattr(self, attr)
            setattr(self, attr, None)
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._drop_client()
        await self._lag.release()
        self._online = False
        if self.sim_server is not None:
            server, self.sim_server = self.sim_server, None
            async with self.clock.busy():
                await server.close()

    def _password(self) -> str | None:
        if self.config.password_env:
            pw = os.environ.get(self.config.password_env)
            if pw is None:
                raise ConfigurationError(f"environment variable {self.config.password_env} is not set",
                                         device=self.name)
            return pw
        return self.config.password

    async def _open(self) -> None:
        """Connect a fresh client, check the node map, subscribe.  Raises typed errors."""
        cfg = self.config
        client = Client(self.endpoint, timeout=cfg.request_timeout_s, watchdog_intervall=cfg.watchdog_s)
        client.session_timeout = 30000
        client.application_uri = cfg.security.application_uri
        client.name = f"axcell {self.ctx.cell}/{self.name}"
        if cfg.username:
            client.set_user(cfg.username)
            pw = self._password()
            if pw is not None:
                client.set_password(pw)
        try:
            async with self.clock.busy():
                if cfg.security.policy != "none":
                    await self._secure(client)
                await asyncio.wait_for(client.connect(), cfg.request_timeout_s * 2)
        except (ua.uaerrors.BadUserAccessDenied, ua.uaerrors.BadIdentityTokenInvalid,
                ua.uaerrors.BadIdentityTokenRejected) as e:
            await self._discard(client)
            raise SecurityRefusedError(f"server refused the user identity: {type(e).__name__}", device=self.name) from None
        except (ua.uaerrors.BadSecurityChecksFailed, ua.uaerrors.BadCertificateUntrusted,
                ua.uaerrors.BadCertificateInvalid, ua.uaerrors.BadSecurityPolicyRejected,
                ua.uaerrors.BadCertificateUriInvalid, ua.uaerrors.BadCertificateUseNotAllowed) as e:
            await self._discard(client)
            raise SecurityRefusedError(f"secure channel refused: {type(e).__name__}", device=self.name) from None
        except ua.UaError as e:
            await self._discard(client)
            if "endpoint" in str(e).lower() or "security" in str(e).lower():
                raise SecurityRefusedError(f"no matching endpoint: {e}", device=self.name) from None
            raise DeviceOfflineError(f"cannot connect to {self.endpoint}: {type(e).__name__}: {e}",
                                     device=self.name) from None
        except (OSError, asyncio.TimeoutError, ConnectionError, EOFError) as e:
            await self._discard(client)
            raise DeviceOfflineError(f"cannot connect to {self.endpoint}: {type(e).__name__} {e}",
                                     device=self.name) from None
        except asyncio.CancelledError:  # a bounded quick reconnect gave up, or close()
            await self._discard(client)
            raise
        self.client = client
        try:
            async with self.clock.busy():
                await self._check_map(client)
                await self._subscribe(client)
        except DeviceError:
            await self._drop_client()
            raise
        except (OSError, asyncio.TimeoutError, ConnectionError, ua.UaError) as e:
            await self._drop_client()
            raise DeviceOfflineError(f"lost {self.endpoint} while checking the node map: {e!r}",
                                     device=self.name) from None
        except asyncio.CancelledError:
            if self.client is client:
                self.client = None
            await self._discard(client)
            raise
        client.connection_lost_callback = functools.partial(self._connection_lost, client)
        self._online = True
        self.offline_reason = ""
        self.connects += 1

    async def _secure(self, client: Client) -> None:
        sec = self.config.security
        cert, key, trusted = sec.files()
        for p in (cert, key):
            if not p.exists():
                raise ConfigurationError(f"missing {p}; run `python -m drivers.opcua_certs {sec.pki_dir or 'DIR'}`",
                                         device=self.name)
        if trusted is not None:
            from asyncua.crypto.truststore import TrustStore
            from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

            if not trusted.is_dir() or not any(trusted.iterdir()):
                raise ConfigurationError(f"no trusted server certificates in {trusted}", device=self.name)
            store = TrustStore([trusted], [])
            await store.load()
            client.certificate_validator = CertificateValidator(
                CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.TIME_RANGE
                | CertificateValidatorOptions.PEER_SERVER, store)
        mode = ua.MessageSecurityMode.Sign if sec.mode == "Sign" else ua.MessageSecurityMode.SignAndEncrypt
        await asyncio.wait_for(client.set_security(security_policies.SecurityPolicyBasic256Sha256, str(cert), str(key),
                                                   mode=mode), self.config.request_timeout_s * 2)

    async def _discard(self, client: Client) -> None:
        with contextlib.suppress(Exception):
            client.uaclient.disconnect_socket()
        for t in ("_supervisor_task", "_stale_watchdog_task", "_renew_channel_task", "_monitor_server_task"):
            task = getattr(client, t, None)
            if isinstance(task, asyncio.Task) and not task.done():
                task.cancel()

    async def _drop_client(self) -> None:
        client, self.client = self.client, None
        self._sub = None
        self._ungate()
        if client is not None:
            await self._dispose(client)

    async def _dispose(self, client: Client) -> None:
        """Disconnect a client we no longer use (politely if the server answers within 1 s)."""
        client.connection_lost_callback = None
        try:
            async with self.clock.busy():
                await asyncio.wait_for(client.disconnect(), 1.0)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - the server may be gone or hung
            await self._discard(client)

    # -- node map ---------------------------------------------------------------------------------
    async def _check_map(self, client: Client) -> None:
        problems: list[str] = []
        ns_array = await client.get_namespace_array()
        default_ns = ns_array.index(self.config.namespace) if self.config.namespace in ns_array else None
        nodes: dict[str, ua.NodeId] = {}
        paths: list[tuple[str, ua.RelativePath]] = []
        for sig, spec in self.map.items():
            if spec.node is not None:
                try:
                    nid = ua.NodeId.from_string(spec.node)
                except Exception as e:  # noqa: BLE001
                    problems.append(f"{sig}: bad NodeId {spec.node!r} ({e})")
                    continue
                uri = getattr(nid, "NamespaceUri", None)
                if uri:
                    if uri not in ns_array:
                        problems.append(f"{sig}: namespace {uri!r} is not on the server")
                        continue
                    nid = ua.NodeId(nid.Identifier, ns_array.index(uri), nid.NodeIdType)
                nodes[sig] = nid
            else:
                elems = []
                for part in spec.path.strip("/").split("/"):  # type: ignore[union-attr]
                    if ":" in part and part.split(":", 1)[0].isdigit():
                        idx, name = part.split(":", 1)
                        elems.append(f"{idx}:{name}")
                    elif default_ns is None:
                        problems.append(f"{sig}: namespace {self.config.namespace!r} is not on the server")
                        break
                    else:
                        elems.append(f"{default_ns}:{part}")
                else:
                    paths.append((sig, ua.RelativePath.from_string("/" + "/".join(elems))))
        if paths:
            results = await client.translate_browsepaths(ua.NodeId(ua.ObjectIds.ObjectsFolder), [p for _, p in paths])
            for (sig, _), res in zip(paths, results):
                if not res.StatusCode.is_good() or not res.Targets:
                    problems.append(f"{sig}: browse path {self.map[sig].path!r} not found "
                                    f"({res.StatusCode.name})")
                else:
                    nodes[sig] = res.Targets[0].TargetId.to_nodeid() if hasattr(res.Targets[0].TargetId, "to_nodeid") \
                        else ua.NodeId(res.Targets[0].TargetId.Identifier, res.Targets[0].TargetId.NamespaceIndex,
                                       res.Targets[0].TargetId.NodeIdType)
        sigs = list(nodes)
        ids = [nodes[s] for s in sigs]
        classes = await client.uaclient.read_attributes(ids, ua.AttributeIds.NodeClass) if ids else []
        var_sigs = [s for s, dv in zip(sigs, classes)
                    if dv.StatusCode.is_good() and dv.Value.Value == ua.NodeClass.Variable]
        dtypes = await client.uaclient.read_attributes([nodes[s] for s in var_sigs], ua.AttributeIds.DataType) \
            if var_sigs else []
        access = await client.uaclient.read_attributes([nodes[s] for s in var_sigs], ua.AttributeIds.UserAccessLevel) \
            if var_sigs else []
        dt_of = dict(zip(var_sigs, dtypes))
        acc_of = dict(zip(var_sigs, access))
        for sig, dv in zip(sigs, classes):
            spec = self.map[sig]
            where = spec.node or spec.path
            if not dv.StatusCode.is_good():
                problems.append(f"{sig}: node {where!r} does not exist ({dv.StatusCode.name})")
                continue
            nclass = ua.NodeClass(dv.Value.Value)
            if spec.direction == "method":
                if nclass != ua.NodeClass.Method:
                    problems.append(f"{sig}: {where!r} is a {nclass.name}, expected a Method")
                    continue
                parent = await client.get_node(nodes[sig]).get_parent()
                if parent is None:
                    problems.append(f"{sig}: method {where!r} has no owning object")
                    continue
                self._objects[sig] = parent.nodeid
                continue
            if nclass != ua.NodeClass.Variable:
                problems.append(f"{sig}: {where!r} is a {nclass.name}, expected a Variable")
                continue
            dt = dt_of[sig].Value.Value
            expected = ua.NodeId(getattr(ua.ObjectIds, spec.type))  # type: ignore[arg-type]
            if dt != expected:
                problems.append(f"{sig}: {where!r} has DataType {_type_name(dt)}, the map expects {spec.type}")
                continue
            level = acc_of[sig].Value.Value if acc_of[sig].StatusCode.is_good() else 0
            need = ua.AccessLevel.CurrentWrite if spec.direction == "write" else ua.AccessLevel.CurrentRead
            if not (level >> need.value) & 1:
                problems.append(f"{sig}: {where!r} is not {'writable' if spec.direction == 'write' else 'readable'} "
                                f"for this user")
                continue
            self._vtypes[sig] = ua.VariantType[spec.type]  # type: ignore[index]
        if problems:
            raise NodeMapError(problems, device=self.name)
        self._nodes = nodes

    async def _subscribe(self, client: Client) -> None:
        sigs = [s for s, spec in self.map.items() if spec.direction != "method"]
        self._sub = await client.create_subscription(self.config.publishing_interval_ms, _SubHandler(self))
        handles = await self._sub.subscribe_data_change([client.get_node(self._nodes[s]) for s in sigs])
        self._by_nodeid = {self._nodes[s]: s for s in sigs}
        del handles
        gate = getattr(self.sim_server, "notify_gate", None)
        if gate is not None and not self._wall:
            self._ungate()
            gate.watch(self._nodes["state"].to_string())
            self._gate = gate

    def _ungate(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None and "state" in self._nodes:
            gate.unwatch(self._nodes["state"].to_string())

    # -- notifications (the subscription feeds the state cache) ---------------------------------------
    def _on_datachange(self, node: Node, dv: ua.DataValue) -> None:
        sig = self._by_nodeid.get(node.nodeid)
        if sig is None:
            return
        self._latest[sig] = dv
        try:
            self._checked(sig, dv)
            self._bad_notifications.pop(sig, None)
        except DeviceFaultError as e:
            if sig not in self._bad_notifications:
                log.warning("%s", e)
            self._bad_notifications[sig] = str(e)
        self._changed.set()
        if sig == "state":
            self._state_changed.set()
            if self._gate is not None:
                self._gate.delivered(node.nodeid.to_string(), dv.Value.Value if dv.Value is not None else None)

    def _on_subscription_status(self, status: Any) -> None:
        log.info("%s: subscription status %s", self.name, status)

    def _stall_explains(self, since: float, budget: float) -> float | None:
        """The longest loop stall since ``since`` if stalls explain a ``budget`` timeout, else None.

        They do when the loop stood still for at least half the budget: a server that answers
        in milliseconds whenever the loop runs can then have missed the deadline.
        """
        if self._lag.stalled(since) < max(budget / 2, self._lag.min_stall):
            return None
        return self._lag.longest(since)

    async def _connection_lost(self, client: Client, exc: Exception) -> None:
        """asyncua's supervisor of ``client`` detected a loss (it then marks that client disconnected)."""
        if client is not self.client or self._closing or not self._online:
            return
        self._ungate()  # nothing more comes from this subscription: read until a new one is up
        self._latest.pop("state", None)
        # we never reuse this client: stop its publish loop before it fails on the dead client
        publish = getattr(client.uaclient, "_publish_task", None)
        if isinstance(publish, asyncio.Task) and not publish.done():
            publish.cancel()
        reason = f"connection lost ({type(exc).__name__}: {exc})"
        if isinstance(exc, _TIMEOUTS):
            loop = asyncio.get_running_loop()
            probe = min(client.session_timeout / 2000, self.config.watchdog_s)  # asyncua's probe timeout
            stall = self._stall_explains(loop.time() - self.config.watchdog_s - self.config.request_timeout_s,
                                         probe)
            if stall is not None:
                self._recover_quietly(client, reason, stall)
                return
        self._mark_offline(reason)

    def _recover_quietly(self, client: Client, reason: str, stall: float) -> None:
        """Replace ``client`` by a fresh one without reporting a loss; requests wait for it."""
        log.warning("%s: %s right after a %.1f s event-loop stall, not counted as a loss yet: "
                    "reconnecting quietly with a fresh client", self.name, reason, stall)
        self.client, self._sub = None, None
        client.connection_lost_callback = None
        self._recovery = asyncio.get_running_loop().create_task(self._recover(client, reason, stall),
                                                                name=f"opcua-recover-{self.name}")

    async def _recover(self, old: Client, reason: str, stall: float) -> None:
        loop = asyncio.get_running_loop()
        budget = self.config.request_timeout_s
        disposal = loop.create_task(self._dispose(old))  # close the old session meanwhile
        error = "interrupted"
        try:
            for attempt in (1, 2):  # a second try only if a stall explains the first one's timeout
                t0 = loop.time()
                try:
                    await asyncio.wait_for(self._open(), budget)
                except _TIMEOUTS:
                    error = f"no answer within {budget:g} s"
                    if attempt == 1 and self._stall_explains(t0, budget) is not None:
                        continue
                except DeviceError as e:
                    error = str(e)
                else:
                    error = ""
                break
        finally:
            self._recovery = None
            if not self._closing:
                if not error:
                    self.quiet_reconnects += 1
                    log.warning("%s: reconnected after a %.1f s event-loop stall: the server was there all "
                                "along (no offline event)", self.name, stall)
                else:
                    log.warning("%s: quick reconnect after a %.1f s event-loop stall failed (%s): the server "
                                "is lost too", self.name, stall, error)
                    self._mark_offline(f"{reason}; quick reconnect after a {stall:.1f} s event-loop stall "
                                       f"failed: {error}")
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await disposal

    def _mark_offline(self, reason: str) -> None:
        if not self._online or self._closing or self._recovery is not None:
            return  # during a quiet reconnect, its outcome decides
        self._online = False
        self.offline_reason = reason
        log.warning("%s: offline: %s", self.name, reason)
        self._report("offline", reason)
        self._changed.set()
        if self._reconnect_task is None or self._reconnect_task.done():
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        await self._drop_client()
        while not self._closing:
            await self.clock.sleep(self.config.reconnect_interval_s)
            try:
                await self._open()
            except ConfigurationError as e:  # the server came back different: keep trying, say why
                log.error("%s: reconnect refused: %s", self.name, e)
                self.offline_reason = str(e)
                continue
            except DeviceError as e:
                log.info("%s: reconnect failed: %s", self.name, e)
                continue
            log.warning("%s: back online (%s)", self.name, self.endpoint)
            self._report("online", self.endpoint)
            return

    # -- checked I/O --------------------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return self._online

    def _require_online(self) -> None:
        self._require_connected()
        if not self._online:
            raise DeviceOfflineError(f"unreachable: {self.offline_reason or 'not connected'}", device=self.name)

    async def _client(self) -> Client:
        """The current client, after waiting out a quiet reconnect (bounded by its own timeout)."""
        self._require_online()
        task = self._recovery
        if task is not None and not task.done():
            await asyncio.wait({task})  # never raises, never cancels the reconnect
            self._require_online()
        if self.client is None:
            raise DeviceOfflineError(f"unreachable: {self.offline_reason or 'not connected'}", device=self.name)
        return self.client

    def _checked(self, sig: str, dv: ua.DataValue) -> Any:
        status = dv.StatusCode
        if status is not None and not status.is_good():
            if status.is_bad() or not self.config.accept_uncertain:
                raise DeviceFaultError(f"{sig}: {'Bad' if status.is_bad() else 'Uncertain'} status "
                                       f"{status.name} — value not used", device=self.name)
        expected = self._vtypes.get(sig)
        var = dv.Value
        if var is None or var.Value is None:
            raise DeviceFaultError(f"{sig}: null value", device=self.name)
        if expected is not None and var.VariantType != expected:
            raise DeviceFaultError(f"{sig}: server sent {var.VariantType.name}, expected {expected.name}",
                                   device=self.name)
        return var.Value

    async def _request(self, send: Callable[[Client], Awaitable[Any]], what: str, *,
                       timeout: float | None = None, idempotent: bool = True) -> Any:
        """One round trip: simulated time frozen, wall-time timeout, losses mark the device offline.

        A timeout that an event-loop stall explains, or a failure of a client that a quiet
        reconnect has replaced meanwhile, is not a loss: an idempotent request is sent once more
        (on the current client); any other raises without marking the device offline.
        """
        t = self.config.request_timeout_s if timeout is None else timeout
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            client = await self._client()
            t0 = loop.time()
            try:
                async with self.clock.busy():
                    return await asyncio.wait_for(send(client), t)
            except _TIMEOUTS:
                stalled = self._stall_explains(t0, t)
                replaced = client is not self.client  # a quiet reconnect swapped clients meanwhile
                if stalled is not None or replaced:
                    retry = idempotent and attempt == 1
                    why = f"the event loop stalled {stalled:.1f} s meanwhile" if stalled is not None \
                        else "the client was replaced by a quiet reconnect meanwhile"
                    log.warning("%s: no answer to %s within %g s, but %s: %s", self.name, what, t, why,
                                "sending it again" if retry else "not counted as a connection loss")
                    if retry:
                        continue
                    raise DeviceTimeoutError(f"no answer to {what} within {t:g} s ({why})", device=self.name) \
                        from None
                self._mark_offline(f"no answer to {what} within {t:g} s (server hung?)")
                raise DeviceTimeoutError(f"no answer to {what} within {t:g} s", device=self.name) from None
            except _COMM_ERRORS as e:
                if client is not self.client:  # replaced by a quiet reconnect while on the wire
                    if idempotent and attempt == 1:
                        continue
                    raise DeviceOfflineError(f"{what} interrupted by a reconnect: {type(e).__name__}",
                                             device=self.name) from None
                self._mark_offline(f"{what} failed: {type(e).__name__}")
                raise DeviceOfflineError(f"{what} failed: {type(e).__name__} {e}", device=self.name) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, *signals: str) -> dict[str, Any]:
        """Read signals in one request; every value is checked (status and type)."""
        self._require_online()
        for s in signals:
            if s not in self._nodes or self.map[s].direction == "method":
                raise KeyError(f"{self.name}: {s!r} is not a readable signal of the node map")
        ids = [self._nodes[s] for s in signals]
        dvs = await self._request(lambda c: c.uaclient.read_attributes(ids, ua.AttributeIds.Value),
                                  f"read {','.join(signals)}")
        return {s: self._checked(s, dv) for s, dv in zip(signals, dvs)}

    async def write(self, signal: str, value: Any) -> None:
        """Write ``value`` encoded as the DataType the server declared for ``signal``."""
        self._require_online()
        spec = self.map.get(signal)
        if spec is None or spec.direction != "write":
            raise KeyError(f"{self.name}: {signal!r} is not a writable signal of the node map")
        vt = self._vtypes[signal]
        variant = ua.Variant(_coerce(signal, value, vt), vt)
        nid = self._nodes[signal]
        res = await self._request(lambda c: c.uaclient.write_attributes([nid], [ua.DataValue(variant)],
                                                                        ua.AttributeIds.Value), f"write {signal}")
        if not res[0].is_good():
            raise DeviceFaultError(f"write {signal}={value!r} refused: {res[0].name}", device=self.name)

    async def call(self, signal: str, *, timeout: float | None = None) -> None:
        """Call a method of the node map; never resent (a PackML command is not idempotent)."""
        self._require_online()
        if signal not in self._objects:
            raise KeyError(f"{self.name}: {signal!r} is not a method of the node map")
        req = ua.CallMethodRequest()
        req.ObjectId, req.MethodId, req.InputArguments = self._objects[signal], self._nodes[signal], []
        t = self.config.request_timeout_s if timeout is None else min(timeout, self.config.request_timeout_s)
        try:
            results = await self._request(lambda c: c.uaclient.call([req]), signal, timeout=t, idempotent=False)
        except ua.UaError as e:
            if isinstance(e, ua.UaStatusCodeError) and not _is_comm_error(e):
                raise DeviceFaultError(f"{signal} refused: {type(e).__name__}", device=self.name) from None
            self._mark_offline(f"{signal} failed: {type(e).__name__}")
            raise DeviceOfflineError(f"{signal} failed: {type(e).__name__} {e}", device=self.name) from None
        status = results[0].StatusCode
        if not status.is_good():
            raise DeviceFaultError(f"{signal} refused by the machine: {status.name}", device=self.name)

    # -- Machine contract -----------------------------------------------------------------------------
    async def _state(self) -> str:
        gate = self._gate
        if gate is not None and self._online and self.client is not None:
            # the gate holds simulated time until every change of the state node has reached the
            # subscription, so once nothing is on its way the cached value is the server's
            await gate.settled(self._nodes["state"].to_string())
            dv = self._latest.get("state")
            if dv is not None and self._gate is gate and self._online and "state" not in self._bad_notifications:
                try:
                    v = self._checked("state", dv)
                except DeviceFaultError:
                    pass  # read it: the read reports the fault
                else:
                    return PACKML_STATES.get(int(v), f"State{v}")
        v = (await self.read("state"))["state"]
        return PACKML_STATES.get(int(v), f"State{v}")

    async def status(self) -> MachineStatus:
        self._require_online()
        sigs = ["state"] + [s for s in ("fault", "cycles") if s in self._nodes]
        tel = [s for s in self.config.telemetry if s not in sigs]
        vals = await self.read(*sigs, *tel)
        state = PACKML_STATES.get(int(vals["state"]), f"State{vals['state']}")
        fault = str(vals.get("fault", "") or "")
        faulted = bool(fault) or state in ("Aborting", "Aborted") or bool(vals.get("jam"))
        return MachineStatus(state, faulted, fault, int(vals.get("cycles", 0)),
                             {s: float(vals[s]) for s in self.config.telemetry})

    async def telemetry(self) -> dict[str, float]:
        vals = await self.read(*self.config.telemetry)
        return {k: float(v) for k, v in vals.items()}

    async def command(self, command: str, *, timeout: float | None = None) -> None:
        """Send a PackML command.  ``reset`` means *make ready*: the legal PackML path to Idle.

        From Held/Suspended/Execute/… that is Stop then Reset, from Aborted Clear then Reset,
        from Stopped/Complete Reset; in Idle nothing.  Other commands go 1:1 to the state methods.
        """
        self._require_connected()
        cmd = command.lower()
        if cmd not in COMMANDS:
            raise ValueError(f"{self.name}: unknown command {command!r} (known: {', '.join(COMMANDS)})")
        if cmd != "reset":
            await self.call(cmd, timeout=timeout)
            return
        deadline = self.config.cycle_timeout_s if timeout is None else timeout
        for _ in range(4):
            state = await self._state()
            if state == "Idle":
                return
            if state in ("Stopped", "Complete"):
                await self.call("reset")
                await self._wait_state({"Idle", "Held", "Aborted", "Stopped"}, deadline)
            elif state == "Aborted":
                await self.call("clear")
                await self._wait_state({"Stopped", "Aborted"}, deadline)
            elif state in ("Clearing", "Stopping", "Aborting", "Resetting"):
                await self._wait_state({"Stopped", "Aborted", "Idle"}, deadline)
            else:
                await self.call("stop")
                await self._wait_state({"Stopped", "Aborted"}, deadline)
        state = await self._state()
        if state != "Idle":
            raise DeviceFaultError(f"could not make the machine ready (state {state})", device=self.name)

    async def _wait_state(self, targets: set[str], timeout: float) -> str:
        """Until the machine is in one of ``targets``: reads at clock-time steps (deterministic in sim)."""
        t_end = self.clock.now() + timeout
        while True:
            self._state_changed.clear()  # before looking: a change seen meanwhile is not missed
            state = await self._state()
            if state in targets:
                return state
            now = self.clock.now()
            if now >= t_end:
                raise DeviceTimeoutError(f"machine still {state} after {timeout:g} s (waiting for "
                                         f"{'/'.join(sorted(targets))})", device=self.name)
            if self._wall:
                # real time: a notification wakes us at once; the poll is the fallback
                self._changed.clear()
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), self.config.poll_interval_s)
            elif self._gate is not None:
                # changes are notified before simulated time moves on: wake on the next one
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await self.clock.wait_for(self._state_changed.wait(),
                                              min(self.config.event_poll_interval_s, t_end - now))
            else:
                await self.clock.sleep(self.config.poll_interval_s)

    async def cycle(self, *, timeout: float | None = None, params: dict[str, Any] | None = None) -> CycleResult:
        self._require_online()
        timeout = self.config.cycle_timeout_s if timeout is None else timeout
        state = await self._state()
        if state in ("Complete", "Stopped"):
            await self.call("reset")
            state = await self._wait_state({"Idle", "Held", "Aborted", "Stopped"}, timeout)
        if state != "Idle":
            fault = (await self.read("fault"))["fault"] if "fault" in self._nodes else ""
            raise DeviceFaultError(f"not ready for a cycle (state {state}{', ' + fault if fault else ''})",
                                   device=self.name)
        for k, v in (params or {}).items():
            await self.write(k, v)
        start = self.clock.now()
        await self.call("start")
        state = await self._wait_state({"Complete", "Held", "Aborted", "Stopped", "Suspended", "Idle"}, timeout)
        if state != "Complete":
            fault = (await self.read("fault"))["fault"] if "fault" in self._nodes else ""
            reason = (await self.read("stop_reason"))["stop_reason"] if "stop_reason" in self._nodes else ""
            msg = reason or fault or f"cycle ended in {state}"
            raise DeviceFaultError(msg, device=self.name)
        keys = list(self.config.cycle_telemetry)
        vals = await self.read(*dict.fromkeys(self.config.cycle_telemetry.values()),
                               *(["cycles"] if "cycles" in self._nodes else []))
        tele = {k: float(vals[self.config.cycle_telemetry[k]]) for k in keys}
        n = vals.get("cycles")
        return CycleResult(True, start, self.clock.now(), f"cycle {n} complete" if n is not None else "cycle complete",
                           tele)

    def health(self) -> dict[str, Any]:
        out = {**super().health(), "online": self._online, "endpoint": self.endpoint, "connects": self.connects,
               "quiet_reconnects": self.quiet_reconnects, "loop_lag_max_s": round(self._lag.max_lag, 3)}
        if self._recovery is not None:
            out["reconnecting_after_stall"] = True
        if self.offline_reason:
            out["offline_reason"] = self.offline_reason
        if self._bad_notifications:
            out["bad_values"] = dict(self._bad_notifications)
        latest = self._latest.get("state")
        if latest is not None and latest.Value is not None and latest.StatusCode.is_good():
            out["state"] = PACKML_STATES.get(int(latest.Value.Value), "?")
        return out


def _type_name(nid: Any) -> str:
    if isinstance(nid, ua.NodeId) and nid.NamespaceIndex == 0 and isinstance(nid.Identifier, int):
        for name, val in vars(ua.ObjectIds).items():
            if val == nid.Identifier and not name.startswith("_"):
                return name
    return str(nid)


def _coerce(signal: str, value: Any, vt: ua.VariantType) -> Any:
    if vt == ua.VariantType.Boolean:
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise ValueError(f"{signal}: {value!r} is not a boolean")
        return bool(value)
    if vt in _INT_RANGES:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ValueError(f"{signal}: {value!r} is not an integer")
        lo, hi = _INT_RANGES[vt]
        if not lo <= int(value) <= hi:
            raise ValueError(f"{signal}: {value} outside the range of {vt.name}")
        return int(value)
    if vt in _FLOATS:
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{signal}: {value!r} is not finite")
        return v
    if vt == ua.VariantType.String:
        return str(value)
    return value


def _is_comm_error(e: Exception) -> bool:
    return isinstance(e, (ua.uaerrors.BadSessionIdInvalid, ua.uaerrors.BadSessionClosed,
                          ua.uaerrors.BadSecureChannelClosed, ua.uaerrors.BadConnectionClosed,
                          ua.uaerrors.BadServerNotConnected, ua.uaerrors.BadTimeout))
