"""Serial-arm kinematics on standard Denavit–Hartenberg parameters (pure numpy).

Shared by the simulated arm twin (:mod:`sim.arm`) and by real arm drivers that
need inverse kinematics on the host.  Nothing here does I/O or waits.

Conventions:
  * standard (distal) DH: ``T_i = Rz(q_i + theta_i) · Tz(d_i) · Tx(a_i) · Rx(alpha_i)``;
  * the *base frame* is the DH frame 0 of the robot (for Universal Robots this
    is the controller's ``base`` frame, which is ``base_link`` of ROS rotated
    by 180° about z);
  * the *flange* is DH frame 6, the *TCP* is ``flange · tool``;
  * a robot mounted in the cell has ``T_cell_base`` (see :func:`base_transform`);
    :func:`fk` and :func:`ik` take it as the keyword ``base``.

Units: metres, radians, seconds.

Example::

    m = MODELS["ur10e"].with_tool_z(0.15)
    T = fk(m, m.home)                # 4×4, TCP in the base frame
    q = ik(m, T, q_seed=m.home)      # nearest solution to the seed
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np

from .errors import UnreachableError
from .types import JointLimits

TWO_PI = 2.0 * math.pi

__all__ = [
    "MODELS",
    "RobotModel",
    "base_transform",
    "fk",
    "ik",
    "ik_analytic_all",
    "ik_numeric",
    "jacobian",
    "model_names",
    "pose_error",
]


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RobotModel:
    """Kinematic and limit description of one serial arm.

    Attributes:
        name: catalogue key, e.g. ``"ur10e"``.
        a, d, alpha, theta: standard DH link length (m), offset (m), twist (rad)
            and joint zero offset (rad), one per joint.
        joint_names: joint names in joint-vector order.
        limits: position (rad), velocity (rad/s), acceleration (rad/s²) and jerk (rad/s³).
        reach: published maximum reach (m), used for quick reachability checks.
        tool: 4×4 flange→TCP transform as a flat, row-major 16-tuple.
        home: a sensible joint home (rad), tool pointing down.
        ik_solver: ``"ur"`` (closed form, 8 solutions), ``"numeric"`` (damped
            least squares) or ``"auto"`` (closed form when the DH table has the
            UR geometry).
        source: where the numbers come from.
    """

    name: str
    a: tuple[float, ...]
    d: tuple[float, ...]
    alpha: tuple[float, ...]
    theta: tuple[float, ...]
    joint_names: tuple[str, ...]
    limits: JointLimits
    reach: float
    tool: tuple[float, ...] = tuple(np.eye(4).ravel().tolist())
    home: tuple[float, ...] = ()
    ik_solver: str = "auto"
    source: str = ""
    _tool_m: np.ndarray = field(init=False, repr=False, compare=False)
    _tool_inv: np.ndarray = field(init=False, repr=False, compare=False)
    _ur: bool = field(init=False, repr=False, compare=False)
    _ca: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _lo: np.ndarray = field(init=False, repr=False, compare=False)
    _hi: np.ndarray = field(init=False, repr=False, compare=False)
    _sa: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _bounds: tuple[tuple[float, float, float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.a)
        for fname in ("d", "alpha", "theta", "joint_names"):
            if len(getattr(self, fname)) != n:
                raise ValueError(f"{self.name}: DH field {fname} has {len(getattr(self, fname))} values, expected {n}")
        if self.limits.dof != n:
            raise ValueError(f"{self.name}: limits have {self.limits.dof} joints, DH table {n}")
        if self.home and len(self.home) != n:
            raise ValueError(f"{self.name}: home has {len(self.home)} values, expected {n}")
        t = np.asarray(self.tool, dtype=float).reshape(4, 4)
        object.__setattr__(self, "_tool_m", t)
        tinv = np.eye(4)
        tinv[:3, :3] = t[:3, :3].T
        tinv[:3, 3] = -t[:3, :3].T @ t[:3, 3]
        object.__setattr__(self, "_tool_inv", tinv)
        object.__setattr__(self, "_lo", np.array(self.limits.lower, dtype=float))
        object.__setattr__(self, "_hi", np.array(self.limits.upper, dtype=float))
        # (lower, upper, lower - 1e-9, upper + 1e-9) per joint as plain floats, for the IK's scalar limit fit
        object.__setattr__(self, "_bounds", tuple((lo, hi, lo - 1e-9, hi + 1e-9) for lo, hi in
                                                  zip(self._lo.tolist(), self._hi.tolist())))
        # snap cos/sin of the twists so that ±π/2 gives exact zeros
        object.__setattr__(self, "_ca", tuple(_snap(math.cos(x)) for x in self.alpha))
        object.__setattr__(self, "_sa", tuple(_snap(math.sin(x)) for x in self.alpha))
        ur_geom = _has_ur_geometry(self)
        if self.ik_solver == "ur" and not ur_geom:
            raise ValueError(f"{self.name}: ik_solver='ur' needs the UR DH geometry")
        if self.ik_solver not in ("auto", "ur", "numeric"):
            raise ValueError(f"{self.name}: unknown ik_solver {self.ik_solver!r}")
        object.__setattr__(self, "_ur", ur_geom and self.ik_solver in ("auto", "ur"))

    @property
    def dof(self) -> int:
        return len(self.a)

    @property
    def tool_matrix(self) -> np.ndarray:
        """The 4×4 flange→TCP transform (a copy)."""
        return self._tool_m.copy()

    @property
    def analytic(self) -> bool:
        """True when :func:`ik` uses the closed-form UR solver for this model."""
        return self._ur

    def with_tool(self, t_flange_tool: np.ndarray) -> "RobotModel":
        """A copy with the flange→TCP transform replaced."""
        t = np.asarray(t_flange_tool, dtype=float)
        if t.shape != (4, 4) or not np.all(np.isfinite(t)):
            raise ValueError("tool must be a finite 4×4 transform")
        return dataclasses.replace(self, tool=tuple(t.ravel().tolist()))

    def with_tool_z(self, z: float) -> "RobotModel":
        """A copy whose TCP sits ``z`` metres along the flange z axis (a straight tool)."""
        t = np.eye(4)
        t[2, 3] = float(z)
        return self.with_tool(t)

    def with_limits(self, limits: JointLimits) -> "RobotModel":
        """A copy with other joint limits (e.g. a tighter, site-configured position range)."""
        return dataclasses.replace(self, limits=limits)


def _snap(v: float) -> float:
    return 0.0 if abs(v) < 1e-15 else v


def _has_ur_geometry(m: RobotModel) -> bool:
    if m.dof != 6:
        return False
    h = math.pi / 2
    want_alpha = (h, 0.0, 0.0, h, -h, 0.0)
    return (
        all(abs(x - y) < 1e-12 for x, y in zip(m.alpha, want_alpha))
        and abs(m.a[0]) < 1e-12
        and all(abs(x) < 1e-12 for x in m.a[3:])
        and abs(m.d[1]) < 1e-12
        and abs(m.d[2]) < 1e-12
        and all(abs(x) < 1e-12 for x in m.theta)
        and abs(m.a[1]) > 0
        and abs(m.a[2]) > 0
        and abs(m.d[5]) > 0
    )


def _deg(*v: float) -> tuple[float, ...]:
    return tuple(math.radians(x) for x in v)


# Acceleration and jerk limits are NOT published by Universal Robots (their
# ROS description says "acceleration limits are not publicly available").  We
# derive conservative defaults from the published speeds: a joint reaches its
# full speed in _T_ACC seconds and its full acceleration in _T_JERK seconds.
# With these a UR10e base joint gets 8.4 rad/s² and 84 rad/s³, well inside what
# the controller accepts in URScript (movej a up to tens of rad/s²) and slow
# enough to be a pessimistic cycle-time estimate.
_T_ACC = 0.25
_T_JERK = 0.10


def _ur(
    name: str,
    d1: float,
    a2: float,
    a3: float,
    d4: float,
    d5: float,
    d6: float,
    speeds_deg: tuple[float, ...],
    reach: float,
    source: str,
) -> RobotModel:
    vel = _deg(*speeds_deg)
    acc = tuple(v / _T_ACC for v in vel)
    jerk = tuple(a / _T_JERK for a in acc)
    h = math.pi / 2
    return RobotModel(
        name=name,
        a=(0.0, a2, a3, 0.0, 0.0, 0.0),
        d=(d1, 0.0, 0.0, d4, d5, d6),
        alpha=(h, 0.0, 0.0, h, -h, 0.0),
        theta=(0.0,) * 6,
        joint_names=(
            "shoulder_pan_joint",
            "shoulder_lift_joint",
            "elbow_joint",
            "wrist_1_joint",
            "wrist_2_joint",
            "wrist_3_joint",
        ),
        # e-Series working range: ±360° on every joint (datasheets).
        limits=JointLimits(
            lower=(-TWO_PI,) * 6,
            upper=(TWO_PI,) * 6,
            velocity=vel,
            acceleration=acc,
            jerk=jerk,
        ),
        reach=reach,
        # Tool-down home: upper arm vertical, forearm horizontal, flange z
        # pointing at the floor, TCP in front of the base (DH base −x side).
        home=(0.0, -h, h, -h, -h, 0.0),
        ik_solver="auto",
        source=source,
    )


_UR_DH_SOURCE = (
    "Universal Robots, 'DH parameters for calculations of kinematics and dynamics' "
    "(universal-robots.com/articles/ur/application-installation/"
    "dh-parameters-for-calculations-of-kinematics-and-dynamics/)"
)

#: Catalogue of named robots.  DH values are UR's published nominal table
#: (real robots carry a per-unit calibration that differs by ~mm); speeds and
#: reach from the e-Series product datasheets / user manuals ("Technical
#: specifications": joint ranges ±360°, maximum joint speeds).
MODELS: dict[str, RobotModel] = {
    m.name: m
    for m in (
        # UR3e: reach 500 mm; base/shoulder/elbow 180°/s, wrists 360°/s.
        _ur("ur3e", 0.15185, -0.24355, -0.2132, 0.13105, 0.08535, 0.0921,
            (180, 180, 180, 360, 360, 360), 0.500,
            _UR_DH_SOURCE + "; UR3e e-Series datasheet"),
        # UR5e: reach 850 mm; all joints 180°/s.
        _ur("ur5e", 0.1625, -0.425, -0.3922, 0.1333, 0.0997, 0.0996,
            (180, 180, 180, 180, 180, 180), 0.850,
            _UR_DH_SOURCE + "; UR5e e-Series datasheet"),
        # UR10e: reach 1300 mm; base/shoulder 120°/s, elbow/wrists 180°/s.
        _ur("ur10e", 0.1807, -0.6127, -0.57155, 0.17415, 0.11985, 0.11655,
            (120, 120, 180, 180, 180, 180), 1.300,
            _UR_DH_SOURCE + "; UR10e e-Series datasheet"),
        # UR16e: reach 900 mm; base/shoulder 120°/s, elbow/wrists 180°/s.
        _ur("ur16e", 0.1807, -0.4784, -0.36, 0.17415, 0.11985, 0.11655,
            (120, 120, 180, 180, 180, 180), 0.900,
            _UR_DH_SOURCE + "; UR16e e-Series datasheet"),
    )
}
# No Korean-maker model (Doosan, HD Hyundai) is listed: their vendors publish
# URDF joint origins rather than a DH table, and we did not want to ship
# parameters we could not check against a primary source.  Any such arm can be
# added here as a RobotModel and will use the numerical IK.


def model_names() -> list[str]:
    """Known model names, sorted."""
    return sorted(MODELS)


# ---------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------
def base_transform(x: float = 0.0, y: float = 0.0, z: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    """``T_cell_base`` for a robot mounted upright at (x, y, z) and rotated ``yaw`` about z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0, x], [s, c, 0.0, y], [0.0, 0.0, 1.0, z], [0.0, 0.0, 0.0, 1.0]])


