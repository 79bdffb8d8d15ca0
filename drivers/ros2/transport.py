"""How ROS 2 proxy drivers reach the wire, and how simulated time stays still while they do.

Drivers never import ``cell``, so they cannot build the asyncio<->rclpy bridge themselves
(``cell.ros.bridge.RosBridge``). The composition root does, and hands it down:

- ``ctx.resources["ros"]``: a :class:`RosTransport` (bridge + node + namespace + handoff),
  put there by the code that builds the cell (``cell.ros.runtime``), or
- :func:`set_default_transport` for a process whose cell file names ``ros2.*`` kinds directly
  (the cell node sets it before building the cell).

The bridge is used duck-typed (``create_node``, ``call``, ``send_goal``, ``get_result``,
``cancel_goal``, ``wait_for_service``, ``wait_for_action_server``, ``wake``): one bridge, one
executor thread, no second implementation here.

**Determinism over DDS: the clock handoff.** A simulated clock must not advance while a
request or a reply is on the wire, but it *must* advance while the device node carries the
request out (a move takes simulated seconds). So the caller's ``clock.busy()`` block is handed
over like a token (:class:`Handoff`): the proxy opens a busy block before sending (key
``(id, "req")``); the device node closes it when its handler starts on the event loop, runs the
twin (simulated time flows), opens ``(id, "rep")`` before replying, and the proxy closes that
when the reply arrives. If the proxy gives up on a call (cancelled, timed out) it closes every
token of that call and tells the handoff, so a late reply can never leave the clock frozen.
This works when proxy and device node share one process and one clock (``axcell run
--transport ros``). With ``--processes`` each process has its own clock, kept in lock-step by
``cell.ros.lockstep``, whose handoffs have this same interface: there a token is a counted
message, and simulated time moves only when every message sent has been taken in.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from typing import Any

log = logging.getLogger("axcell.ros2")

_DEFAULT: "RosTransport | None" = None


class Handoff:
    """Busy blocks of a clock, opened and closed by key (see the module docstring).

    A call the caller gave up on (:meth:`abandon`) stays marked abandoned (a bounded memory of
    the most recent ones) so that a server handler finishing *after* the caller moved on never
    opens a reply token that nobody will close; the server side clears the mark when it ends
    (:meth:`server_done`). The caller never clears it: its own cleanup may run before the
    cancelled server handler has seen the mark.
    """

    MAX_ABANDONED = 4096

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._open: dict[Any, Any] = {}
        self._abandoned: dict[Any, None] = {}  # insertion-ordered set, bounded
        self._tasks: dict[Any, Any] = {}
        self._latest: dict[str, int] = {}
        self._subs: dict[str, set[Any]] = {}
        #: ``hook(t_old, t_new)`` run as the shared clock moves (:meth:`passing`, hooked into the
        #: clock's ``advance_hooks`` by whoever builds this handoff); a device node publishes the
        #: states an arm passes through this way instead of waking the clock every period.
        self.time_hooks: set[Any] = set()

    def passing(self, t_old: float, t_new: float) -> None:
        for hook in list(self.time_hooks):
            try:
                hook(t_old, t_new)
            except Exception:  # noqa: BLE001 - an observer must never break the clock
                log.exception("time hook failed")

    async def hold(self, key: Any) -> None:
        if key in self._open or (isinstance(key, tuple) and key[0] in self._abandoned):
            return
        cm = self.clock.busy()
        await cm.__aenter__()
        self._open[key] = cm

    async def release(self, key: Any) -> None:
        cm = self._open.pop(key, None)
        if cm is not None:
            await cm.__aexit__(None, None, None)

    async def abandon(self, call: Any) -> None:
        """The caller gave up on ``call``: close all its tokens; cancel its server task if any."""
        self._abandoned[call] = None
        while len(self._abandoned) > self.MAX_ABANDONED:
            self._abandoned.pop(next(iter(self._abandoned)))
        for key in [k for k in self._open if isinstance(k, tuple) and k[0] == call]:
            await self.release(key)
        task = self._tasks.pop(call, None)
        if task is not None and not task.done():
            task.cancel()

    def forget(self, call: Any) -> None:
        """The caller is done with ``call`` (normal completion): drop its bookkeeping.

        An abandoned call keeps its mark until the server side ends (:meth:`server_done`).
        """
        self._tasks.pop(call, None)

    def server_done(self, call: Any) -> bool:
        """The server handler of ``call`` ends: True if it should open the reply token.

        False (and the abandoned mark is cleared) when the caller already gave up on it.
        """
        self._tasks.pop(call, None)
        if call in self._abandoned:
            del self._abandoned[call]
            return False
        return True

    # ---- latched state topics (the conveyor's belt state), in-process only
    #
    # A device node that publishes a state its in-process proxies compute from (the belt's
    # ``s0 + v·(t − t0)``) notes the sample's sequence number here when it publishes
    # (:meth:`published`) and opens one busy block per subscribed proxy (key ``(topic, proxy,
    # seq)``), so simulated time stands still until every proxy has the sample; each proxy
    # closes its keys up to the sequence it received (:meth:`received`). A proxy that reads
    # the state compares :meth:`latest` with what it has and waits for the sample if behind.

    def subscribe(self, topic: str, proxy: Any) -> None:
        self._subs.setdefault(topic, set()).add(proxy)

    async def unsubscribe(self, topic: str, proxy: Any) -> None:
        self._subs.get(topic, set()).discard(proxy)
        await self.received(topic, proxy, None)

    def published(self, topic: str, seq: int) -> None:
        """A state sample ``seq`` went out on ``topic`` (sync: called where the state changes)."""
        self._latest[topic] = seq
        for proxy in self._subs.get(topic, ()):
            self.hold_now((topic, proxy, seq))

    def latest(self, topic: str) -> int | None:
        return self._latest.get(topic)

    async def received(self, topic: str, proxy: Any, seq: int | None) -> None:
        """``proxy`` has sample ``seq`` of ``topic`` (``None``: every sample; it goes away)."""
        for key in [k for k in self._open if isinstance(k, tuple) and len(k) == 3 and k[0] == topic
                    and k[1] == proxy and (seq is None or k[2] <= seq)]:
            await self.release(key)

    def hold_now(self, key: Any) -> bool:
        """:meth:`hold` from synchronous code (the clock's ``busy()`` enters without suspending;
        a clock whose ``busy()`` would suspend gets no block, and False is returned)."""
        if key in self._open:
            return True
        cm = self.clock.busy()
        step = cm.__aenter__()
        try:
            step.send(None)
        except StopIteration:
            self._open[key] = cm
            return True
        step.close()
        return False

    def register_task(self, call: Any, task: Any) -> None:
        self._tasks[call] = task

    def incoming(self, call: Any) -> bool:
        """Server side: does the request ``call`` come with a handoff token (an in-process proxy)?"""
        return (call, "req") in self._open

    def abandoned(self, call: Any) -> bool:
        return call in self._abandoned

    @property
    def open_count(self) -> int:
        return len(self._open)


class RosTransport:
    """A bridge, a node for the proxies' clients, the cell namespace and the clock handoff."""

    def __init__(self, bridge: Any, node: Any, namespace: str, handoff: Handoff | None = None) -> None:
        self.bridge = bridge
        self.node = node
        self.namespace = namespace.strip("/")
        self.handoff = handoff
        self._ids = itertools.count(((os.getpid() & 0xFFFF) << 40) + 1)

    def next_id(self) -> int:
        return next(self._ids)

    def topic(self, device: str, leaf: str) -> str:
        return f"/{self.namespace}/{device}/{leaf}" if self.namespace else f"/{device}/{leaf}"


