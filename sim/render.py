"""Top-down renderer of sealed food trays on a conveyor belt.

Used by the simulated camera and by the vision benchmark.  The renderer is
built for speed: each part is drawn once into a small *sprite* (colour
premultiplied by alpha plus 255 - alpha, uint8, in the tray's own frame at the
camera's pixel scale) that is cached by the part's seed; a frame is the cached
belt background, each sprite warped in with one ``cv2.warpAffine`` and blended
with saturating uint8 arithmetic, and a cheap lighting pass.  Everything that
is the same for every tray of a product (tray body, contents texture bank,
label artwork, gloss, the fill-noise upsampling weights, the point sets defects
are placed in) is cached per product and scale, so a new part costs a fraction
of a millisecond at the sim camera's resolution (``bench/render_speed.py``).

Conventions
-----------
* Tray frame: origin at the tray centre, +x along the tray's long axis (the
  label is offset towards +x by ``label.offset_mm``, which breaks the 180°
  symmetry), +y across it, viewed from above.
* A part's pose is given on a horizontal plane of the cell frame: ``x``, ``y``
  in metres, ``yaw`` in radians about +z, ``z`` the plane height (top of the
  tray film) in metres.
* Images are ``uint8`` BGR (default) or mono.

Only numpy, cv2 and ``drivers`` are imported (layer rule for ``sim/``).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np
from pydantic import ConfigDict, Field

from drivers.configmodel import ConfigModel
from drivers.types import CameraCalibration

__all__ = [
    "DEFECT_KINDS", "Defect", "LabelAppearance", "Lighting", "PRODUCTS", "PartSpec",
    "ProductAppearance", "clear_caches", "generate_dataset", "get_product",
    "make_top_down_calibration", "part_pose_px", "render_scene",
]

BGR = tuple[int, int, int]

DEFECT_KINDS: tuple[str, ...] = (
    "missing_label",
    "skewed_label",
    "seal_contamination",
    "torn_film",
    "foreign_body",
    "underfill",
)


# --------------------------------------------------------------------------- models
class LabelAppearance(ConfigModel):
    """The printed label on the lidding film."""

    model_config = ConfigDict(extra="forbid")

    length_mm: float = Field(70.0, gt=0, description="label extent along the tray's long axis")
    width_mm: float = Field(50.0, gt=0, description="label extent across the tray")
    offset_mm: float = Field(45.0, description="label centre offset along the tray's +x axis")
    color: BGR = (235, 235, 235)
    band_color: BGR = (40, 40, 200)
    ink_color: BGR = (30, 30, 30)
    stripes: int = Field(5, ge=0, le=20, description="lines of text-like marks")


class ProductAppearance(ConfigModel):
    """Everything that defines how one product variant looks from above."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: Literal["rect", "ellipse"] = "rect"
    length_mm: float = Field(190.0, gt=10, description="outer tray length (long axis)")
    width_mm: float = Field(140.0, gt=10, description="outer tray width")
    corner_radius_mm: float = Field(14.0, ge=0)
    tray_color: BGR = (40, 40, 42)
    rim_mm: float = Field(8.0, gt=0, description="seal band (flange) width")
    wall_mm: float = Field(5.0, ge=0, description="visible inner wall slope width")
    film_tint: BGR = (250, 250, 250)
    film_alpha: float = Field(0.08, ge=0, le=0.6)
    gloss: float = Field(0.25, ge=0, le=1.0, description="specular streak strength")
    label: LabelAppearance = Field(default_factory=LabelAppearance)
    contents_kind: Literal["pieces", "granular", "smooth"] = "pieces"
    contents_colors: list[BGR] = Field(default_factory=lambda: [(30, 60, 110), (40, 80, 140), (50, 140, 60)])
    contents_base: BGR = (25, 45, 80)
    piece_mm: float = Field(14.0, gt=0, description="typical piece/grain size")
    fill_fraction: float = Field(0.88, gt=0.1, le=1.0, description="nominal share of the well covered")

    def inspection_rules(self) -> dict:
        """Rule parameters (plain dict) matching this look, for ``skills.vision.ProductRules``.

        Boxes are fractions of the canonical (long axis horizontal) part view,
        with the label towards +x.  ``sim`` may not import ``skills``, so the
        caller builds ``ProductRules(**appearance.inspection_rules())``.
        """
        L, W = self.length_mm, self.width_mm
        lab = self.label
        cx = 0.5 + lab.offset_mm / L
        return {
            "label_box": [cx - lab.length_mm / (2 * L), 0.5 - lab.width_mm / (2 * W),
                          cx + lab.length_mm / (2 * L), 0.5 + lab.width_mm / (2 * W)],
            "seal_band_frac": self.rim_mm / min(L, W),
            "part_size_tol": 0.08,
        }


PRODUCTS: dict[str, ProductAppearance] = {
    "beef_bulgogi": ProductAppearance(
        name="beef_bulgogi", tray_color=(38, 38, 40), length_mm=190, width_mm=140,
        contents_kind="pieces", contents_base=(20, 40, 75),
        contents_colors=[(30, 55, 100), (25, 45, 85), (45, 75, 130), (40, 150, 70), (200, 210, 215)],
        piece_mm=13.0, fill_fraction=0.95,
        label=LabelAppearance(length_mm=70, width_mm=55, offset_mm=45, color=(235, 238, 240),
                              band_color=(40, 40, 190), ink_color=(25, 25, 25), stripes=5),
    ),
    "kimchi": ProductAppearance(
        name="kimchi", tray_color=(225, 228, 228), length_mm=170, width_mm=125, corner_radius_mm=10,
        rim_mm=7, contents_kind="pieces", contents_base=(35, 60, 170),
        contents_colors=[(40, 70, 200), (60, 110, 225), (150, 200, 230), (30, 50, 160)],
        piece_mm=16.0, fill_fraction=0.93, film_alpha=0.12, gloss=0.3,
        label=LabelAppearance(length_mm=55, width_mm=70, offset_mm=-40, color=(90, 215, 240),
                              band_color=(20, 110, 30), ink_color=(20, 20, 20), stripes=4),
    ),
    "salad": ProductAppearance(
        name="salad", tray_color=(175, 180, 170), length_mm=200, width_mm=150, corner_radius_mm=20,
        rim_mm=9, contents_kind="pieces", contents_base=(40, 110, 50),
        contents_colors=[(40, 150, 60), (70, 190, 110), (30, 40, 200), (60, 200, 230), (200, 230, 235)],
        piece_mm=18.0, fill_fraction=0.96, film_alpha=0.1, gloss=0.35,
        label=LabelAppearance(length_mm=60, width_mm=60, offset_mm=55, color=(245, 250, 245),
                              band_color=(60, 140, 40), ink_color=(60, 60, 60), stripes=6),
    ),
    "rice_curry": ProductAppearance(
        name="rice_curry", tray_color=(30, 30, 120), length_mm=185, width_mm=135, corner_radius_mm=12,
        rim_mm=8, contents_kind="smooth", contents_base=(40, 150, 200),
        contents_colors=[(30, 120, 180), (60, 170, 220), (225, 230, 230), (40, 90, 140)],
        piece_mm=12.0, fill_fraction=0.92, film_alpha=0.08, gloss=0.3,
        label=LabelAppearance(length_mm=65, width_mm=45, offset_mm=-48, color=(240, 240, 240),
                              band_color=(0, 140, 230), ink_color=(30, 30, 30), stripes=3),
    ),
}


