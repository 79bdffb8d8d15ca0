"""``--processes``: one simulated world in several processes, kept in step.

The main process (the *leader*: cell node, supervisor, process tree, report) and one
*follower* process per device each build the same cell from the same file and seed, so each
holds the same world replica (``cell.ros.replica``). A follower serves only its own device as
a device node; what that device does to the world is sent to every other replica as an event.

**Time.** Every process has its own :class:`sim.clock.SimClock`. The leader's clock runs the
loop (``SimClock.run`` with :attr:`~sim.clock.SimClock.sync` = :class:`Leader`); a follower's
clock never runs ahead: it moves only when the leader tells it to (``adv``) or when a message
stamped with a later time reaches it. Conservative lock-step:

1. every process settles (no runnable asyncio work, no busy block open) and a follower then
   reports its *status*: its time, its next wake-up, and how many messages it has sent to and
   taken in from every other process (``st`` on ``/<cell>/_axcell/sync_up``);
2. the leader moves time only when every follower's latest status is settled, no follower has
   a wake-up due that it has not fired, and for every pair of processes the messages one sent
   equal the messages the other took in (the counts of different processes are snapshots
   taken at different moments, but a process can only become busy again by taking in a message,
   so equal pairwise counts over settled snapshots mean nothing is on the wire or running);
3. the new time is the earliest wake-up over all processes; followers with a wake-up due then
   are told to advance (``adv``) and fire it, the leader fires its own.

Counted messages: DeviceCall requests and replies, FollowJointTrajectory goals and results
(the clock-handoff tokens of ``drivers.ros2.transport``, here counted instead of held), the
leader's "caller gave up" notices (``abandon``), replication events, and the latest latched
belt state (by sequence number). A request goes out only once the receiving follower's clock
has reached the sender's time (:meth:`Leader.reach`); replication events carry their time and
a replica that is behind catches up first. A device node answers only after every other
replica has applied the events its device produced (``ack``), so whatever the leader does next
with the answer, every replica already shows the effect.

Topics (hidden, std_msgs/String with JSON): ``_axcell/sync_up`` (follower statuses),
``_axcell/sync_down_<device>`` (``adv``, ``abandon``, ``bye`` for one follower),
``_axcell/replica`` (events, everyone to everyone) and ``_axcell/ack_<device>`` (a replica's
applied count, to the event's owner).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

log = logging.getLogger("axcell.ros.lockstep")

LEADER = "_leader"
#: Wall seconds without any progress of the lock-step before the run fails with a diagnosis.
STALL_S = 120.0
#: Wall seconds a follower waits for the others to apply its events before it answers anyway.
ACK_WAIT_S = 60.0


_TRACE = os.environ.get("AXCELL_LOCKSTEP_TRACE", "")
_CALLS = {"request", "reply", "abandon", "abandoned"}


def _trace(who: str, *a: Any) -> None:
    if _TRACE and (_TRACE != "calls" or a[0] in _CALLS):
        import sys

        print(f"{time.monotonic():.6f} {who}", *a, file=sys.stderr, flush=True)


class DeviceProcessError(RuntimeError):
    """A device process of a ``--processes`` run died or stopped answering."""


def _qos():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=100000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def _topic(ns: str, leaf: str) -> str:
    return f"/{ns}/_axcell/{leaf}" if ns else f"/_axcell/{leaf}"


def _call_to_wire(call: Any) -> str:
    return "b" + call.hex() if isinstance(call, (bytes, bytearray)) else "i" + str(int(call))


def _call_from_wire(s: str) -> Any:
    return bytes.fromhex(s[1:]) if s[0] == "b" else int(s[1:])


def call_origin(call: Any) -> int:
    """The ``pid & 0xFFFF`` a call id was made by (``RosTransport.next_id``)."""
    cid = int.from_bytes(call, "big") if isinstance(call, (bytes, bytearray)) else int(call)
    return cid >> 40


class _Link:
    """The lock-step topics of one process (JSON over std_msgs/String)."""

    def __init__(self, bridge: Any, ns: str, me: str, procs: list[str]) -> None:
        from std_msgs.msg import String

        self.String = String
        self.bridge, self.ns, self.me, self.procs = bridge, ns, me, procs
        self.loop = asyncio.get_running_loop()
        self.node = bridge.create_node(f"lockstep_{me.strip('_')}", namespace=f"/{ns}" if ns else None)
        q = _qos()
        self.rep_pub = self.node.create_publisher(String, _topic(ns, "replica"), q)
        self.node.create_subscription(String, _topic(ns, "replica"), self._cb(lambda d: self.on_replica(d)), q)
        # acks go to the owner of the events (the leader's own events need none)
        self.ack_pubs = {p: self.node.create_publisher(String, _topic(ns, f"ack_{p}"), q)
                         for p in procs if p not in (me, LEADER)}
        if me != LEADER:
            self.node.create_subscription(String, _topic(ns, f"ack_{me}"), self._cb(lambda d: self.on_ack(d)), q)

    def _cb(self, fn: Any) -> Any:
        loop = self.loop

        def cb(msg: Any) -> None:  # spin thread
            try:
                loop.call_soon_threadsafe(fn, json.loads(msg.data))
            except RuntimeError:  # loop closed
                pass

        return cb

    def send(self, pub: Any, d: dict[str, Any]) -> None:
        try:
            pub.publish(self.String(data=json.dumps(d, separators=(",", ":"))))
        except Exception as e:  # noqa: BLE001 - the bridge is closing (shutdown, Ctrl-C)
            log.debug("%s: %s not sent: %r", self.me, d.get("k"), e)

    def on_replica(self, d: dict[str, Any]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def on_ack(self, d: dict[str, Any]) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _Process:
    """What the leader and a follower share: replication counts and the replica link."""

    me: str
    clock: Any
    link: _Link

    def _init_counts(self, procs: list[str], replication: Any) -> None:
        self.procs = list(procs)
        self.others = [p for p in procs if p != self.me]
        self.replication = replication
        self.rs = 0                                     # events this process emitted
        self.rr = {p: 0 for p in self.others}           # events applied, per sender
        self.acks = {p: 0 for p in self.others}         # of our events, applied by p (followers)
        self._acked = asyncio.Event()
        replication.set_emit(self.emit)

    def emit(self, ev: list[Any]) -> None:
        self.rs += 1
        self.link.send(self.link.rep_pub, {"k": "ev", "src": self.me, "t": self.clock.now(), "ev": ev})
        self.touch()

    def _take_event(self, d: dict[str, Any]) -> None:
        src = d["src"]
        if src == self.me or src not in self.rr:
            return
        _trace(self.me, "event", d)
        self.catch_up(float(d["t"]))
        try:
            self.replication.apply(d["ev"])
        except Exception:  # noqa: BLE001 - counted anyway: a stuck count would hang the run
            log.exception("%s: applying %s from %s failed", self.me, d["ev"][:2], src)
        self.rr[src] += 1
        if src in self.link.ack_pubs:
            self.link.send(self.link.ack_pubs[src], {"k": "ack", "p": self.me, "n": self.rr[src]})
        self.touch()

    def _take_ack(self, d: dict[str, Any]) -> None:
        p = d.get("p")
        if p in self.acks:
            self.acks[p] = max(self.acks[p], int(d["n"]))
            self._acked.set()

    async def replicated(self, timeout: float = ACK_WAIT_S) -> None:
        """Until every other replica has applied every event this process emitted."""
        deadline = time.monotonic() + timeout
        while any(n < self.rs for n in self.acks.values()):
            if self.closing:
                return
            self._acked.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("%s: replicas %s did not confirm %d events", self.me,
                          {p: n for p, n in self.acks.items() if n < self.rs}, self.rs)
                return
            try:
                await asyncio.wait_for(self._acked.wait(), min(left, 1.0))
            except TimeoutError:
                pass

    @property
    def closing(self) -> bool:
        return False

    def catch_up(self, t: float) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def touch(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


# ============================================================================ leader

class Leader(_Process):
    """The main process's side: drives its clock's advances (``SimClock.sync``)."""

    def __init__(self, bridge: Any, cell: Any, replication: Any, followers: list[str], *,
                 stall_s: float = STALL_S) -> None:
        self.me = LEADER
        self.cell = cell
        self.clock = cell.clock
        self.ns = cell.name
        self.followers = list(followers)
        self.link = _Link(bridge, self.ns, self.me, [LEADER, *followers])
        self.link.on_replica = self._on_replica  # type: ignore[method-assign]
        self.link.on_ack = self._take_ack  # type: ignore[method-assign]
        self._init_counts([LEADER, *followers], replication)
        q = _qos()
        # one down topic per follower: an advance wakes only the process it is for
        self.down = {p: self.link.node.create_publisher(self.link.String, _topic(self.ns, f"sync_down_{p}"), q)
                     for p in followers}
        self.link.node.create_subscription(self.link.String, _topic(self.ns, "sync_up"),
                                           self.link._cb(self._on_status), q)
        self.status: dict[str, dict[str, Any]] = {}
        self.msent = {p: 0 for p in followers}
        self.mrecv = {p: 0 for p in followers}
        self.subscribed: set[str] = set()
        self.got: dict[str, int] = {}
        self._changed = asyncio.Event()
        self.error: BaseException | None = None
        self.stall_s = stall_s
        self._progress = time.monotonic()
        self.steps = 0          # advances agreed
        self.waits = 0          # times an advance had to wait for another process
        self.wait_s = 0.0       # wall seconds spent waiting
        self.advances_sent = 0  # advance messages to followers
        self._handoffs: dict[str, LeaderHandoff] = {}

    # ---- messages
    def _on_status(self, d: dict[str, Any]) -> None:
        p = d.get("p")
        if p in self.msent:
            _trace("leader", "status-in", p, d["now"])
            self.status[p] = d
            self.touch()

    def _on_replica(self, d: dict[str, Any]) -> None:
        if d.get("k") == "ev":
            self._take_event(d)

    def catch_up(self, t: float) -> None:
        pass  # the leader's clock is never behind a follower's

    def touch(self) -> None:
        self._progress = time.monotonic()
        self._changed.set()

    def fail(self, error: BaseException) -> None:
        """A device process is gone (from the process monitor): every wait ends with ``error``."""
        if self.error is None:
            self.error = error
        self._changed.set()

    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if time.monotonic() - self._progress > self.stall_s:
            raise DeviceProcessError(f"the device processes stopped answering ({self.stall_s:.0f} s without "
                                     f"progress at t={self.clock.now():.3f}): {self.why_not_quiet()}")

    def _send_down(self, d: dict[str, Any], to: list[str] | None = None) -> None:
        for p in (self.followers if to is None else to):
            self.link.send(self.down[p], d)

    # ---- startup
    async def wait_ready(self, timeout: float, alive: Any = None) -> None:
        """Until every follower has reported (its topics matched) and ours are matched too."""
        deadline = time.monotonic() + timeout
        n = len(self.procs)
        while True:
            self._changed.clear()
            if self.error is not None:
                raise self.error
            if alive is not None:
                alive()
            if all(p in self.status for p in self.followers) and self._matched(n):
                return
            if time.monotonic() > deadline:
                missing = [p for p in self.followers if p not in self.status]
                raise DeviceProcessError(f"device processes not ready after {timeout:.0f} s"
                                         + (f" (no status from {', '.join(missing)})" if missing else
                                            " (their topics did not match)"))
            try:
                await asyncio.wait_for(self._changed.wait(), 0.1)
            except TimeoutError:
                pass

    def _matched(self, n: int) -> bool:
        node = self.link.node
        return (self.link.rep_pub.get_subscription_count() >= n
                and node.count_publishers(_topic(self.ns, "replica")) >= n
                and all(pub.get_subscription_count() >= 1 for pub in self.down.values())
                and all(pub.get_subscription_count() >= 1 for pub in self.link.ack_pubs.values()))

    # ---- SimClock.sync
    async def quiesce(self, clock: Any) -> None:
        self._progress = w0 = time.monotonic()
        waited = False
        while True:
            self._check()
            if self._quiet(clock.now()):
                self.steps += 1
                if waited:
                    self.wait_s += time.monotonic() - w0
                return
            if not waited:
                self.waits += 1
                waited = True
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 0.05)
            except TimeoutError:
                pass
            if getattr(clock, "_stop", False):
                return
            await clock.settle()

    def earliest(self, target: float | None) -> float | None:
        for p in self.followers:
            nx = self.status[p].get("next")
            if nx is not None and (target is None or nx < target):
                target = nx
        return target

    def advanced(self, t: float) -> None:
        due = [p for p in self.followers if (nx := self.status[p].get("next")) is not None and nx <= t]
        _trace("leader", "advanced", t, due)
        if due:
            self.advances_sent += len(due)
            self._send_down({"k": "adv", "t": t}, due)

    def _quiet(self, now: float) -> bool:
        return self.why_not_quiet(now) is None

    def why_not_quiet(self, now: float | None = None) -> str | None:
        now = self.clock.now() if now is None else now
        st = self.status
        for p in self.followers:
            s = st.get(p)
            if s is None:
                return f"{p}: no status"
            if not s["settled"]:
                return f"{p}: busy"
            nx = s.get("next")
            if nx is not None and nx <= now and s["now"] < now:
                if nx < now:
                    self.fail(DeviceProcessError(f"lock-step broken: {p} has a wake-up at {nx} but the "
                                                 f"leader is at {now} already"))
                return f"{p}: wake-up at {nx} not fired (at {s['now']})"
            if s["mr"] != self.msent[p]:
                return f"{p}: took in {s['mr']} of {self.msent[p]} messages from the leader"
            if s["ms"] != self.mrecv[p]:
                return f"leader: took in {self.mrecv[p]} of {s['ms']} messages from {p} (calls out: {self._out(p)})"
            if self.rr[p] != s["rs"]:
                return f"leader: applied {self.rr[p]} of {s['rs']} events from {p}"
            rr = s["rr"]
            if rr.get(LEADER, 0) != self.rs:
                return f"{p}: applied {rr.get(LEADER, 0)} of {self.rs} events from the leader"
            for q in self.followers:
                if q != p and q in st and rr.get(q, 0) != st[q]["rs"]:
                    return f"{p}: applied {rr.get(q, 0)} of {st[q]['rs']} events from {q}"
            for topic, seq in s.get("lat", {}).items():
                if topic in self.subscribed and self.got.get(topic, 0) < seq:
                    return f"leader: has sample {self.got.get(topic, 0)} of {topic}, {p} published {seq}"
        return None

    async def reach(self, p: str) -> None:
        """Until follower ``p``'s clock is at the leader's time (before sending it anything).

        Time is held meanwhile (a busy block): the message about to go out is not counted yet.
        """
        s = self.status.get(p)
        if s is not None and s["now"] >= self.clock.now():
            return
        async with self.clock.busy():
            t = self.clock.now()
            self._send_down({"k": "adv", "t": t}, [p])
            while True:
                self._check()
                s = self.status.get(p)
                if s is not None and s["now"] >= t:
                    return
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.05)
                except TimeoutError:
                    pass

    def _out(self, p: str) -> list[str]:
        h = self._handoffs.get(p)
        return [_call_to_wire(c) for c in h._out] if h is not None else []

    def send_abandon(self, p: str, call: Any) -> None:
        _trace("leader", "abandon", p, _call_to_wire(call), self.clock.now())
        self.msent[p] += 1
        self._send_down({"k": "abandon", "call": _call_to_wire(call), "t": self.clock.now()}, [p])
        self.touch()

    def stats(self) -> dict[str, Any]:
        return {"steps": self.steps, "waits": self.waits, "wait_s": round(self.wait_s, 3),
                "advances_sent": self.advances_sent, "events_emitted": self.rs, "events_applied": sum(self.rr.values()),
                "messages": {p: [self.msent[p], self.mrecv[p]] for p in self.followers}}

    def bye(self) -> None:
        log.info("lock-step: %s", self.stats())
        self._send_down({"k": "bye"})

    def handoff(self, peer: str) -> "LeaderHandoff":
        h = self._handoffs[peer] = LeaderHandoff(self, peer)
        return h


class LeaderHandoff:
    """The proxies' side of the clock handoff (``drivers.ros2.transport.Handoff``'s interface)
    for the device in follower process ``peer``: tokens are counted messages."""

    def __init__(self, leader: Leader, peer: str) -> None:
        self.leader, self.peer = leader, peer
        self._out: set[Any] = set()  # requests sent whose reply has not been taken in

    async def hold(self, key: Any) -> None:
        call, what = key[0], key[1]
        if what != "req" or call in self._out:
            return
        await self.leader.reach(self.peer)
        self.leader.msent[self.peer] += 1
        _trace("leader", "request", self.peer, _call_to_wire(call), self.leader.clock.now())
        self._out.add(call)

    async def release(self, key: Any) -> None:
        call, what = key[0], key[1]
        if what == "rep" and call in self._out:
            self._out.discard(call)
            _trace("leader", "reply", self.peer, _call_to_wire(call), self.leader.clock.now())
            self.leader.mrecv[self.peer] += 1
            self.leader.touch()

    async def abandon(self, call: Any) -> None:
        if call in self._out:
            self._out.discard(call)
            self.leader.send_abandon(self.peer, call)

    def forget(self, call: Any) -> None:
        pass

    def incoming(self, call: Any) -> bool:
        return False

    def register_task(self, call: Any, task: Any) -> None:
        pass

    def server_done(self, call: Any) -> bool:
        return True

    def abandoned(self, call: Any) -> bool:
        return False

    # latched state topics (the belt state)
    def subscribe(self, topic: str, proxy: Any) -> None:
        self.leader.subscribed.add(topic)

    async def unsubscribe(self, topic: str, proxy: Any) -> None:
        self.leader.subscribed.discard(topic)

    def published(self, topic: str, seq: int) -> None:
        pass

    def latest(self, topic: str) -> int | None:
        s = self.leader.status.get(self.peer)
        return None if s is None else s.get("lat", {}).get(topic)

    async def received(self, topic: str, proxy: Any, seq: int | None) -> None:
        if seq is not None and seq > self.leader.got.get(topic, 0):
            self.leader.got[topic] = seq
            self.leader.touch()

    def hold_now(self, key: Any) -> bool:
        return True

    @property
    def open_count(self) -> int:
        return len(self._out)


# ============================================================================ follower

class Follower(_Process):
    """A device process's side: its clock moves only when the leader says so."""

    def __init__(self, bridge: Any, cell: Any, replication: Any, me: str, procs: list[str], leader_pid: int) -> None:
        self.me = me
        self.cell = cell
        self.clock = cell.clock
        self.ns = cell.name
        self.leader_tag = leader_pid & 0xFFFF
        self.link = _Link(bridge, self.ns, me, procs)
        self.link.on_replica = self._on_replica  # type: ignore[method-assign]
        self.link.on_ack = self._take_ack  # type: ignore[method-assign]
        self._init_counts(procs, replication)
        q = _qos()
        self.up = self.link.node.create_publisher(self.link.String, _topic(self.ns, "sync_up"), q)
        self.link.node.create_subscription(self.link.String, _topic(self.ns, f"sync_down_{me}"),
                                           self.link._cb(self._on_down), q)
        self.msent = 0   # replies to the leader
        self.mrecv = 0   # requests and notices from the leader
        self.latched: dict[str, int] = {}
        self.wake = asyncio.Event()
        self.done = asyncio.Event()
        self.handoff = FollowerHandoff(self)
        self._last: dict[str, Any] | None = None
        self.ready = False
        self._time_sources: list[Any] = []
        self._ts_t = -1.0

    def touch(self) -> None:
        self.wake.set()

    @property
    def closing(self) -> bool:
        return self.done.is_set()

    def catch_up(self, t: float) -> None:
        now = self.clock.now()
        if t > now:
            for hook in list(self.handoff.time_hooks):
                try:
                    hook(now, t)
                except Exception:  # noqa: BLE001
                    log.exception("%s: time hook failed", self.me)
            self.clock.advance_to(t)
            self._feed_time_sources()
            self.wake.set()

    def _on_down(self, d: dict[str, Any]) -> None:
        k = d.get("k")
        _trace(self.me, "down", d)
        if k == "adv":
            self.catch_up(float(d["t"]))
            self.clock.advance_to(self.clock.now())  # fire what is due now
            self.wake.set()
        elif k == "abandon":
            self.catch_up(float(d["t"]))
            self.handoff.abandon_remote(_call_from_wire(d["call"]))
        elif k == "bye":
            self.done.set()
            self.wake.set()

    def _on_replica(self, d: dict[str, Any]) -> None:
        if d.get("k") == "ev":
            self._take_event(d)

    def from_leader(self, call: Any) -> bool:
        try:
            return call_origin(call) == self.leader_tag
        except (TypeError, ValueError):
            return False

    def _matched(self) -> bool:
        n = len(self.procs)
        node = self.link.node
        return (self.link.rep_pub.get_subscription_count() >= n
                and node.count_publishers(_topic(self.ns, "replica")) >= n
                and node.count_publishers(_topic(self.ns, f"sync_down_{self.me}")) >= 1
                and self.up.get_subscription_count() >= 1
                and all(pub.get_subscription_count() >= 1 for pub in self.link.ack_pubs.values()))

    def share_sim_time(self) -> None:
        """Feed this process's ``use_sim_time`` nodes from its own clock (no ``/clock`` subscription)."""
        for node in self.link.bridge.nodes:
            ts = getattr(node, "_time_source", None)
            if ts is None or not getattr(ts, "ros_time_is_active", False):
                continue
            sub = getattr(ts, "_clock_sub", None)
            if sub is not None:
                try:
                    node.destroy_subscription(sub)
                except Exception:  # noqa: BLE001
                    continue
                ts._clock_sub = None
            self._time_sources.append(ts)
        self._feed_time_sources()

    def _feed_time_sources(self) -> None:
        t = self.clock.now()
        if not self._time_sources or t - self._ts_t < 0.05:
            return
        from rosgraph_msgs.msg import Clock as ClockMsg

        from .devices import stamp

        self._ts_t = t
        msg = ClockMsg(clock=stamp(t))
        for ts in self._time_sources:
            ts.clock_callback(msg)

    def snapshot(self) -> dict[str, Any]:
        return {"k": "st", "p": self.me, "now": self.clock.now(), "next": self.clock.next_time(), "settled": True,
                "ms": self.msent, "mr": self.mrecv, "rs": self.rs, "rr": dict(self.rr), "lat": dict(self.latched)}

    async def run(self, ready_timeout: float = 120.0) -> None:
        """Report status whenever it changes, until the leader says ``bye``."""
        deadline = time.monotonic() + ready_timeout
        while not self._matched():
            if self.done.is_set():
                return
            if time.monotonic() > deadline:
                raise DeviceProcessError(f"{self.me}: lock-step topics did not match in {ready_timeout:.0f} s")
            await asyncio.sleep(0.02)
        self.ready = True
        clock = self.clock
        done = asyncio.ensure_future(self.done.wait())
        try:
            while not self.done.is_set():
                settled = asyncio.ensure_future(clock.settle())
                await asyncio.wait((settled, done), return_when=asyncio.FIRST_COMPLETED)
                if not settled.done():
                    settled.cancel()
                    break
                self._step()
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), 0.05)
                except TimeoutError:
                    pass
        finally:
            done.cancel()

    def _step(self) -> None:
        """Settled: another round at this instant, or report the status if it changed."""
        clock = self.clock
        nx = clock.next_time()
        if nx is not None and nx <= clock.now():
            clock.advance_to(clock.now())  # another round at this instant
            self.wake.set()
            return
        snap = self.snapshot()
        if snap != self._last:
            self._last = snap
            self.link.send(self.up, snap)
            _trace(self.me, "status", snap)