def _inv(t: np.ndarray) -> np.ndarray:
    out = np.empty((4, 4))
    r = t[:3, :3]
    out[:3, :3] = r.T
    out[:3, 3] = -r.T @ t[:3, 3]
    out[3] = (0.0, 0.0, 0.0, 1.0)
    return out


_BASE_INV: dict[tuple[object, ...], np.ndarray] = {}


def _inv_base(base: np.ndarray) -> np.ndarray:
    """``_inv(base)``, remembered: a mounted robot passes the same ``T_cell_base`` to every :func:`ik`
    call, and inverting it costs as much as the rest of the IK's setup.  Keyed by the array's contents
    and memory layout (the layout picks the BLAS kernel), so the answer is the one ``_inv`` gives."""
    key = (base.shape, base.strides, base.tobytes())
    inv = _BASE_INV.get(key)
    if inv is None:
        inv = _inv(base)
        inv.flags.writeable = False
        if len(_BASE_INV) >= 32:
            _BASE_INV.clear()
        _BASE_INV[key] = inv
    return inv


def _dh(a: float, alpha: float, d: float, theta: float) -> np.ndarray:
    ct, st = math.cos(theta), math.sin(theta)
    ca, sa = _snap(math.cos(alpha)), _snap(math.sin(alpha))
    return np.array(
        [
            [ct, -st * ca, st * sa, a * ct],
            [st, ct * ca, -ct * sa, a * st],
            [0.0, sa, ca, d],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def _chain(m: RobotModel, q: Sequence[float]) -> list[np.ndarray]:
    """Cumulative transforms base→frame i for i = 0..n (frame 0 = identity)."""
    th = np.asarray(q, dtype=float) + m.theta
    ct, st = np.cos(th), np.sin(th)
    ca, sa = np.asarray(m._ca), np.asarray(m._sa)
    a = np.asarray(m.a)
    links = np.zeros((m.dof, 4, 4))
    links[:, 0, 0], links[:, 0, 1], links[:, 0, 2], links[:, 0, 3] = ct, -st * ca, st * sa, a * ct
    links[:, 1, 0], links[:, 1, 1], links[:, 1, 2], links[:, 1, 3] = st, ct * ca, -ct * sa, a * st
    links[:, 2, 1], links[:, 2, 2], links[:, 2, 3] = sa, ca, m.d
    links[:, 3, 3] = 1.0
    frames = [np.eye(4)]
    t = frames[0]
    for i in range(m.dof):
        t = t @ links[i]
        frames.append(t)
    return frames


def _flange(m: RobotModel, q: Sequence[float]) -> np.ndarray:
    """Base→flange transform; scalar Python is ~3× faster than numpy for a 6-link chain."""
    cos, sin = math.cos, math.sin
    r00, r01, r02, px = 1.0, 0.0, 0.0, 0.0
    r10, r11, r12, py = 0.0, 1.0, 0.0, 0.0
    r20, r21, r22, pz = 0.0, 0.0, 1.0, 0.0
    for th0, ai, di, ca, sa, qi in zip(m.theta, m.a, m.d, m._ca, m._sa, q):
        t = qi + th0
        ct, st = cos(t), sin(t)
        b01, b02, b11, b12 = -st * ca, st * sa, ct * ca, -ct * sa
        act, ast = ai * ct, ai * st
        r00, r01, r02, px = (
            r00 * ct + r01 * st, r00 * b01 + r01 * b11 + r02 * sa, r00 * b02 + r01 * b12 + r02 * ca,
            r00 * act + r01 * ast + r02 * di + px,
        )
        r10, r11, r12, py = (
            r10 * ct + r11 * st, r10 * b01 + r11 * b11 + r12 * sa, r10 * b02 + r11 * b12 + r12 * ca,
            r10 * act + r11 * ast + r12 * di + py,
        )
        r20, r21, r22, pz = (
            r20 * ct + r21 * st, r20 * b01 + r21 * b11 + r22 * sa, r20 * b02 + r21 * b12 + r22 * ca,
            r20 * act + r21 * ast + r22 * di + pz,
        )
    return np.array([[r00, r01, r02, px], [r10, r11, r12, py], [r20, r21, r22, pz], [0.0, 0.0, 0.0, 1.0]])


def fk(m: RobotModel, q: Sequence[float], *, base: np.ndarray | None = None) -> np.ndarray:
    """TCP pose as a 4×4 transform: in the robot base frame, or in the cell frame when ``base`` is given."""
    if len(q) != m.dof:
        raise ValueError(f"{m.name}: expected {m.dof} joint values, got {len(q)}")
    t = _flange(m, q) @ m._tool_m
    return t if base is None else np.asarray(base) @ t


def jacobian(m: RobotModel, q: Sequence[float]) -> np.ndarray:
    """Geometric 6×n Jacobian of the TCP in the base frame: rows (vx, vy, vz, wx, wy, wz)."""
    frames = _chain(m, q)
    p_tcp = (frames[-1] @ m._tool_m)[:3, 3]
    stack = np.array(frames[:-1])  # (n, 4, 4)
    z = stack[:, :3, 2]
    j = np.empty((6, m.dof))
    j[:3] = np.cross(z, p_tcp - stack[:, :3, 3]).T
    j[3:] = z.T
    return j


def pose_error(t_current: np.ndarray, t_target: np.ndarray) -> np.ndarray:
    """6-vector (position error, rotation-vector error) that takes current to target, base frame."""
    dp = t_target[:3, 3] - t_current[:3, 3]
    r = t_target[:3, :3] @ t_current[:3, :3].T
    cos_a = max(-1.0, min(1.0, (r[0, 0] + r[1, 1] + r[2, 2] - 1.0) * 0.5))
    angle = math.acos(cos_a)
    v = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-9:
        w = 0.5 * v
    elif math.pi - angle < 1e-6:
        # near 180°: the axis is the column of (R + I) with the largest norm
        b = r + np.eye(3)
        k = int(np.argmax(np.linalg.norm(b, axis=0)))
        axis = b[:, k] / np.linalg.norm(b[:, k])
        w = angle * axis
    else:
        w = (angle / (2.0 * math.sin(angle))) * v
    return np.concatenate([dp, w])


# ---------------------------------------------------------------------------
# limits handling
# ---------------------------------------------------------------------------
def _fit_row(
    m: RobotModel, sol: Sequence[float], seed: Sequence[float], bound: float = math.inf
) -> tuple[list[float], float] | None:
    """``sol`` with every joint wrapped by 2π·j to the value nearest ``seed`` inside the limits, and its
    squared distance to ``seed``; None if a joint fits nowhere or the distance exceeds ``bound``.

    The candidates are j-1, j and j+1 turns around the nearest turn j, the cheapest one inside the
    limits (± 1e-9 rad) winning, the lower turn on a tie: enough whenever the limit span is ≤ 4π
    (true for all catalogued arms); :func:`_fit_limits` falls back to a full scan otherwise.  A value
    is clamped onto a limit it passes by at most 1e-9 rad (as ``np.clip``: equal to a limit → the limit).
    The distance is summed joint by joint from the left, as numpy sums a row of a (k, n) array; the
    partial sums only grow, so a row is given up as soon as one exceeds ``bound``.
    Plain floats: for 8 solutions × 6 joints numpy's per-call overhead cost more than the arithmetic.
    """
    out = []
    d2 = 0.0
    for s, sd, (lo, hi, lo_tol, hi_tol) in zip(sol, seed, m._bounds):
        k = round((sd - s) / TWO_PI)
        c = s + k * TWO_PI
        if not (lo_tol <= c <= hi_tol and abs(c - sd) < 3.0):
            # Turn j is within π of the seed, j±1 at least π away: j wins outright when it is inside the
            # limits and clearly nearer (< 3 rad).  Otherwise compare the three: j outside the limits, or
            # a near tie (~13 % of joints in the demo cell: a flipped wrist is exactly half a turn away).
            c, best_cost = None, 0.0
            for turn in (k - 1, k, k + 1):
                v = s + turn * TWO_PI
                if lo_tol <= v <= hi_tol:
                    cost = abs(v - sd)
                    if c is None or cost < best_cost:
                        c, best_cost = v, cost
            if c is None:
                return None
        c = c if c > lo else lo
        c = c if c < hi else hi
        out.append(c)
        d = c - sd
        d2 += d * d
        if d2 > bound:
            return None
    return out, d2


def _fit_limits(m: RobotModel, q: Sequence[float], seed: Sequence[float]) -> list[float] | None:
    """One solution wrapped into the limits nearest ``seed``, or None.

    The seed may itself lie outside the limits; then the scan starts from the
    equivalent angle nearest to the seed that is inside.
    """
    sd = np.clip(np.asarray(seed, dtype=float), m._lo, m._hi)
    fitted = _fit_row(m, [float(v) for v in q], sd.tolist())
    if fitted is not None:
        return fitted[0]
    # wide ranges (> 4π) or a seed far away: brute-force every turn in the range
    out: list[float] = []
    for i, theta in enumerate(q):
        lo, hi, s = m.limits.lower[i], m.limits.upper[i], float(sd[i])
        v = theta + math.ceil((lo - theta) / TWO_PI - 1e-12) * TWO_PI
        best: float | None = None
        while v <= hi + 1e-9:
            if best is None or abs(v - s) < abs(best - s):
                best = min(max(v, lo), hi)
            v += TWO_PI
        if best is None:
            return None
        out.append(best)
    return out


# ---------------------------------------------------------------------------
# closed-form IK for the UR geometry
# ---------------------------------------------------------------------------
def ik_analytic_all(m: RobotModel, t_flange: np.ndarray, q6_free: float = 0.0) -> np.ndarray:
    """All (up to 8) closed-form solutions placing the *flange* (not the TCP) at ``t_flange`` (base frame).

    Returns a ``(k, 6)`` array, k ≤ 8, angles in [-π, π), not yet wrapped to the limits.  When the
    wrist is singular (q5 ≈ 0) q6 is free and ``q6_free`` is used.
    Reference: K. Hawkins, "Analytic Inverse Kinematics for the Universal
    Robots UR-5/UR-10 Arms" (Georgia Tech, 2013), re-derived for the e-Series table.
    """
    if not m._ur:
        raise ValueError(f"{m.name} has no closed-form IK")
    sols, _ = _ur_solutions(m, t_flange, q6_free)
    return sols


def _ur_solutions(m: RobotModel, t_flange: np.ndarray, q6_free: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form solutions plus a mask of the ones computed without clamping (exact to rounding)."""
    sols, exact = _ur_rows(m, t_flange, q6_free)
    if not sols:
        return np.empty((0, 6)), np.empty(0, dtype=bool)
    return np.array(sols), np.array(exact)


def _ur_rows(m: RobotModel, t_flange: np.ndarray, q6_free: float) -> tuple[list[list[float]], list[bool]]:
    """:func:`_ur_solutions` as plain lists (what :func:`ik` works on), angles wrapped to [-π, π).

    Each angle is wrapped as ``(q + π) % 2π - π`` (Python's float % rounds exactly as numpy's
    remainder), once per value: q1 is shared by up to four solutions, q5 and q6 by two.
    """
    d1, a2, a3, d4, d5, d6 = m.d[0], m.a[1], m.a[2], m.d[3], m.d[4], m.d[5]
    a2a2, a3a3, a2a3x2 = a2 * a2, a3 * a3, 2.0 * a2 * a3
    sin, cos, atan2, acos = math.sin, math.cos, math.atan2, math.acos
    # plain floats: arithmetic on numpy scalars is ~5× slower
    (r00, r01, r02, px), (r10, r11, r12, py), (r20, r21, r22, pz) = t_flange[:3].tolist()
    # wrist centre (origin of frame 5)
    wx, wy = px - d6 * r02, py - d6 * r12
    rr = math.hypot(wx, wy)
    if rr < abs(d4) - 1e-12 or rr < 1e-12:
        return [], []
    exact0 = rr > abs(d4)
    phi = atan2(wy, wx)
    psi = acos(max(-1.0, min(1.0, d4 / rr)))
    sols: list[list[float]] = []
    exact: list[bool] = []
    pi = math.pi
    half_pi = pi / 2
    for q1 in (phi + psi + half_pi, phi - psi + half_pi):
        s1, c1 = sin(q1), cos(q1)
        w1 = (q1 + pi) % TWO_PI - pi
        c5 = (px * s1 - py * c1 - d4) / d6
        if abs(c5) > 1.0 + 1e-9:
            continue
        exact1 = exact0 and abs(c5) < 1.0
        c5 = max(-1.0, min(1.0, c5))
        a5 = acos(c5)
        for q5 in (a5, -a5):
            s5 = sin(q5)
            if abs(s5) < 1e-9:
                q6 = q6_free
                exact1 = False
            else:
                # from T60 = inv(T06): X60 = row 0 of R06, Y60 = row 1 of R06
                q6 = atan2((-r01 * s1 + r11 * c1) / s5, (r00 * s1 - r10 * c1) / s5)
            # Frame 4 in the base frame: x axis x04 = R06·R56ᵀ·R45ᵀ·e_x and origin
            # p04 = p06 − R06·(−d5·s6, −d5·c6, d6).  Expressed in frame 1 (the plane
            # of joints 2–4), x04 gives q2+q3+q4 and p04 the planar 2R target.
            s6, c6 = sin(q6), cos(q6)
            w5, w6 = (q5 + pi) % TWO_PI - pi, (q6 + pi) % TWO_PI - pi
            vx, vy, vz = c6 * c5, -s6 * c5, -s5
            x4x = r00 * vx + r01 * vy + r02 * vz
            x4y = r10 * vx + r11 * vy + r12 * vz
            x4z = r20 * vx + r21 * vy + r22 * vz
            ux, uy, uz = -d5 * s6, -d5 * c6, d6
            p4x = px - (r00 * ux + r01 * uy + r02 * uz)
            p4y = py - (r10 * ux + r11 * uy + r12 * uz)
            p4z = pz - (r20 * ux + r21 * uy + r22 * uz)
            q234 = atan2(x4z, c1 * x4x + s1 * x4y)
            x, y = c1 * p4x + s1 * p4y, p4z - d1
            c3 = (x * x + y * y - a2a2 - a3a3) / a2a3x2
            if abs(c3) > 1.0 + 1e-9:
                continue
            exact3 = exact1 and abs(c3) < 1.0
            c3 = max(-1.0, min(1.0, c3))
            a3n = acos(c3)
            base_angle = atan2(y, x)
            for q3 in (a3n, -a3n) if a3n > 1e-12 else (a3n,):
                q2 = base_angle - atan2(a3 * sin(q3), a2 + a3 * c3)
                sols.append([w1, (q2 + pi) % TWO_PI - pi, (q3 + pi) % TWO_PI - pi,
                             (q234 - q2 - q3 + pi) % TWO_PI - pi, w5, w6])
                exact.append(exact3)
    return sols, exact


# ---------------------------------------------------------------------------
# numerical IK
# ---------------------------------------------------------------------------
def ik_numeric(
    m: RobotModel,
    t_tcp: np.ndarray,
    q_seed: Sequence[float],
    *,
    tol_pos: float = 1e-6,
    tol_rot: float = 1e-6,
    max_iter: int = 200,
    restarts: int = 8,
) -> np.ndarray | None:
    """Damped-least-squares IK for any DH arm, TCP in the base frame; ``None`` if it does not converge.

    Starts from the seed, then from ``restarts`` deterministic pseudo-random
    configurations inside the limits.  The result is wrapped to the limits,
    nearest to the seed.
    """
    lim = m.limits
    lo, hi = np.array(lim.lower), np.array(lim.upper)
    seed = np.array(q_seed, dtype=float)
    rng = np.random.default_rng(12345)
    starts = [np.clip(seed, lo, hi)]
    span_lo, span_hi = np.maximum(lo, -math.pi), np.minimum(hi, math.pi)
    for _ in range(restarts):
        starts.append(rng.uniform(span_lo, span_hi))
    eye6 = np.eye(6)
    for q in starts:
        q = q.copy()
        for _ in range(max_iter):
            err = pose_error(fk(m, q), t_tcp)
            e2 = float(err @ err)
            if np.linalg.norm(err[:3]) < tol_pos and np.linalg.norm(err[3:]) < tol_rot:
                fitted = _fit_limits(m, q.tolist(), seed.tolist())
                if fitted is not None:
                    return np.array(fitted)
                break
            j = jacobian(m, q)
            # damping shrinks with the error (Levenberg–Marquardt style): robust far away,
            # quadratic convergence close in, even next to a singularity
            lam2 = min(1e-2, 0.1 * e2) + 1e-12
            dq = j.T @ np.linalg.solve(j @ j.T + lam2 * eye6, err)
            step = float(np.max(np.abs(dq)))
            if step > 0.5:
                dq *= 0.5 / step
            q += dq
    return None


# ---------------------------------------------------------------------------
# public IK
# ---------------------------------------------------------------------------
def ik(
    m: RobotModel,
    t_target: np.ndarray,
    q_seed: Sequence[float],
    *,
    base: np.ndarray | None = None,
    method: str = "auto",
    tol: float = 1e-6,
) -> np.ndarray:
    """Joint vector placing the TCP at ``t_target``, the valid solution nearest to ``q_seed``.

    Args:
        m: the robot model (its tool and limits are used).
        t_target: 4×4 TCP pose, in the base frame, or in the cell frame if ``base`` is given.
        q_seed: joints the answer should be close to (usually the current ones).
        base: ``T_cell_base`` of the mounted robot, or ``None``.
        method: ``"auto"`` (closed form when available), ``"analytic"`` or ``"numeric"``.
        tol: accepted position error (m) and rotation error (rad) of the answer.

    Returns:
        ``np.ndarray`` of ``m.dof`` joint values inside ``m.limits``; every
        joint is wrapped (±2π) to the equivalent nearest the seed.

    Raises:
        UnreachableError: no solution inside the joint limits.
        ValueError: malformed arguments (wrong sizes, non-finite values, unknown method).
    """
    t = np.asarray(t_target, dtype=float)
    if t.shape != (4, 4) or not math.isfinite(float(t.sum())):
        raise ValueError("t_target must be a finite 4×4 transform")
    seed = [float(v) for v in q_seed]
    if len(seed) != m.dof or not all(math.isfinite(v) for v in seed):
        raise ValueError(f"q_seed must be {m.dof} finite values")
    if base is not None:
        t = _inv_base(np.asarray(base, dtype=float)) @ t
    if method == "auto":
        method = "analytic" if m._ur else "numeric"
    if method == "analytic":
        if not m._ur:
            raise ValueError(f"{m.name} has no closed-form IK")
        # plain floats from here on: 8 solutions × 6 joints are too few for numpy to pay off
        sols, exact = _ur_rows(m, t @ m._tool_inv, seed[5])
        if sols:
            seed_in = []  # the seed clamped into the limits (as np.clip: on a tie, the limit)
            for v, (lo, hi, _, _) in zip(seed, m._bounds):
                v = v if v > lo else lo
                seed_in.append(v if v < hi else hi)
            # (squared distance to the seed, fitted row, exact) of the rows inside the limits, except rows
            # farther than an exact one: sorted after it, they would never be looked at
            ranked, bound = [], math.inf
            for row, ex in zip(sols, exact):
                fit = _fit_row(m, row, seed_in, bound)
                if fit is not None:
                    ranked.append((fit[1], fit[0], ex))
                    if ex and fit[1] < bound:
                        bound = fit[1]
            ranked.sort(key=itemgetter(0))  # stable: equal distances keep the solver's order
            accept = max(tol, 1e-6) * 10
            for _, fitted, ex in ranked:
                cand = np.array(fitted)
                if ex:
                    return cand
                # a clamped (boundary or singular) branch: verify before trusting it
                err = pose_error(fk(m, cand), t)
                if math.sqrt(err[0] ** 2 + err[1] ** 2 + err[2] ** 2) <= accept and (
                    math.sqrt(err[3] ** 2 + err[4] ** 2 + err[5] ** 2) <= accept
                ):
                    return cand
        raise UnreachableError(_why(m, t, bool(sols)))
    if method == "numeric":
        q = ik_numeric(m, t, seed, tol_pos=tol, tol_rot=tol)
        if q is None:
            raise UnreachableError(_why(m, t, False))
        return q
    raise ValueError(f"unknown IK method {method!r}")


def _why(m: RobotModel, t: np.ndarray, geometric: bool) -> str:
    p = t[:3, 3]
    dist = math.hypot(t[0, 3], t[1, 3], t[2, 3] - m.d[0])
    where = f"TCP target ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}) m in the {m.name} base frame"
    if geometric:
        return f"{where} has IK solutions but none within the joint limits"
    if dist > m.reach + abs(m._tool_m[2, 3]) + 0.2:
        return f"{where} is out of reach ({dist:.3f} m from the shoulder, reach {m.reach:.3f} m)"
    return f"{where} with this orientation has no inverse-kinematics solution"
