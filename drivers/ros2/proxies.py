"""Proxy drivers: each implements a driver contract by talking to a device node over ROS 2.

- ``ros2.arm``: ``control_msgs/FollowJointTrajectory`` client of
  ``/<cell>/<arm>/follow_joint_trajectory`` for motion (as to a ros2_control robot), plus the
  ``/<cell>/<arm>/call`` service (``axcell_interfaces/DeviceCall``) for queries with no standard
  message: joints, pose, IK, duration estimates, stop and the speed-scaling override (the
  analogue of a teach pendant's speed slider; the FJT goal itself has no speed field).
- ``ros2.gripper``, ``ros2.camera``, ``ros2.conveyor``, ``ros2.io``, ``ros2.machine``: the
  ``/<cell>/<device>/call`` service, one method per contract method. ``capture()`` returns the
  frame as a ``sensor_msgs/Image`` in the reply (the node also publishes it on ``image_raw``).

Every error the device raises comes back as the same ``drivers.errors`` class. Static facts
a contract exposes synchronously (joint names, limits, workspace, camera calibration, IO
channels) are read once at ``connect()`` (method ``describe``).

Each request is bracketed by the clock handoff (``drivers.ros2.transport``) so simulated time
stands still while DDS is in flight.

Pure computations stay in the proxy when the device node publishes what they need: the arm's
IK and motion-time estimates are computed here from the kinematic model the node describes
(``describe`` → ``kinematics``, the analogue of ``robot_description``) while the arm is known
to rest at the last commanded target (see :class:`Ros2Arm`); the conveyor's position comes from
its latched belt state. Everything that moves or senses something still goes over the wire.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import math
from typing import Any

import numpy as np
from pydantic import Field

from drivers.arm import Arm
from drivers.base import DeviceConfig, DeviceContext
from drivers.camera import Camera
from drivers.conveyor import Conveyor
from drivers.errors import DeviceFaultError, DeviceOfflineError, DeviceTimeoutError
from drivers.gripper import Gripper
from drivers.io import DigitalIO
from drivers.machine import Machine
from drivers.types import Box, CameraCalibration, CycleResult, Frame, JointLimits, MachineStatus, Pose

from .transport import belt_state_qos, error_from_wire, get_transport


class ProxyConfig(DeviceConfig):
    device: str | None = Field(None, description="name of the device node's device (default: this device's name)")
    namespace: str | None = Field(None, description="ROS namespace of the device nodes (default: the cell name)")
    connect_timeout_s: float = Field(10.0, gt=0, description="wall seconds to wait for the device node")


class _Proxy:
    """Shared plumbing: the DeviceCall client and the handoff-bracketed call.

    Listed first among a proxy's bases, it supplies the default ``Config``, the
    constructor and ``_connect``; a proxy overrides only what it adds.
    """

    Config = ProxyConfig
    config: ProxyConfig
    name: str
    ctx: DeviceContext

    def __init__(self, name: str, config: ProxyConfig, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)  # type: ignore[call-arg]
        self._proxy_init()

    async def _connect(self) -> None:
        await self._proxy_connect()

    def _proxy_init(self) -> None:
        self.t = get_transport(self.ctx.resources)
        self.remote = self.config.device or self.name
        ns = self.config.namespace if self.config.namespace is not None else (self.t.namespace or self.ctx.cell)
        self.ns = ns.strip("/")
        self._client = None
        self.description: dict[str, Any] = {}

    def _name(self, leaf: str) -> str:
        return f"/{self.ns}/{self.remote}/{leaf}" if self.ns else f"/{self.remote}/{leaf}"

    async def _proxy_connect(self) -> None:
        from axcell_interfaces.srv import DeviceCall

        cache = self.t.__dict__.setdefault("_clients", {})
        key = ("call", self._name("call"))
        if key not in cache:
            cache[key] = self.t.node.create_client(DeviceCall, self._name("call"))
        self._client = cache[key]
        async with self.clock.busy():  # discovery is real I/O: simulated time waits for it
            ready = await self.t.bridge.wait_for_service(self._client, self.config.connect_timeout_s)
        if not ready:
            raise DeviceOfflineError(f"no device node answers at {self._name('call')}", device=self.name)
        self.description = (await self._call("describe"))[0] or {}

    async def _call(self, method: str, **args: Any) -> tuple[Any, Any]:
        from axcell_interfaces.srv import DeviceCall

        if self._client is None:
            raise DeviceOfflineError("not connected to the device node", device=self.name)
        cid = self.t.next_id()
        req = DeviceCall.Request(call_id=cid, method=method, args_json=json.dumps(args) if args else "")
        h = self.t.handoff
        if h is not None:
            await h.hold((cid, "req"))
        try:
            resp = await self.t.bridge.call(self._client, req)
        except BaseException:
            if h is not None:
                await h.abandon(cid)
            raise
        if h is not None:
            await h.release((cid, "rep"))
            await h.release((cid, "req"))
            h.forget(cid)
        if not resp.ok:
            raise error_from_wire(resp.error_type, resp.message, self.name)
        return (json.loads(resp.result_json) if resp.result_json else None), resp

    def health(self) -> dict[str, Any]:
        return {"connected": self._connected, "node": self._name("call")}  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ arm
class ArmProxyConfig(ProxyConfig):
    local_kinematics: bool = Field(True, description="compute IK and motion-time estimates here from the "
                                                     "node's kinematic model while the arm rests at a known "
                                                     "target (else a DeviceCall each)")


class Ros2Arm(_Proxy, Arm, kind="ros2.arm"):
    """An arm behind a FollowJointTrajectory action server (ros2_control style).

    **Local kinematics.** ``solve_ik`` and ``estimate_duration`` are pure functions of the arm's
    kinematic model, its limits and its current state. When the device node describes the model
    (``kinematics``: the DH table, tool, limits, base transform and speed override, as a
    ``robot_description`` would) and the arm is known to be at rest, this proxy computes them
    itself with the same code as the node (``drivers.kinematics.ik``; a ruckig time-optimal,
    jerk-limited plan from rest, see :func:`rest_to_rest_duration`) instead of a DeviceCall
    each: two thirds of the demo's arm calls. The arm is known to rest at ``q`` from the moment
    a FollowJointTrajectory goal to ``q`` *succeeded* (a position-controlled arm settles at the
    commanded target; the simulated twin rests there exactly) until the next goal is sent; a
    failed, cancelled or timed-out goal, ``stop()`` or a reconnect forgets it, and the calls go
    to the node again (also for a moving arm, a node without a model, a planning failure, or
    ``local_kinematics: false``). This proxy assumes it is the arm's only commander, as the
    cell's arm driver is. ``pose()`` and ``joints()`` always ask the node (they are readings,
    and fault hooks may act on them).
    """

    Config = ArmProxyConfig
    config: ArmProxyConfig

    def __init__(self, name: str, config: ProxyConfig, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)
        self._ac = None
        self._speed: float | None = None
        self._uuids = 0
        self._model: Any = None  # drivers.kinematics.RobotModel from the node's description
        self._T_cell_base: np.ndarray | None = None
        self._speed_scale = 1.0
        self._rest_q: tuple[float, ...] | None = None  # the arm rests here (a goal to it succeeded)
        self.local_calls = 0

    async def _connect(self) -> None:
        from control_msgs.action import FollowJointTrajectory

        await self._proxy_connect()
        d = self.description
        self._joint_names = tuple(d["joint_names"])
        lim = d["limits"]
        self._limits = JointLimits(*(tuple(lim[k]) for k in ("lower", "upper", "velocity", "acceleration", "jerk")))
        ws = d.get("workspace")
        self._workspace = Box(tuple(ws["min"]), tuple(ws["max"])) if ws else None
        self._speed = d.get("speed_scaling")
        self._rest_q = None
        self._model = None
        self.__dict__.pop("_ik_memo", None)
        k = d.get("kinematics")
        if k and getattr(self.config, "local_kinematics", True):
            try:
                self._model, self._T_cell_base, self._speed_scale = kinematics_from_dict(k)
            except Exception:  # noqa: BLE001 - an unknown model format: every call goes to the node
                self._model = None
        cache = self.t.__dict__.setdefault("_clients", {})
        key = ("fjt", self._name("follow_joint_trajectory"))
        if key not in cache:
            cache[key] = self.t.bridge.create_action_client(self.t.node, FollowJointTrajectory,
                                                            self._name("follow_joint_trajectory"))
        self._ac = cache[key]
        async with self.clock.busy():
            ready = await self.t.bridge.wait_for_action_server(self._ac, self.config.connect_timeout_s)
        if not ready:
            raise DeviceOfflineError(f"no FollowJointTrajectory server at {self._name('follow_joint_trajectory')}",
                                     device=self.name)

    @property
    def joint_names(self) -> tuple[str, ...]:
        self._require_connected()
        return self._joint_names

    @property
    def limits(self) -> JointLimits:
        self._require_connected()
        return self._limits

    @property
    def workspace(self) -> Box | None:
        return getattr(self, "_workspace", None)

    async def joints(self) -> tuple[float, ...]:
        self._require_connected()
        return tuple((await self._call("joints"))[0])

    async def pose(self) -> Pose:
        self._require_connected()
        return Pose(*(await self._call("pose"))[0])

    async def solve_ik(self, target: Pose) -> tuple[float, ...]:
        self._require_connected()
        self.check_pose(target)
        q0 = self._rest_q
        if self._model is not None and q0 is not None:
            self.local_calls += 1
            return self._local_ik(target, q0)
        return tuple((await self._call("solve_ik", pose=list(target.as_tuple())))[0])

    async def estimate_duration(self, target: Pose, *, speed: float = 1.0) -> float:
        self._require_connected()
        q0 = self._rest_q
        if self._model is not None and q0 is not None:
            # the node's order of checks: speed, pose, IK, joint limits
            s = self._check_speed(speed)
            self.check_pose(target)
            q = self.check_joints(self._local_ik(target, q0))
            try:
                t = rest_to_rest_duration(q0, q, self._model.limits, s * self._speed_scale)
            except Exception:  # noqa: BLE001 - the node reports a planning failure its own way
                t = None
            if t is not None:
                self.local_calls += 1
                return t
        return float((await self._call("estimate_duration", pose=list(target.as_tuple()), speed=speed))[0])

    _IK_MEMO = 64

    def _local_ik(self, target: Pose, q0: tuple[float, ...]) -> tuple[float, ...]:
        """IK for ``target`` nearest ``q0``, remembered for the last few (target, q0): planning asks the
        same question again (an intercept that has converged, then the move to it)."""
        from drivers import kinematics as kin
        from drivers.errors import UnreachableError

        memo = self.__dict__.setdefault("_ik_memo", {})
        key = (target.as_tuple(), q0, id(self._model))
        q = memo.get(key)
        if q is not None:
            return q
        try:
            q = tuple(kin.ik(self._model, target.matrix(), q0, base=self._T_cell_base).tolist())
        except UnreachableError as e:
            raise UnreachableError(str(e), device=self.name) from e
        if len(memo) >= self._IK_MEMO:
            del memo[next(iter(memo))]
        memo[key] = q
        return q

    async def stop(self) -> None:
        self._require_connected()
        self._rest_q = None
        await self._call("stop")

    def _min_time(self, q0: tuple[float, ...] | None, q: tuple[float, ...], speed: float) -> float:
        """A lower bound of the move's duration (velocity/acceleration trapezoid, no jerk)."""
        if q0 is None:
            return 0.0
        lim, t = self._limits, 0.0
        for a, b, v, acc in zip(q0, q, lim.velocity, lim.acceleration):
            d, v, acc = abs(b - a), v * speed, acc * speed
            t = max(t, d / v + v / acc if d >= v * v / acc else 2.0 * math.sqrt(d / acc))
        return t

    async def _move_joints(self, q: tuple[float, ...], *, speed: float, timeout: float | None) -> None:
        await self._move_bounded([q], speed, timeout)

    async def move_path(self, targets: Any, *, speed: float = 1.0, timeout: float | None = None) -> None:
        """One FollowJointTrajectory goal through every target (the node settles at each point, as
        separate moves would) when the arm rests at a known state and the model is local; else the
        contract's move-by-move path. ``timeout`` bounds the whole path."""
        self._require_connected()
        targets = list(targets)
        q0 = self._rest_q
        if self._model is None or q0 is None or len(targets) < 2:
            return await super().move_path(targets, speed=speed, timeout=timeout)
        s = self._check_speed(speed)
        qs, seed = [], q0
        for t in targets:  # each solved from the previous, where the arm will rest: the node's answers
            self.check_pose(t)
            seed = self.check_joints(self._local_ik(t, seed))
            qs.append(seed)
        self.local_calls += len(qs)
        await self._move_bounded(qs, s, timeout)

    async def _move_bounded(self, qs: list[tuple[float, ...]], speed: float, timeout: float | None) -> None:
        if timeout is None:
            return await self._move(qs, speed)
        try:
            return await self.clock.wait_for(self._move(qs, speed), timeout)
        except TimeoutError:
            raise DeviceTimeoutError(f"motion did not finish within {timeout:g} s; stopped", device=self.name) from None

    async def _move(self, qs: list[tuple[float, ...]], speed: float) -> None:
        from builtin_interfaces.msg import Duration
        from control_msgs.action import FollowJointTrajectory
        from trajectory_msgs.msg import JointTrajectoryPoint
        from unique_identifier_msgs.msg import UUID

        if self._speed != speed:
            await self._call("set_speed_scaling", value=speed)
            self._speed = speed
        goal = FollowJointTrajectory.Goal()
        goal.trajectory.joint_names = list(self._joint_names)
        points, prev, tmin = [], self.description.get("_last_q"), 0.0
        for q in qs:  # time_from_start: a lower bound of reaching each point, settling at the one before
            tmin += self._min_time(prev, q, speed)
            sec = int(tmin)
            points.append(JointTrajectoryPoint(positions=list(q), time_from_start=Duration(
                sec=sec, nanosec=int((tmin - sec) * 1e9))))
            prev = q
        goal.trajectory.points = points
        q = qs[-1]
        self.description["_last_q"] = q
        self._rest_q = None  # moving from now on, until the goal succeeds
        cid = self.t.next_id()
        key = cid.to_bytes(16, "big")
        h, bridge = self.t.handoff, self.t.bridge
        if h is not None:
            await h.hold((key, "req"))
        gh = None
        try:
            gh = await bridge.send_goal(self._ac, goal, goal_uuid=UUID(uuid=list(key)))
            if not gh.accepted:
                raise DeviceFaultError("FollowJointTrajectory goal rejected", device=self.name)
            res = await bridge.get_result(gh)
        except BaseException:
            if h is not None:
                await h.abandon(key)  # in-process: the server's handler is cancelled at this instant
            if gh is not None and gh.accepted:
                try:
                    gh.cancel_goal_async()
                    bridge.wake()
                except Exception:  # noqa: BLE001 - the bridge may be closing
                    pass
            self.description.pop("_last_q", None)
            raise
        finally:
            if h is not None:
                await h.release((key, "rep"))
                await h.release((key, "req"))
                h.forget(key)
        r = res.result
        if r.error_code != FollowJointTrajectory.Result.SUCCESSFUL:
            self.description.pop("_last_q", None)
            etype, _, msg = r.error_string.partition(": ")
            raise error_from_wire(etype, msg, self.name)
        if res.status == 4:  # action_msgs/GoalStatus.STATUS_SUCCEEDED: settled at the target
            self._rest_q = tuple(q)


