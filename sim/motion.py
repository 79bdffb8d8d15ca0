"""Jerk-limited, time-optimal joint trajectories (ruckig, offline calculation).

ruckig's free (community) edition has no intermediate waypoints (that is a
cloud/pro feature and fails offline), so a waypoint path is planned segment by
segment; every segment stops at its waypoint (zero velocity and acceleration).
That is conservative: a blended path through the waypoints would be faster.

Speed scaling: ``speed`` s ∈ (0, 1] scales velocity by s, acceleration by s²
and jerk by s³.  That is an exact time scaling of the profile, so a motion
from rest at speed s takes exactly ``duration(1) / s``.

The planner is synchronous and allocation-light (a few µs per segment): call
it from coroutines freely.  It keeps one ``ruckig.Ruckig`` instance per
degree-of-freedom count; that is safe within one thread (asyncio), not across threads.
"""

from __future__ import annotations

import atexit
import functools
import math
from collections.abc import Sequence

import numpy as np
import ruckig

from drivers.types import JointLimits

__all__ = ["PlanningError", "Trajectory", "plan", "plan_path", "path_duration"]


class PlanningError(RuntimeError):
    """ruckig refused the input (e.g. a non-finite value or a non-positive limit)."""


_OTG: dict[int, tuple[ruckig.Ruckig, ruckig.InputParameter]] = {}
# freed before the interpreter's teardown: nanobind reports ruckig objects still alive then as leaks
atexit.register(_OTG.clear)


def _otg(dof: int) -> tuple[ruckig.Ruckig, ruckig.InputParameter]:
    got = _OTG.get(dof)
    if got is None:
        inp = ruckig.InputParameter(dof)
        inp.target_acceleration = [0.0] * dof  # never changes
        got = (ruckig.Ruckig(dof), inp)
        _OTG[dof] = got
    return got


@functools.lru_cache(maxsize=256)
def _scaled_limits(limits: JointLimits, speed: float) -> tuple[list[float], list[float], list[float]]:
    """(v, a, j) limits for ``speed``; cached because a cell uses a handful of speeds."""
    return (
        [float(v) * speed for v in limits.velocity],
        [float(v) * speed * speed for v in limits.acceleration],
        [float(v) * speed * speed * speed for v in limits.jerk],
    )


