"""The simulated arm twin: real kinematics of a named robot, ruckig-timed motion.

Joint state is a *function of time*.  A move plans a jerk-limited,
time-optimal trajectory from the current (possibly moving) state with
:mod:`sim.motion`, stores it with its start time and then waits the planned
duration on the cell clock.  Every query (:meth:`SimArm.joints`,
:meth:`SimArm.pose`, :meth:`SimArm.pose_sync`) samples that trajectory at
``clock.now()``, so no stepping is needed and a move costs two clock events.

Interruptions:
  * cancelling the awaiting coroutine freezes the arm at the state sampled at
    the cancel instant (then ``CancelledError`` propagates);
  * :meth:`SimArm.stop` freezes the arm at once and the interrupted move
    raises :class:`DeviceFaultError`.  The real arm would brake for a few
    hundred ms; the twin ignores that deceleration (documented simplification);
  * a new move issued while another is in flight replans from the moving
    state (velocity and acceleration carried over); the older call raises
    :class:`DeviceFaultError` ("superseded");
  * a ``timeout`` shorter than the planned duration moves for ``timeout``
    seconds, freezes, then raises :class:`DeviceTimeoutError`.

Frames: the robot base is mounted at ``base = (x, y, z, yaw)`` in the cell
frame; poses in and out of the twin are TCP poses in the cell frame.
"""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

import numpy as np
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from drivers import kinematics as kin
from drivers.arm import Arm
from drivers.base import DeviceConfig, DeviceContext
from drivers.configmodel import ConfigModel
from drivers.errors import DeviceFaultError, DeviceTimeoutError, InvalidTargetError, UnreachableError
from drivers.types import Box, JointLimits, Pose

from .faults import FaultHooks
from .motion import Trajectory, plan

__all__ = ["JointLimitsDeg", "SimArm", "WorkspaceConfig"]

_Finite = Annotated[float, Field(allow_inf_nan=False)]


class WorkspaceConfig(ConfigModel):
    """An axis-aligned box (cell frame, metres) the TCP must stay in."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    min: tuple[float, float, float]
    max: tuple[float, float, float]

    @field_validator("max")
    @classmethod
    def _ordered(cls, v: tuple[float, float, float], info: ValidationInfo) -> tuple[float, float, float]:
        lo = info.data.get("min")
        if lo is not None:
            for axis, a, b in zip("xyz", lo, v):
                if not a < b:
                    raise ValueError(f"workspace max.{axis} ({b}) must be greater than min.{axis} ({a})")
        return v


class JointLimitsDeg(ConfigModel):
    """A site-configured joint position range in degrees, inside the model's hard limits."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    lower: list[float]
    upper: list[float]