def kinematics_from_dict(k: dict[str, Any]) -> tuple[Any, np.ndarray, float]:
    """(RobotModel, T_cell_base, speed_scale) from a device node's ``describe`` → ``kinematics``."""
    from drivers import kinematics as kin

    m = dict(k["model"])
    lim = m.pop("limits")
    limits = JointLimits(*(tuple(float(v) for v in lim[f]) for f in ("lower", "upper", "velocity", "acceleration",
                                                                      "jerk")))
    fields = {f: tuple(m[f]) if isinstance(m.get(f), list) else m[f] for f in m}
    model = kin.RobotModel(limits=limits, **fields)
    return model, np.array(k["T_cell_base"], dtype=float), float(k.get("speed_scale", 1.0))


_RUCKIG: dict[int, Any] = {}
# freed before the interpreter's teardown: nanobind reports ruckig objects still alive then as leaks
atexit.register(_RUCKIG.clear)


def rest_to_rest_duration(q0: Any, q1: Any, limits: JointLimits, speed: float) -> float:
    """Seconds of the time-optimal, jerk-limited move from rest at ``q0`` to rest at ``q1``.

    The same computation as the simulated arm's planner (``sim.motion.plan``: ruckig, velocity
    scaled by ``speed``, acceleration by ``speed``², jerk by ``speed``³), which a driver may not
    import; with the same inputs ruckig returns the same duration to the bit.
    """
    import ruckig

    if not (math.isfinite(speed) and 0.0 < speed <= 1.0):
        raise ValueError(f"speed must be in (0, 1], got {speed}")
    # plain lists (what ruckig takes); equal element by element is np.array_equal's test
    start = [float(v) for v in q0]
    goal = [float(v) for v in q1]
    if len(start) == len(goal) and all(a == b for a, b in zip(start, goal)):
        return 0.0
    n = limits.dof
    got = _RUCKIG.get(n)
    if got is None:
        inp = ruckig.InputParameter(n)
        zeros = [0.0] * n
        inp.current_velocity = zeros
        inp.current_acceleration = zeros
        inp.target_velocity = zeros
        inp.target_acceleration = zeros
        got = _RUCKIG[n] = [ruckig.Ruckig(n), inp, None, None]
    otg, inp, last_limits, last_speed = got
    if limits is not last_limits or speed != last_speed:
        # the scaled limits change only with the arm or the speed: set them then (a JointLimits is frozen,
        # and holding the last one here keeps its id from being reused by another)
        inp.max_velocity = [float(v) * speed for v in limits.velocity]
        inp.max_acceleration = [float(v) * speed * speed for v in limits.acceleration]
        inp.max_jerk = [float(v) * speed * speed * speed for v in limits.jerk]
        got[2], got[3] = limits, speed
    inp.current_position = start
    inp.target_position = goal
    traj = ruckig.Trajectory(n)
    result = otg.calculate(inp, traj)
    if result not in (ruckig.Result.Working, ruckig.Result.Finished):
        raise RuntimeError(f"ruckig could not plan the motion: {result}")
    return float(traj.duration)