def set_default_transport(t: RosTransport | None) -> None:
    global _DEFAULT
    _DEFAULT = t


def get_transport(resources: dict[str, Any]) -> RosTransport:
    t = resources.get("ros") or _DEFAULT
    if t is None:
        from drivers.errors import ConfigurationError

        raise ConfigurationError("ros2.* devices need a ROS 2 transport: run the cell with --transport ros "
                                 "or from the cell node (axcell-cell-node)")
    return t


def belt_state_qos():
    """QoS of a latched state topic (``~/belt_state``): reliable, transient-local, last sample only."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


# --------------------------------------------------------------------------- error mapping

def error_to_wire(e: BaseException) -> tuple[str, str]:
    """(error_type, message) for a DeviceCall reply."""
    from drivers.errors import DeviceError

    name = type(e).__name__
    if isinstance(e, KeyError):
        return "KeyError", str(e.args[0]) if e.args else ""
    if isinstance(e, DeviceError):
        msg = str(e)
        dev = getattr(e, "device", None)
        if dev and msg.startswith(f"{dev}: "):
            msg = msg[len(dev) + 2:]
        return name, json.dumps({"device": dev, "message": msg})
    return name, str(e)


def error_from_wire(error_type: str, message: str, device: str) -> BaseException:
    """The exception a proxy raises for a failed DeviceCall (the same class as the twin raised)."""
    from drivers import errors

    cls = getattr(errors, error_type, None)
    if isinstance(cls, type) and issubclass(cls, errors.DeviceError):
        try:
            d = json.loads(message)
            return cls(d.get("message", ""), device=d.get("device") or device)
        except (ValueError, AttributeError):
            return cls(message, device=device)
    builtin = {"ValueError": ValueError, "KeyError": KeyError, "PermissionError": PermissionError,
               "TimeoutError": TimeoutError, "TypeError": TypeError}.get(error_type)
    if builtin is not None:
        return builtin(message)
    return errors.DeviceFaultError(f"{error_type}: {message}", device=device)
