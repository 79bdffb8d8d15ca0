"""Eye-to-hand calibration math: ChArUco detection, board pose, AX = ZB solve, refinement, residuals.

A fixed camera watches a ChArUco board carried by the robot.  For every view
``i`` the robot reports ``T_base_tcp[i]`` and the camera measures
``T_cam_board[i]`` (PnP).  The unknowns are the camera pose in the robot's
frame ``T_base_cam`` (X) and the board on the tool ``T_tcp_board`` (Z)::

    T_base_tcp[i] · T_tcp_board  =  T_base_cam · T_cam_board[i]

The closed-form start comes from OpenCV (``calibrateRobotWorldHandEye``,
Shah or Li, or ``calibrateHandEye`` with the inverted robot poses for the
eye-to-hand case); an optional Levenberg–Marquardt pass then minimises the
reprojection error of every detected corner through the whole chain.

Conventions: 4×4 homogeneous transforms, ``T_a_b`` maps points in frame b into
frame a; metres and radians inside, mm / degrees / pixels in reports.
Imports only numpy, OpenCV and pydantic (layer rule for ``skills/``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Sequence

import cv2
import numpy as np
from pydantic import ConfigDict, Field

from drivers.configmodel import ConfigModel

__all__ = [
    "BoardSpec", "Detection", "BoardView", "HandEyeResult", "METHODS",
    "detect_charuco", "estimate_board_pose", "solve_eye_to_hand", "refine_eye_to_hand",
    "consistency_residuals", "chain_reprojection_rms", "pose_error", "calibrate_eye_to_hand",
    "pose_summary", "invert",
]

Method = Literal["shah", "li", "tsai", "park", "horaud", "andreff", "daniilidis"]
METHODS: tuple[str, ...] = ("shah", "li", "tsai", "park", "horaud", "andreff", "daniilidis")


class BoardSpec(ConfigModel):
    """A ChArUco board: squares across × down, square and marker side (m), ArUco dictionary."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    squares_x: int = Field(7, ge=3, le=40)
    squares_y: int = Field(5, ge=3, le=40)
    square_m: float = Field(0.020, gt=0.001, le=0.5)
    marker_m: float = Field(0.015, gt=0.0005, le=0.5)
    dictionary: str = Field("DICT_4X4_50", description="cv2.aruco predefined dictionary name")

    def board(self) -> Any:
        return _board(self.squares_x, self.squares_y, self.square_m, self.marker_m, self.dictionary)

    def object_corners(self) -> np.ndarray:
        """Chessboard corners (N, 3) in the board frame (m)."""
        return np.asarray(self.board().getChessboardCorners(), dtype=float).reshape(-1, 3)

    @property
    def centre(self) -> np.ndarray:
        return np.array([self.squares_x * self.square_m / 2, self.squares_y * self.square_m / 2, 0.0])


@lru_cache(maxsize=16)
def _board(sx: int, sy: int, sq: float, mk: float, dictionary: str) -> Any:
    if mk >= sq:
        raise ValueError(f"marker side {mk} m must be smaller than the square side {sq} m")
    if not hasattr(cv2.aruco, dictionary):
        raise ValueError(f"unknown ArUco dictionary {dictionary!r}")
    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary))
    return cv2.aruco.CharucoBoard((sx, sy), sq, mk, d)


@lru_cache(maxsize=16)
def _detector(spec: BoardSpec) -> Any:
    return cv2.aruco.CharucoDetector(spec.board())