def get_product(name: str) -> ProductAppearance:
    try:
        return PRODUCTS[name]
    except KeyError:
        raise KeyError(f"unknown product {name!r}; built-ins: {', '.join(sorted(PRODUCTS))}") from None


class Defect(ConfigModel):
    """A defect on one part; ``severity`` in [0, 1] (None: drawn from the part seed)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["missing_label", "skewed_label", "seal_contamination", "torn_film",
                  "foreign_body", "underfill"]
    severity: float | None = Field(None, ge=0.0, le=1.0)


class Lighting(ConfigModel):
    """Per-frame lighting: ``out = clip((img * gain * channel_gain * gradient) + offset + noise)``."""

    model_config = ConfigDict(extra="forbid")

    gain: float = Field(1.0, gt=0)
    offset: float = 0.0
    channel_gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gradient: tuple[float, float] = Field((0.0, 0.0), description="relative gain change across the frame in x, y")
    noise_sigma: float = Field(2.0, ge=0)

    @classmethod
    def random(cls, rng: np.random.Generator, strength: float = 1.0) -> "Lighting":
        s = strength
        return cls(
            gain=float(1.0 + s * rng.uniform(-0.18, 0.18)),
            offset=float(s * rng.uniform(-12, 12)),
            channel_gain=tuple(float(1.0 + s * rng.uniform(-0.05, 0.05)) for _ in range(3)),  # type: ignore[arg-type]
            gradient=(float(s * rng.uniform(-0.15, 0.15)), float(s * rng.uniform(-0.15, 0.15))),
            noise_sigma=float(rng.uniform(1.0, 1.0 + 3.0 * s)),
        )


@dataclass
class PartSpec:
    """One tray to draw: look, pose on a horizontal plane (metres / rad), defects and seed."""

    appearance: ProductAppearance
    x: float
    y: float
    yaw: float = 0.0
    defects: Sequence[str | Defect] = field(default_factory=tuple)
    seed: int = 0
    z: float = 0.0

    def defect_list(self) -> list[Defect]:
        return [d if isinstance(d, Defect) else Defect(kind=d) for d in self.defects]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- calibration
def make_top_down_calibration(width: int, height: int, mm_per_px: float,
                              centre_xy: tuple[float, float] = (0.0, 0.0),
                              height_m: float = 1.0) -> CameraCalibration:
    """A pinhole camera at ``height_m`` above the plane z = 0 looking straight down.

    Image +u runs along cell +x, image +v along cell -y.  ``mm_per_px`` holds
    on the plane z = 0 (objects above it look slightly larger).
    """
    if width <= 0 or height <= 0 or mm_per_px <= 0 or height_m <= 0:
        raise ValueError("width, height, mm_per_px and height_m must be positive")
    f = height_m * 1000.0 / mm_per_px
    K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[:3, :3] = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
    T[:3, 3] = [centre_xy[0], centre_xy[1], height_m]
    return CameraCalibration(K=K, dist=np.zeros(5), T_cell_cam=T, width=int(width), height=int(height))


_CAL_CACHE: "OrderedDict[int, tuple]" = OrderedDict()


def _cal_inverse(cal: CameraCalibration) -> tuple[np.ndarray, np.ndarray]:
    """(inverse camera pose, K) of ``cal``, inverted once per calibration.

    The cache entry is checked against the calibration's current matrices (they
    are mutable arrays) by their raw bytes, which is much cheaper per frame than
    ``np.array_equal``; a mismatch only means recomputing from the current values.
    """
    T = np.asarray(cal.T_cell_cam, dtype=float)
    K = np.asarray(cal.K, dtype=float)
    hit = _CAL_CACHE.get(id(cal))
    if hit is None or hit[0] is not cal or hit[1] != T.tobytes() or hit[2] != K.tobytes():
        hit = (cal, T.tobytes(), K.tobytes(), np.linalg.inv(T), np.array(K))
        _lru_put(_CAL_CACHE, id(cal), hit, 16)
    return hit[3], hit[4]


def _project(t_cam_cell: np.ndarray, K: np.ndarray, x: float, y: float, z: float) -> tuple[float, float]:
    """``cal.plane_to_pixel`` with the camera pose already inverted (same arithmetic)."""
    uvw = K @ (t_cam_cell @ np.array([x, y, z, 1.0]))[:3]
    return float(uvw[0] / uvw[2]), float(uvw[1] / uvw[2])


def _local_affine(cal: CameraCalibration, x: float, y: float, z: float, yaw: float) -> tuple[np.ndarray, float]:
    """2×3 affine taking tray-frame millimetres (x along long axis, y across) to pixels; and px/mm.

    The Jacobian is taken by projecting points 10 mm along the tray's axes; the
    differences are plain float arithmetic (what the element-wise numpy version
    computed, without its per-call overhead).
    """
    c, s = math.cos(yaw), math.sin(yaw)
    t_cam_cell, K = _cal_inverse(cal)
    u0, v0 = _project(t_cam_cell, K, x, y, z)
    d = 0.01  # 10 mm steps for the Jacobian
    ux, vx = _project(t_cam_cell, K, x + d * c, y + d * s, z)
    uy, vy = _project(t_cam_cell, K, x - d * s, y + d * c, z)
    step = d * 1000.0
    jx0, jx1 = (ux - u0) / step, (vx - v0) / step
    jy0, jy1 = (uy - u0) / step, (vy - v0) / step
    A = np.array([[jx0, jy0, u0], [jx1, jy1, v0]])
    ppm = math.sqrt(abs(jx0 * jy1 - jx1 * jy0))
    return A, ppm


def part_pose_px(part: PartSpec, calibration: CameraCalibration) -> tuple[float, float, float]:
    """Ground-truth image pose (cx, cy, angle_deg) of a part: centre pixel and direction of its +x axis."""
    A, _ = _local_affine(calibration, part.x, part.y, part.z, part.yaw)
    return float(A[0, 2]), float(A[1, 2]), float(math.degrees(math.atan2(A[1, 0], A[0, 0])))


# --------------------------------------------------------------------------- caches
_PRODUCT_CACHE: "OrderedDict[tuple, dict]" = OrderedDict()
_SPRITE_CACHE: "OrderedDict[tuple, tuple[np.ndarray, np.ndarray]]" = OrderedDict()
_BG_CACHE: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_NOISE_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
_SPRITE_CACHE_MAX = 256


def clear_caches() -> None:
    _PRODUCT_CACHE.clear()
    _SPRITE_CACHE.clear()
    _BG_CACHE.clear()
    _NOISE_CACHE.clear()
    _CAL_CACHE.clear()


def _lru_put(cache: OrderedDict, key, value, maxlen: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > maxlen:
        cache.popitem(last=False)


def _shape_mask(shape: str, w: int, h: int, inset: float, radius: float, ppm: float, ox: float, oy: float,
                L: float, W: float) -> np.ndarray:
    """Anti-aliased float32 mask (h, w) of the tray outline inset by ``inset`` mm."""
    sub = 4  # sub-pixel precision for cv2 drawing (shift=2)
    m = np.zeros((h, w), np.uint8)
    hl, hw = L / 2 - inset, W / 2 - inset
    if hl <= 0 or hw <= 0:
        return m.astype(np.float32)
    cx, cy = ox, oy
    if shape == "ellipse":
        cv2.ellipse(m, (int(cx * sub), int(cy * sub)), (int(hl * ppm * sub), int(hw * ppm * sub)), 0, 0, 360,
                    255, -1, cv2.LINE_AA, 2)
    else:
        r = max(0.0, min(radius - inset, hl, hw)) * ppm
        x0, x1 = cx - hl * ppm, cx + hl * ppm
        y0, y1 = cy - hw * ppm, cy + hw * ppm
        pts = []
        if r < 0.5:
            pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        else:
            for (ccx, ccy, a0) in ((x1 - r, y0 + r, -90), (x1 - r, y1 - r, 0), (x0 + r, y1 - r, 90), (x0 + r, y0 + r, 180)):
                for a in np.linspace(a0, a0 + 90, 8):
                    pts.append((ccx + r * math.cos(math.radians(a)), ccy + r * math.sin(math.radians(a))))
        cv2.fillPoly(m, [np.round(np.array(pts) * sub).astype(np.int32)], 255, cv2.LINE_AA, 2)
    return m.astype(np.float32) / 255.0


def _tint(img: np.ndarray, app: ProductAppearance) -> np.ndarray:
    a = app.film_alpha
    if a <= 0:
        return img
    t = np.array(app.film_tint, np.float32)
    return np.clip(img.astype(np.float32) * (1 - a) + t * a, 0, 255).astype(np.uint8)


def _contents_bank(app: ProductAppearance, w: int, h: int, ppm: float, rng: np.random.Generator) -> np.ndarray:
    """A contents texture of size (h, w) — crops of it fill each tray."""
    base = np.array(app.contents_base, np.float32)
    cols = np.array(app.contents_colors, np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    # low-frequency shading of the base (sauce / juice)
    lf = cv2.resize(rng.normal(0, 1, (max(2, h // 40), max(2, w // 40))).astype(np.float32), (w, h),
                    interpolation=cv2.INTER_CUBIC)
    img *= (1.0 + 0.12 * lf)[..., None]
    piece = max(2.0, app.piece_mm * ppm)
    if app.contents_kind == "pieces":
        n = int(2.2 * w * h / (piece * piece))
        for _ in range(n):
            c = cols[rng.integers(len(cols))] * rng.uniform(0.8, 1.15)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            ax = piece * rng.uniform(0.3, 0.75)
            ay = ax * rng.uniform(0.35, 1.0)
            ang = rng.uniform(0, 180)
            cv2.ellipse(img, (int(cx), int(cy)), (int(ax) + 1, int(ay) + 1), ang, 0, 360,
                        tuple(float(v) * 0.65 for v in c), -1, cv2.LINE_AA)
            cv2.ellipse(img, (int(cx), int(cy)), (max(1, int(ax * 0.85)), max(1, int(ay * 0.8))), ang, 0, 360,
                        tuple(float(v) for v in c), -1, cv2.LINE_AA)
            if rng.random() < 0.5:
                hx = int(cx + ax * 0.3 * math.cos(math.radians(ang + 200)))
                hy = int(cy + ay * 0.3 * math.sin(math.radians(ang + 200)))
                cv2.ellipse(img, (hx, hy), (max(1, int(ax * 0.3)), max(1, int(ay * 0.2))), ang, 0, 360,
                            tuple(float(min(255, v * 1.35 + 20)) for v in c), -1, cv2.LINE_AA)
    elif app.contents_kind == "granular":
        grain = max(1.5, piece * 0.3)
        n = int(2.5 * w * h / (grain * grain))
        xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
        ci = rng.integers(len(cols), size=n)
        sh = rng.uniform(0.75, 1.2, n)
        for x, y, k, s in zip(xs, ys, ci, sh):
            cv2.ellipse(img, (int(x), int(y)), (max(1, int(grain)), max(1, int(grain * 0.6))),
                        float((x * 37 + y * 11) % 180), 0, 360, tuple(float(v) * s for v in cols[k]), -1)
        # a few larger toppings
        for _ in range(int(0.15 * w * h / (piece * piece))):
            c = cols[rng.integers(len(cols))]
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), max(2, int(piece * 0.4)),
                       tuple(float(v) * 0.8 for v in c), -1, cv2.LINE_AA)
    else:  # smooth sauce with swirls and a few chunks
        for k in range(len(cols)):
            f = cv2.resize(rng.normal(0, 1, (max(2, h // 25), max(2, w // 25))).astype(np.float32), (w, h),
                           interpolation=cv2.INTER_CUBIC)
            m = np.clip((f - 0.9) * 2.0, 0, 1)[..., None]
            if k == len(cols) - 1:
                continue
            img = img * (1 - m) + cols[k] * m
        for _ in range(int(0.5 * w * h / (piece * piece))):
            c = cols[-1] * rng.uniform(0.85, 1.1)
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            ax = piece * rng.uniform(0.25, 0.5)
            cv2.ellipse(img, (int(cx), int(cy)), (int(ax) + 1, int(ax * rng.uniform(0.5, 1.0)) + 1),
                        rng.uniform(0, 180), 0, 360, tuple(float(v) for v in c), -1, cv2.LINE_AA)
    img += rng.normal(0, 4.0, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), max(0.4, 0.12 * ppm))
    return _tint(np.clip(img, 0, 255).astype(np.uint8), app)


def _label_art(app: ProductAppearance, ppm: float, rng: np.random.Generator) -> np.ndarray:
    lab = app.label
    # the label's long printed axis runs across the tray (text reads across), size (h=length along x)
    lw = max(4, int(round(lab.length_mm * ppm)))   # along tray x -> image columns
    lh = max(4, int(round(lab.width_mm * ppm)))    # along tray y -> image rows
    img = np.empty((lh, lw, 3), np.uint8)
    img[:] = lab.color
    band = max(1, int(0.22 * lh))
    img[:band] = lab.band_color
    # logo disc on the band
    cv2.circle(img, (int(0.18 * lw), band // 2), max(1, int(0.35 * band)), lab.color, -1, cv2.LINE_AA)
    # text-like lines
    if lab.stripes:
        y0, y1 = band + max(1, int(0.08 * lh)), int(0.72 * lh)
        step = (y1 - y0) / lab.stripes
        th = max(1, int(step * 0.4))
        for i in range(lab.stripes):
            y = int(y0 + i * step)
            x = int(0.08 * lw)
            x_end = int(lw * rng.uniform(0.6, 0.92))
            while x < x_end:
                wlen = int(lw * rng.uniform(0.05, 0.16))
                cv2.rectangle(img, (x, y), (min(x + wlen, x_end), y + th), lab.ink_color, -1)
                x += wlen + max(1, int(0.025 * lw))
    # barcode
    bx0, by0, by1 = int(0.08 * lw), int(0.78 * lh), int(0.94 * lh)
    x = bx0
    while x < int(0.6 * lw):
        bw = int(rng.integers(1, 3)) * max(1, int(0.008 * lw))
        cv2.rectangle(img, (x, by0), (x + bw - 1, by1), lab.ink_color, -1)
        x += bw + int(rng.integers(1, 3)) * max(1, int(0.008 * lw))
    cv2.rectangle(img, (0, 0), (lw - 1, lh - 1), tuple(int(v * 0.85) for v in lab.color), 1)
    return _tint(img, app)


def _product_assets(app: ProductAppearance, ppm: float) -> dict:
    key = (id(app), app.name, round(ppm, 3))
    hit = _PRODUCT_CACHE.get(key)
    if hit is not None and hit["app"] is app:
        return hit
    rng = np.random.default_rng(_stable_seed(app.name))
    L, W = app.length_mm, app.width_mm
    margin_mm = 5.0
    w = int(math.ceil((L + 2 * margin_mm) * ppm)) | 1
    h = int(math.ceil((W + 2 * margin_mm) * ppm)) | 1
    ox, oy = (w - 1) / 2.0, (h - 1) / 2.0
    outer = _shape_mask(app.shape, w, h, 0.0, app.corner_radius_mm, ppm, ox, oy, L, W)
    well = _shape_mask(app.shape, w, h, app.rim_mm, app.corner_radius_mm, ppm, ox, oy, L, W)
    floor = _shape_mask(app.shape, w, h, app.rim_mm + app.wall_mm, app.corner_radius_mm, ppm, ox, oy, L, W)
    tc = np.array(app.tray_color, np.float32)
    body = np.empty((h, w, 3), np.float32)
    # flange: slightly brighter (film bonded, catches light); wall: shaded; floor: darker
    lum = 0.5 * (tc.mean() / 255.0)
    flange = np.clip(tc * 1.08 + 12, 0, 255)
    wall = tc * (0.8 - 0.1 * lum)
    floorc = tc * (0.7 - 0.1 * lum)
    body[:] = flange
    body = body * (1 - well[..., None]) + wall * well[..., None]
    body = body * (1 - floor[..., None]) + floorc * floor[..., None]
    # a thin embossed line along the flange centre
    mid = _shape_mask(app.shape, w, h, app.rim_mm * 0.5, app.corner_radius_mm, ppm, ox, oy, L, W)
    edge = cv2.Laplacian(mid, cv2.CV_32F)
    body += (np.abs(edge) > 0.15)[..., None] * 10.0
    body += rng.normal(0, 1.5, body.shape).astype(np.float32)
    body = _tint(np.clip(body, 0, 255).astype(np.uint8), app)
    # shadow: blurred outline shifted by (2 mm, 2 mm)
    sh = cv2.GaussianBlur(outer, (0, 0), max(0.5, 1.5 * ppm))
    M = np.float32([[1, 0, 2.0 * ppm], [0, 1, 2.0 * ppm]])
    sh = cv2.warpAffine(sh, M, (w, h))
    alpha = np.maximum(outer, 0.45 * sh * (1 - outer)).astype(np.float32)
    # gloss streak: a broad diagonal band of added brightness on the film
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = ((xx - 0.3 * w) * 0.6 + (yy - 0.2 * h) * 0.8) / max(1.0, 0.12 * w)
    gloss = (app.gloss * 70.0 * np.exp(-d * d) * outer).astype(np.float32)
    gloss = np.clip(gloss, 0, 255).astype(np.uint8)
    # distance-into-well field for fill masks
    wbin = (floor > 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(wbin, cv2.DIST_L2, 3)
    dist = dist / max(1e-6, float(dist.max()))
    bank_w = int(w * 1.4) + 8
    bank_h = int(h * 1.4) + 8
    bank = _contents_bank(app, bank_w, bank_h, ppm, rng)
    label = _label_art(app, ppm, rng)
    # ---- per-product precomputations that keep the per-part sprite cheap (same results as computing
    # them per part): quantile sample indices, the cubic upsampling of the fill noise as two matrices,
    # the 3-channel gloss, premultiplication tables and the point sets defects are placed in
    # resizing an identity matrix along one axis only (the other is an exact 1:1 pass) gives the weights
    rx = cv2.resize(np.eye(7, dtype=np.float32), (w, 7), interpolation=cv2.INTER_CUBIC)   # (7, w)
    ry = cv2.resize(np.eye(5, dtype=np.float32), (5, h), interpolation=cv2.INTER_CUBIC)   # (h, 5)
    a8 = np.clip(np.round(alpha * 255.0), 0, 255).astype(np.uint8)
    # the contents are only ever drawn on the well floor: the fill field, mask, crop and shaded edge are
    # worked out in the floor's bounding box (2 px of margin keep the 3x3 morphology as on the whole
    # sprite), with the inputs above cut to it once here
    fys, fxs = np.nonzero(wbin)
    if len(fys):
        r0, r1 = max(0, int(fys.min()) - 2), min(h, int(fys.max()) + 3)
        c0, c1 = max(0, int(fxs.min()) - 2), min(w, int(fxs.max()) + 3)
    else:
        r0, r1, c0, c1 = 0, h, 0, w
    fin = np.s_[r0:r1, c0:c1]
    band = cv2.erode(((outer > 0.9) & (well < 0.1)).astype(np.uint8), np.ones((3, 3), np.uint8))
    by_, bx_ = np.nonzero(band)
    oy_, ox_ = np.nonzero(outer > 0.9)
    assets = dict(w=w, h=h, ox=ox, oy=oy, ppm=ppm, body=body, alpha=alpha, gloss=gloss,
                  outer=outer, well=well, floor=floor, floor_bin=wbin.astype(bool), dist=dist,
                  bank=bank, label=label, xx=xx, yy=yy, app=app,
                  nf_ry=np.ascontiguousarray(ry), nf_rx=np.ascontiguousarray(rx),
                  gloss3=cv2.merge([gloss] * 3), alpha3=cv2.merge([a8] * 3), inv_alpha=255 - a8,
                  flange_u8=((outer > 0.5) & (well < 0.5)).astype(np.uint8),
                  band_pts=(bx_, by_), outer_pts=(ox_, oy_),
                  label_full=np.full(label.shape[:2], 255, np.uint8),
                  fin=(r0, r1, c0, c1), fin_ry=np.ascontiguousarray(ry[r0:r1]),
                  fin_rx=np.ascontiguousarray(rx[:, c0:c1]), fin_dist=np.ascontiguousarray(dist[fin]),
                  fin_floor=np.ascontiguousarray(wbin[fin].astype(bool)),
                  fin_idx=np.flatnonzero(wbin[fin])[::7], fin_xx=xx[fin], fin_yy=yy[fin])
    _lru_put(_PRODUCT_CACHE, key, assets, 16)
    return assets


def _stable_seed(s: str) -> int:
    h = 2166136261
    for ch in s.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


# --------------------------------------------------------------------------- sprite
def _sev(d: Defect, rng: np.random.Generator) -> float:
    return float(d.severity) if d.severity is not None else float(rng.uniform(0.0, 1.0))


def _rand_point_in(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return mask.shape[1] // 2, mask.shape[0] // 2
    i = int(rng.integers(len(xs)))
    return int(xs[i]), int(ys[i])


def _rand_point_from(pts: tuple[np.ndarray, np.ndarray], shape: tuple, rng: np.random.Generator) -> tuple[int, int]:
    """``_rand_point_in`` for a mask whose nonzero (xs, ys) were listed beforehand."""
    xs, ys = pts
    if len(xs) == 0:
        return shape[1] // 2, shape[0] // 2
    i = int(rng.integers(len(xs)))
    return int(xs[i]), int(ys[i])


_K3 = np.ones((3, 3), np.uint8)


def _quantile(vals: np.ndarray, q: float) -> float:
    """``float(np.quantile(vals, q))`` (default 'linear' method) without its overhead."""
    n = vals.size
    vi = n * q + (1.0 + q * -1.0) - 1.0          # numpy's virtual index for alpha = beta = 1
    lo = min(max(int(math.floor(vi)), 0), n - 1)
    hi = min(lo + 1, n - 1)
    part = np.partition(vals, (lo, hi)) if hi != lo else np.partition(vals, lo)
    a, b = part[lo], part[hi]
    t = vi - math.floor(vi)
    d = b - a
    r = b - d * (1 - t) if t >= 0.5 else a + d * t
    return float(r)


def _warp_label_into(spr: np.ndarray, label: np.ndarray, lab_M: np.ndarray) -> None:
    """``cv2.warpAffine(label, lab_M, ..., dst=spr, BORDER_TRANSPARENT)``, done on less of the sprite.

    Only the rows the label covers, and the columns up to its right end, are
    warped (nothing else changes anyway).  A band of rows starting at column 0
    keeps OpenCV's fixed-point source coordinates, hence the pixels, as for the
    whole sprite; a band starting further right would not, so the left part stays.
    """
    h, w = spr.shape[:2]
    lh, lw = label.shape[:2]
    cs = np.array([[0, 0, 1], [lw, 0, 1], [0, lh, 1], [lw, lh, 1]], float) @ lab_M.T
    y0 = max(0, int(math.floor(cs[:, 1].min())) - 2)
    y1 = min(h, int(math.ceil(cs[:, 1].max())) + 3)
    x1 = min(w, int(math.ceil(cs[:, 0].max())) + 3)
    if y1 > y0 and x1 > 0:
        Ml = lab_M.copy()
        Ml[1, 2] -= y0
        cv2.warpAffine(label, Ml, (x1, y1 - y0), dst=spr[y0:y1, :x1], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_TRANSPARENT)


def _render_sprite(app: ProductAppearance, defects: list[Defect], seed: int, ppm: float) -> tuple[np.ndarray, np.ndarray]:
    a = _product_assets(app, ppm)
    rng = np.random.default_rng(seed)
    w, h = a["w"], a["h"]
    kinds = {d.kind: d for d in defects}
    spr = a["body"].copy()
    # ---- contents fill mask (in the floor's box ``fin``; nothing outside it changes)
    r0, r1, c0, c1 = a["fin"]
    fill = app.fill_fraction * float(rng.uniform(0.97, 1.02))
    # bicubic upsampling of a 5x7 noise grid to (h, w), as the two separable passes of cv2.resize
    # (einsum, not matmul: a multi-threaded BLAS wakes its threads for this and costs milliseconds)
    field_ = np.einsum("ik,kj->ij", a["fin_ry"],
                       np.einsum("ik,kj->ij", rng.normal(0, 1, (5, 7)).astype(np.float32), a["fin_rx"]))
    field_ *= 0.07
    field_ += a["fin_dist"]
    if "underfill" in kinds:
        s = _sev(kinds["underfill"], rng)
        fill = fill * (0.62 - 0.3 * s)                     # 32 % .. 62 % of nominal
        ang = rng.uniform(0, 2 * math.pi)                   # contents slid towards one side
        field_ = field_ + 0.5 * ((a["fin_xx"] - a["ox"]) * math.cos(ang) + (a["fin_yy"] - a["oy"]) * math.sin(ang)) / w
    fb = a["floor_bin"]
    thr = _quantile(field_.ravel()[a["fin_idx"]], 1.0 - min(1.0, fill)) if fill < 1.0 else -1e9
    cmask_in = ((field_ > thr) & a["fin_floor"]).astype(np.uint8)
    bank = a["bank"]
    bx = int(rng.integers(0, bank.shape[1] - w + 1))
    by = int(rng.integers(0, bank.shape[0] - h + 1))
    flip = int(rng.integers(-1, 3))
    # the crop's part that lands in the box (for a flipped crop: the mirrored part, then flipped)
    y0, y1 = (h - r1, h - r0) if flip in (0, -1) else (r0, r1)
    x0, x1 = (w - c1, w - c0) if flip in (1, -1) else (c0, c1)
    crop = bank[by + y0:by + y1, bx + x0:bx + x1]
    if flip != 2:
        crop = cv2.flip(crop, flip)
    spr_in = spr[r0:r1, c0:c1]
    cv2.copyTo(crop, cmask_in, spr_in)
    # soft edge of contents (shadowed border)
    edge = cv2.morphologyEx(cmask_in, cv2.MORPH_GRADIENT, _K3)
    cv2.copyTo(cv2.convertScaleAbs(spr_in, alpha=0.75, beta=-0.499), edge, spr_in)   # int(v * 0.75)
    # ---- label pose (drawn after the contents and any foreign body, but decided first: a foreign body is
    # only placed where the label does not hide it)
    lab_M = None
    if "missing_label" not in kinds:
        lab = a["label"]
        lh, lw = lab.shape[:2]
        ang = float(rng.normal(0, 0.6))
        dx = float(rng.normal(0, 0.8)) * ppm
        dy = float(rng.normal(0, 0.8)) * ppm
        if "skewed_label" in kinds:
            s = _sev(kinds["skewed_label"], rng)
            ang = float(rng.choice([-1, 1])) * (7.0 + 13.0 * s)   # 7 .. 20 degrees
            dx += float(rng.normal(0, 2.0)) * ppm
            dy += float(rng.normal(0, 2.0)) * ppm
        cx = a["ox"] + app.label.offset_mm * ppm + dx
        cy = a["oy"] + dy
        lab_M = cv2.getRotationMatrix2D(((lw - 1) / 2.0, (lh - 1) / 2.0), ang, 1.0)
        lab_M[0, 2] += cx - (lw - 1) / 2.0
        lab_M[1, 2] += cy - (lh - 1) / 2.0
    # ---- a foreign body lies on the contents where the camera can see it (not under the label)
    if "foreign_body" in kinds:
        s = _sev(kinds["foreign_body"], rng)
        size = (4.0 + 7.0 * s) * ppm                        # 4 .. 11 mm across
        r_px = max(1, int(math.ceil(size / 2)))
        ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r_px + 1, 2 * r_px + 1))
        cmask = np.zeros((h, w), np.uint8)
        cmask[r0:r1, c0:c1] = cmask_in
        free = cmask if cmask.any() else fb.astype(np.uint8)
        if lab_M is not None:
            lmask = cv2.warpAffine(a["label_full"], lab_M, (w, h), flags=cv2.INTER_NEAREST)
            free = free & (cv2.dilate(lmask, ker) == 0).astype(np.uint8)
        ok = cv2.erode(free.astype(np.uint8), ker)          # the whole body on visible contents
        if not ok.any():
            ok = free.astype(np.uint8)
        if not ok.any():
            ok = fb.astype(np.uint8)
        cx, cy = _rand_point_in(ok, rng)
        style = int(rng.integers(3))
        col = [(150, 60, 20), (20, 20, 20), (170, 170, 165)][style]  # blue plastic, black rubber, metal
        n = int(rng.integers(5, 8))
        angs = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = size / 2 * rng.uniform(0.75, 1.0, n)
        pts = np.stack([cx + rad * np.cos(angs), cy + rad * np.sin(angs) * rng.uniform(0.6, 1.0)], 1)
        cv2.fillPoly(spr, [np.round(pts).astype(np.int32)], col, cv2.LINE_AA)
        cv2.polylines(spr, [np.round(pts).astype(np.int32)], True, tuple(int(c * 0.6) for c in col), 1, cv2.LINE_AA)
        cv2.circle(spr, (int(cx - size * 0.15), int(cy - size * 0.15)), max(1, int(size * 0.12)),
                   tuple(min(255, int(c * 1.5) + 40) for c in col), -1, cv2.LINE_AA)
    # ---- label
    if lab_M is not None:
        _warp_label_into(spr, a["label"], lab_M)
    # ---- film gloss
    cv2.add(spr, a["gloss3"], dst=spr)
    if "seal_contamination" in kinds:
        s = _sev(kinds["seal_contamination"], rng)
        pre = spr      # the visible seal band (flange) is the only place it can sit
        n = 1 + int(rng.integers(0, 3))
        for i in range(n):
            cx, cy = _rand_point_from(a["band_pts"], spr.shape, rng)
            size = (4.0 + 8.0 * s * rng.uniform(0.6, 1.0)) * ppm    # 4 .. 12 mm
            col = np.array(app.contents_colors[int(rng.integers(len(app.contents_colors)))], float)
            col = col * rng.uniform(0.6, 0.9)
            ov = spr.copy()
            cv2.ellipse(ov, (cx, cy), (max(1, int(size / 2)), max(1, int(size / 2 * rng.uniform(0.3, 0.8)))),
                        rng.uniform(0, 180), 0, 360, tuple(float(c) for c in col), -1, cv2.LINE_AA)
            for _ in range(int(rng.integers(2, 6))):   # droplets around
                cv2.circle(ov, (int(cx + rng.normal(0, size * 0.6)), int(cy + rng.normal(0, size * 0.6))),
                           max(1, int(size * rng.uniform(0.05, 0.15))), tuple(float(c) for c in col), -1, cv2.LINE_AA)
            spr = cv2.addWeighted(ov, 0.85, spr, 0.15, 0)
        spr = cv2.copyTo(spr, a["flange_u8"], pre)
    if "torn_film" in kinds:
        s = _sev(kinds["torn_film"], rng)
        length = (15.0 + 35.0 * s) * ppm                   # 15 .. 50 mm
        cx, cy = _rand_point_from(a["outer_pts"], spr.shape, rng)
        ang = rng.uniform(0, math.pi)
        n = 7
        t = np.linspace(-0.5, 0.5, n)
        jit = rng.normal(0, 0.06 * length, n)
        xs = cx + t * length * math.cos(ang) - jit * math.sin(ang)
        ys = cy + t * length * math.sin(ang) + jit * math.cos(ang)
        pts = np.round(np.stack([xs, ys], 1)).astype(np.int32)
        gap = max(2, int(1.5 * ppm * (0.6 + s)))
        bright = tuple(int(v) for v in np.clip(np.array(app.film_tint) * 0.95 + 10, 0, 255))
        off = np.array([-math.sin(ang), math.cos(ang)]) * gap
        cv2.polylines(spr, [np.round(pts + off).astype(np.int32)], False, bright, max(1, gap // 2 + 1), cv2.LINE_AA)
        cv2.polylines(spr, [pts], False, (15, 15, 15), gap, cv2.LINE_AA)
        cv2.polylines(spr, [np.round(pts - off * 0.8).astype(np.int32)], False, bright, max(1, gap // 3 + 1), cv2.LINE_AA)
        # wrinkles radiating from the tear
        for k in range(int(rng.integers(2, 5))):
            a2 = ang + rng.normal(math.pi / 2, 0.35)
            r0 = rng.uniform(-0.4, 0.4) * length
            sx, sy = cx + r0 * math.cos(ang), cy + r0 * math.sin(ang)
            ln = rng.uniform(0.2, 0.45) * length
            p1 = (int(sx), int(sy))
            p2 = (int(sx + ln * math.cos(a2)), int(sy + ln * math.sin(a2)))
            cv2.line(spr, p1, p2, bright, max(1, int(0.6 * ppm)), cv2.LINE_AA)
            cv2.line(spr, (p1[0] + 1, p1[1] + 1), (p2[0] + 1, p2[1] + 1), (40, 40, 40), max(1, int(0.4 * ppm)), cv2.LINE_AA)
    return spr, a["alpha"]


def _premultiplied(spr: np.ndarray, a: dict) -> np.ndarray:
    """(h, w, 4) uint8: colour premultiplied by alpha, then 255 - alpha (what the frame keeps)."""
    out = cv2.cvtColor(cv2.multiply(spr, a["alpha3"], scale=1.0 / 255.0), cv2.COLOR_BGR2BGRA)
    cv2.insertChannel(a["inv_alpha"], out, 3)
    return out


def _sprite(part: PartSpec, ppm: float) -> tuple[np.ndarray, float, float, float]:
    defects = part.defect_list()
    key = (id(part.appearance), part.appearance.name, tuple((d.kind, d.severity) for d in defects),
           int(part.seed), round(ppm, 3))
    hit = _SPRITE_CACHE.get(key)
    if hit is None:
        spr, _ = _render_sprite(part.appearance, defects, int(part.seed), ppm)
        hit = _premultiplied(spr, _product_assets(part.appearance, ppm))
        _lru_put(_SPRITE_CACHE, key, hit, _SPRITE_CACHE_MAX)
    a = _product_assets(part.appearance, ppm)
    return hit, a["ox"], a["oy"], ppm


# --------------------------------------------------------------------------- frame
def _belt(width: int, height: int, seed: int = 7) -> np.ndarray:
    key = (width, height, seed)
    hit = _BG_CACHE.get(key)
    if hit is not None:
        return hit
    rng = np.random.default_rng(seed)
    base = np.array([70, 78, 74], np.float32)   # grey-green PVC belt
    img = np.empty((height, width, 3), np.float32)
    img[:] = base
    fine = rng.normal(0, 5, (height, width)).astype(np.float32)
    fine = cv2.GaussianBlur(fine, (0, 0), 0.8)
    streak = cv2.resize(rng.normal(0, 4, (height, 1)).astype(np.float32), (width, height))  # along flow (x)
    blotch = cv2.resize(rng.normal(0, 4, (max(2, height // 64), max(2, width // 64))).astype(np.float32),
                        (width, height), interpolation=cv2.INTER_CUBIC)
    img += (fine + streak + blotch)[..., None]
    out = np.clip(img, 0, 255).astype(np.uint8)
    _lru_put(_BG_CACHE, key, out, 8)
    return out


def _noise(height: int, width: int, channels: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Cached sensor-noise field (positive and negative parts as uint8), larger than the frame."""
    key = (height, width, channels, sigma)
    n = _NOISE_CACHE.get(key)
    if n is None:
        shape = (height + 64, width + 64) + ((channels,) if channels > 1 else ())
        z = _NOISE_CACHE.get(shape)         # the unit field: every sigma scales the same draws
        if z is None:
            z = np.random.default_rng(12345).standard_normal(shape, dtype=np.float64).astype(np.float32)
            for k in [k for k in _NOISE_CACHE if len(k) != 4]:
                del _NOISE_CACHE[k]
            _NOISE_CACHE[shape] = z
        v = z * np.float32(sigma)
        n = (np.clip(v, 0, 255).round().astype(np.uint8), np.clip(-v, 0, 255).round().astype(np.uint8))
        if len(_NOISE_CACHE) > 16:
            _NOISE_CACHE.clear()
        _NOISE_CACHE[key] = n
    return n