class FollowerHandoff:
    """The device node's side of the clock handoff in a follower process (see :class:`Leader`).

    A call from the leader goes: request taken in (counted) -> handler runs -> ``server_done``
    (it will answer) -> every replica has this process's events -> answer counted as sent. The
    leader's "gave up" notice can arrive at any point of that: before the request (the handler
    is cancelled at its first wait, as in one process), while it runs (cancelled now), while the
    answer waits for the replicas (the answer is not counted), or after (the count is taken
    back: the leader drops a late answer unseen).
    """

    MAX_REMEMBERED = 4096
    #: Cancels of FollowJointTrajectory goals from the leader come as its "gave up" notice,
    #: stamped with the leader's time (the action's cancel request is not): see DeviceNode.
    cancel_by_notice = True

    def __init__(self, f: Follower) -> None:
        self.f = f
        self._tasks: dict[Any, Any] = {}
        self._abandoned: set[Any] = set()
        self._early: set[Any] = set()        # abandoned before their request arrived
        self._replying: set[Any] = set()     # between server_done and the answer being counted
        self._dropped: set[Any] = set()      # abandoned while replying: do not count the answer
        self._replied: dict[Any, None] = {}  # answers counted as sent (bounded, insertion-ordered)
        #: ``hook(t_old, t_new)`` before the follower's clock jumps (see DeviceNode._move_publishing)
        self.time_hooks: set[Any] = set()

    def incoming(self, call: Any) -> bool:
        return self.f.from_leader(call)

    def register_task(self, call: Any, task: Any) -> None:
        self._tasks[call] = task
        if call in self._early:
            # the caller gave up before the request got here: it runs up to its first wait, as it
            # would have in one process, and is cancelled there
            self._early.discard(call)
            self._abandoned.add(call)
            task.cancel()

    async def release(self, key: Any) -> None:
        if key[1] == "req":
            self.f.mrecv += 1
            _trace(self.f.me, "request", _call_to_wire(key[0]), self.f.clock.now())
            self.f.touch()

    async def hold(self, key: Any) -> None:
        call, what = key[0], key[1]
        if what != "rep":
            return
        try:
            async with self.f.clock.busy():  # the answer is pending: time waits
                await self.f.replicated()
            if call in self._dropped:
                self._dropped.discard(call)
                return
            self.f.msent += 1
            _trace(self.f.me, "reply", _call_to_wire(call), self.f.clock.now())
            self._replied[call] = None
            while len(self._replied) > self.MAX_REMEMBERED:
                self._replied.pop(next(iter(self._replied)))
        finally:
            self._replying.discard(call)
            self.f.touch()

    async def abandon(self, call: Any) -> None:
        self.abandon_remote(call)

    def abandon_remote(self, call: Any) -> None:
        """The leader gave up on ``call`` (its notice counts as a message taken in)."""
        _trace(self.f.me, "abandoned", _call_to_wire(call), call in self._replied, call in self._replying,
               call in self._tasks)
        self.f.mrecv += 1
        if call in self._replied:  # answered already: that answer will never be taken in
            del self._replied[call]
            self.f.msent -= 1
        elif call in self._replying:
            self._dropped.add(call)
        elif call in self._tasks:
            self._abandoned.add(call)
            task = self._tasks.pop(call)
            if not task.done():
                task.cancel()
        else:
            self._early.add(call)
        self.f.touch()

    def forget(self, call: Any) -> None:
        self._tasks.pop(call, None)

    def server_done(self, call: Any) -> bool:
        self._tasks.pop(call, None)
        if call in self._abandoned:
            self._abandoned.discard(call)
            return False
        self._replying.add(call)
        return True

    def abandoned(self, call: Any) -> bool:
        return call in self._abandoned

    def published(self, topic: str, seq: int) -> None:
        self.f.latched[topic] = seq
        self.f.touch()

    def latest(self, topic: str) -> int | None:
        return self.f.latched.get(topic)

    def subscribe(self, topic: str, proxy: Any) -> None:
        pass

    async def unsubscribe(self, topic: str, proxy: Any) -> None:
        pass

    async def received(self, topic: str, proxy: Any, seq: int | None) -> None:
        pass

    def hold_now(self, key: Any) -> bool:
        return True

    @property
    def open_count(self) -> int:
        return len(self._tasks)


