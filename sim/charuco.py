"""A ChArUco calibration board carried by the simulated arm, drawn into the SimCamera's image.

Eye-to-hand calibration needs a fixed camera that sees a board moved by the
robot.  :class:`BoardMount` ties a :class:`BoardSpec` to an arm's TCP with a
fixed tool→board transform; when it is set on the world
(``world.calibration_board = BoardMount(arm, T_tcp_board)``) every
:class:`sim.devices.SimCamera` capture draws the board with full perspective
(the board is a plane in 3-D, tilted with the tool), using the camera's
``K`` and ``T_cell_cam``.

Board frame (OpenCV's): origin at the outer corner of square (0, 0), x along
the ``squares_x`` direction, y along ``squares_y``, z into the board (a camera
facing the printed side looks along +z).  Chessboard corner ``i`` lies at
``((i % (sx-1)) + 1, (i // (sx-1)) + 1) * square_m``.

Noise (all off by default):
  * ``noise_px``: geometric image noise — a smooth random displacement field
    (about one square correlation length) of this standard deviation in pixels,
    so each detected corner moves by roughly ``noise_px``;
  * ``image_noise``: additive grey-level noise (sigma, 0–255 scale) and
    ``blur_px`` a Gaussian blur sigma over the board patch;
  * ``noise_mm`` / ``noise_deg``: robot pose error — the physical board pose
    differs from the one implied by the arm's reported TCP by a random rigid
    error, drawn once per arm stop (encoder / repeatability error).

The renderer ignores lens distortion (the sim cameras have none) and does not
model occlusion by the arm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from drivers.types import CameraCalibration

__all__ = ["BoardSpec", "BoardMount", "mount_transform"]


@dataclass(frozen=True, slots=True)
class BoardSpec:
    """A ChArUco board: squares, square and marker size (m), ArUco dictionary name."""

    squares_x: int = 7
    squares_y: int = 5
    square_m: float = 0.020
    marker_m: float = 0.015
    dictionary: str = "DICT_4X4_50"

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    def board(self) -> Any:
        return _board(self)

    def object_corners(self) -> np.ndarray:
        """Chessboard corners (N, 3) in the board frame (m)."""
        return np.asarray(self.board().getChessboardCorners(), dtype=float).reshape(-1, 3)

    def image(self, px_per_square: int, margin_px: int) -> np.ndarray:
        """The printed board (mono8), ``px_per_square`` per square with a white margin."""
        return _board_image(self, int(px_per_square), int(margin_px))


@lru_cache(maxsize=16)
def _board(spec: BoardSpec) -> Any:
    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, spec.dictionary))
    return cv2.aruco.CharucoBoard((spec.squares_x, spec.squares_y), spec.square_m, spec.marker_m, d)


@lru_cache(maxsize=64)
def _board_image(spec: BoardSpec, sq: int, margin: int) -> np.ndarray:
    size = (spec.squares_x * sq + 2 * margin, spec.squares_y * sq + 2 * margin)
    img = _board(spec).generateImage(size, marginSize=margin, borderBits=1)
    img.setflags(write=False)
    return img


def _rot(rx: float, ry: float, rz: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([rx, ry, rz], dtype=float))[0]


def mount_transform(spec: BoardSpec = BoardSpec(), centre: tuple[float, float, float] = (0.0, -0.12, -0.01),
                    rpy_deg: tuple[float, float, float] = (2.0, -1.5, 90.0)) -> np.ndarray:
    """T_tcp_board for a board whose *centre* sits at ``centre`` (TCP frame, m), rotated by ``rpy_deg``.

    The default mounts the board on a bracket 12 cm beside a tool-down TCP,
    printed side facing away from the tool's approach direction (so a camera
    above a tool pointing down sees it), with a slight deliberate tilt.
    """
    r, p, y = (math.radians(v) for v in rpy_deg)
    R = _rz(y) @ _ry(p) @ _rx(r)
    w, h = spec.size_m
    t = np.eye(4)
    t[:3, :3] = R
    t[:3, 3] = np.asarray(centre, float) - R @ np.array([w / 2, h / 2, 0.0])
    return t


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@dataclass
class BoardMount:
    """A board rigidly mounted on ``arm``'s TCP (``T_tcp_board``), drawn by the sim cameras."""

    arm: Any
    """The simulated arm (needs ``pose_at(t)`` and, for per-stop pose noise, ``moves``)."""
    T_tcp_board: np.ndarray = field(default_factory=mount_transform)
    spec: BoardSpec = field(default_factory=BoardSpec)
    noise_px: float = 0.0
    image_noise: float = 0.0
    blur_px: float = 0.0
    noise_mm: float = 0.0
    noise_deg: float = 0.0
    seed: int = 0
    margin_squares: float = 0.5
    _pose_noise: dict[Any, np.ndarray] = field(default_factory=dict, repr=False)
    _rng: np.random.Generator | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.T_tcp_board = np.asarray(self.T_tcp_board, dtype=float)
        self._rng = np.random.default_rng(self.seed)

    # -- geometry ------------------------------------------------------------------------------
    def _stop_noise(self) -> np.ndarray:
        if self.noise_mm <= 0 and self.noise_deg <= 0:
            return np.eye(4)
        key = getattr(self.arm, "moves", None)
        e = self._pose_noise.get(key)
        if e is None:
            rng = self._rng
            e = np.eye(4)
            e[:3, :3] = _rot(*rng.normal(0.0, math.radians(self.noise_deg), 3))
            e[:3, 3] = rng.normal(0.0, self.noise_mm / 1000.0, 3)
            self._pose_noise[key] = e
        return e

    def board_pose(self, t: float) -> np.ndarray:
        """Physical T_cell_board at cell time ``t`` (including the per-stop pose error)."""
        T_cell_tcp = self.arm.pose_at(t).matrix()
        return T_cell_tcp @ self._stop_noise() @ self.T_tcp_board

    def true_T_cell_tcp(self, t: float) -> np.ndarray:
        """Physical TCP pose (reported pose with the per-stop error applied)."""
        return self.arm.pose_at(t).matrix() @ self._stop_noise()

    # -- rendering -----------------------------------------------------------------------------
    def draw(self, image: np.ndarray, calib: CameraCalibration, t: float) -> np.ndarray:
        """Return ``image`` with the board drawn as ``calib`` sees it at time ``t``."""
        T_cam_board = np.linalg.inv(calib.T_cell_cam) @ self.board_pose(t)
        return render_board(image, self.spec, T_cam_board, calib.K, noise_px=self.noise_px,
                            image_noise=self.image_noise, blur_px=self.blur_px, rng=self._rng,
                            margin_squares=self.margin_squares)