def render_scene(parts: Sequence[PartSpec], calibration: CameraCalibration, *,
                 lighting: Lighting | None = None, rng: np.random.Generator | None = None,
                 image: np.ndarray | None = None, mono: bool = False, belt_seed: int = 7) -> np.ndarray:
    """Render ``parts`` as seen by ``calibration`` (size ``calibration.width × height``).

    ``image`` (optional) replaces the belt background (copied, not modified).
    ``rng`` drives the per-frame sensor noise offset only; a part's own look
    depends only on its seed, look, defects and the pixel scale.  Returns BGR
    ``uint8`` (H, W, 3), or (H, W) when ``mono``.
    """
    W, H = int(calibration.width), int(calibration.height)
    if image is not None:
        frame = np.array(image, dtype=np.uint8, copy=True)
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if frame.shape[:2] != (H, W):
            raise ValueError(f"background image is {frame.shape[1]}x{frame.shape[0]}, calibration {W}x{H}")
    else:
        frame = _belt(W, H, belt_seed).copy()
    for part in parts:
        A, ppm = _local_affine(calibration, part.x, part.y, part.z, part.yaw)
        spr4, ox, oy, sppm = _sprite(part, round(ppm, 2))
        # sprite px -> tray mm (sprite rows run along -y) -> image px
        S = np.array([[1.0 / sppm, 0.0, -ox / sppm], [0.0, -1.0 / sppm, oy / sppm], [0, 0, 1.0]])
        M = A @ S
        h, w = spr4.shape[:2]
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float) @ M.T
        x0 = max(0, int(math.floor(corners[:, 0].min())))
        y0 = max(0, int(math.floor(corners[:, 1].min())))
        x1 = min(W, int(math.ceil(corners[:, 0].max())) + 1)
        y1 = min(H, int(math.ceil(corners[:, 1].max())) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        Mr = M.copy()
        Mr[0, 2] -= x0
        Mr[1, 2] -= y0
        size = (x1 - x0, y1 - y0)
        # one warp of colour (premultiplied) and coverage together, then frame = colour + frame * (1 - alpha)
        w4 = cv2.warpAffine(spr4, Mr, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(0, 0, 0, 255))
        roi = frame[y0:y1, x0:x1]
        cv2.multiply(roi, cv2.cvtColor(cv2.extractChannel(w4, 3), cv2.COLOR_GRAY2BGR), dst=roi, scale=1.0 / 255.0)
        cv2.add(roi, cv2.cvtColor(w4, cv2.COLOR_BGRA2BGR), dst=roi)
    if mono:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if lighting is None:
        return frame
    return _apply_lighting(frame, lighting, rng if rng is not None else np.random.default_rng(0))


def _apply_lighting(frame: np.ndarray, li: Lighting, rng: np.random.Generator) -> np.ndarray:
    """uint8-only lighting pass (saturating OpenCV arithmetic, about 0.2 ms at 512×410)."""
    H, W = frame.shape[:2]
    ch = 1 if frame.ndim == 2 else 3
    gx, gy = li.gradient
    # 2x2 gain map (x128), bilinearly stretched to the frame: gain varies linearly across it
    g = np.array([[1 - gx / 2 - gy / 2, 1 + gx / 2 - gy / 2], [1 - gx / 2 + gy / 2, 1 + gx / 2 + gy / 2]],
                 np.float32) * li.gain * 128.0
    if ch == 3:   # (a float32 array times a Python float multiplies in float32, as here)
        small = g[..., None] * np.array(li.channel_gain, np.float32)
    else:
        small = g * float(np.mean(li.channel_gain))
    gmap = cv2.resize(np.clip(small, 0, 255).astype(np.uint8), (W, H), interpolation=cv2.INTER_LINEAR)
    out = cv2.multiply(frame, gmap, dst=frame, scale=1.0 / 128.0)   # the frame is ours: in place
    if li.noise_sigma > 0:
        pos, neg = _noise(H, W, ch, round(li.noise_sigma * 2) / 2)
        oy, ox = int(rng.integers(0, 64)), int(rng.integers(0, 64))
        cv2.add(out, pos[oy:oy + H, ox:ox + W], dst=out)
        cv2.subtract(out, neg[oy:oy + H, ox:ox + W], dst=out)
    off = int(round(li.offset))
    if off:
        s = (abs(off),) * 4
        (cv2.add if off > 0 else cv2.subtract)(out, s, dst=out)
    return out


# --------------------------------------------------------------------------- dataset
def generate_dataset(out_dir: str | Path, product: str | ProductAppearance, n_good: int, n_per_defect: int,
                     size: tuple[int, int] = (1280, 1024), seed: int = 0, *, mm_per_px: float | None = None,
                     defect_kinds: Sequence[str] = DEFECT_KINDS, pose_jitter_mm: float = 20.0,
                     yaw_range_deg: float = 180.0, lighting_strength: float = 1.0, mono: bool = False,
                     ext: str = ".png") -> dict:
    """Write ``n_good`` good and ``n_per_defect`` defective images per kind, plus ``labels.json``.

    ``labels.json`` maps each image file name to ``{"defective", "defects",
    "pose_px": [cx, cy, angle_deg], "pose": [x, y, yaw], "seed"}`` and carries
    the product and calibration.  Returns that dict.
    """
    app = get_product(product) if isinstance(product, str) else product
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    W, H = size
    if mm_per_px is None:  # fit the tray's diagonal plus jitter in the short image side
        diag = math.hypot(app.length_mm, app.width_mm)
        mm_per_px = (diag + 2 * pose_jitter_mm + 20.0) / min(W, H)
    cal = make_top_down_calibration(W, H, mm_per_px, (0.0, 0.0), 1.0)
    rng = np.random.default_rng(seed)
    jobs: list[list[str]] = [[] for _ in range(n_good)]
    for k in defect_kinds:
        if k not in DEFECT_KINDS:
            raise ValueError(f"unknown defect kind {k!r}; known: {', '.join(DEFECT_KINDS)}")
        jobs += [[k] for _ in range(n_per_defect)]
    labels: dict = {}
    for i, kinds in enumerate(jobs):
        j = pose_jitter_mm / 1000.0
        part = PartSpec(app, x=float(rng.uniform(-j, j)), y=float(rng.uniform(-j, j)),
                        yaw=float(math.radians(rng.uniform(-yaw_range_deg, yaw_range_deg))),
                        defects=list(kinds), seed=int(rng.integers(1 << 31)))
        li = Lighting.random(rng, lighting_strength)
        img = render_scene([part], cal, lighting=li, rng=rng, mono=mono)
        name = f"{app.name}_{i:04d}_{'good' if not kinds else kinds[0]}{ext}"
        cv2.imwrite(str(out / name), img)
        labels[name] = {"defective": bool(kinds), "defects": list(kinds),
                        "pose_px": list(part_pose_px(part, cal)), "pose": [part.x, part.y, part.yaw],
                        "seed": part.seed}
    meta = {"product": app.model_dump(mode="json"), "size": [W, H], "mm_per_px": mm_per_px,
            "images": labels}
    (out / "labels.json").write_text(json.dumps(meta, indent=1))
    return meta