# -- small SE(3) helpers -------------------------------------------------------------------------
def invert(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def _rt(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, float).ravel()
    return T


def _exp(w: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(w, float).reshape(3, 1))[0]


def _orthonormal(R: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(R)
    R2 = u @ vt
    if np.linalg.det(R2) < 0:
        u[:, -1] *= -1
        R2 = u @ vt
    return R2


def rotation_angle_deg(R: np.ndarray) -> float:
    c = (np.trace(R) - 1.0) / 2.0
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def pose_error(T_est: np.ndarray, T_ref: np.ndarray, point: np.ndarray | None = None) -> tuple[float, float]:
    """(translation mm, rotation deg) between two poses; translation of ``point`` (frame origin by default)."""
    p = np.zeros(3) if point is None else np.asarray(point, float)
    a = T_est[:3, :3] @ p + T_est[:3, 3]
    b = T_ref[:3, :3] @ p + T_ref[:3, 3]
    return float(np.linalg.norm(a - b) * 1000.0), rotation_angle_deg(T_est[:3, :3].T @ T_ref[:3, :3])


def pose_summary(T: np.ndarray) -> dict[str, Any]:
    """xyz (mm) and roll/pitch/yaw (deg, R = Rz·Ry·Rx) of a transform, plus the matrix."""
    R = T[:3, :3]
    pitch = math.atan2(-R[2, 0], math.hypot(R[0, 0], R[1, 0]))
    roll = math.atan2(R[2, 1], R[2, 2])
    yaw = math.atan2(R[1, 0], R[0, 0])
    return {
        "xyz_mm": [round(float(v) * 1000.0, 4) for v in T[:3, 3]],
        "rpy_deg": [round(math.degrees(v), 5) for v in (roll, pitch, yaw)],
        "matrix": [[float(v) for v in row] for row in T],
    }


# -- detection and board pose --------------------------------------------------------------------
@dataclass
class Detection:
    """ChArUco corners found in one image: ids (N,), pixels (N, 2), board points (N, 3)."""

    ids: np.ndarray
    corners: np.ndarray
    object_points: np.ndarray
    markers: int


@dataclass
class BoardView:
    """A board pose measured by PnP: ``T_cam_board`` and its reprojection RMS (px)."""

    T_cam_board: np.ndarray
    rms_px: float
    detection: Detection


def detect_charuco(image: np.ndarray, spec: BoardSpec) -> Detection:
    """Detect ChArUco corners (sub-pixel); an empty detection when the board is not seen."""
    img = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    cc, ci, _mc, mi = _detector(spec).detectBoard(img)
    n_markers = 0 if mi is None else len(mi)
    if ci is None or len(ci) == 0:
        return Detection(np.zeros(0, int), np.zeros((0, 2)), np.zeros((0, 3)), n_markers)
    ids = ci.ravel().astype(int)
    return Detection(ids, cc.reshape(-1, 2).astype(float), spec.object_corners()[ids], n_markers)


def estimate_board_pose(det: Detection, K: np.ndarray, dist: np.ndarray | None = None,
                        min_corners: int = 6) -> BoardView | None:
    """Board pose from a detection (IPPE start, LM refinement); ``None`` with too few corners."""
    n = len(det.ids)
    if n < max(4, min_corners):
        return None
    d = np.zeros(5) if dist is None else np.asarray(dist, float)
    obj = det.object_points.astype(np.float64)
    img = det.corners.astype(np.float64)
    # collinear corners (a single row) give no pose
    if np.linalg.matrix_rank(obj[:, :2] - obj[:, :2].mean(0), tol=1e-9) < 2:
        return None
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, d, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, d, rvec, tvec)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, d)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))
    T = _rt(cv2.Rodrigues(rvec)[0], tvec)
    if T[2, 3] <= 0:
        return None
    return BoardView(T, rms, det)