class SimArm(Arm, kind="sim.arm"):
    """A simulated 6-axis arm with the published kinematics and speeds of a catalogued robot."""

    class Config(DeviceConfig):
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

        model: str = Field(
            "ur10e",
            description=f"robot model, one of: {', '.join(kin.model_names())}",
            json_schema_extra={"enum": kin.model_names()},  # editor completion
        )
        base: tuple[
            Annotated[float, Field(ge=-50, le=50)],
            Annotated[float, Field(ge=-50, le=50)],
            Annotated[float, Field(ge=-50, le=50)],
            Annotated[float, Field(ge=-2 * math.pi, le=2 * math.pi)],
        ] = Field((0.0, 0.0, 0.0, 0.0), description="robot base in the cell frame: x, y, z (m), yaw (rad)")
        tool_z: _Finite = Field(0.0, ge=0.0, le=1.0, description="TCP offset along the flange z axis (m)")
        speed_scale: _Finite = Field(1.0, gt=0.0, le=1.0, description="global override on every move's speed")
        joint_limits_deg: JointLimitsDeg | None = Field(
            None, description="tighter joint position range (deg); must lie inside the model's hard limits"
        )
        home: list[_Finite] | None = Field(None, description="joint home (rad); default: a tool-down pose")
        workspace: WorkspaceConfig | None = Field(None, description="TCP box in the cell frame (m)")

        @field_validator("model")
        @classmethod
        def _known_model(cls, v: str) -> str:
            if v not in kin.MODELS:
                raise ValueError(f"unknown robot model {v!r}; known models: {', '.join(kin.model_names())}")
            return v

        @field_validator("joint_limits_deg")
        @classmethod
        def _limits_in_range(cls, v: JointLimitsDeg | None, info: ValidationInfo) -> JointLimitsDeg | None:
            name = info.data.get("model")
            if v is None or name is None:
                return v
            m = kin.MODELS[name]
            for key, vals in (("lower", v.lower), ("upper", v.upper)):
                if len(vals) != m.dof:
                    raise ValueError(f"{key} needs {m.dof} values for {name}, got {len(vals)}")
            for i, (lo, hi) in enumerate(zip(v.lower, v.upper)):
                jn = m.joint_names[i]
                hard_lo, hard_hi = math.degrees(m.limits.lower[i]), math.degrees(m.limits.upper[i])
                if not lo < hi:
                    raise ValueError(f"{jn}: lower ({lo}°) must be less than upper ({hi}°)")
                if lo < hard_lo - 1e-9 or hi > hard_hi + 1e-9:
                    raise ValueError(
                        f"{jn}: [{lo}°, {hi}°] exceeds the {name} hard limits [{hard_lo:g}°, {hard_hi:g}°]"
                    )
            return v

        @field_validator("home")
        @classmethod
        def _home_in_limits(cls, v: list[float] | None, info: ValidationInfo) -> list[float] | None:
            name = info.data.get("model")
            if v is None or name is None:
                return v
            m = kin.MODELS[name]
            if len(v) != m.dof:
                raise ValueError(f"home needs {m.dof} joint values for {name}, got {len(v)}")
            jl = info.data.get("joint_limits_deg")
            for i, q in enumerate(v):
                lo, hi = m.limits.lower[i], m.limits.upper[i]
                if jl is not None:
                    lo, hi = math.radians(jl.lower[i]), math.radians(jl.upper[i])
                if not lo - 1e-9 <= q <= hi + 1e-9:
                    raise ValueError(
                        f"home {m.joint_names[i]} = {q} rad is outside [{lo:.4f}, {hi:.4f}] rad"
                    )
            return v

    config: Config

    @staticmethod
    def _model_for(c: "SimArm.Config") -> kin.RobotModel:
        model = kin.MODELS[c.model].with_tool_z(c.tool_z)
        if c.joint_limits_deg is not None:
            lim = model.limits
            model = model.with_limits(
                JointLimits(
                    lower=tuple(math.radians(v) for v in c.joint_limits_deg.lower),
                    upper=tuple(math.radians(v) for v in c.joint_limits_deg.upper),
                    velocity=lim.velocity,
                    acceleration=lim.acceleration,
                    jerk=lim.jerk,
                )
            )
        return model

    @classmethod
    def target_problem(cls, config: "SimArm.Config", x: float, y: float, z: float,
                       rpy: tuple[float, float, float] | None = None) -> str | None:
        """Why a tool-down TCP target at cell point (x, y, z) has no IK solution within the joint limits, or
        None.  Static (no device is built): ``axcell check`` calls it for the places the handling skills go.
        Any tool yaw will do (trays arrive turned), so only a point no yaw reaches is refused; ``rpy``
        (roll, pitch, yaw in rad, e.g. a ``move`` pose's) checks that one orientation instead."""
        model = cls._model_for(config)
        base = kin.base_transform(*config.base)
        seed = list(config.home) if config.home is not None else list(model.home)
        why = None
        orients = [tuple(rpy)] if rpy is not None else [(math.pi, 0.0, yaw)
                                                        for yaw in (0.0, math.pi / 2, math.pi, -math.pi / 2)]
        for roll, pitch, yaw in orients:
            try:
                kin.ik(model, Pose(x, y, z, roll, pitch, yaw).matrix(), seed, base=base)
                return None
            except UnreachableError as e:
                why = why or str(e)
            except ValueError as e:
                return str(e)
        return why

    @classmethod
    def joints_problem(cls, config: "SimArm.Config", q: list[float]) -> str | None:
        """Why a joint target (rad) is malformed or outside the joint limits, or None (static, like
        :meth:`target_problem`)."""
        model = cls._model_for(config)
        if len(q) != model.dof:
            return f"expected {model.dof} joint values for {config.model}, got {len(q)}"
        for name, v, lo, hi in zip(model.joint_names, q, model._lo, model._hi):
            if not lo - 1e-9 <= v <= hi + 1e-9:
                return f"{name} = {math.degrees(v):g}° is outside [{math.degrees(lo):g}°, {math.degrees(hi):g}°]"
        return None

    def __init__(self, name: str, config: Config, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)
        c = config
        model = self._model_for(c)
        self.model: kin.RobotModel = model
        self.T_cell_base = kin.base_transform(*c.base)
        self._workspace = Box(tuple(c.workspace.min), tuple(c.workspace.max)) if c.workspace else None
        home = c.home if c.home is not None else list(model.home)
        home_arr = np.clip(np.array(home, dtype=float), model._lo, model._hi)
        self.home: tuple[float, ...] = tuple(home_arr.tolist())
        self.world = ctx.resources.get("world")  # optional: the twin needs only the clock
        self.faults = FaultHooks(name, ctx.clock)
        self._rest = home_arr
        self._zero = np.zeros(model.dof)
        self._traj: Trajectory | None = None
        self._t0 = 0.0
        self._seq = 0
        self._waiter: asyncio.Future[str] | None = None
        self.moves = 0

    # -- contract properties -------------------------------------------------
    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.model.joint_names

    @property
    def limits(self) -> JointLimits:
        return self.model.limits

    @property
    def workspace(self) -> Box | None:
        return self._workspace

    # -- state as a function of time -----------------------------------------
    def _sample(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tr = self._traj
        if tr is None:
            return self._rest.copy(), self._zero.copy(), self._zero.copy()
        dt = t - self._t0
        if dt >= tr.duration:
            self._rest, self._traj = tr.q1.copy(), None
            return self._rest.copy(), self._zero.copy(), self._zero.copy()
        return tr.at(dt)

    def _freeze(self, t: float) -> None:
        self._rest = self._sample(t)[0]
        self._traj = None

    def joints_at(self, t: float) -> np.ndarray:
        """Joint positions at cell time ``t`` (≥ the start of the current motion); synchronous."""
        tr = self._traj
        if tr is None:
            return self._rest.copy()
        return tr.position(t - self._t0)

    def pose_at(self, t: float) -> Pose:
        """TCP pose in the cell frame at cell time ``t``; synchronous, no fault hooks."""
        return Pose.from_matrix(kin.fk(self.model, self.joints_at(t), base=self.T_cell_base))

    def pose_sync(self) -> Pose:
        """TCP pose now (for the world, e.g. to carry a gripped tray); no connection check."""
        return self.pose_at(self.clock.now())

    def tcp_position_at(self, t: float) -> tuple[float, float, float]:
        """TCP position (x, y, z) in the cell frame at cell time ``t``."""
        p = kin.fk(self.model, self.joints_at(t), base=self.T_cell_base)[:3, 3]
        return float(p[0]), float(p[1]), float(p[2])

    @property
    def moving(self) -> bool:
        tr = self._traj
        return tr is not None and self.clock.now() - self._t0 < tr.duration

    def fk_pose(self, q: tuple[float, ...] | list[float] | np.ndarray) -> Pose:
        """TCP pose (cell frame) for joints ``q``; pure computation."""
        return Pose.from_matrix(kin.fk(self.model, q, base=self.T_cell_base))

    # -- lifecycle -----------------------------------------------------------
    async def _connect(self) -> None:
        await self.faults.check("connect")

    async def _close(self) -> None:
        # a closed arm holds still where it is
        self._freeze(self.clock.now())
        self._seq += 1
        self._interrupt("connection closed")

    # -- queries -------------------------------------------------------------
    async def joints(self) -> tuple[float, ...]:
        self._require_connected()
        await self.faults.check("joints")
        return tuple(self._sample(self.clock.now())[0].tolist())

    async def pose(self) -> Pose:
        self._require_connected()
        await self.faults.check("pose")
        return self.pose_sync()

    def _ik(self, target: Pose, seed: np.ndarray) -> tuple[float, ...]:
        try:
            q = kin.ik(self.model, target.matrix(), seed, base=self.T_cell_base)
        except UnreachableError as e:
            raise UnreachableError(str(e), device=self.name) from e
        return tuple(q.tolist())

    async def solve_ik(self, target: Pose) -> tuple[float, ...]:
        """IK for a TCP pose in the cell frame, nearest the current joints; raises UnreachableError."""
        self._require_connected()
        self.check_pose(target)
        return self._ik(target, self._sample(self.clock.now())[0])

    async def estimate_duration(self, target: Pose, *, speed: float = 1.0) -> float:
        """Exact planned seconds to reach ``target`` from the current (possibly moving) state.

        Validates like :meth:`move_pose` and raises the same MotionTargetError subclasses.
        """
        self._require_connected()
        s = self._check_speed(speed)
        self.check_pose(target)
        now = self.clock.now()
        q_now, qd, qdd = self._sample(now)
        q = self.check_joints(self._ik(target, q_now))
        return self._plan(q_now, qd, qdd, q, s).duration

    def estimate_joints_duration(self, q: tuple[float, ...] | list[float], *, speed: float = 1.0) -> float:
        """Exact planned seconds to joint target ``q`` from the current state (synchronous)."""
        target = self.check_joints(q)
        q_now, qd, qdd = self._sample(self.clock.now())
        return self._plan(q_now, qd, qdd, target, self._check_speed(speed)).duration

    # -- motion --------------------------------------------------------------
    def _plan(
        self, q0: np.ndarray, qd: np.ndarray, qdd: np.ndarray, q1: tuple[float, ...], speed: float
    ) -> Trajectory:
        moving = bool(qd.any() or qdd.any())
        return plan(
            q0, q1, self.model.limits,
            speed=speed * self.config.speed_scale,
            v0=qd if moving else None,
            a0=qdd if moving else None,
        )

    async def _move_joints(self, q: tuple[float, ...], *, speed: float, timeout: float | None) -> None:
        await self.faults.check("move")
        now = self.clock.now()
        q_now, qd, qdd = self._sample(now)
        traj = self._plan(q_now, qd, qdd, q, speed)
        self._interrupt("superseded by a newer motion command")
        self._traj, self._t0 = traj, now
        self._seq += 1
        seq = self._seq
        self.moves += 1
        wait = traj.duration if timeout is None else min(traj.duration, max(0.0, timeout))
        try:
            reason = await self._wait(wait)
        except asyncio.CancelledError:
            if self._seq == seq:
                self._freeze(self.clock.now())
            raise
        if reason is not None:
            raise DeviceFaultError(f"motion interrupted: {reason}", device=self.name)
        if self._seq == seq and traj.duration > wait:
            self._freeze(self.clock.now())
            raise DeviceTimeoutError(
                f"motion needs {traj.duration:.3f} s, timeout was {timeout:g} s; stopped", device=self.name
            )
        if self._seq == seq and self._traj is traj:
            self._rest, self._traj = traj.q1.copy(), None

    async def _wait(self, seconds: float) -> str | None:
        """Sleep ``seconds`` on the clock; return the reason if :meth:`_interrupt` cut it short."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiter = fut
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait((sleeper, fut), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sleeper.done():
                sleeper.cancel()
            if self._waiter is fut:
                self._waiter = None
        return fut.result() if fut.done() and not fut.cancelled() else None

    def _interrupt(self, reason: str) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(reason)
        self._waiter = None

    async def move_path(self, poses: list[Pose], *, speed: float = 1.0, timeout: float | None = None) -> None:
        """Move through TCP ``poses`` (cell frame), stopping at each one.

        Every target is validated (finite, workspace, IK chained from the
        previous solution, joint limits) before the first segment starts, so a
        bad pose anywhere refuses the whole path without motion.  ``timeout``
        bounds the whole path.
        """
        self._require_connected()
        s = self._check_speed(speed)
        if not poses:
            raise InvalidTargetError("empty path", device=self.name)
        seed = self._sample(self.clock.now())[0]
        qs: list[tuple[float, ...]] = []
        for p in poses:
            self.check_pose(p)
            q = self.check_joints(self._ik(p, seed))
            qs.append(q)
            seed = np.array(q)
        deadline = None if timeout is None else self.clock.now() + timeout
        for q in qs:
            left = None if deadline is None else deadline - self.clock.now()
            await self._move_joints(q, speed=s, timeout=left)

    async def move_home(self, *, speed: float = 1.0, timeout: float | None = None) -> None:
        """Move to the configured home joints."""
        await self.move_joints(self.home, speed=speed, timeout=timeout)

    async def stop(self) -> None:
        """Freeze at the current sampled state (deceleration ignored); an in-flight move raises DeviceFaultError."""
        self._require_connected()
        self._freeze(self.clock.now())
        self._seq += 1
        self._interrupt("stop() requested")

    def health(self) -> dict[str, Any]:
        return {
            "connected": self._connected,
            "model": self.model.name,
            "moving": self.moving,
            "moves": self.moves,
            "joints": [round(v, 6) for v in self.joints_at(self.clock.now()).tolist()],
        }
