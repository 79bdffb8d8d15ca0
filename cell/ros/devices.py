"""Device nodes: any driver (a sim twin, or a real driver such as opcua.machine) served as a ROS 2 node.

For a device ``<dev>`` of cell ``<cell>`` the node ``/<cell>/<dev>`` serves:

- ``/<cell>/<dev>/call`` (``axcell_interfaces/DeviceCall``): the contract's methods, errors
  carried back by class name;
- arms: ``/<cell>/<dev>/follow_joint_trajectory`` (``control_msgs/FollowJointTrajectory``; the
  twin moves to the last point time-optimally under the current speed scaling, like a
  ros2_control robot with a speed slider) and ``sensor_msgs/JointState`` on
  ``/<cell>/<dev>/joint_states`` (every 0.1 s of cell time while moving, at the start and end of
  every motion and after a stop; while anyone subscribes: the topic is volatile);
- cameras: every captured frame as ``sensor_msgs/Image`` on ``/<cell>/<dev>/image_raw`` (while
  anyone subscribes; the frame always travels in the ``capture`` reply).

:class:`SimPublishers` adds ``/clock`` (``rosgraph_msgs/Clock``) and ``/diagnostics``
(``diagnostic_msgs/DiagnosticArray``) driven by the cell clock. Every node is created with
``use_sim_time`` when the clock is simulated.

Requests from an in-process proxy arrive with a clock-handoff token (``drivers.ros2.transport``):
the handler closes the request's busy block when it starts, lets simulated time flow while the
device works, and opens the reply's busy block before answering.
"""

from __future__ import annotations

import array
import asyncio
import json
import logging
import math
from typing import Any

from drivers.arm import Arm
from drivers.base import Device
from drivers.camera import Camera
from drivers.conveyor import Conveyor
from drivers.errors import DeviceError, MotionTargetError
from drivers.gripper import Gripper
from drivers.io import DigitalIO
from drivers.machine import Machine
from drivers.ros2.transport import Handoff, belt_state_qos, error_to_wire

log = logging.getLogger("axcell.ros.devices")

#: Cell-time seconds between ``joint_states`` messages while an arm moves (also one at the start
#: and end of every motion and after a stop); 0 = start/end only.
JOINT_STATE_PERIOD_S = 0.1


def sim_time_params(simulated: bool) -> list:
    from rclpy.parameter import Parameter

    return [Parameter("use_sim_time", Parameter.Type.BOOL, True)] if simulated else []


def stamp(t: float):
    from builtin_interfaces.msg import Time

    t = max(0.0, t)
    sec = int(t)
    return Time(sec=sec, nanosec=min(999_999_999, int(round((t - sec) * 1e9))))


def image_msg(image, t: float, frame_id: str):
    import numpy as np
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp = stamp(t)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    ch = 1 if image.ndim == 2 else int(image.shape[2])
    msg.encoding = "mono8" if ch == 1 else "bgr8"
    msg.step = msg.width * ch
    buf = array.array("B")
    buf.frombytes(memoryview(np.ascontiguousarray(image, dtype=np.uint8)).cast("B"))  # one copy, not two
    msg.data = buf  # an array('B') is taken as is by the message
    return msg