# -------------------------------------------------------------------------------------- gripper
class Ros2Gripper(_Proxy, Gripper, kind="ros2.gripper"):
    async def grip(self, *, timeout: float | None = None) -> None:
        self._require_connected()
        await self._call("grip", timeout=timeout)

    async def release(self, *, timeout: float | None = None) -> None:
        self._require_connected()
        await self._call("release", timeout=timeout)

    async def is_holding(self) -> bool:
        self._require_connected()
        return bool((await self._call("is_holding"))[0])


# --------------------------------------------------------------------------------------- camera
def image_to_numpy(msg: Any) -> np.ndarray:
    ch = 3 if msg.encoding in ("bgr8", "rgb8") else 1
    data = msg.data
    try:
        arr = np.frombuffer(data, dtype=np.uint8)  # a view of the message's array('B'): no copy
    except (TypeError, ValueError):
        arr = np.frombuffer(bytes(data), dtype=np.uint8)
    arr = arr.reshape(msg.height, msg.step)[:, : msg.width * ch]
    return arr.reshape(msg.height, msg.width, ch) if ch == 3 else arr.reshape(msg.height, msg.width)


def calibration_from_dict(d: dict[str, Any]) -> CameraCalibration:
    return CameraCalibration(K=np.array(d["K"], dtype=float), dist=np.array(d["dist"], dtype=float),
                             T_cell_cam=np.array(d["T_cell_cam"], dtype=float), width=int(d["width"]),
                             height=int(d["height"]))