# -- the solve -----------------------------------------------------------------------------------
def solve_eye_to_hand(T_base_tcp: Sequence[np.ndarray], T_cam_board: Sequence[np.ndarray],
                      method: str = "shah") -> tuple[np.ndarray, np.ndarray]:
    """Closed-form (T_base_cam, T_tcp_board) from paired robot and board poses (≥ 3 poses)."""
    if len(T_base_tcp) != len(T_cam_board):
        raise ValueError("need as many robot poses as board poses")
    if len(T_base_tcp) < 3:
        raise ValueError(f"need at least 3 poses, got {len(T_base_tcp)}")
    method = method.lower()
    if method in ("shah", "li"):
        # OpenCV's robot-world form  T^cam_world = T^cam_gripper · T^gripper_base · T^base_world,
        # relabelled for eye-to-hand: camera→"world", board→"cam", tcp→"gripper".
        T_board_cam = [invert(T) for T in T_cam_board]
        T_tcp_base = [invert(T) for T in T_base_tcp]
        flag = cv2.CALIB_ROBOT_WORLD_HAND_EYE_SHAH if method == "shah" else cv2.CALIB_ROBOT_WORLD_HAND_EYE_LI
        R_cb, t_cb, R_gc, t_gc = cv2.calibrateRobotWorldHandEye(
            [T[:3, :3] for T in T_board_cam], [T[:3, 3].reshape(3, 1) for T in T_board_cam],
            [T[:3, :3] for T in T_tcp_base], [T[:3, 3].reshape(3, 1) for T in T_tcp_base], method=flag)
        T_cam_base = _rt(_orthonormal(R_cb), t_cb)
        T_board_tcp = _rt(_orthonormal(R_gc), t_gc)
        return invert(T_cam_base), invert(T_board_tcp)
    flags = {"tsai": cv2.CALIB_HAND_EYE_TSAI, "park": cv2.CALIB_HAND_EYE_PARK,
             "horaud": cv2.CALIB_HAND_EYE_HORAUD, "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
             "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS}
    if method not in flags:
        raise ValueError(f"unknown hand-eye method {method!r} (known: {', '.join(METHODS)})")
    # eye-to-hand with the eye-in-hand solver: feed base→gripper instead of gripper→base;
    # the "cam2gripper" result is then cam→base.
    T_tcp_base = [invert(T) for T in T_base_tcp]
    R, t = cv2.calibrateHandEye([T[:3, :3] for T in T_tcp_base], [T[:3, 3].reshape(3, 1) for T in T_tcp_base],
                                [T[:3, :3] for T in T_cam_board], [T[:3, 3].reshape(3, 1) for T in T_cam_board],
                                method=flags[method])
    T_base_cam = _rt(_orthonormal(R), t)
    return T_base_cam, _average_tcp_board(T_base_tcp, T_cam_board, T_base_cam)


def _average_tcp_board(T_base_tcp: Sequence[np.ndarray], T_cam_board: Sequence[np.ndarray],
                       T_base_cam: np.ndarray) -> np.ndarray:
    Ts = [invert(a) @ T_base_cam @ b for a, b in zip(T_base_tcp, T_cam_board)]
    R = _orthonormal(sum(T[:3, :3] for T in Ts))
    t = np.mean([T[:3, 3] for T in Ts], axis=0)
    return _rt(R, t)


def _chain_residuals(T_base_tcp: Sequence[np.ndarray], views: Sequence[BoardView], K: np.ndarray,
                     dist: np.ndarray, T_base_cam: np.ndarray, T_tcp_board: np.ndarray) -> np.ndarray:
    T_cam_base = invert(T_base_cam)
    out = []
    for Tb, v in zip(T_base_tcp, views):
        T = T_cam_base @ Tb @ T_tcp_board
        rvec = cv2.Rodrigues(T[:3, :3])[0]
        proj, _ = cv2.projectPoints(v.detection.object_points, rvec, T[:3, 3].reshape(3, 1), K, dist)
        out.append((proj.reshape(-1, 2) - v.detection.corners).ravel())
    return np.concatenate(out) if out else np.zeros(0)


def chain_reprojection_rms(T_base_tcp: Sequence[np.ndarray], views: Sequence[BoardView], K: np.ndarray,
                           dist: np.ndarray | None, T_base_cam: np.ndarray, T_tcp_board: np.ndarray) -> float:
    """RMS (px) of every corner reprojected through robot pose, T_tcp_board and T_base_cam."""
    d = np.zeros(5) if dist is None else np.asarray(dist, float)
    r = _chain_residuals(T_base_tcp, views, K, d, T_base_cam, T_tcp_board).reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum(r ** 2, axis=1)))) if len(r) else float("nan")