class DeviceNode:
    """One device served on a bridge (all callbacks hop to the asyncio loop of the cell)."""

    def __init__(self, bridge: Any, device: Device, namespace: str, *, handoff: Handoff | None = None,
                 simulated: bool = True, joint_state_period_s: float = JOINT_STATE_PERIOD_S) -> None:
        from axcell_interfaces.srv import DeviceCall
        from rclpy.callback_groups import ReentrantCallbackGroup

        self.bridge, self.device, self.handoff = bridge, device, handoff
        self.clock = device.clock
        self.ns = namespace.strip("/")
        self.node = bridge.create_node(device.name, namespace=f"/{self.ns}" if self.ns else None,
                                       parameter_overrides=sim_time_params(simulated), lean=True)
        self.speed_scaling = 1.0
        self.calls = 0  # DeviceCall requests served
        self.goals = 0  # FollowJointTrajectory goals served
        self._connect_lock = asyncio.Lock()
        self.joint_state_period_s = joint_state_period_s
        group = ReentrantCallbackGroup()
        bridge.create_service(self.node, DeviceCall, "~/call", self._handle, on_error=self._call_failed,
                              callback_group=group)
        self.joint_pub = self.image_pub = None
        if isinstance(device, Arm):
            from control_msgs.action import FollowJointTrajectory
            from sensor_msgs.msg import JointState

            self.joint_pub = self.node.create_publisher(JointState, "~/joint_states", 10)
            # with --processes the leader's "gave up" notice cancels a goal at the right simulated
            # instant; its action cancel request (not stamped) then only marks the goal
            bridge.create_action_server(self.node, FollowJointTrajectory, "~/follow_joint_trajectory", self._fjt,
                                        cancel_mode="flag" if getattr(handoff, "cancel_by_notice", False) else "task")
        if isinstance(device, Camera):
            from sensor_msgs.msg import Image

            self.image_pub = self.node.create_publisher(Image, "~/image_raw", 2)
        self.belt_pub = None
        self.belt_seq = 0
        self._belt_usable: bool | None = None
        if isinstance(device, Conveyor) and _belt_of(device) is not None:
            self._serve_belt_state()
        bridge.trim(self.node)  # the publishers' QoS event handlers (they only log) out of the wait set

    # ------------------------------------------------------------------ conveyor belt state
    def _serve_belt_state(self) -> None:
        """Publish the belt's state on ``~/belt_state`` (latched) whenever it changes.

        Between speed changes a belt is ``position = s0 + v·(t − t0)``, so a proxy computes
        position and velocity itself from the last state and the clock instead of a DeviceCall
        per reading (half of the demo's device calls). Published at every speed change, at
        connect, and when the twin's fault hooks are armed or run out: while any fault is
        armed the state says ``usable = 0`` and the proxy calls the service instead (the twin
        raises the fault exactly as it does in-process).
        """
        from std_msgs.msg import Float64MultiArray

        self.belt_pub = self.node.create_publisher(Float64MultiArray, "~/belt_state", belt_state_qos())
        self.belt_topic = f"{self.node.get_namespace().rstrip('/')}/{self.device.name}/belt_state"
        belt = self.device.belt  # type: ignore[attr-defined]
        set_speed = belt.set_speed

        def set_speed_and_publish(v: float) -> None:
            set_speed(v)
            self.publish_belt_state()

        belt.set_speed = set_speed_and_publish  # the twin and the world change speed through it
        faults = getattr(self.device, "faults", None)
        for name in ("inject", "clear"):
            fn = getattr(faults, name, None)
            if callable(fn):
                def hooked(*a: Any, _fn: Any = fn, **k: Any) -> Any:
                    r = _fn(*a, **k)
                    self.publish_belt_state()
                    return r

                setattr(faults, name, hooked)
        self.publish_belt_state()

    def _belt_state_usable(self) -> bool:
        d = self.device
        if not d.connected:
            return False
        faults = getattr(d, "faults", None)
        armed = getattr(faults, "armed", None)
        if armed:
            now = self.clock.now()
            if any(getattr(a, "remaining", 1) > 0 and getattr(a, "until", math.inf) > now for a in armed):
                return False
        return True

    def publish_belt_state(self) -> None:
        """Publish (s0, t0, v, seq, usable) now; in-process proxies hold simulated time until
        they have it (``Handoff.published``)."""
        if self.belt_pub is None:
            return
        from std_msgs.msg import Float64MultiArray

        s0, t0, v = _belt_of(self.device)
        usable = self._belt_state_usable()
        self.belt_seq += 1
        self._belt_usable = usable
        self.belt_pub.publish(Float64MultiArray(data=[float(s0), float(t0), float(v), float(self.belt_seq),
                                                      1.0 if usable else 0.0]))
        if self.handoff is not None:
            self.handoff.published(self.belt_topic, self.belt_seq)

    def _belt_after_call(self) -> None:
        """After a DeviceCall: faults may have been used up (or the twin connected): republish."""
        if self.belt_pub is not None and self._belt_state_usable() != self._belt_usable:
            self.publish_belt_state()

    # ------------------------------------------------------------------ DeviceCall
    @staticmethod
    def _call_failed(e: BaseException, resp):  # the handler was cancelled or the loop is gone
        resp.ok, resp.error_type, resp.message = False, "DeviceOfflineError", f"call ended: {e!r}"
        return resp

    async def _handle(self, req, resp):  # on the event loop
        h, cid = self.handoff, int(req.call_id)
        local = h is not None and h.incoming(cid)
        if local:
            h.register_task(cid, asyncio.current_task())
            await h.release((cid, "req"))
        self.calls += 1
        try:
            args = json.loads(req.args_json) if req.args_json else {}
            result, image = await self._dispatch(req.method, args)
            resp.ok = True
            resp.result_json = json.dumps(result, default=_jsonable)
            if image is not None:
                resp.image = image
        except asyncio.CancelledError:
            resp.ok, resp.error_type, resp.message = False, "DeviceOfflineError", "call abandoned"
            raise
        except Exception as e:  # noqa: BLE001 - every error goes back to the caller
            if not isinstance(e, (DeviceError, ValueError, KeyError, PermissionError, TimeoutError, TypeError)):
                log.exception("device %s: %s failed", self.device.name, req.method)
            resp.ok = False
            resp.error_type, resp.message = error_to_wire(e)
        finally:
            self._belt_after_call()
            if local and h.server_done(cid):
                await h.hold((cid, "rep"))
        return resp

    async def _dispatch(self, method: str, a: dict[str, Any]) -> tuple[Any, Any]:
        d = self.device
        if method == "describe":
            async with self._connect_lock:  # one connect of the device, however many callers
                await d.connect()
            return self._describe(), None
        if method.startswith("_") or method in ("connect", "close"):
            raise ValueError(f"method {method!r} is not callable remotely")
        if isinstance(d, Arm):
            from drivers.types import Pose

            if method == "joints":
                return list(await d.joints()), None
            if method == "pose":
                return list((await d.pose()).as_tuple()), None
            if method == "solve_ik":
                return list(await d.solve_ik(Pose(*a["pose"]))), None
            if method == "estimate_duration":
                return await d.estimate_duration(Pose(*a["pose"]), speed=float(a.get("speed", 1.0))), None
            if method == "stop":
                await d.stop()
                self._publish_joints()
                return None, None
            if method == "set_speed_scaling":
                v = float(a["value"])
                if not (math.isfinite(v) and 0 < v <= 1):
                    raise ValueError(f"speed scaling must be in (0, 1], got {v}")
                self.speed_scaling = v
                return None, None
        elif isinstance(d, Gripper):
            if method == "grip":
                return await d.grip(timeout=a.get("timeout")), None
            if method == "release":
                return await d.release(timeout=a.get("timeout")), None
            if method == "is_holding":
                return await d.is_holding(), None
        elif isinstance(d, Camera):
            if method == "capture":
                f = await d.capture(timeout=a.get("timeout"))
                msg = image_msg(f.image, f.stamp, f"{self.ns}/{d.name}")
                if self.image_pub is not None and self.image_pub.get_subscription_count():
                    self.image_pub.publish(msg)  # 4 MB a frame: serialised only for a listener
                return {"stamp": f.stamp, "meta": f.meta}, msg
        elif isinstance(d, Conveyor):
            if method in ("position", "velocity"):
                return await getattr(d, method)(), None
            if method in ("start", "stop"):
                await (d.start(a.get("speed")) if method == "start" else d.stop())
                # the proxy reads the belt state from this sample on (read-your-writes across processes)
                return ({"belt_seq": self.belt_seq} if self.belt_pub is not None else None), None
        elif isinstance(d, DigitalIO):
            if method == "read":
                return await d.read(a["channel"]), None
            if method == "write":
                return await d.write(a["channel"], bool(a["value"])), None
            if method == "wait_edge":
                return await d.wait_edge(a["channel"], rising=bool(a.get("rising", True)), timeout=a.get("timeout")), None
        elif isinstance(d, Machine):
            if method == "status":
                s = await d.status()
                return {"state": s.state, "faulted": s.faulted, "fault": s.fault, "cycles": s.cycles,
                        "telemetry": s.telemetry}, None
            if method == "command":
                return await d.command(a["command"], timeout=a.get("timeout")), None
            if method == "cycle":
                r = await d.cycle(timeout=a.get("timeout"), params=a.get("params"))
                return {"ok": r.ok, "started": r.started, "finished": r.finished, "message": r.message,
                        "telemetry": r.telemetry}, None
        raise ValueError(f"{d.name}: unknown method {method!r} for a {d.contract}")

    def _describe(self) -> dict[str, Any]:
        d = self.device
        out: dict[str, Any] = {"name": d.name, "kind": d.kind, "contract": d.contract}
        if isinstance(d, Arm):
            lim = d.limits
            out["joint_names"] = list(d.joint_names)
            out["limits"] = {k: list(getattr(lim, k)) for k in ("lower", "upper", "velocity", "acceleration", "jerk")}
            ws = d.workspace
            out["workspace"] = {"min": list(ws.min), "max": list(ws.max)} if ws else None
            out["speed_scaling"] = self.speed_scaling
            k = _kinematics(d)
            if k is not None:
                out["kinematics"] = k
        elif isinstance(d, Camera):
            c = d.calibration
            out["calibration"] = None if c is None else {
                "K": c.K.tolist(), "dist": c.dist.tolist(), "T_cell_cam": c.T_cell_cam.tolist(),
                "width": c.width, "height": c.height}
        elif isinstance(d, DigitalIO):
            out["channels"] = dict(d.channels)
        return out

    # ------------------------------------------------------------------ arm
    def _publish_joints(self, t: float | None = None) -> None:
        if self.joint_pub is None or not self.joint_pub.get_subscription_count():
            return  # built only for a listener (volatile: nobody joining later misses it)
        from sensor_msgs.msg import JointState

        d = self.device
        t = self.clock.now() if t is None else t
        q = d.joints_at(t) if hasattr(d, "joints_at") else None
        if q is None:
            return
        msg = JointState()
        msg.header.stamp = stamp(t)
        msg.name = list(d.joint_names)
        msg.position = [float(v) for v in q]
        self.joint_pub.publish(msg)

    async def _move_publishing(self, arm: Any, q: list[float]) -> None:
        """``arm.move_joints(q)``, publishing ``joint_states`` every ``joint_state_period_s`` of
        cell time while it moves (a joint_state_broadcaster's job on a ros2_control robot)."""
        period = self.joint_state_period_s
        if not period or period <= 0 or self.joint_pub is None:
            await arm.move_joints(q, speed=self.speed_scaling)
            return
        hooks = getattr(self.handoff, "time_hooks", None)
        if hooks is not None:
            # the clock jumps from one instant to the next (the discrete-event clock, or a
            # follower's clock under --processes): the states in between are published as it
            # passes them, not by waking it every period (and only while someone listens)
            t0 = self.clock.now()
            pub = self.joint_pub

            def passing(t_old: float, t_new: float) -> None:
                if not pub.get_subscription_count():
                    return
                tr = getattr(arm, "_traj", None)
                end = arm._t0 + tr.duration if tr is not None else -math.inf  # type: ignore[attr-defined]
                k = max(1, math.floor((t_old - t0) / period) + 1)
                while t0 + k * period <= t_new and t0 + k * period < end:
                    self._publish_joints(t0 + k * period)
                    k += 1

            hooks.add(passing)
            try:
                await arm.move_joints(q, speed=self.speed_scaling)
            finally:
                hooks.discard(passing)
            return
        mv = asyncio.ensure_future(arm.move_joints(q, speed=self.speed_scaling))
        try:
            while True:
                try:
                    await self.clock.wait_for(asyncio.shield(mv), period)
                    return
                except TimeoutError:
                    if mv.done():
                        return mv.result()
                    self._publish_joints()
        except asyncio.CancelledError:
            mv.cancel()
            try:
                await mv
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            raise

    async def _fjt(self, goal, gctx):  # on the event loop
        from control_msgs.action import FollowJointTrajectory

        Result = FollowJointTrajectory.Result
        self.goals += 1
        h, key = self.handoff, gctx.goal_id
        local = h is not None and h.incoming(key)
        if local:
            h.register_task(key, asyncio.current_task())
            await h.release((key, "req"))
        arm: Arm = self.device  # type: ignore[assignment]
        res = Result(error_code=Result.SUCCESSFUL)
        try:
            tr = goal.trajectory
            if not tr.points:
                res.error_code, res.error_string = Result.INVALID_GOAL, "InvalidTargetError: empty trajectory"
                gctx.terminal = "aborted"
                return res
            names = list(tr.joint_names) or list(arm.joint_names)
            if sorted(names) != sorted(arm.joint_names):
                res.error_code = Result.INVALID_JOINTS
                res.error_string = f"InvalidTargetError: joints {names} != {list(arm.joint_names)}"
                gctx.terminal = "aborted"
                return res
            pos = dict(zip(names, tr.points[-1].positions))
            q = [pos[n] for n in arm.joint_names]
            self._publish_joints()
            try:
                # intermediate points are a path hint; the sim controller goes time-optimally to the last
                for p in tr.points[:-1]:
                    pp = dict(zip(names, p.positions))
                    await self._move_publishing(arm, [pp[n] for n in arm.joint_names])
                await self._move_publishing(arm, q)
            except MotionTargetError as e:
                res.error_code, res.error_string = Result.INVALID_GOAL, _plain(e)
                gctx.terminal = "aborted"
            except DeviceError as e:
                res.error_code, res.error_string = Result.PATH_TOLERANCE_VIOLATED, _plain(e)
                gctx.terminal = "aborted"
            self._publish_joints()
            return res
        except asyncio.CancelledError:
            self._publish_joints()
            raise
        finally:
            if local and h.server_done(key):
                await h.hold((key, "rep"))


