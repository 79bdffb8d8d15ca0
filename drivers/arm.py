"""Arm contract: a serial manipulator moved by joint or Cartesian targets.

Frames and units:
  * joint values in radians, ordered as :attr:`Arm.joint_names`;
  * Cartesian poses are the *tool centre point* (TCP) in the cell frame,
    metres and roll/pitch/yaw radians (see :class:`drivers.types.Pose`);
  * ``speed`` is a fraction (0, 1] of the arm's velocity/acceleration limits.

Safety contract: every public motion method validates its target **before any
motion starts** and raises a :class:`drivers.errors.MotionTargetError`
subclass without moving when the target holds NaN/inf
(:class:`InvalidTargetError`), lies outside the joint limits
(:class:`JointLimitError`), outside the workspace box
(:class:`WorkspaceError`), or has no inverse-kinematics solution
(:class:`UnreachableError`).  Implementations override the underscored
methods only, so the checks cannot be skipped.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence

from .base import Device
from .errors import InvalidTargetError, JointLimitError, WorkspaceError
from .types import Box, JointLimits, Pose


class Arm(Device, contract="arm"):
    """A 6-axis (or n-axis) industrial arm."""

    @property
    @abc.abstractmethod
    def joint_names(self) -> tuple[str, ...]:
        """Joint names, in the order every joint vector uses."""

    @property
    @abc.abstractmethod
    def limits(self) -> JointLimits:
        """Position, velocity, acceleration and jerk limits per joint."""

    @property
    def workspace(self) -> Box | None:
        """The Cartesian box the TCP must stay in, or ``None`` for no box."""
        return None

    # -- checks (public so skills can pre-validate plans) --------------------
    def check_joints(self, q: Sequence[float]) -> tuple[float, ...]:
        """Return ``q`` as a tuple, or raise if it is malformed or outside the limits."""
        lim = self.limits
        values = tuple(float(v) for v in q)
        if len(values) != lim.dof:
            raise InvalidTargetError(f"expected {lim.dof} joint values, got {len(values)}", device=self.name)
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise InvalidTargetError(f"joint {self.joint_names[i]} target is {v}", device=self.name)
            if v < lim.lower[i] - 1e-9 or v > lim.upper[i] + 1e-9:
                raise JointLimitError(
                    f"joint {self.joint_names[i]} target {v:.4f} rad outside "
                    f"[{lim.lower[i]:.4f}, {lim.upper[i]:.4f}]",
                    device=self.name,
                )
        return values

    def check_pose(self, target: Pose) -> Pose:
        """Return ``target``, or raise if it is non-finite or outside the workspace."""
        if not isinstance(target, Pose):
            raise InvalidTargetError(f"target must be a Pose, got {type(target).__name__}", device=self.name)
        if not target.is_finite():
            raise InvalidTargetError(f"pose target is not finite: {target}", device=self.name)
        ws = self.workspace
        if ws is not None and not ws.contains(target):
            raise WorkspaceError(
                f"pose target ({target.x:.3f}, {target.y:.3f}, {target.z:.3f}) m outside workspace "
                f"{ws.min}..{ws.max}",
                device=self.name,
            )
        return target

    @staticmethod
    def _check_speed(speed: float) -> float:
        if not (math.isfinite(speed) and 0.0 < speed <= 1.0):
            raise InvalidTargetError(f"speed must be in (0, 1], got {speed}")
        return float(speed)

    # -- queries -------------------------------------------------------------
    @abc.abstractmethod
    async def joints(self) -> tuple[float, ...]:
        """Current joint positions (rad)."""

    @abc.abstractmethod
    async def pose(self) -> Pose:
        """Current TCP pose in the cell frame."""

    # -- motion --------------------------------------------------------------
    async def move_joints(self, q: Sequence[float], *, speed: float = 1.0, timeout: float | None = None) -> None:
        """Move to joint target ``q`` along a jerk-limited profile; returns when settled.

        Raises: MotionTargetError subclasses before moving; DeviceTimeoutError if
        the motion does not finish within ``timeout``; DeviceFaultError on a drive fault.
        """
        self._require_connected()
        target = self.check_joints(q)
        await self._move_joints(target, speed=self._check_speed(speed), timeout=timeout)

    async def move_pose(self, target: Pose, *, speed: float = 1.0, timeout: float | None = None) -> None:
        """Move the TCP to ``target`` (joint-interpolated). Checks as :meth:`move_joints`, plus workspace and IK."""
        self._require_connected()
        self.check_pose(target)
        q = self.check_joints(await self.solve_ik(target))
        await self._move_joints(q, speed=self._check_speed(speed), timeout=timeout)

    async def move_path(self, targets: Sequence[Pose], *, speed: float = 1.0, timeout: float | None = None) -> None:
        """Move the TCP through ``targets`` in order, settling at each (e.g. above a slot, then down into it).

        Every target is checked (finite, workspace, reachable, joint limits) before anything moves.
        The default moves to each in turn; a driver may send the whole path as one command (the
        ROS 2 arm proxy sends one multi-point FollowJointTrajectory goal) with the same result.
        ``timeout`` bounds the whole path.
        """
        self._require_connected()
        s = self._check_speed(speed)
        targets = list(targets)
        if not targets:
            raise InvalidTargetError("empty path", device=self.name)
        for t in targets:
            self.check_pose(t)
        for t in targets[1:]:  # reachable at all (the first is solved by its own move below)
            self.check_joints(await self.solve_ik(t))
        deadline = None if timeout is None else self.clock.now() + timeout
        for t in targets:
            left = None if deadline is None else max(0.0, deadline - self.clock.now())
            await self.move_pose(t, speed=s, timeout=left)

    async def estimate_duration(self, target: Pose, *, speed: float = 1.0) -> float:
        """Predicted seconds to reach ``target`` from the current state (for conveyor tracking).

        The default is a conservative guess; implementations with a time
        parametrisation override it.
        """
        here = await self.pose()
        return 0.2 + math.dist(here.position, target.position) / (0.5 * speed)

    @abc.abstractmethod
    async def solve_ik(self, target: Pose) -> tuple[float, ...]:
        """Joint solution for ``target`` closest to the current joints; raises UnreachableError."""

    @abc.abstractmethod
    async def _move_joints(self, q: tuple[float, ...], *, speed: float, timeout: float | None) -> None:
        """Implementation hook: ``q`` is already validated."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop any motion as fast as the limits allow. Idempotent."""