class Ros2Camera(_Proxy, Camera, kind="ros2.camera"):
    def __init__(self, name: str, config: ProxyConfig, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)
        self._calib: CameraCalibration | None = None

    async def _connect(self) -> None:
        await self._proxy_connect()
        c = self.description.get("calibration")
        self._calib = calibration_from_dict(c) if c else None

    @property
    def calibration(self) -> CameraCalibration | None:
        return self._calib

    async def capture(self, *, timeout: float | None = None) -> Frame:
        self._require_connected()
        res, resp = await self._call("capture", timeout=timeout)
        return Frame(image=image_to_numpy(resp.image), stamp=float(res["stamp"]), camera=self.name,
                     calibration=self._calib, meta=res.get("meta", {}))


# ------------------------------------------------------------------------------------- conveyor
class Ros2Conveyor(_Proxy, Conveyor, kind="ros2.conveyor"):
    """A conveyor behind a device node.

    Position and velocity come from the belt state the node latches on ``~/belt_state``
    (``position = s0 + v·(t − t0)`` between speed changes, see ``cell.ros.devices``), computed
    here from the last state and this clock: no round trip per reading. The node publishes a
    new state at every speed change; in one process the clock handoff holds simulated time
    until this proxy has it, and a reading while a newer state is announced but not yet here
    waits for it. The service is called instead when the node has no belt state (a real
    conveyor), has not sent one yet, or says it is not usable (the twin has faults armed).
    """

    class Config(ProxyConfig):
        belt_state: bool = Field(True, description="compute position/velocity from the latched belt state")
        belt_state_timeout_s: float = Field(2.0, gt=0, description="wall seconds to wait for an announced "
                                                                   "belt state before calling the service")

    config: Config

    def __init__(self, name: str, config: ProxyConfig, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)
        self._sub = None
        self._state: tuple[float, float, float, int, bool] | None = None  # s0, t0, v, seq, usable
        self._state_event: asyncio.Event | None = None
        self._min_seq = 0  # the state must be at least this new (after our own start/stop)
        self.state_reads = 0

    async def _connect(self) -> None:
        if self.config.belt_state and self._sub is None:
            self._subscribe_belt_state()
        await self._proxy_connect()

    async def _close(self) -> None:
        await self._unsubscribe_belt_state()

    def _subscribe_belt_state(self) -> None:
        from std_msgs.msg import Float64MultiArray

        loop = asyncio.get_running_loop()
        self._state_event = asyncio.Event()
        self._topic = self._name("belt_state")

        def on_msg(msg: Any) -> None:  # spin thread
            d = msg.data
            if len(d) < 5:
                return
            try:
                loop.call_soon_threadsafe(self._on_state, (float(d[0]), float(d[1]), float(d[2]), int(d[3]),
                                                            d[4] > 0.5))
            except RuntimeError:  # loop closed
                pass

        h = self.t.handoff
        if h is not None:
            h.subscribe(self._topic, self)
        from rclpy.event_handler import SubscriptionEventCallbacks

        # no QoS event handlers (they only log): fewer entities in the executor's wait set
        self._sub = self.t.node.create_subscription(Float64MultiArray, self._topic, on_msg, belt_state_qos(),
                                                    event_callbacks=SubscriptionEventCallbacks(
                                                        use_default_callbacks=False))

    def _on_state(self, st: tuple[float, float, float, int, bool]) -> None:  # event loop
        if self._state is None or st[3] > self._state[3]:
            self._state = st
            assert self._state_event is not None
            self._state_event.set()
        h = self.t.handoff
        if h is not None:
            asyncio.get_running_loop().create_task(h.received(self._topic, self, st[3]))

    async def _unsubscribe_belt_state(self) -> None:
        sub, self._sub = self._sub, None
        self._state = None
        h = self.t.handoff
        if h is not None and sub is not None:
            await h.unsubscribe(self._topic, self)
        if sub is not None:
            try:
                self.t.node.destroy_subscription(sub)
            except Exception:  # noqa: BLE001 - the bridge may be closing
                pass

    async def _belt(self) -> tuple[float, float, float] | None:
        """(s0, t0, v) of the current belt state, or None: ask the device node."""
        if self._sub is None:
            return None
        h = self.t.handoff
        need = max(self._min_seq, (h.latest(self._topic) or 0) if h is not None else 0)
        st = self._state
        if st is None or st[3] < need:
            ev = self._state_event
            assert ev is not None
            async with self.clock.busy():  # the announced state is on the wire: time waits for it
                try:
                    await asyncio.wait_for(self._wait_state(need), self.config.belt_state_timeout_s)
                except TimeoutError:
                    return None
            st = self._state
        if st is None or not st[4]:
            return None
        self.state_reads += 1
        return st[0], st[1], st[2]

    async def _wait_state(self, need: int) -> None:
        ev = self._state_event
        assert ev is not None
        while self._state is None or self._state[3] < need:
            ev.clear()
            await ev.wait()

    async def position(self) -> float:
        self._require_connected()
        b = await self._belt()
        if b is not None:
            s0, t0, v = b
            return s0 + v * (self.clock.now() - t0)  # the twin's formula, on the same floats
        return float((await self._call("position"))[0])

    async def velocity(self) -> float:
        self._require_connected()
        b = await self._belt()
        if b is not None:
            return b[2]
        return float((await self._call("velocity"))[0])

    async def start(self, speed: float | None = None) -> None:
        self._require_connected()
        if speed is not None and not math.isfinite(speed):
            raise ValueError(f"{self.name}: speed {speed} m/s is not finite")
        self._note_seq((await self._call("start", speed=speed))[0])

    async def stop(self) -> None:
        self._require_connected()
        self._note_seq((await self._call("stop"))[0])

    def _note_seq(self, res: Any) -> None:
        if isinstance(res, dict) and "belt_seq" in res:
            self._min_seq = max(self._min_seq, int(res["belt_seq"]))