class Trajectory:
    """One planned segment, a function of time since its start.

    Attributes:
        duration: seconds from start to standstill at the target.
        q0, q1: start and target positions (rad).
        speed: the speed fraction it was planned with.
    """

    __slots__ = ("_traj", "duration", "q0", "q1", "speed", "_zero")

    def __init__(
        self, traj: ruckig.Trajectory | None, q0: np.ndarray, q1: np.ndarray, duration: float, speed: float
    ) -> None:
        self._traj = traj
        self.q0 = q0
        self.q1 = q1
        self.duration = duration
        self.speed = speed
        self._zero = np.zeros(len(q1))

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(q, qd, qdd)`` at ``t`` seconds after the start; clamped to [0, duration].

        After the end the arm rests exactly at ``q1`` with zero velocity.
        """
        if t >= self.duration or self._traj is None:
            return self.q1.copy(), self._zero.copy(), self._zero.copy()
        p, v, a = self._traj.at_time(max(0.0, t))
        return np.array(p), np.array(v), np.array(a)

    def position(self, t: float) -> np.ndarray:
        """Just ``q`` at ``t`` (see :meth:`at`)."""
        if t >= self.duration or self._traj is None:
            return self.q1.copy()
        return np.array(self._traj.at_time(max(0.0, t))[0])

    def peak_velocity(self) -> np.ndarray:
        """Largest |qd| per joint over the whole segment (from ruckig's extrema)."""
        if self._traj is None:
            return self._zero.copy()
        # sample densely enough for tests and diagnostics
        ts = np.linspace(0.0, self.duration, 257)
        return np.max(np.abs([self._traj.at_time(float(t))[1] for t in ts]), axis=0)

    def __repr__(self) -> str:
        return f"<Trajectory {self.duration:.4f} s speed={self.speed:g}>"


def plan(
    q0: Sequence[float],
    q1: Sequence[float],
    limits: JointLimits,
    *,
    speed: float = 1.0,
    v0: Sequence[float] | None = None,
    a0: Sequence[float] | None = None,
    v1: Sequence[float] | None = None,
) -> Trajectory:
    """Time-optimal, jerk-limited, synchronised trajectory from ``q0`` to ``q1``.

    Args:
        q0, q1: start and target joint positions (rad), ``limits.dof`` values each.
        limits: velocity/acceleration/jerk limits (position limits are the caller's check).
        speed: fraction (0, 1]; scales v by s, a by s², j by s³ (exact time scaling).
        v0, a0: the start velocity/acceleration (a moving start, e.g. a replan); zero if omitted.
            They may exceed the scaled limits; ruckig then brakes first.
        v1: target velocity (zero if omitted); must be reachable within the limits.

    Raises:
        PlanningError: ruckig rejected the input.
        ValueError: wrong sizes or ``speed`` outside (0, 1].
    """
    n = limits.dof
    if len(q0) != n or len(q1) != n:
        raise ValueError(f"expected {n} joint values, got {len(q0)} and {len(q1)}")
    if not (math.isfinite(speed) and 0.0 < speed <= 1.0):
        raise ValueError(f"speed must be in (0, 1], got {speed}")
    start = np.array(q0, dtype=float)
    goal = np.array(q1, dtype=float)
    moving = (v0 is not None and any(v0)) or (a0 is not None and any(a0)) or (v1 is not None and any(v1))
    if not moving and np.array_equal(start, goal):
        return Trajectory(None, start, goal, 0.0, speed)
    otg, inp = _otg(n)
    zeros = [0.0] * n
    inp.current_position = start.tolist()
    inp.current_velocity = [float(v) for v in v0] if v0 is not None else zeros
    inp.current_acceleration = [float(v) for v in a0] if a0 is not None else zeros
    inp.target_position = goal.tolist()
    inp.target_velocity = [float(v) for v in v1] if v1 is not None else zeros
    vmax, amax, jmax = _scaled_limits(limits, float(speed))
    inp.max_velocity = vmax
    inp.max_acceleration = amax
    inp.max_jerk = jmax
    traj = ruckig.Trajectory(n)
    try:
        result = otg.calculate(inp, traj)
    except (ruckig.RuckigError, RuntimeError) as e:  # ruckig raises on invalid input
        raise PlanningError(f"ruckig rejected the motion: {e}") from e
    if result not in (ruckig.Result.Working, ruckig.Result.Finished):
        raise PlanningError(f"ruckig could not plan the motion: {result}")
    return Trajectory(traj, start, goal, float(traj.duration), speed)


def plan_path(
    waypoints: Sequence[Sequence[float]],
    limits: JointLimits,
    speed: float = 1.0,
    *,
    v0: Sequence[float] | None = None,
    a0: Sequence[float] | None = None,
) -> list[Trajectory]:
    """Segments through ``waypoints`` (the first is the start), stopping at each one.

    ``v0``/``a0`` apply to the first segment only.  Returns ``len(waypoints) - 1`` trajectories.
    """
    pts = [np.asarray(w, dtype=float) for w in waypoints]
    if len(pts) < 2:
        raise ValueError("a path needs at least a start and one waypoint")
    out: list[Trajectory] = []
    for i in range(len(pts) - 1):
        out.append(plan(pts[i], pts[i + 1], limits, speed=speed, v0=v0 if i == 0 else None, a0=a0 if i == 0 else None))
    return out


def path_duration(segments: Sequence[Trajectory]) -> float:
    """Total seconds of a segmented path."""
    return float(sum(s.duration for s in segments))
