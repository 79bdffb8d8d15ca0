"""Plain value types that cross the contract boundary.

Units are SI throughout: metres, radians, seconds, metres per second.  Poses
are expressed in the *cell frame* (x along the conveyor's flow, y across it,
z up, origin at the robot base) unless a docstring says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Pose:
    """A rigid pose: position in metres, orientation as roll/pitch/yaw (rad, XYZ extrinsic)."""

    x: float
    y: float
    z: float
    roll: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0

    def is_finite(self) -> bool:
        """True when every component is a finite number."""
        return all(math.isfinite(v) for v in self.as_tuple())

    def as_tuple(self) -> tuple[float, float, float, float, float, float]:
        return (self.x, self.y, self.z, self.roll, self.pitch, self.yaw)

    @property
    def position(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z], dtype=float)

    def _rotation_rows(self) -> tuple[tuple[float, float, float], ...]:
        """The rows of R = Rz(yaw) · Ry(pitch) · Rx(roll) as plain floats."""
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        return (
            (cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr),
            (sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr),
            (-sp, cp * sr, cp * cr),
        )

    def rotation(self) -> np.ndarray:
        """3×3 rotation matrix R = Rz(yaw) · Ry(pitch) · Rx(roll)."""
        return np.array(self._rotation_rows())

    def matrix(self) -> np.ndarray:
        """4×4 homogeneous transform, built as one array (the IK asks for one per query; filling an
        identity from :meth:`rotation` and :attr:`position` cost ~3× more)."""
        r0, r1, r2 = self._rotation_rows()
        return np.array([[*r0, self.x], [*r1, self.y], [*r2, self.z], [0.0, 0.0, 0.0, 1.0]], dtype=float)

    @classmethod
    def from_matrix(cls, t: np.ndarray) -> "Pose":
        r = np.asarray(t)[:3, :3]
        pitch = math.atan2(-r[2, 0], math.hypot(r[0, 0], r[1, 0]))
        if abs(math.cos(pitch)) < 1e-9:  # gimbal lock: put everything in yaw
            roll = 0.0
            yaw = math.atan2(-r[0, 1], r[1, 1])
        else:
            roll = math.atan2(r[2, 1], r[2, 2])
            yaw = math.atan2(r[1, 0], r[0, 0])
        p = np.asarray(t)[:3, 3]
        return cls(float(p[0]), float(p[1]), float(p[2]), roll, pitch, yaw)

    def translated(self, dx: float = 0.0, dy: float = 0.0, dz: float = 0.0) -> "Pose":
        return Pose(self.x + dx, self.y + dy, self.z + dz, self.roll, self.pitch, self.yaw)


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in the cell frame (metres), used for workspaces."""

    min: tuple[float, float, float]
    max: tuple[float, float, float]

    def contains(self, p: Pose | np.ndarray | tuple[float, float, float]) -> bool:
        xyz = (p.x, p.y, p.z) if isinstance(p, Pose) else tuple(float(v) for v in p)
        return all(lo <= v <= hi for v, lo, hi in zip(xyz, self.min, self.max))


@dataclass(frozen=True, slots=True)
class JointLimits:
    """Per-joint position (rad), velocity (rad/s), acceleration (rad/s²) and jerk (rad/s³) limits."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]
    velocity: tuple[float, ...]
    acceleration: tuple[float, ...]
    jerk: tuple[float, ...]

    @property
    def dof(self) -> int:
        return len(self.lower)


@dataclass(frozen=True, slots=True)
class CameraCalibration:
    """Intrinsics plus the camera's pose in the cell frame.

    ``K`` is the 3×3 pinhole matrix (pixels), ``dist`` the OpenCV distortion
    vector and ``T_cell_cam`` the 4×4 transform from camera to cell frame
    (camera z looks along the optical axis, x right, y down in the image).
    """

    K: np.ndarray
    dist: np.ndarray
    T_cell_cam: np.ndarray
    width: int
    height: int

    def pixel_to_plane(self, u: float, v: float, plane_z: float) -> tuple[float, float]:
        """Back-project pixel (u, v) onto the horizontal plane ``z = plane_z`` of the cell frame."""
        ray_cam = np.linalg.solve(self.K, np.array([u, v, 1.0]))
        r = self.T_cell_cam[:3, :3]
        o = self.T_cell_cam[:3, 3]
        d = r @ ray_cam
        if abs(d[2]) < 1e-12:
            raise ValueError("ray parallel to the plane")
        s = (plane_z - o[2]) / d[2]
        p = o + s * d
        return float(p[0]), float(p[1])

    def plane_to_pixel(self, x: float, y: float, plane_z: float) -> tuple[float, float]:
        """Project the cell-frame point (x, y, plane_z) into the image (no distortion)."""
        t_cam_cell = np.linalg.inv(self.T_cell_cam)
        pc = t_cam_cell @ np.array([x, y, plane_z, 1.0])
        uvw = self.K @ pc[:3]
        return float(uvw[0] / uvw[2]), float(uvw[1] / uvw[2])


@dataclass(slots=True)
class Frame:
    """One camera image.

    ``image`` is HxW (mono8) or HxWx3 (BGR8) ``uint8``; ``stamp`` is the
    capture time in seconds on the cell clock.  ``meta`` carries
    implementation details (frame counter, exposure); skills must not rely on
    its keys for decisions.
    """

    image: np.ndarray
    stamp: float
    camera: str
    calibration: CameraCalibration | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MachineStatus:
    """A machine's PackML-style state as seen by its driver."""

    state: str
    """PackML state name, e.g. ``"Idle"``, ``"Execute"``, ``"Held"``, ``"Aborted"``."""
    faulted: bool = False
    fault: str = ""
    cycles: int = 0
    telemetry: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CycleResult:
    """Outcome of one machine cycle."""

    ok: bool
    started: float
    finished: float
    message: str = ""
    telemetry: dict[str, float] = field(default_factory=dict)