def render_board(image: np.ndarray, spec: BoardSpec, T_cam_board: np.ndarray, K: np.ndarray, *,
                 noise_px: float = 0.0, image_noise: float = 0.0, blur_px: float = 0.0,
                 rng: np.random.Generator | None = None, margin_squares: float = 0.5) -> np.ndarray:
    """Draw the board (pose ``T_cam_board``, pinhole ``K``) over ``image``; returns a new image."""
    out = np.array(image, copy=True)
    H_img, W_img = out.shape[:2]
    R, tv = T_cam_board[:3, :3], T_cam_board[:3, 3]
    w_m, h_m = spec.size_m
    mg_m = margin_squares * spec.square_m
    outline = np.array([[-mg_m, -mg_m, 0], [w_m + mg_m, -mg_m, 0], [w_m + mg_m, h_m + mg_m, 0],
                        [-mg_m, h_m + mg_m, 0]])
    pc = outline @ R.T + tv
    if (pc[:, 2] <= 1e-3).any():
        return out  # behind the camera
    if float(R[:, 2] @ (R @ np.array([w_m / 2, h_m / 2, 0]) + tv)) <= 0:
        return out  # printed side faces away from the camera
    uv = (pc @ K.T)[:, :2] / pc[:, 2:3]
    x0, y0 = max(0, int(math.floor(uv[:, 0].min()))), max(0, int(math.floor(uv[:, 1].min())))
    x1, y1 = min(W_img, int(math.ceil(uv[:, 0].max())) + 2), min(H_img, int(math.ceil(uv[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return out
    # source resolution ≈ destination resolution at the board centre (linear resampling stays honest)
    depth = float((R @ np.array([w_m / 2, h_m / 2, 0]) + tv)[2])
    sq = int(max(8, min(400, round(K[0, 0] * spec.square_m / depth))))
    margin = int(round(margin_squares * sq))
    src = spec.image(sq, margin)
    ppm = sq / spec.square_m
    # board image index -> board metres -> camera pixels; offset to the ROI
    A = np.array([[1 / ppm, 0, (0.5 - margin) / ppm], [0, 1 / ppm, (0.5 - margin) / ppm], [0, 0, 1.0]])
    Hb = K @ np.column_stack([R[:, 0], R[:, 1], tv])
    M = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]]) @ Hb @ A
    size = (x1 - x0, y1 - y0)
    alpha_src = np.full(src.shape, 255, np.uint8)
    if noise_px > 0:
        rng = rng if rng is not None else np.random.default_rng()
        Minv = np.linalg.inv(M)
        cell = max(4.0, K[0, 0] * spec.square_m / depth)
        gw, gh = int(math.ceil(size[0] / cell)) + 2, int(math.ceil(size[1] / cell)) + 2
        fields = []
        for _ in range(2):
            f = cv2.resize(rng.normal(0.0, 1.0, (gh, gw)).astype(np.float32), (size[0], size[1]),
                           interpolation=cv2.INTER_CUBIC)
            f *= noise_px / max(float(f.std()), 1e-6)
            fields.append(f)
        uu, vv = np.meshgrid(np.arange(size[0], dtype=np.float32), np.arange(size[1], dtype=np.float32))
        pu, pv = uu + fields[0], vv + fields[1]
        den = Minv[2, 0] * pu + Minv[2, 1] * pv + Minv[2, 2]
        mx = ((Minv[0, 0] * pu + Minv[0, 1] * pv + Minv[0, 2]) / den).astype(np.float32)
        my = ((Minv[1, 0] * pu + Minv[1, 1] * pv + Minv[1, 2]) / den).astype(np.float32)
        patch = cv2.remap(src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = cv2.remap(alpha_src, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        patch = cv2.warpPerspective(src, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alpha = cv2.warpPerspective(alpha_src, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    # a matte print: slightly below full white/black, like a real board under lights
    patch = (patch.astype(np.float32) * (215.0 / 255.0) + 20.0)
    if blur_px > 0:
        patch = cv2.GaussianBlur(patch, (0, 0), blur_px)
    a = alpha.astype(np.float32) / 255.0
    roi = out[y0:y1, x0:x1].astype(np.float32)
    if roi.ndim == 3:
        patch, a = patch[..., None], a[..., None]
    roi = patch * a + roi * (1.0 - a)
    if image_noise > 0:
        rng = rng if rng is not None else np.random.default_rng()
        roi = roi + rng.normal(0.0, image_noise, roi.shape).astype(np.float32) * a  # sensor noise on the board
    out[y0:y1, x0:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)
    return out