def _kinematics(arm: Any) -> dict[str, Any] | None:
    """The arm's kinematic model for its proxies (a ``robot_description`` in effect): every field
    of its ``drivers.kinematics.RobotModel`` (DH table, tool, limits as the arm enforces them),
    ``T_cell_base`` and the configured speed override; None for an arm without one.

    With it a proxy computes IK and motion-time estimates itself while the arm rests at a known
    target (``drivers.ros2.proxies.Ros2Arm``). Floats travel as JSON numbers, which round-trip
    exactly, so the proxy's answers are the twin's to the bit.
    """
    import dataclasses

    from drivers.kinematics import RobotModel

    model, T = getattr(arm, "model", None), getattr(arm, "T_cell_base", None)
    if not isinstance(model, RobotModel) or T is None:
        return None
    m: dict[str, Any] = {}
    for f in dataclasses.fields(model):
        if not f.init:
            continue
        v = getattr(model, f.name)
        if f.name == "limits":
            v = {k: [float(x) for x in getattr(v, k)] for k in ("lower", "upper", "velocity", "acceleration", "jerk")}
        elif isinstance(v, tuple):
            v = [float(x) if not isinstance(x, str) else x for x in v]
        m[f.name] = v
    cfg = getattr(arm, "config", None)
    return {"model": m, "T_cell_base": [[float(x) for x in row] for row in T.tolist()],
            "speed_scale": float(getattr(cfg, "speed_scale", 1.0))}