# ------------------------------------------------------------------------------------------- io
class Ros2IO(_Proxy, DigitalIO, kind="ros2.io"):
    @property
    def channels(self) -> dict[str, str]:
        return dict(self.description.get("channels", {}))

    async def read(self, channel: str) -> bool:
        self._require_connected()
        return bool((await self._call("read", channel=channel))[0])

    async def write(self, channel: str, value: bool) -> None:
        self._require_connected()
        await self._call("write", channel=channel, value=bool(value))

    async def wait_edge(self, channel: str, *, rising: bool = True, timeout: float | None = None) -> float:
        self._require_connected()
        return float((await self._call("wait_edge", channel=channel, rising=rising, timeout=timeout))[0])


# -------------------------------------------------------------------------------------- machine
class Ros2Machine(_Proxy, Machine, kind="ros2.machine"):
    async def status(self) -> MachineStatus:
        self._require_connected()
        d = (await self._call("status"))[0]
        return MachineStatus(d["state"], bool(d["faulted"]), d.get("fault", ""), int(d.get("cycles", 0)),
                             dict(d.get("telemetry", {})))

    async def command(self, command: str, *, timeout: float | None = None) -> None:
        self._require_connected()
        await self._call("command", command=command, timeout=timeout)

    async def cycle(self, *, timeout: float | None = None, params: dict[str, Any] | None = None) -> CycleResult:
        self._require_connected()
        d = (await self._call("cycle", timeout=timeout, params=params))[0]
        return CycleResult(bool(d["ok"]), float(d["started"]), float(d["finished"]), d.get("message", ""),
                           dict(d.get("telemetry", {})))


PROXY_KINDS = {"arm": Ros2Arm, "gripper": Ros2Gripper, "camera": Ros2Camera, "conveyor": Ros2Conveyor,
               "io": Ros2IO, "machine": Ros2Machine}

__all__ = ["PROXY_KINDS", "ArmProxyConfig", "Ros2Arm", "Ros2Camera", "Ros2Conveyor", "Ros2Gripper", "Ros2IO", "Ros2Machine",
           "calibration_from_dict", "image_to_numpy", "kinematics_from_dict", "rest_to_rest_duration"]