# ============================================================================ follower process

def _set_process_name(name: str) -> None:
    """Name this process after its device in ``ps``/``top`` (Linux ``comm``, 15 bytes)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except Exception:  # noqa: BLE001 - cosmetic
        pass


def _watch_parent(loop: asyncio.AbstractEventLoop, stop: Any) -> None:
    """Stop when the leader goes away: stdin is a pipe from it; EOF means it is gone."""
    import sys
    import threading

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(1):
                pass
        except Exception:  # noqa: BLE001
            pass
        try:
            loop.call_soon_threadsafe(stop)
        except RuntimeError:
            pass
        time.sleep(8.0)  # a clean exit did not happen: do not linger
        os._exit(3)

    threading.Thread(target=watch, name="leader-watch", daemon=True).start()


def follower_main(file: str, device: str, *, seed: int | None, procs: list[str], leader_pid: int) -> int:
    """One device of a ``--processes`` run (``axcell-device-node FILE --device NAME --follower``)."""
    import signal

    from ..config import load_cell
    from ..runtime import Cell
    from .bridge import RosBridge
    from .devices import DeviceNode
    from .env import ensure_ros_isolation
    from .replica import Replication

    _set_process_name(f"axcell-{device}")
    _die_with_parent(leader_pid)
    cfg = load_cell(file)
    ensure_ros_isolation()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        cell = Cell(cfg, seed=seed, inspectors={})
        if cell.world is None:
            raise SystemExit(f"{device}: --follower needs a simulated cell")
        replication = Replication(cell)
        dev = cell.devices[device]
        bridge = RosBridge(name=f"device-{device}")
        follower = None
        try:
            follower = Follower(bridge, cell, replication, device, procs, leader_pid)
            _watch_parent(loop, follower.done.set)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, follower.done.set)
            # the twin reads the replicas it depends on (the cup reads its arm's pose)
            for dep in type(dev).requires(dev.config):
                await cell.devices[dep].connect()
            DeviceNode(bridge, dev, cell.name, handoff=follower.handoff, simulated=True)
            follower.share_sim_time()
            await follower.run()
        finally:
            if follower is not None:
                follower.done.set()
            try:
                await asyncio.wait_for(dev.close(), 5.0)
            except Exception as e:  # noqa: BLE001
                log.warning("%s: close: %r", device, e)
            await bridge.aclose()

    asyncio.run(run())
    return 0


# ============================================================================ leader: the processes

class DeviceProcesses:
    """The follower processes of a run: started, watched, stopped."""

    def __init__(self, file: str, devices: list[str], *, seed: int | None, log_dir: str, follower: bool = True) -> None:
        self.file, self.devices, self.seed, self.log_dir = file, list(devices), seed, log_dir
        self.follower = follower
        self.procs: dict[str, Any] = {}
        self.logs: dict[str, str] = {}
        self._shm: dict[str, set[Any]] = {}  # Fast DDS /dev/shm files each child had mapped
        self._stopping = False
        self._watcher: Any = None

    def command(self, device: str) -> list[str]:
        import sys

        # the axcell-device-node entry point (cell.ros.devices:main), run by this interpreter
        cmd = [sys.executable, "-m", "cell.ros.devices", self.file, "--device", device]
        if not self.follower:  # hardware: the device node alone, on the wall clock
            return cmd
        cmd += ["--follower", "--peers", ",".join(self.devices), "--leader-pid", str(os.getpid())]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        return cmd

    def start(self) -> None:
        import subprocess

        from .env import ros_env

        env = ros_env()
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        os.makedirs(self.log_dir, exist_ok=True)
        for dev in self.devices:
            path = os.path.join(self.log_dir, f"{dev}.log")
            self.logs[dev] = path
            with open(path, "wb") as out:
                # no preexec_fn (this process has threads); the follower arms its own parent-death signal
                self.procs[dev] = subprocess.Popen(self.command(dev), stdin=subprocess.PIPE, stdout=out,
                                                   stderr=subprocess.STDOUT, env=env)

    def note_shm(self) -> None:
        """Remember the children's Fast DDS /dev/shm files (once they are up): a child that is
        killed cannot remove its own, :meth:`cleanup_shm` does."""
        from .env import shm_files_of

        for dev, p in self.procs.items():
            if p.poll() is None:
                self._shm[dev] = shm_files_of(p.pid)

    def cleanup_shm(self) -> list[Any]:
        """Remove the /dev/shm files of children that did not exit cleanly (those no live process uses)."""
        import gc

        from .env import remove_shm_files

        dead = [d for d, p in self.procs.items() if p.returncode is not None and p.returncode != 0]
        files = set().union(*(self._shm.get(d, set()) for d in dead)) if dead else set()
        if not files:
            return []
        gc.collect()  # rclpy objects of this process in reference cycles may still map them
        return remove_shm_files(files)

    @property
    def pids(self) -> dict[str, int]:
        return {d: p.pid for d, p in self.procs.items()}

    def check(self) -> None:
        """Raise :class:`DeviceProcessError` if a device process has exited."""
        for dev, p in self.procs.items():
            rc = p.poll()
            if rc is not None and not self._stopping:
                raise DeviceProcessError(f"device process {dev!r} (pid {p.pid}) exited with "
                                         f"{_describe_rc(rc)}{self._tail(dev)}")

    def _tail(self, dev: str, n: int = 6) -> str:
        try:
            with open(self.logs[dev], "rb") as f:
                lines = f.read().decode(errors="replace").strip().splitlines()[-n:]
        except OSError:
            return ""
        return ("; its last output:\n  " + "\n  ".join(lines)) if lines else ""

    def watch(self, loop: asyncio.AbstractEventLoop, on_death: Any) -> None:
        import threading

        def run() -> None:
            while not self._stopping:
                try:
                    self.check()
                except DeviceProcessError as e:
                    try:
                        loop.call_soon_threadsafe(on_death, e)
                    except RuntimeError:
                        pass
                    return
                time.sleep(0.1)

        self._watcher = threading.Thread(target=run, name="device-process-watch", daemon=True)
        self._watcher.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the pipes (the followers' cue), wait, then TERM and KILL what is left."""
        import signal
        import subprocess

        from .env import remove_shm_files, shm_files_of

        self._stopping = True
        for p in self.procs.values():
            try:
                if p.stdin is not None:
                    p.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for dev, p in self.procs.items():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("device process %s (pid %d) did not exit; killing it", dev, p.pid)
                shm = shm_files_of(p.pid)
                p.send_signal(signal.SIGKILL)
                try:
                    p.wait(5.0)
                except subprocess.TimeoutExpired:
                    pass
                remove_shm_files(shm)
        if self._watcher is not None:
            self._watcher.join(1.0)


def _die_with_parent(leader_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux), and exit now if that already happened."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass
    if leader_pid and os.getppid() != leader_pid:
        os._exit(3)


def _describe_rc(rc: int) -> str:
    if rc < 0:
        import signal

        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


__all__ = ["DeviceProcessError", "DeviceProcesses", "Follower", "FollowerHandoff", "LEADER", "Leader",
           "LeaderHandoff", "call_origin", "follower_main"]