def _belt_of(device: Any) -> tuple[float, float, float] | None:
    """(s0, t0, v) of a simulated belt (``position = s0 + v·(t − t0)``), or None for other conveyors."""
    belt = getattr(device, "belt", None)
    try:
        return belt._s0, belt._t0, belt._v  # the exact floats the twin computes from
    except AttributeError:
        return None


def _plain(e: BaseException) -> str:
    etype, msg = error_to_wire(e)
    try:
        msg = json.loads(msg)["message"]
    except (ValueError, KeyError, TypeError):
        pass
    return f"{etype}: {msg}"


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


class SimPublishers:
    """``/clock`` and ``/diagnostics`` from the cell clock (one node for the process)."""

    def __init__(self, bridge: Any, clock: Any, devices: dict[str, Device], *, namespace: str,
                 clock_period_s: float = 0.1, diag_period_s: float = 1.0, simulated: bool = True,
                 extra: Any = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rosgraph_msgs.msg import Clock as ClockMsg

        self.clock, self.devices = clock, devices
        self.node = bridge.create_node("sim_time", namespace=f"/{namespace}",
                                       parameter_overrides=sim_time_params(False), lean=True)
        self.clock_pub = self.node.create_publisher(ClockMsg, "/clock", 10) if simulated else None
        self.diag_pub = self.node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        bridge.trim(self.node)
        self.clock_period_s, self.diag_period_s = clock_period_s, diag_period_s
        self.extra = extra  # callable run at each diagnostics period (e.g. the cell status)
        self._tasks: list[asyncio.Task] = []
        self.bridge = bridge
        self._time_sources: list[Any] = []
        self._hooked: list[Any] | None = None
        self._last_clock = -math.inf

    def share_sim_time(self, nodes: Any = None) -> int:
        """Drive the ROS clocks of this process's ``use_sim_time`` nodes directly (intra-process).

        Every such node keeps ``use_sim_time`` and a ROS clock that follows simulated time, but
        instead of each node taking every ``/clock`` message from DDS through the executor (one
        Python callback per node per 0.1 s of simulated time), :meth:`publish_clock` hands the
        same message to their time sources in-process, the way intra-process delivery would.
        ``/clock`` is still published for every other process. Returns the number of nodes.
        """
        nodes = list(self.bridge.nodes) if nodes is None else list(nodes)
        n = 0
        for node in nodes:
            ts = getattr(node, "_time_source", None)
            if node is self.node or ts is None or not getattr(ts, "ros_time_is_active", False):
                continue
            sub = getattr(ts, "_clock_sub", None)
            if sub is not None:
                try:
                    node.destroy_subscription(sub)
                except Exception:  # noqa: BLE001 - keep the DDS subscription then
                    continue
                ts._clock_sub = None
            if ts not in self._time_sources:
                self._time_sources.append(ts)
                n += 1
        return n

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        hooks = getattr(self.clock, "advance_hooks", None)
        if self.clock_pub is not None and self.clock_period_s > 0:
            if hooks is not None:
                # the discrete-event clock tells us when time moves: /clock at most once per
                # period, at instants where something happens anyway (no clock events of its own)
                self.publish_clock()
                hooks.append(self._on_advance)
                self._hooked = hooks
            else:
                self._tasks.append(loop.create_task(self._clock_loop()))
        if self.diag_period_s > 0:
            self._tasks.append(loop.create_task(self._diag_loop()))

    def publish_clock(self) -> None:
        """``/clock`` now (to DDS only if someone subscribes), and this process's sim-time nodes."""
        from rosgraph_msgs.msg import Clock as ClockMsg

        if self.clock_pub is not None:
            now = self.clock.now()
            self._last_clock = now
            msg = ClockMsg(clock=stamp(now))
            if self.clock_pub.get_subscription_count():
                self.clock_pub.publish(msg)
            if self._time_sources:
                self._feed_time_sources(msg)

    def _feed_time_sources(self, msg: Any) -> None:
        """What ``TimeSource.clock_callback(msg)`` does for each shared time source, with the
        message's time converted once instead of once per node (it was 1/3 of this method's cost
        with eight nodes). Falls back to ``clock_callback`` where rclpy's internals differ."""
        from rclpy.time import Time

        t = None
        for ts in self._time_sources:
            clocks = getattr(ts, "_associated_clocks", None)
            if clocks is None or not hasattr(ts, "_last_time_set"):
                ts.clock_callback(msg)
                continue
            if t is None:
                t = Time.from_msg(msg.clock)
            ts._last_time_set = t
            for c in clocks:
                c.set_ros_time_override(t)

    def _on_advance(self, t_old: float, t_new: float) -> None:
        if t_new - self._last_clock >= self.clock_period_s * (1 - 1e-9):
            self.publish_clock()

    async def _clock_loop(self) -> None:
        while True:
            self.publish_clock()
            await self.clock.sleep(self.clock_period_s)

    def publish_diagnostics(self) -> None:
        if not self.diag_pub.get_subscription_count():
            return  # built only for a listener (volatile topic)
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        arr = DiagnosticArray()
        arr.header.stamp = stamp(self.clock.now())
        for name, dev in self.devices.items():
            try:
                hl = dev.health()
            except Exception as e:  # noqa: BLE001
                hl = {"connected": False, "error": repr(e)}
            ok = bool(hl.get("connected", False))
            arr.status.append(DiagnosticStatus(
                level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN, name=f"{self.node.get_namespace().strip('/')}/{name}",
                message="connected" if ok else "not connected", hardware_id=dev.kind,
                values=[KeyValue(key=str(k), value=str(v)) for k, v in hl.items()]))
        self.diag_pub.publish(arr)

    async def _diag_loop(self) -> None:
        while True:
            await self.clock.sleep(self.diag_period_s)
            self.publish_diagnostics()
            if self.extra is not None:
                self.extra()

    async def stop(self) -> None:
        if self._hooked is not None:
            try:
                self._hooked.remove(self._on_advance)
            except ValueError:
                pass
            self._hooked = None
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._tasks.clear()


# --------------------------------------------------------------------------- console entry point

def main(argv: list[str] | None = None) -> int:
    """``axcell-device-node FILE --device NAME``: serve one device of a cell file as a ROS 2 node.

    For hardware drivers (e.g. ``opcua.machine`` talking to a real PLC), one process per device,
    on the wall clock. A simulated twin is served alone only as a ``--follower`` of an ``axcell
    run --processes`` run (``cell.ros.lockstep``): the process then holds a replica of the whole
    simulated world and its clock follows the run's.
    """
    import argparse
    import os
    import signal

    from drivers.base import DeviceContext
    from drivers.clock import WallClock

    from ..config import load_cell
    from ..plugins import load_kind
    from .bridge import RosBridge
    from .env import ensure_ros_isolation

    ap = argparse.ArgumentParser(prog="axcell-device-node", description=main.__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--device", required=True)
    ap.add_argument("--follower", action="store_true",
                    help="one device process of `axcell run --transport ros --processes` (started by it): "
                         "builds the whole simulated cell as a replica, serves this device, follows the "
                         "leader's clock")
    ap.add_argument("--seed", type=int, default=None, help="with --follower: the run's seed")
    ap.add_argument("--peers", default="", help=argparse.SUPPRESS)  # with --follower: every device process
    ap.add_argument("--leader-pid", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ros-args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # added by ros2 launch
    args = ap.parse_args(argv)
    cfg = load_cell(args.file)
    spec = next((d for d in cfg.devices if d.name == args.device), None)
    if spec is None:
        ap.error(f"no device {args.device!r} in {args.file} (have {[d.name for d in cfg.devices]})")
    if args.follower:
        from .lockstep import LEADER, follower_main

        if cfg.sim is None:
            ap.error("--follower needs a simulated cell (a `sim:` section)")
        peers = [p for p in args.peers.split(",") if p] or [d.name for d in cfg.devices]
        return follower_main(args.file, args.device, seed=args.seed, procs=[LEADER, *peers],
                             leader_pid=args.leader_pid or os.getppid())
    if spec.kind.startswith("sim."):
        ap.error(f"{args.device} is a simulated twin ({spec.kind}); it is served by axcell-cell-node with its world "
                 "(or by `axcell run --transport ros --processes`, which starts it with --follower)")
    cls = load_kind(spec.kind)
    ensure_ros_isolation()

    async def run() -> None:
        clock = WallClock()
        dev = cls(spec.name, cls.Config.model_validate(spec.options), DeviceContext(clock=clock, cell=cfg.cell.name))
        async with RosBridge(name=f"device-{spec.name}") as bridge:
            DeviceNode(bridge, dev, cfg.cell.name, simulated=False)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await dev.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