def _perturb(T_base_cam: np.ndarray, T_tcp_board: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    A = _rt(_exp(d[0:3]) @ T_base_cam[:3, :3], T_base_cam[:3, 3] + d[3:6])
    B = _rt(T_tcp_board[:3, :3] @ _exp(d[6:9]), T_tcp_board[:3, 3] + d[9:12])
    return A, B


def refine_eye_to_hand(T_base_tcp: Sequence[np.ndarray], views: Sequence[BoardView], K: np.ndarray,
                       dist: np.ndarray | None, T_base_cam: np.ndarray, T_tcp_board: np.ndarray,
                       iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg–Marquardt on the chain reprojection error of all corners (both unknowns at once)."""
    d0 = np.zeros(5) if dist is None else np.asarray(dist, float)
    X, Z = T_base_cam.copy(), T_tcp_board.copy()
    r = _chain_residuals(T_base_tcp, views, K, d0, X, Z)
    cost = float(r @ r)
    lam = 1e-3
    eps = np.array([1e-7] * 3 + [1e-7] * 3 + [1e-7] * 3 + [1e-7] * 3)
    for _ in range(iterations):
        J = np.empty((len(r), 12))
        for k in range(12):
            dk = np.zeros(12)
            dk[k] = eps[k]
            Xk, Zk = _perturb(X, Z, dk)
            J[:, k] = (_chain_residuals(T_base_tcp, views, K, d0, Xk, Zk) - r) / eps[k]
        JtJ, Jtr = J.T @ J, J.T @ r
        improved = False
        for _try in range(8):
            step = -np.linalg.solve(JtJ + lam * np.diag(np.diag(JtJ) + 1e-12), Jtr)
            Xn, Zn = _perturb(X, Z, step)
            rn = _chain_residuals(T_base_tcp, views, K, d0, Xn, Zn)
            cn = float(rn @ rn)
            if cn < cost:
                X, Z, r = Xn, Zn, rn
                lam = max(lam / 4, 1e-9)
                improved = cost - cn > 1e-12 * max(cost, 1e-12)
                cost = cn
                break
            lam *= 8
        if not improved or np.abs(step).max() < 1e-10:
            break
    return X, Z


def consistency_residuals(T_base_tcp: Sequence[np.ndarray], T_cam_board: Sequence[np.ndarray],
                          T_base_cam: np.ndarray, T_tcp_board: np.ndarray,
                          point: np.ndarray | None = None) -> dict[str, Any]:
    """Per-pose disagreement of measured and predicted board poses (mm at ``point``, deg).

    Predicted ``T_cam_board[i] = T_base_cam⁻¹ · T_base_tcp[i] · T_tcp_board``; ``point``
    is in the board frame (use the board centre).
    """
    mm, deg = [], []
    T_cam_base = invert(T_base_cam)
    for Tb, Tm in zip(T_base_tcp, T_cam_board):
        e_mm, e_deg = pose_error(T_cam_base @ Tb @ T_tcp_board, Tm, point)
        mm.append(e_mm)
        deg.append(e_deg)
    a, b = np.array(mm), np.array(deg)
    return {
        "trans_mm_rms": float(np.sqrt(np.mean(a ** 2))) if len(a) else float("nan"),
        "trans_mm_max": float(a.max()) if len(a) else float("nan"),
        "rot_deg_rms": float(np.sqrt(np.mean(b ** 2))) if len(b) else float("nan"),
        "rot_deg_max": float(b.max()) if len(b) else float("nan"),
        "per_pose_mm": [round(float(v), 4) for v in a],
        "per_pose_deg": [round(float(v), 5) for v in b],
    }


@dataclass
class HandEyeResult:
    """The calibration and its error figures."""

    T_base_cam: np.ndarray
    T_tcp_board: np.ndarray
    poses: int
    method: str
    refined: bool
    pnp_rms_px: float
    """Mean of the per-view PnP reprojection RMS (detection quality)."""
    reprojection_rms_px: float
    """RMS of all corners reprojected through the whole solved chain."""
    residuals: dict[str, Any]
    closed_form: dict[str, Any] = field(default_factory=dict)
    """The closed-form solution before refinement and its distance to the final one."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "T_base_cam": pose_summary(self.T_base_cam),
            "T_tcp_board": pose_summary(self.T_tcp_board),
            "poses": self.poses,
            "method": self.method,
            "refined": self.refined,
            "pnp_rms_px": round(self.pnp_rms_px, 4),
            "reprojection_rms_px": round(self.reprojection_rms_px, 4),
            "residuals": self.residuals,
            "closed_form": self.closed_form,
        }


def calibrate_eye_to_hand(T_base_tcp: Sequence[np.ndarray], views: Sequence[BoardView], K: np.ndarray,
                          dist: np.ndarray | None, spec: BoardSpec, *, method: str = "shah",
                          refine: bool = True) -> HandEyeResult:
    """Solve, optionally refine, and compute every error figure."""
    T_cam_board = [v.T_cam_board for v in views]
    X0, Z0 = solve_eye_to_hand(T_base_tcp, T_cam_board, method)
    X, Z = (refine_eye_to_hand(T_base_tcp, views, K, dist, X0, Z0) if refine else (X0, Z0))
    d_mm, d_deg = pose_error(X0, X)
    res = consistency_residuals(T_base_tcp, T_cam_board, X, Z, spec.centre)
    return HandEyeResult(
        T_base_cam=X, T_tcp_board=Z, poses=len(views), method=method, refined=refine,
        pnp_rms_px=float(np.mean([v.rms_px for v in views])),
        reprojection_rms_px=chain_reprojection_rms(T_base_tcp, views, K, dist, X, Z),
        residuals=res,
        closed_form={"reprojection_rms_px": round(chain_reprojection_rms(T_base_tcp, views, K, dist, X0, Z0), 4),
                     "delta_to_final_mm": round(d_mm, 4), "delta_to_final_deg": round(d_deg, 5)},
    )
