"""The inspector: localise → orient → align (sub-pixel) → anomaly maps + rules → verdict.

Usage::

    insp = Inspector().fit(good_images, rules=ProductRules(...))   # ~40 good images; rules optional
    res = insp.inspect(image)        # InspectionResult
    insp.save("model.npz"); Inspector.load("model.npz")

Pipeline (all generic, nothing is specific to the simulator's trays):

1. *Localise*: the part is the largest blob unlike the belt (belt colour
   learned from the goods' surroundings), pose from ``minAreaRect``.
2. *Orient*: the 180° / 90° / free-angle ambiguity is resolved by correlating a
   lighting-normalised thumbnail with the goods' mean thumbnail.
3. *Align*: inverse-compositional Lucas–Kanade (translation + rotation) on a
   half-resolution grey view against the goods' mean, so the per-position
   models compare like with like to a fraction of a pixel.
4. *Photometric alignment*: per-channel gain, offset and gain gradient fitted
   on the part's stable pixels (see :class:`~.anomaly.PhotoNorm`).
5. *Anomaly maps* (pixel z-score, regional colour novelty, patch texture NN,
   compact-blob novelty, and spots or thin lines darker than the goods' darkest
   there), each divided by a scale learned from out-of-fold good images;
   the score is the maximum of the combined map, the threshold comes from the
   out-of-fold good scores only (no defect samples needed).
6. *Rules* (label present / straight, fill, size) learned from the goods, with
   an optional :class:`~.rules.ProductRules` config; the label box is found
   automatically when none is configured.  Anomalous regions are named by
   where and how they appear (label, seal band, well; blob or line).

A frame with no part gives ``part_found=False``, ``pose_px=None``,
``defective=True`` and ``defects=["no_part"]``.  A part cut by the image border
gets ``"part_truncated"`` added to its defects.  Bad inputs (not an image,
empty, wrong size for the model, unfitted model) raise :class:`InspectionError`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .anomaly import (CELL, ColourModel, DarkSpots, PhotoNorm, PixelModel, ZoneColour, box_mean, cell_features,
                      colour_codes, coreset, gumbel_level,
                      gather_bank, max_pool2, nn_dist, blob_bank as make_blob_bank, blob_candidates,
                      blob_index, blob_novelty, paint_blobs, BLOB_DIM)
from .localise import Blob, InspectionError, as_bgr, find_part, warp_matrix
from .rules import LabelMatcher, ProductRules, angle_wrap, floor_like, part_to_canon_box

__all__ = ["Inspector", "InspectionResult", "InspectionError", "draw_overlay", "identify", "MODEL_VERSION"]

#: 19 and 20 read with this version's segmentation and frame-edge handling, and their size rule as fitted
#: (19: no surroundings arrays, the views keep their own)
READABLE_VERSIONS = (19, 20, 21)
# 21: goods cut by the frame's edge (overhang_px), shadows (shadow), the size rule's spreads (aspect_spread);
# 20: the part's surroundings replaced by the goods' median; 19: the maps' tail levels never below the old
# scale; 18: each map scaled to its goods' fitted tail level (MAP_TAIL_P)
MODEL_VERSION = 21
LK_SCALE_FROM = 0.02      # the aligner also fits scale when the goods' outlines disagree on size by more than this (sd)
#: pixels outside the part's outline that still show the frame's own view (see fit: the surroundings)
EXT_GAP = 2
#: shades of the belt count as belt (shadows) when that leaves the goods' outlines' size spread below this share
SHADOW_GAIN = 0.8
MARGIN = 0.04            # canonical view margin around the part (fraction of each side)
SEG_LONG = 200           # segmentation works on the first pyramid level with long side ≤ this
COLOUR_GRID = 16         # colour-novelty regions along the part's long side (where the goods repeat)
COLOUR_POOL_GRID = 8     # pooled colour zones along the long side (where the goods vary: random contents)
FINE = 2                 # the colour / small-object channel runs at FINE × the canonical resolution
_K3 = np.ones((3, 3), np.uint8)
_S_FINE = np.array([[1.0 / FINE, 0.0, 0.5 / FINE - 0.5], [0.0, 1.0 / FINE, 0.5 / FINE - 0.5], [0.0, 0.0, 1.0]])
MAP_NAMES = ("pixel", "colour", "texture", "blob", "dark")
N_MAPS = len(MAP_NAMES)
# per-map smoothing (canonical px) of the per-position scale, and its floor
MAP_SIG = (1.5, 4.0, 1.5, None, None)     # None: one scale for the whole part (sparse map)
# dark: 6 lightness units (8-bit Lab, about 2.4 L*) below the goods' darkest spot is the least that counts as 1 on
# the map, however close the out-of-fold goods stay to the bound (the bound already sits at or below the darkest
# good; the floor covers noise and photometric error: with 8, no good of about 2,300 in three cell-audit hours came
# within it, and 4 gave a false reject at a round bowl's contents edge in bench/vision_generality.py)
MAP_FLOOR = (1.0, 1.0, 0.0, 0.0, 6.0)
# extra headroom of a map's scale over its out-of-fold goods (on top of the threshold margin): the blob map's
# scale is one image-level maximum (no per-position statistics), so its tail is the least certain
MAP_HEADROOM = (1.0, 1.0, 1.0, 1.04, 1.04)
# per-region sensitivity: each map is re-normalised in the seal band (a thin, plain region where the goods agree
# closely) to the level an out-of-fold good exceeds with probability REGION_P (a Gumbel tail fitted to the goods'
# per-image maxima there), gaining at most 1 / REGION_FLOOR.  The label box is left alone: the label floats on the
# tray, so its statistics from ~40 goods are heavy-tailed misregistration and a sharper label gave false rejects.
REGION_P = 0.001
SPARSE_P = 0.01         # sparse maps (blob, dark): tail level of the out-of-fold goods that sets the scale
REGION_FLOOR = (0.5, 1.0, 0.5, 0.5, 1.0)
# each map's 1 is where an out-of-fold good exceeds it with this probability (Gumbel tail of the goods' per-image
# maxima; see _map_tail_levels); the threshold sits at 1 × the margin
MAP_TAIL_P = 0.01

@dataclass
class InspectionResult:
    """Verdict for one image.

    ``pose_px`` is (cx, cy, angle_deg): the part centre and the direction of its
    canonical +x axis (label side when a label rule is configured) in image
    pixels, angle in (-180, 180].  ``size_px`` is (length, width).  ``regions``
    are ``{"kind", "box": [x0, y0, x1, y1]}`` in image pixels.  ``score`` is the
    anomaly score (≥ ``threshold`` means anomalous); ``anomaly_map`` is the
    combined normalised map on the canonical grid (None when no part).
    """

    defective: bool
    defects: list[str]
    score: float
    threshold: float
    pose_px: tuple[float, float, float] | None
    size_px: tuple[float, float] | None
    regions: list[dict] = field(default_factory=list)
    anomaly_map: np.ndarray | None = None
    ms: float = 0.0
    part_found: bool = True
    measurements: dict[str, float] = field(default_factory=dict)
    canonical_to_image: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "defective": self.defective, "defects": list(self.defects), "score": round(float(self.score), 4),
            "threshold": round(float(self.threshold), 4),
            "pose": None if self.pose_px is None else [round(float(v), 2) for v in self.pose_px],
            "size_px": None if self.size_px is None else [round(float(v), 2) for v in self.size_px],
            "regions": self.regions, "part_found": self.part_found,
            "measurements": {k: round(float(v), 4) for k, v in self.measurements.items()},
            "ms": round(float(self.ms), 3),
        }


# --------------------------------------------------------------------------- image pyramid
class _Frame:
    """An image with lazily built 2× INTER_AREA levels (level k pixel i covers full px [i·2^k, (i+1)·2^k))."""

    __slots__ = ("levels", "short")

    def __init__(self, img: np.ndarray):
        self.levels = [img]
        self.short = min(img.shape[:2])      # the full image's short side (asked by every warp)

    def level(self, k: int) -> np.ndarray:
        while len(self.levels) <= k:
            cur = self.levels[-1]
            h, w = cur.shape[:2]
            if min(h, w) < 8:
                break
            cur = cur[:h & ~1, :w & ~1]
            self.levels.append(cv2.resize(cur, (w // 2, h // 2), interpolation=cv2.INTER_AREA))
        return self.levels[min(k, len(self.levels) - 1)]

    def seg(self) -> tuple[np.ndarray, float]:
        h, w = self.levels[0].shape[:2]
        k = 0
        while max(h, w) / (1 << k) > SEG_LONG:
            k += 1
        im = self.level(k)
        return im, w / im.shape[1] if k else 1.0

    def warp(self, M_full: np.ndarray, w: int, h: int, flags: int = cv2.INTER_LINEAR) -> np.ndarray:
        """Warp with canonical→image map ``M_full`` from the level whose sampling step is about one pixel."""
        (a, b, c), (d, e, g) = M_full.tolist()       # plain floats: this runs ~10-40 times a frame
        step = math.hypot(a, d)
        k = 0
        short = self.short
        while step / (1 << (k + 1)) >= 0.95 and (1 << (k + 1)) * 8 < short:
            k += 1
        src = self.level(k)
        f = float(1 << k)
        if k:
            M = np.array([[a / f, b / f, (c + 0.5) / f - 0.5], [d / f, e / f, (g + 0.5) / f - 0.5]])
        else:
            M = M_full
        return cv2.warpAffine(src, M, (w, h), flags=flags | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


_LAST_ROW = np.array([[0.0, 0.0, 1.0]])
_RAMP3 = np.repeat(np.arange(256, dtype=np.uint8).reshape(256, 1, 1), 3, axis=2)   # every uint8 value, 3 channels


def _h(M: np.ndarray) -> np.ndarray:
    return np.concatenate((M, _LAST_ROW))


def _rot180(M: np.ndarray, cw: int, ch: int) -> np.ndarray:
    """Canonical→image map of the same part seen turned by 180° in the canonical frame."""
    R = np.array([[-1.0, 0.0, cw - 1.0], [0.0, -1.0, ch - 1.0], [0.0, 0.0, 1.0]])
    return (_h(M) @ R)[:2]


def _rot90k(M: np.ndarray, k: int, c: int) -> np.ndarray:
    """Square canonical view (c×c) turned by k·90° (same convention as ``cv2.rotate`` of the view)."""
    n = c - 1.0
    # view' = rotate(view): pixel (x', y') of the new view shows pixel R(x', y') of the old view
    Rs = {0: np.eye(3),
          1: np.array([[0.0, -1.0, n], [1.0, 0.0, 0.0], [0, 0, 1.0]]),    # ROTATE_90_COUNTERCLOCKWISE
          2: np.array([[-1.0, 0.0, n], [0.0, -1.0, n], [0, 0, 1.0]]),     # ROTATE_180
          3: np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, n], [0, 0, 1.0]])}    # ROTATE_90_CLOCKWISE
    return (_h(M) @ Rs[k % 4])[:2]


def _busy_zone(labs: np.ndarray, pmask: np.ndarray) -> np.ndarray:
    """uint8 mask of the part's zones that vary from part to part (randomly arranged contents), from aligned
    Lab views: those get pooled colour models (a minority of goods with a very different colour at a pixel is
    enough: pieces land anywhere) ... but not where the goods' median view has sharp repeatable structure
    (label print, tray edges): there the variation is misregistration, and pooling would teach "dark ink is
    normal" to the contents."""
    lmed = np.median(labs, axis=0)
    dev = np.quantile(np.abs(labs - lmed), 0.8, axis=0)
    mL = lmed[..., 0]
    mu = cv2.blur(mL, (5, 5))
    tex = np.sqrt(np.maximum(cv2.blur(mL * mL, (5, 5)) - mu * mu, 0.0))
    dv = np.maximum(dev[..., 0], dev[..., 1:].max(axis=2))
    busy = ((dv > 8.0) & (tex < 0.5 * dv)).astype(np.uint8)
    busy = cv2.morphologyEx(busy, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    busy = cv2.morphologyEx(busy, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    return cv2.dilate(busy, np.ones((3, 3), np.uint8)) & pmask


def _scale_of(M: np.ndarray) -> float:
    """Image px per canonical px of a canonical→image similarity."""
    return math.hypot(M[0, 0], M[1, 0])


def _rot_about(deg: float, cw: int, ch: int) -> np.ndarray:
    """3×3 map of the canonical view turned by ``deg`` about its centre (new canonical px → old)."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    cx, cy = (cw - 1) / 2.0, (ch - 1) / 2.0
    return np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0.0, 0.0, 1.0]])


def _thumb_desc(v: np.ndarray) -> np.ndarray:
    """Lighting-normalised descriptor of a small BGR thumbnail (zero mean, unit norm)."""
    return _thumb_descs([v])[0]


def _thumb_descs(thumbs: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`_thumb_desc` of several thumbnails of one size, (K, n) float32, each row bit for bit what the
    thumbnail alone gives: one colour conversion for all (a free-turning part tries 32 turns per frame), and the
    per-thumbnail channel means as column sums of a pixels × (thumbnail, channel) array, which numpy adds row by
    row as it does an (n, 3) array along axis 0, but vectorised along the rows (over a 3-long axis it was the
    slowest step of the orientation search)."""
    K = len(thumbs)
    th, tw = thumbs[0].shape[:2]
    n = th * tw
    lab = cv2.cvtColor(np.concatenate(thumbs), cv2.COLOR_BGR2LAB).reshape(K, n, 3)
    x = cv2.transpose(lab).astype(np.float32).reshape(n, K * 3)     # cv2 moves 3-channel pixels 10× faster
    x[:, 0::3] *= 0.5
    x -= x.mean(axis=0)
    x = cv2.transpose(x.reshape(n, K, 3)).reshape(K, n * 3)
    # np.linalg.norm of a float32 vector is sqrt(x.dot(x)) in float32: the same two calls without its generic
    # argument handling (this runs for each of the ~32 turns a free-turning part tries per frame)
    norms = np.array([float(np.sqrt(r.dot(r))) for r in x])
    return x / np.where(norms > 1e-9, norms, 1.0).astype(np.float32)[:, None]


def _weighted_template(descs: Sequence[np.ndarray]) -> np.ndarray:
    """Orientation template from the aligned goods' thumbnail descriptors: their mean, each element weighted
    by the inverse variance it shows across the goods (a matched filter for independent noise).

    What repeats from part to part (label, rim, tray corners) then decides the orientation, and what lands
    anywhere (randomly arranged food) hardly counts.  With the plain mean, a round bowl whose only
    asymmetric feature is its label was matched 90–180° off on 8 of 40 goods (random products, bench sweep)."""
    D = np.asarray(descs, np.float64)
    t = D.mean(axis=0)
    if len(D) >= 3:
        sd = D.std(axis=0)
        fl = max(float(np.median(sd)), 1e-9)
        t = t / (sd * sd + fl * fl)
    return (t / max(1e-12, float(np.linalg.norm(t)))).astype(np.float32)


def _inverse_variance(gs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-pixel weight 1 / (variance across the aligned goods + its median over ``mask``), smoothed a little;
    normalised to mean 1 on the mask."""
    v = cv2.GaussianBlur(gs.var(axis=0).astype(np.float32), (0, 0), 1.0)
    fl = max(float(np.median(v[mask])), 1e-6)
    w = 1.0 / (v + fl)
    return (w / max(float(w[mask].mean()), 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------- sub-pixel alignment
class _Aligner:
    """Inverse-compositional Lucas–Kanade on a half-resolution grey canonical view: a similarity (tx, ty, θ and
    scale).  The scale absorbs what segmentation gets wrong about the part's size: a white tray on a light belt
    is segmented by its contents on some frames and with its flange on others (±5 %), and without a scale
    term those canonical views disagreed in scale, and everything learned from them blurred."""

    def __init__(self, T: np.ndarray, mask: np.ndarray, weight: np.ndarray | None = None, scale: bool = False):
        self.T = T.astype(np.float32)
        hh, hw = T.shape
        self.size = (hw, hh)
        self.mask = mask.astype(bool)
        gx = cv2.Sobel(self.T, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(self.T, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        self.c = ((hw - 1) / 2.0, (hh - 1) / 2.0)
        ys, xs = np.nonzero(self.mask)
        self.ys, self.xs = ys, xs
        gxm, gym = gx[ys, xs], gy[ys, xs]
        dx, dy = xs - self.c[0], ys - self.c[1]
        rows = [gxm, gym, -gxm * dy + gym * dx] + ([gxm * dx + gym * dy] if scale else [])
        sd = np.stack(rows).astype(np.float64)
        self.n = len(rows)
        if weight is not None:
            # weighted least squares: pixels that repeat from part to part (rim, label, tray corners) steer
            # the fit, randomly arranged contents hardly do
            sdw = sd * weight[ys, xs].astype(np.float64)[None]
        else:
            sdw = sd
        self.sd = sdw
        H = sdw @ sd.T
        self.Hinv = np.linalg.inv(H + np.eye(self.n) * 1e-6 * np.trace(H))
        self.Tm = self.T[ys, xs]
        self.flat = ys * hw + xs          # the mask's pixels as flat indices (np.take beats 2-D fancy indexing)
        S = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])   # half → full canonical px
        self.S, self.Sinv = S, np.linalg.inv(S)

    def grey(self, frame: _Frame, M_full: np.ndarray) -> np.ndarray:
        Mh = (_h(M_full) @ self.S)[:2]
        v = frame.warp(Mh, *self.size)
        g = cv2.cvtColor(v, cv2.COLOR_BGR2GRAY).astype(np.float32)
        return cv2.GaussianBlur(g, (3, 3), 0, dst=g)

    def normalised(self, g: np.ndarray) -> np.ndarray:
        vals = np.take(g, self.flat)
        # (vals - mean) / std as vals.mean() and vals.std() give them, bit for bit, with the deviations computed
        # once: numpy's float32 mean is the (pairwise) sum over n in float32, its std the square root of the
        # same kind of mean of the squared deviations from that mean, and those deviations are vals - mean,
        # which is also the numerator here (~30 µs less per call; 4-5 calls a frame)
        n = vals.size
        d = vals - np.add.reduce(vals) / n
        s = float(np.sqrt(np.add.reduce(d * d) / n))
        return d / max(s, 1e-3)

    def refine(self, frame: _Frame, M_full: np.ndarray, iters: int = 3,
               first: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """``first``: ``normalised(grey(frame, M_full))`` when the caller has it already."""
        M = M_full
        err = 0.0
        for it in range(iters):
            e = (first if it == 0 and first is not None else self.normalised(self.grey(frame, M))) - self.Tm
            err = float(np.sqrt(np.add.reduce(e * e) / e.size))      # = np.mean(e * e): float32 sum / n
            # plain floats (the same doubles): the checks and the warp below do scalar arithmetic only
            dp = (self.Hinv @ (self.sd @ e)).tolist()
            ds = dp[3] if self.n == 4 else 0.0
            if not all(map(math.isfinite, dp)) or abs(dp[2]) > 0.3 or abs(dp[0]) > 8 or abs(dp[1]) > 8 or abs(ds) > 0.1:
                break
            k = 1.0 + ds
            c, s = k * math.cos(dp[2]), k * math.sin(dp[2])
            cx, cy = self.c
            Wd = np.array([[c, -s, cx - c * cx + s * cy + dp[0]], [s, c, cy - s * cx - c * cy + dp[1]], [0, 0, 1.0]])
            Mh = _h(M) @ self.S @ np.linalg.inv(Wd)
            M_new = (Mh @ self.Sinv)[:2]
            # the size may move by at most ±20 % from where segmentation put it
            if not 0.8 < _scale_of(M_new) / max(_scale_of(M_full), 1e-12) < 1.25:
                break
            M = M_new
            if abs(dp[0]) < 0.02 and abs(dp[1]) < 0.02 and abs(dp[2]) < 2e-4 and abs(ds) < 2e-4:
                break
        return M, err


# --------------------------------------------------------------------------- the inspector
class Inspector:
    """Teach on good images (:meth:`fit`), then :meth:`inspect` frames."""

    #: the goods' median surroundings (see :meth:`_build_ext`); None: each view keeps its own (a version 19
    #: model, or an inspector built before this attribute existed and handed over pickled)
    _ext: tuple | None = None

    def __init__(self, *, canon_long: int = 0, coreset_size: int = 48, folds: int = 5,
                 threshold_margin: float = 1.04, seed: int = 0, blob_channel: bool = True):
        self.canon_long = int(canon_long)      # 0: chosen from the part's size in pixels
        self.coreset_size = int(coreset_size)
        self.folds = int(folds)
        # threshold = largest out-of-fold good score × this margin (was 1.08 while common food colours could
        # fire the colour channel on goods; see anomaly.ZoneColour — cell audit seed 3 recall 0.89 → 0.91; then
        # 1.04, now 1.00: the blob map keeps its own headroom (MAP_HEADROOM), and near-threshold seal smears /
        # tears sat at 1.00–1.04.  Cell audit recall seed 3 0.909 → 0.945, seed 7 0.782 → 0.800, seed 1 (3600 s)
        # 0.810 → 0.845, together with the blob ring-chroma cue; precision ≥ 0.945 on all four seeds)
        self.threshold_margin = float(threshold_margin)
        self.seed = int(seed)
        self.blob_channel = bool(blob_channel)     # compact-blob novelty map (see anomaly.blob_candidates)
        self.rules = ProductRules()
        self.fitted = False
        self.meta: dict[str, Any] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self._label: LabelMatcher | None = None
        self._built = False

    # ------------------------------------------------------------------ shared steps
    def _locate(self, frame: _Frame, shadow: bool | None = None) -> Blob | None:
        """The part in ``frame`` with the taught belt model; ``shadow``: the model's choice unless given."""
        small, scale = frame.seg()
        return find_part(frame.levels[0], small=small, scale=scale, belt_lab=self.arrays.get("belt_lab"),
                         belt_scale=self.arrays.get("belt_scale"), expected_area_frac=self.meta.get("area_frac"),
                         frame_lab=self.arrays.get("frame_lab"),
                         shadow=bool(self.meta.get("shadow")) if shadow is None else shadow)

    def _thumb_size(self) -> tuple[int, int]:
        cw, ch = self.meta["canon"]
        return 32, max(8, int(round(32 * ch / cw)))

    def _centre(self, blob: Blob) -> tuple[float, float]:
        """The part's centre in the image: the outline's, except where the frame's edge cuts the outline.  There
        the part's far end is out of view, and its centre lies half the taught size from the end that shows
        (a tightly framed tray passing the edge was placed at the middle of what showed, and aligned, judged and
        sized from there: a third of such goods were rejected)."""
        cl = blob.clipped
        if not any(cl):
            return blob.cx, blob.cy
        L, W = self.meta["nominal_px"]
        u0, u1, v0, v1 = blob.uv
        uc, vc = 0.5 * (u0 + u1), 0.5 * (v0 + v1)
        if cl[0] != cl[1]:
            uc = u1 - 0.5 * L if cl[0] else u0 + 0.5 * L
        if cl[2] != cl[3]:
            vc = v1 - 0.5 * W if cl[2] else v0 + 0.5 * W
        a = math.radians(blob.angle)
        c_, s_ = math.cos(a), math.sin(a)
        return uc * c_ - vc * s_, uc * s_ + vc * c_

    def _orient(self, frame: _Frame, blob: Blob, template: np.ndarray | None) -> tuple[np.ndarray, float]:
        """Canonical→image affine with the orientation that best matches ``template``; and the match."""
        cw, ch = self.meta["canon"]
        L, W = self.meta["nominal_px"]
        mode = self.meta["mode"]
        tw, th = self._thumb_size()
        sx, sy = cw / tw, ch / th
        St = np.array([[sx, 0.0, 0.5 * (sx - 1)], [0.0, sy, 0.5 * (sy - 1)], [0, 0, 1.0]])  # thumb → canon px

        def cands_of(Ms: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
            return list(zip(Ms, _thumb_descs([frame.warp((_h(M) @ St)[:2], tw, th) for M in Ms])))

        bcx, bcy = self._centre(blob)
        M0 = warp_matrix(bcx, bcy, blob.angle, L, W, cw, ch, MARGIN)
        if mode == "flip2":
            cands = cands_of([M0, _rot180(M0, cw, ch)])
        elif mode == "rot4":
            cands = cands_of([_rot90k(M0, k, cw) for k in range(4)])
        else:
            cands = cands_of([warp_matrix(bcx, bcy, blob.angle + a, L, W, cw, ch, MARGIN)
                              for a in np.arange(0.0, 360.0, 15.0)])
        if template is None:
            return cands[0][0], 0.0
        scores = [float(d @ template) for _, d in cands]
        i = int(np.argmax(scores))
        M, best = cands[i][0], scores[i]
        if mode == "free":
            # halve the step around the best turn so far (a round part's turn comes from this match alone)
            ab = blob.angle + 15.0 * i
            for step in (7.5, 3.75, 1.875, 0.9375):
                a_best = ab
                angles = (ab - step, ab + step)
                pair = cands_of([warp_matrix(bcx, bcy, a, L, W, cw, ch, MARGIN) for a in angles])
                for a, (M2, d2) in zip(angles, pair):
                    s2 = float(d2 @ template)
                    if s2 > best:
                        M, best, a_best = M2, s2, a
                ab = a_best
        return M, best

    def _build(self) -> None:
        """Derived objects (aligner, colour LUT, photometric model) from the stored arrays."""
        a, m = self.arrays, self.meta
        cw, ch = m["canon"]
        self._aligner = _Aligner(a["lk_template"], a["lk_mask"] > 0, a.get("lk_weight"), bool(m.get("lk_scale")))
        self._photo = PhotoNorm(a["photo_ref"], a["photo_idx"], (ch, cw))
        self._pixel = PixelModel(a["pix_med"], a["pix_spread"])
        self._colour = ZoneColour(a["colour_lut"], a["colour_region"])
        self._eval = a["eval_mask"] > 0
        # the per-frame fill rule's flange pixels, as flat indices
        self._fill_band = np.flatnonzero(a["fill_band"]) if "fill_band" in a else None
        bb = a["blob_bank"]
        self._blob_ix = blob_index(bb)        # the bank as one matrix (see anomaly.blob_index)
        self._inv_scale = (self._eval[None] / a["map_scale"]).astype(np.float32)      # (3, ch, cw), 0 off the part
        self._dark = None
        if "dark_bound" in a:
            self._dark = DarkSpots(a["dark_bound"], a["dark_mask"], *m["dark_sizes"])
        self._label = None
        if "label_template" in a:
            self._label = LabelMatcher(a["label_template"], tuple(m["label_box_half"]))
        self._build_ext()
        self._built = True

    def _build_ext(self) -> None:
        """The goods' median surroundings, in the forms ``_maps`` reads (see fit: ``ext_mask``)."""
        a = self.arrays
        self._ext = None
        if "ext_mask" not in a:
            return
        ext = (a["ext_mask"] > 0).astype(np.uint8)
        ch, cw = ext.shape
        ext_f = cv2.resize(ext, (cw * FINE, ch * FINE), interpolation=cv2.INTER_NEAREST)
        medP = np.ascontiguousarray(a["ext_P"], dtype=np.float32)
        # whole views and uint8 masks: cv2.copyTo writes the masked pixels in ~20 µs, numpy's boolean
        # assignment took ~0.8 ms a frame
        self._ext = (ext, PixelModel.lab(medP), medP * np.float32(1.0 / 40.0), medP, ext_f,
                     np.ascontiguousarray(a["ext_F"], dtype=np.uint8),
                     np.clip(medP + 0.5, 0, 255).astype(np.uint8))       # the raw views' fill (_filled_views)

    def _view(self, frame: _Frame, M: np.ndarray) -> np.ndarray:
        cw, ch = self.meta["canon"]
        return frame.warp(M, cw, ch)

    def _views(self, frame: _Frame, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw uint8 view at FINE × the canonical resolution, and the canonical view.

        Two warps, each from the pyramid level whose step is about one pixel: deriving the canonical view
        as the fine view's 2×2 area mean saves a warp but changes its sampling, and cost accuracy on
        ``beef_bulgogi`` (bench AUROC 0.895 → 0.855, three label false rejects in the cell audit)."""
        cw, ch = self.meta["canon"]
        fine = frame.warp((_h(M) @ _S_FINE)[:2], cw * FINE, ch * FINE)
        return fine, frame.warp(M, cw, ch)

    def _filled_views(self, frame: _Frame, M: np.ndarray, shape: tuple[int, ...]):
        """:meth:`_views`, with what lies beyond the frame's edge filled by the goods' median; and the masks of
        it (canonical, fine) for :meth:`_maps`, or None when the whole view is inside the frame."""
        fine, view = self._views(frame, M)
        if self._ext is None:
            return fine, view, None
        cw, ch = self.meta["canon"]
        out = _beyond(M, shape, cw, ch)
        if out is not None:
            cv2.copyTo(self._ext[6], out[0], view)
            cv2.copyTo(self._ext[5], out[1], fine)
        return fine, view, out

    def _maps(self, P: np.ndarray | None, F: np.ndarray, pixel: PixelModel, colour: ZoneColour, bank: np.ndarray,
              bank_sq: np.ndarray, blob_bank: np.ndarray, dark: DarkSpots | None, blobs=None,
              blob_ix: np.ndarray | None = None, labP: np.ndarray | None = None,
              P40: np.ndarray | None = None, beyond: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Raw anomaly maps (N_MAPS, ch, cw) of a photometrically aligned float view ``P`` and fine uint8 view ``F``.

        ``labP`` and ``P40``: ``PixelModel.lab(P)`` and ``P * (1 / 40)`` when the caller has them (then ``P``
        itself is not needed: :meth:`inspect` maps the uint8 view straight to both through lookup tables)."""
        if self._ext is not None:
            # the surroundings, written into the caller's fresh views (fit and inspect make them per frame)
            ext, ext_lab, ext_p40, ext_p, ext_f, ext_fv = self._ext[:6]
            if beyond is not None:      # ... and where the view lies beyond the frame's edge (see _beyond)
                ext, ext_f = cv2.bitwise_or(ext, beyond[0]), cv2.bitwise_or(ext_f, beyond[1])
            cv2.copyTo(ext_fv, ext_f, F)
            if P is not None:
                cv2.copyTo(ext_p, ext, P)
            if labP is not None:
                cv2.copyTo(ext_lab, ext, labP)
            if P40 is not None:
                cv2.copyTo(ext_p40, ext, P40)
        if labP is None:
            labP = PixelModel.lab(P)
        if P40 is None:
            P40 = P * (1.0 / 40.0)
        ch, cw = labP.shape[:2]
        z = box_mean(pixel.zmap(labP))
        labF = cv2.cvtColor(F, cv2.COLOR_BGR2LAB)
        # the fine lightness plane as float32, read by both the dark-spot and the blob channel (each made its own)
        LF = labF[..., 0].astype(np.float32) if (dark is not None or (self.blob_channel and blobs is None)) else None
        # a small object covers several fine pixels: a 3×3 minimum drops isolated specks (highlights, noise);
        # on the uint8 bin distances, which the minimum keeps exact
        nov = max_pool2(box_mean(cv2.erode(colour.novelty(F, labF), _K3).astype(np.float32)))
        f = cell_features(P40)
        gh, gw, d = f.shape
        f = (f - self.arrays["feat_mean"]) * self.arrays["feat_inv"]
        nn = nn_dist(bank, bank_sq, f.reshape(gh * gw, d)).reshape(gh, gw).astype(np.float32)
        nn = cv2.resize(nn, (cw, ch), interpolation=cv2.INTER_LINEAR)
        dk = max_pool2(dark.below(labF, LF)) if dark is not None else np.zeros_like(nn)
        if not self.blob_channel:
            return np.stack([z, nov, nn, np.zeros_like(nn), dk])
        if blobs is None:
            blobs = blob_candidates(labF, F.shape[1], self.arrays["blob_mask"], LF)
        bd, bp = blobs
        bn = blob_novelty(blob_bank, bd, blob_ix)
        if len(bn) > 8:
            keep = np.argpartition(-bn, 8)[:8]
            bn, bp = bn[keep], bp[keep]
        blob = paint_blobs(bp, bn, (ch, cw), FINE)
        return np.stack([z, nov, nn, blob, dk])

    # ------------------------------------------------------------------ fit
    def fit(self, good_images: Sequence[np.ndarray], rules: ProductRules | dict | None = None) -> "Inspector":
        """Learn from good images only (≥ 5; 30–50 recommended).  Raises InspectionError on bad input."""
        t0 = time.perf_counter()
        if rules is None:
            rules = ProductRules()
        elif isinstance(rules, dict):
            rules = ProductRules(**rules)
        self.rules = rules
        imgs = []
        for i, im in enumerate(good_images):
            try:
                imgs.append(as_bgr(im))
            except InspectionError as e:
                raise InspectionError(f"good image #{i}: {e}") from None
        if len(imgs) < 5:
            raise InspectionError(f"need at least 5 good images to fit, got {len(imgs)}")
        hw = imgs[0].shape[:2]
        for i, im in enumerate(imgs):
            if im.shape[:2] != hw:
                raise InspectionError(f"good image #{i} is {im.shape[1]}x{im.shape[0]}, "
                                      f"the first one is {hw[1]}x{hw[0]}: all images must have one size")
        self._built = False
        self.meta = {"version": MODEL_VERSION, "image_size": [hw[1], hw[0]],
                     "grey": bool(all(_is_grey(im) for im in imgs))}
        self.arrays = {}
        frames = [_Frame(im) for im in imgs]
        # ---- pass 1: segment with the border-estimated belt colour, learn the belt colour
        belt_px, frame_px = [], []
        for i, fr in enumerate(frames):
            small, scale = fr.seg()
            b = find_part(fr.levels[0], small=small, scale=scale)
            if b is None:
                raise InspectionError(f"good image #{i}: no part found (is the part visible against the belt?)")
            lab = cv2.cvtColor(cv2.GaussianBlur(small, (3, 3), 0), cv2.COLOR_BGR2LAB).reshape(-1, 3)
            frame_px.append(lab.astype(np.float32).mean(axis=0))
            bgm = cv2.dilate(b.mask_small, np.ones((9, 9), np.uint8)).ravel() == 0
            sel = lab[bgm].astype(np.float32)
            if len(sel) > 50:
                belt_px.append(np.median(sel, axis=0))
        if belt_px:
            self.arrays["belt_lab"] = np.median(np.array(belt_px), axis=0).astype(np.float32)
            self.arrays["frame_lab"] = np.median(np.array(frame_px), axis=0).astype(np.float32)
        # ---- pass 2: segment with the belt model
        blobs = []
        for i, fr in enumerate(frames):
            b = self._locate(fr)
            if b is None:
                raise InspectionError(f"good image #{i}: no part found with the learned belt model")
            blobs.append(b)
        # a shade of the belt around the part may be the part's shadow (a lamp to one side): taken for part of
        # the outline, it turned the part 20 degrees and end for end (salad, a shadow 25 px out: 2 goods in
        # 40).  Counted as belt when that makes the goods' outlines clearly more alike in size; a product
        # with that look of its own (a black tray on a grey belt) loses pieces of itself instead, unevenly
        self.meta["shadow"] = False
        if "belt_lab" in self.arrays:
            alt = [self._locate(fr, shadow=True) for fr in frames]
            if all(b is not None for b in alt) and _outline_spread(alt) < SHADOW_GAIN * _outline_spread(blobs):
                self.meta["shadow"] = True
                blobs = alt
        # sizes from the goods whose outline the frame's edge does not cut (when there are enough of them)
        def uncut(ends: tuple[int, ...]) -> list[Blob]:
            got = [b for b in blobs if not any(b.clipped[k] for k in ends)]
            return got if len(got) >= max(5, len(blobs) // 4) else blobs
        self.meta["area_frac"] = float(np.median([b.area for b in uncut((0, 1, 2, 3))]) / float(hw[0] * hw[1]))
        # a good image whose part came out much larger than most touches a neighbouring tray: found again
        # knowing the part's area, which cuts the neighbour off at the neck (localise._split_touching)
        for i, b in enumerate(blobs):
            if b.area > 1.3 * self.meta["area_frac"] * hw[0] * hw[1]:
                b2 = self._locate(frames[i])
                if b2 is not None:
                    blobs[i] = b2
        Ls = np.array([b.length for b in uncut((0, 1))])
        Ws = np.array([b.width for b in uncut((2, 3))])
        L, W = float(np.median(Ls)), float(np.median(Ws))
        aspect = W / L
        rect_fill = float(np.median([b.area / (b.length * b.width) for b in uncut((0, 1, 2, 3))]))
        mode = "flip2" if aspect < 0.87 else ("rot4" if rect_fill > 0.86 else "free")
        cl = self.canon_long or int(np.clip(round(0.7 * L / CELL) * CELL, 96, 192))
        cw = int(cl)
        ch = cw if mode != "flip2" else max(4 * CELL, int(round(cw * aspect / CELL)) * CELL)
        if mode != "flip2":
            L = W = float(np.sqrt(L * W))
        self.meta.update({"mode": mode, "canon": [cw, ch], "nominal_px": [L, W],
                          "size_spread": [float(np.std(Ls / L)), float(np.std(Ws / W))],
                          # how far the goods' outlines themselves disagree on the proportions (see inspect)
                          "aspect_spread": float(np.std([(b.length / b.width) / (L / W)
                                                         for b in uncut((0, 1, 2, 3))]))})
        # ---- orientation: iterate the mean thumbnail (first image → mean of all)
        template = None
        Ms: list[np.ndarray] = []
        for it in range(3):
            Ms, descs = [], []
            for fr, b in zip(frames, blobs):
                M, _ = self._orient(fr, b, template)
                Ms.append(M)
                tw, th = self._thumb_size()
                descs.append(_thumb_desc(cv2.resize(self._view(fr, M), (tw, th), interpolation=cv2.INTER_AREA)))
                if template is None:
                    template = descs[0]
            template = _weighted_template(descs)
        # ---- which way round: the configured label box must hold the label.  The label is what repeats from
        # part to part: the goods' mean view shows its print clearly (strong spatial contrast) against how much
        # the goods differ from that mean there.  The turn of the canonical frame (0/180° for oblong parts,
        # quarter turns for square ones, any angle for round ones) whose box holds the most of that signal for
        # its noise wins.  (The least varying box alone is not it: a plain, smooth part end varies less than a
        # sharp print that floats a little, so a small label on smooth metal was put at the bare end, the matcher
        # learned metal, and skewed_label at the search's edge made 8 of 16 and 9 of 19 false rejects in the
        # assembly cell's audit, seeds 1 and 2, 1800 s.)
        # (Round parts had no such step: the frame's turn was wherever the first good put it, the label
        # matcher learned a patch of food, and 8 of 40 goods of a random round product were rejected.)
        # It is decided once on the coarsely placed views and again after sub-pixel alignment: where
        # segmentation is poor (a white tray on a light belt) the coarse views disagree in scale and place,
        # every area varies, and the first decision can be wrong.
        def label_turn(Ms: list[np.ndarray]) -> np.ndarray | None:
            if rules.label_box is None:
                return None
            g = np.stack([_norm_grey(self._view(fr, M)) for fr, M in zip(frames, Ms)])
            mu = g.mean(axis=0).astype(np.float32)
            var = g.var(axis=0).astype(np.float32)
            bx = part_to_canon_box(rules.label_box, cw, ch, MARGIN)

            def box_snr(R: np.ndarray) -> float:
                def inbox(a: np.ndarray) -> np.ndarray:
                    v = cv2.warpAffine(a, np.ascontiguousarray(R[:2]), (cw, ch),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
                    return v[bx[1]:bx[3], bx[0]:bx[2]]
                return float(inbox(mu).std() / math.sqrt(max(float(inbox(var).mean()), 1e-6)))

            if mode == "flip2":
                cands = [np.eye(3), _h(_rot180(np.eye(3)[:2], cw, ch))]
            elif mode == "rot4":
                cands = [_h(_rot90k(np.eye(3)[:2], k, cw)) for k in range(4)]
            else:
                cands = [_rot_about(a, cw, ch) for a in np.arange(0.0, 360.0, 5.0)]
            vals = [box_snr(R) for R in cands]
            R = cands[int(np.argmax(vals))]
            if mode == "free":
                a0 = 5.0 * int(np.argmax(vals))
                fine_c = [_rot_about(a0 + da, cw, ch) for da in np.arange(-4.0, 4.5, 1.0)]
                R = fine_c[int(np.argmax([box_snr(Rf) for Rf in fine_c]))]
            return None if np.allclose(R, np.eye(3)) else R

        def turned(Ms: list[np.ndarray], R: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
            Ms = [(_h(M) @ R)[:2] for M in Ms]
            tw, th = self._thumb_size()
            return Ms, _weighted_template([_thumb_desc(cv2.resize(self._view(fr, M), (tw, th),
                                                                  interpolation=cv2.INTER_AREA))
                                           for fr, M in zip(frames, Ms)])

        def mask_and_align(Ms: list[np.ndarray]):
            # ---- part mask in the canonical frame (mean of the per-image masks)
            masks = []
            for M, b in zip(Ms, blobs):
                Mk = M.copy()
                Mk[:, :2] /= b.scale
                Mk[:, 2] = (Mk[:, 2] + 0.5) / b.scale - 0.5
                masks.append(cv2.warpAffine(b.mask_small, Mk, (cw, ch), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
            pmask = (np.mean(masks, axis=0) > 127).astype(np.uint8)
            # ---- sub-pixel alignment: LK against the mean grey view, twice
            hh, hw2 = ch // 2, cw // 2
            lk_mask = cv2.dilate(cv2.resize(pmask, (hw2, hh), interpolation=cv2.INTER_NEAREST),
                                 np.ones((5, 5), np.uint8))
            S = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0, 0, 1.0]])
            for it in range(2):
                gs = []
                for fr, M in zip(frames, Ms):
                    v = fr.warp((_h(M) @ S)[:2], hw2, hh)
                    g = cv2.GaussianBlur(cv2.cvtColor(v, cv2.COLOR_BGR2GRAY).astype(np.float32), (3, 3), 0)
                    vals = g[lk_mask > 0]
                    gs.append((g - vals.mean()) / max(float(vals.std()), 1e-3))
                T = np.mean(gs, axis=0).astype(np.float32)
                # a round part's outline does not pin its turn: there the fit leans on what repeats from part
                # to part (label, print), weighted by inverse variance; oblong and square parts keep plain
                # least squares (weighting them moved the label edge against the tray and raised false
                # rejects in the cell audit)
                lk_w = _inverse_variance(np.asarray(gs), lk_mask > 0) if mode == "free" else None
                al = _Aligner(T, lk_mask, lk_w, lk_scale)
                Ms = [al.refine(fr, M, iters=4)[0] for fr, M in zip(frames, Ms)]
            return Ms, pmask, lk_mask, T, lk_w, np.asarray(gs)

        lk_scale = max(self.meta["size_spread"]) > LK_SCALE_FROM
        self.meta["lk_scale"] = bool(lk_scale)
        R = label_turn(Ms)
        if R is not None:
            Ms, template = turned(Ms, R)
        Ms, pmask, lk_mask, T, lk_w, lk_gs = mask_and_align(Ms)
        R = label_turn(Ms)
        if R is not None:
            Ms, template = turned(Ms, R)
            Ms, pmask, lk_mask, T, lk_w, lk_gs = mask_and_align(Ms)
        self.arrays["template"] = template.astype(np.float32)
        self.arrays["part_mask"] = pmask
        # the outline of the part proper (the segmentation mask eroded by a pixel, as the evaluated area is)
        cnts, _ = cv2.findContours(cv2.erode(pmask, np.ones((3, 3), np.uint8)), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
        if cnts:
            self.arrays["part_outline"] = max(cnts, key=cv2.contourArea).reshape(-1, 2).astype(np.float32)
        self.meta["overhang_px"] = max(self._overhang(M, hw) for M in Ms)
        self.arrays["lk_template"] = T
        self.arrays["lk_mask"] = lk_mask
        if lk_w is not None:
            self.arrays["lk_weight"] = lk_w
        vv = [self._views(fr, M) for fr, M in zip(frames, Ms)]
        views = np.stack([v for _, v in vv])     # (N, ch, cw, 3) uint8
        N = len(views)
        # ---- where a good passed the frame's edge its views show the edge pixels smeared outwards: there they
        # show what the other goods show (their median), so nothing is learned from it (see _beyond)
        outs = [_beyond(M, hw, cw, ch) for M in Ms]
        if any(o is not None for o in outs):
            ref_v = np.median(views, axis=0).astype(np.uint8)
            ref_f = np.median(np.stack([f for f, _ in vv]), axis=0).astype(np.uint8)
            for i, o in enumerate(outs):
                if o is not None:
                    cv2.copyTo(ref_v, o[0], views[i])
                    cv2.copyTo(ref_f, o[1], vv[i][0])
        # ---- photometric alignment to the goods' median on stable pixels
        inner = cv2.erode(pmask, np.ones((3, 3), np.uint8), iterations=2) > 0
        ref = np.median(views, axis=0).astype(np.float32)
        mad = np.median(np.abs(views.astype(np.float32) - ref), axis=0).sum(axis=2)
        cand = np.flatnonzero(inner.ravel())
        order = cand[np.argsort(mad.ravel()[cand], kind="stable")]
        stable = np.sort(order[: max(50, int(0.4 * len(order)))])
        idx = stable[:: max(1, len(stable) // 1000)]
        photo = PhotoNorm(np.zeros((2, 3)), idx, (ch, cw))
        photo.rq = np.median(np.stack([photo.quantiles(v) for v in views]), axis=0)
        pars = [photo.params(v) for v in views]
        P = np.stack([photo.apply_fast(v, q) for v, q in zip(views, pars)])
        F = np.stack([_photo_u8(fv, q) for (fv, _), q in zip(vv, pars)])
        del vv
        self.arrays["photo_ref"] = photo.rq
        self.arrays["photo_idx"] = photo.idx
        # ---- what lies around the part is not the part's business: beyond a few pixels outside its outline every
        # view shows the goods' median surroundings (the maps near the rim read a context of 1-2 texture cells,
        # and a neighbouring tray there raised texture and seal flags on a good part)
        near = cv2.dilate(pmask, np.ones((3, 3), np.uint8), iterations=EXT_GAP)
        self.arrays["ext_mask"] = (near == 0).astype(np.uint8)
        self.arrays["ext_P"] = np.median(P, axis=0).astype(np.float32)
        self.arrays["ext_F"] = np.median(F, axis=0).astype(np.uint8)
        self._build_ext()
        ext, _, _, ext_p, ext_f, ext_fv = self._ext[:6]   # the masks and views _maps writes, for every good at once
        P[:, ext > 0] = ext_p[ext > 0]
        F[:, ext_f > 0] = ext_fv[ext_f > 0]
        for i, o in enumerate(outs):
            if o is not None:
                cv2.copyTo(ext_p, o[0], P[i])
                cv2.copyTo(ext_fv, o[1], F[i])
        # ---- texture feature normalisation
        feats = np.stack([cell_features(p * (1.0 / 40.0)) for p in P])
        _, gh, gw, d = feats.shape
        fmean = feats.reshape(-1, d).mean(0)
        fstd = feats.reshape(-1, d).std(0) + 1e-3
        fstd = np.maximum(fstd, 0.05 * float(np.median(fstd)))
        self.arrays["feat_mean"] = fmean.astype(np.float32)
        self.arrays["feat_inv"] = (1.0 / fstd).astype(np.float32)
        featn = (feats - fmean) / fstd
        labs = np.stack([PixelModel.lab(p) for p in P])
        codes = np.stack([colour_codes(f) for f in F])
        # compact-blob novelty looks at the contents (the seal band and tray walls are the pixel model's)
        inner_b = cv2.erode(pmask, _K3, iterations=max(2, int(round(0.06 * ch)))) > 0
        self.arrays["blob_mask"] = cv2.resize(inner_b.astype(np.uint8), (cw * FINE, ch * FINE),
                                              interpolation=cv2.INTER_NEAREST)
        labF = [cv2.cvtColor(f, cv2.COLOR_BGR2LAB) for f in F]
        busy = _busy_zone(labs, pmask)
        self.meta["busy_frac"] = float(busy.sum() / max(1, pmask.sum()))
        fsz = (cw * FINE, ch * FINE)
        region, g1, g2 = ZoneColour.regions(cv2.resize(busy, fsz, interpolation=cv2.INTER_NEAREST) > 0,
                                            COLOUR_GRID, COLOUR_POOL_GRID)
        valid = cv2.resize(cv2.dilate(pmask, np.ones((3, 3), np.uint8)), fsz, interpolation=cv2.INTER_NEAREST) > 0
        self.arrays["colour_region"] = region.astype(np.int32)
        # ---- rules learned from the good views (the seal band and label box also name the map regions)
        self._fit_rules(P, pmask, views)
        # ---- the goods' darkest spots, per zone of the contents (see anomaly.DarkSpots); not on and around the
        # label: it floats on the tray, and its edge passing over dark food made spots no good had shown there
        # (a random round product: a false reject at 3.3 on the map)
        dsz = DarkSpots.sizes(F.shape[2])
        self.meta["dark_sizes"] = list(dsz)
        dmask = self.arrays["blob_mask"].copy()
        if "label_box_half" in self.meta:
            e = int(round(0.02 * F.shape[2]))
            x0, y0, x1, y1 = (2 * FINE * v for v in self.meta["label_box_half"])
            dmask[max(0, y0 - e):y1 + e, max(0, x0 - e):x1 + e] = 0
        self.arrays["dark_mask"] = dmask
        # compact blobs are not looked for there either: with every candidate scored (anomaly.BLOB_MAX), the
        # floating label's print gave the goods blobs at places no other good had them (cell audit, seed 1: five
        # false rejects named label_defect on blob alone); the label has its own rule and the pixel map
        self.arrays["blob_mask"] = dmask
        fblobs = [blob_candidates(lf, F.shape[2], dmask)
                  if self.blob_channel else (np.zeros((0, BLOB_DIM), np.float32), np.zeros((0, 3), np.float32)) for lf in labF]
        d_region, dgy, dgx = ColourModel.regions(dmask, DarkSpots.GRID)
        zmin = DarkSpots.zone_minima(np.stack([DarkSpots.spots(lf, *dsz) for lf in labF]), d_region, dmask, dgy * dgx)
        del labF
        # ---- out-of-fold maps of the good images
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(N)
        k = max(2, min(self.folds, N))
        held = np.zeros((N, N_MAPS, ch, cw), np.float32)
        for f in range(k):
            test = order[f::k]
            train = np.setdiff1d(order, test)
            pm = PixelModel.fit(labs[train])
            # the zones are the fold's own: which pixels count as varying (pooled, lenient) must not be
            # decided with the held-out image's help, or its own unusual colours are forgiven and the
            # out-of-fold scores come out lower than a new good's (random smooth-contents product: colour
            # false rejects 4-6 of 40 new goods against none out of fold)
            region_f, _, _ = ZoneColour.regions(
                cv2.resize(_busy_zone(labs[train], pmask), fsz, interpolation=cv2.INTER_NEAREST) > 0,
                COLOUR_GRID, COLOUR_POOL_GRID)
            cm = ZoneColour.fit(codes[train], region_f, g1, g2, valid)
            bank = coreset(gather_bank(featn[train]), self.coreset_size, self.seed + f)
            bsq = np.einsum("pmd,pmd->pm", bank, bank)
            bb = make_blob_bank(np.concatenate([fblobs[i][0] for i in train]), seed=self.seed + f)
            # the held-out goods are aligned to the fold's own template too: aligned to a mean that holds
            # themselves, they sat a little better on edges (label, rim) than a new good does
            al_f = _Aligner(lk_gs[train].mean(axis=0).astype(np.float32), lk_mask,
                            _inverse_variance(lk_gs[train], lk_mask > 0) if mode == "free" else None, lk_scale)
            ds = DarkSpots.fit(zmin[train], d_region, (dgy, dgx), dmask, *dsz)
            for i in test:
                Mi = al_f.refine(frames[i], Ms[i], iters=4)[0]
                fine_i, view_i, out_i = self._filled_views(frames[i], Mi, hw)
                q = photo.params(view_i)
                held[i] = self._maps(photo.apply_fast(view_i, q), _photo_u8(fine_i, q), pm, cm, bank, bsq, bb, ds,
                                     beyond=out_i)
        # ---- per-position scales: mean + 3 sd of the out-of-fold maps, smoothed, floored; then each map is
        # rescaled so that its image-level maximum on out-of-fold goods sits at about 1 (maps with sparse,
        # randomly placed responses — colour novelty in busy food — get a fair share of the threshold)
        ev = cv2.erode(pmask, np.ones((3, 3), np.uint8), iterations=1) > 0
        scales = []
        floors = MAP_FLOOR        # colour: 1.0 on the map = a small object about one colour bin away
        sig = MAP_SIG
        loo = np.zeros((N, N_MAPS, ch, cw), np.float32)      # out-of-fold maps, each on a scale it did not shape
        for j in range(N_MAPS):
            hm = held[:, j]
            if sig[j] is None:           # sparse map (blob novelty): one scale, the largest out-of-fold good value
                r = hm.reshape(N, -1).max(axis=1).astype(np.float64)
                top = float(r.max())
                if N >= 10 and top > 0:
                    # the largest of ~40 out-of-fold goods understates a heavy tail (blob novelty): the scale is
                    # at least the level a good exceeds with probability SPARSE_P, from a Gumbel fit to the
                    # goods' per-image maxima (kimchi on a steel belt: false rejects 17.5 % -> 10 %; 24 random
                    # products 4.8 % -> 4.4 % at the same mean AUROC; cell seed 1 one false reject fewer)
                    top = max(top, float(gumbel_level(r, SPARSE_P)))
                g = max(top, floors[j], 1e-6) * MAP_HEADROOM[j]
                loo[:, j] = hm / g
                scales.append(np.full((ch, cw), g, np.float32))
                continue
            s = hm.mean(axis=0) + 3.0 * hm.std(axis=0)
            s = cv2.GaussianBlur(s, (0, 0), sig[j])
            s = cv2.dilate(s, np.ones((3, 3), np.uint8))
            med = float(np.median(s[ev]))
            s = np.maximum(s, max(0.3 * med, floors[j]))
            # out-of-fold ratio of each good image uses a scale it did not contribute to (leave one out)
            s1, s2 = hm.sum(axis=0), (hm * hm).sum(axis=0)
            r = np.zeros(N)
            for i in range(N):
                m_ = (s1 - hm[i]) / (N - 1)
                v_ = np.maximum((s2 - hm[i] * hm[i]) / (N - 1) - m_ * m_, 0.0)
                si = cv2.dilate(cv2.GaussianBlur(m_ + 3.0 * np.sqrt(v_), (0, 0), sig[j]), np.ones((3, 3), np.uint8))
                si = np.maximum(si, max(0.3 * med, floors[j]))
                loo[i, j] = hm[i] / si
                r[i] = float(loo[i, j][ev].max())
            g = max(float(r.max()), 1.0 if j == 1 else 1e-6)   # sparse colour novelty: never below its floor
            s = s * g
            loo[:, j] /= g
            scales.append(s.astype(np.float32))
        scale = np.stack(scales)
        # ---- per-region sensitivity: a region whose goods stay quiet on a map gets that map scaled up
        zones = self._regions(ch, cw)
        gain = np.ones((N_MAPS, int(zones.max()) + 1))
        for k in range(gain.shape[1]):
            m = (zones == k) & ev
            if m.sum() < 10:
                continue
            for j in range(N_MAPS):
                mx = loo[:, j][:, m].max(axis=1).astype(np.float64)     # per-image maxima in the region
                if float(mx.max()) <= 0.0:
                    continue
                # Gumbel tail of the per-image maxima: the level a good exceeds with probability REGION_P
                top = max(float(gumbel_level(mx, REGION_P)), float(mx.max()))
                gain[j, k] = float(np.clip(1.0 / max(top, REGION_FLOOR[j]), 1.0, 1.0 / REGION_FLOOR[j]))
                scale[j][zones == k] /= gain[j, k]
        # out-of-fold score of every good on every map, with the region gains applied
        per_map = np.stack([(loo[:, j] * gain[j][zones][None])[:, ev].max(axis=1) for j in range(N_MAPS)], axis=1)
        # ---- per-map tail: each map is rescaled so that 1 is the level an out-of-fold good exceeds with
        # probability MAP_TAIL_P (see _map_tail_levels), and the threshold is set on that common level
        lv = _map_tail_levels(per_map, [float(floors[j]) / float(scale[j].max()) if MAP_SIG[j] is None else 0.0
                                        for j in range(N_MAPS)])
        scale *= lv[:, None, None].astype(np.float32)
        per_map = per_map / lv[None]
        self.meta["map_tail_level"] = [round(float(v), 4) for v in lv]
        self.meta["region_gain"] = [[round(float(v), 3) for v in row] for row in gain]
        self.arrays["map_scale"] = scale
        self.arrays["eval_mask"] = ev.astype(np.uint8)
        cv_scores = per_map.max(axis=1)
        self.meta["threshold"] = self._threshold_from(cv_scores)
        self.meta["cv_scores"] = [round(float(s), 4) for s in cv_scores]
        self.meta["cv_per_map"] = [[round(float(v), 3) for v in r] for r in per_map]
        # ---- final models on all good images
        pm = PixelModel.fit(labs)
        self.arrays["pix_med"] = pm.med
        self.arrays["pix_spread"] = (1.0 / pm.inv).astype(np.float32)
        self.arrays["colour_lut"] = ZoneColour.fit(codes, region, g1, g2, valid).lut
        self.arrays["blob_bank"] = make_blob_bank(np.concatenate([b[0] for b in fblobs]), seed=self.seed)
        self.arrays["dark_bound"] = DarkSpots.fit(zmin, d_region, (dgy, dgx), dmask, *dsz).bound
        bank = coreset(gather_bank(featn), self.coreset_size, self.seed)
        self.arrays["bank"] = bank.astype(np.float32)
        self.arrays["bank_sq"] = np.einsum("pmd,pmd->pm", bank, bank).astype(np.float32)
        # ---- product identification signature (colour histogram of the whole frame)
        hs = np.mean([_id_hist(im) for im in imgs], axis=0)
        self.arrays["id_hist"] = (hs / max(1e-9, float(np.linalg.norm(hs)))).astype(np.float32)
        self.meta["fit_s"] = round(time.perf_counter() - t0, 3)
        self.meta["n_good"] = N
        self.meta["rules"] = rules.model_dump(mode="json")
        self._build()
        self.fitted = True
        return self

    def affinity(self, image: np.ndarray, _hist: np.ndarray | None = None) -> float:
        """How much ``image`` looks like this model's product, in [0, 1] (Bhattacharyya coefficient of
        lighting-tolerant Lab colour histograms; rotation- and position-invariant, ~0.1 ms).

        Meant for choosing which product's model to run (see :func:`identify`), not for judging a part.
        """
        if not self.fitted:
            raise InspectionError("the inspector is not fitted (call fit() or load())")
        ref = self.arrays.get("id_hist")
        if ref is None:
            return 0.0
        h = _id_hist(as_bgr(image)) if _hist is None else _hist
        return float(np.dot(h, ref))

    def _overhang(self, M: np.ndarray, shape: tuple[int, ...]) -> float:
        """How far (px) the part, where alignment puts it, reaches beyond the frame's edge (0: inside)."""
        pts = self.arrays.get("part_outline")
        if pts is None or not len(pts):
            return 0.0
        q = _apply(M, pts.astype(np.float64))
        h, w = shape[:2]
        (x0, y0), (x1, y1) = q.min(axis=0).tolist(), q.max(axis=0).tolist()
        return max(0.0, -0.5 - x0, -0.5 - y0, x1 - (w - 0.5), y1 - (h - 0.5))

    def _truncated(self, M: np.ndarray, shape: tuple[int, ...], tol: float = 1.0) -> bool:
        """Whether the part, where alignment puts it, reaches beyond the frame by more than ``tol`` px (the
        part's outline is known to one segmentation pixel).

        Segmentation only says the outline *touches* the border at its coarse working resolution (a px
        there is 8 px of a 1280-wide frame): a tightly framed part passing close to the edge is whole
        (kimchi framed with 15 mm to spare: 6 of 20 goods were called truncated)."""
        # a camera framed so tightly that the goods themselves pass the edge: as far as they did is normal
        return self._overhang(M, shape) > tol + 1.25 * float(self.meta.get("overhang_px", 0.0))

    def _regions(self, ch: int, cw: int) -> np.ndarray:
        """Region id per canonical pixel: 0 the part, 1 its seal band."""
        return (self.arrays["band"] > 0).astype(np.int32)

    def _threshold_from(self, s: np.ndarray, margin: float | None = None) -> float:
        """Threshold from out-of-fold good scores: the maps' common tail level (1, see :func:`_map_tail_levels`)
        or the largest out-of-fold score if above it, times the margin."""
        return float(max(1.0, float(np.max(s))) * (self.threshold_margin if margin is None else margin))

    def _fit_rules(self, P: np.ndarray, pmask: np.ndarray, raw: np.ndarray | None = None) -> None:
        r = self.rules
        cw, ch = self.meta["canon"]
        hw2, hh = cw // 2, ch // 2
        half = [cv2.resize(np.clip(p, 0, 255).astype(np.uint8), (hw2, hh), interpolation=cv2.INTER_AREA) for p in P]
        hmask = cv2.resize(pmask, (hw2, hh), interpolation=cv2.INTER_NEAREST)
        grays = [_norm_grey(v) for v in half]
        # ---- label box: configured, or the repeatable printed region found in the goods
        bx = None
        if r.label_box is not None:
            bx = part_to_canon_box(r.label_box, hw2, hh, MARGIN)
            self.meta["label_source"] = "config"
        else:
            bx = _auto_label_box(np.stack(grays), hmask)
            self.meta["label_source"] = "auto" if bx is not None else "none"
        self.meta.pop("label_box_half", None)
        if bx is not None and (bx[2] - bx[0]) >= 6 and (bx[3] - bx[1]) >= 6:
            tpl = np.mean([g[bx[1]:bx[3], bx[0]:bx[2]] for g in grays], axis=0).astype(np.float32)
            self.arrays["label_template"] = tpl
            self.meta["label_box_half"] = [int(v) for v in bx]
            lm = LabelMatcher(tpl, tuple(bx))
            sc = np.array([lm.match(g)[0] for g in grays])
            s0 = np.array([lm.match(g, angles=[0.0])[0] for g in grays])
            lo = float(r.label_min_match) if r.label_min_match is not None else \
                float(min(0.8 * sc.min(), sc.mean() - 5 * sc.std(), 0.6))
            self.meta["label_min_match"] = max(lo, 0.15)
            self.meta["label_ok_straight"] = float(np.quantile(s0, 0.1))
            self.meta["label_good_scores"] = [round(float(v), 3) for v in sc]
        # ---- seal band (for naming regions): configured width, or 5 % of the short side
        frac = r.seal_band_frac if r.seal_band_frac is not None else 0.05
        short = ch / (1 + 2 * MARGIN)
        bw = max(2, int(round(frac * short)))
        outer = cv2.dilate(pmask, np.ones((3, 3), np.uint8))
        inner = cv2.erode(pmask, np.ones((3, 3), np.uint8), iterations=bw + 1)
        self.arrays["band"] = ((outer > 0) & (inner == 0)).astype(np.uint8)
        self.meta["seal_check"] = r.seal_band_frac is not None
        # ---- fill coverage
        self.meta.pop("fill", None)
        if r.fill_check:
            bwh = max(2, bw // 2)
            well = cv2.erode(hmask, np.ones((3, 3), np.uint8), iterations=bwh + 2) > 0
            band = (cv2.erode(hmask, np.ones((3, 3), np.uint8), iterations=1) > 0) & ~(
                cv2.erode(hmask, np.ones((3, 3), np.uint8), iterations=bwh) > 0)
            if "label_box_half" in self.meta:
                x0, y0, x1, y1 = self.meta["label_box_half"]
                well[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = False
                # the bare tray's colour is read on the flange, and a label reaching over the rim is not it
                # (its share of the ring moved the median colour off the tray's: a bared well read as full)
                band_nl = band.copy()
                band_nl[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = False
                if band_nl.sum() >= 0.5 * band.sum():
                    band = band_nl
            if well.sum() > 20 and band.sum() > 10:
                # where the goods always show food, bare tray is what counts: each pixel of the well is
                # weighted by how rarely the goods show the tray there (a part's contents edge wanders from
                # part to part; a slid or short fill bares the middle).  Each good's own coverage uses the
                # weights of the others (leave one out), as a new part's does.
                # on the raw views: tray and contents are under the same light there, while the goods'
                # photometric correction is fitted on pixels a slid fill may have bared, and its colour cast
                # moved the flange's chroma away from the floor's
                half_raw = half if raw is None else [cv2.resize(v, (hw2, hh), interpolation=cv2.INTER_AREA) for v in raw]
                band_idx = np.flatnonzero(band)
                labs_bands = [_band_colour(v, band_idx) for v in half_raw]     # each view converted once
                ref_l = float(np.median([band[0] for _, band in labs_bands]))
                fls = np.stack([floor_like(lab, band, ref_l) for lab, band in labs_bands]).astype(np.float32)
                n_g = len(fls)
                tot = fls.sum(axis=0)
                cov = np.array([_coverage_w(fls[i], _fill_weight((tot - fls[i]) / max(1, n_g - 1), well))
                                for i in range(n_g)])
                self.arrays["fill_weight"] = _fill_weight(tot / max(1, n_g), well)
                mu, sd = float(cov.mean()), float(cov.std())
                if r.fill_range is not None:
                    lo, hi = r.fill_range
                else:
                    lo, hi = min(mu - max(0.12, 5 * sd), float(cov.min()) - 0.08), 1.01
                active = r.fill_range is not None or mu > 0.6
                self.arrays["fill_well"] = well.astype(np.uint8)
                self.arrays["fill_band"] = band.astype(np.uint8)
                self.meta["fill"] = {"lo": float(lo), "hi": float(hi), "active": bool(active), "band_l": ref_l,
                                     "good_mean": mu, "good_std": sd}

    # ------------------------------------------------------------------ inspect
    def inspect(self, image: np.ndarray) -> InspectionResult:
        """Inspect one frame (of the size the model was fitted on).  See the module docstring."""
        t0 = time.perf_counter()
        if not self.fitted:
            raise InspectionError("the inspector is not fitted (call fit() or load())")
        if not self._built:
            self._build()
        img = as_bgr(image)
        W0, H0 = self.meta["image_size"]
        if img.shape[1] != W0 or img.shape[0] != H0:
            raise InspectionError(f"image is {img.shape[1]}x{img.shape[0]}, the model was fitted on {W0}x{H0}")
        grey = _is_grey(img)
        if self.meta.get("grey") and not grey:
            img = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        thr = float(self.meta["threshold"]) * self.rules.anomaly_margin
        frame = _Frame(img)
        blob = self._locate(frame)
        # a "part" far from the taught size is no part (a plain frame segments as one big region)
        if blob is not None and "area_frac" in self.meta:
            rel = blob.area / max(1e-9, self.meta["area_frac"] * W0 * H0)
            if not 0.2 <= rel <= 3.0:
                blob = None
        if blob is None:
            return InspectionResult(True, ["no_part"], 0.0, thr, None, None, part_found=False,
                                    ms=(time.perf_counter() - t0) * 1000)
        if self.meta.get("grey") is False and grey:
            raise InspectionError("grey image, but the model was fitted on colour images "
                                  "(inspect with the camera in the mode it was taught in)")
        cw, ch = self.meta["canon"]
        L, W = self.meta["nominal_px"]
        mode = self.meta["mode"]
        M, osc = self._orient(frame, blob, self.arrays["template"])
        if mode in ("flip2", "rot4"):
            # confirm the end-for-end orientation at half resolution against the aligned goods' mean
            # (the thumbnail can be fooled when the only asymmetric feature is a small label)
            al = self._aligner
            alts = [M, _rot180(M, cw, ch)]
            gs = [al.normalised(al.grey(frame, Mx)) for Mx in alts]
            i = int(np.argmax([float(g @ al.Tm) for g in gs]))
            M, lk_err = al.refine(frame, alts[i], iters=3, first=gs[i])     # its first view is the winner's
        else:
            M, lk_err = self._aligner.refine(frame, M, iters=3)
        # judged on where alignment puts the whole part, not on whether segmentation's outline reached the
        # border: a part cut by the frame edge whose visible piece segmented short looked whole
        truncated = self._truncated(M, img.shape, tol=blob.scale)
        fine, view, beyond = self._filled_views(frame, M, img.shape)
        pp = self._photo.params(view)
        # The photometrically aligned float view P = apply_fast(view, pp) is a lookup of the uint8 view's 256
        # values per channel, and everything inspect derives from it is elementwise: clip and 1/255 for the Lab
        # conversion, 1/40 for the texture features, clip and uint8 for the label's half view.  Each is the
        # same float32 arithmetic on the 256 table entries instead of on every pixel, then one lookup: bit for
        # bit what the per-pixel expressions gave, without P or the float temporaries.
        lut = self._photo.apply_fast(_RAMP3, pp)        # (256, 1, 3) float32: P's value for each uint8 value
        clipped = np.clip(lut, 0, 255)
        labP = cv2.LUT(view, clipped * (1.0 / 255.0))
        cv2.cvtColor(labP, cv2.COLOR_BGR2LAB, dst=labP)                  # = PixelModel.lab(P)
        F = _photo_u8(fine, pp)
        raw = self._maps(None, F, self._pixel, self._colour, self.arrays["bank"], self.arrays["bank_sq"],
                         self.arrays["blob_bank"], self._dark, blob_ix=self._blob_ix, labP=labP,
                         P40=cv2.LUT(view, lut * (1.0 / 40.0)), beyond=beyond)
        nm = np.multiply(raw, self._inv_scale, out=raw)
        per = nm.reshape(N_MAPS, -1).max(axis=1).tolist()
        amap = nm.max(axis=0)
        score = float(amap.max())
        meas: dict[str, float] = {"orientation_match": osc, "align_residual": lk_err,
                                  **{f"score_{n}": v for n, v in zip(MAP_NAMES, per)}}
        defects: list[str] = []
        regions: list[dict] = []
        r = self.rules
        # ---- rules
        half_u8 = None
        label_kind = None
        if self._label is not None:
            # = np.clip(P, 0, 255).astype(np.uint8), through the table (see above)
            half_u8 = cv2.resize(cv2.LUT(view, clipped.astype(np.uint8)), (cw // 2, ch // 2), interpolation=cv2.INTER_AREA)
            g = _norm_grey(half_u8)
            bxh = self.meta["label_box_half"]
            hot_label = float(amap[2 * bxh[1]:2 * bxh[3], 2 * bxh[0]:2 * bxh[2]].max()) > thr
            s0, _ = self._label.match(g, angles=[0.0])
            s, a = s0, 0.0
            if hot_label or s0 < self.meta["label_ok_straight"]:
                s, a = self._label.match(g, known={0.0: s0})     # the straight score is s0
            meas["label_match"] = s
            meas["label_angle_deg"] = a
            if s < self.meta["label_min_match"]:
                label_kind = "missing_label"
            elif abs(a) > r.label_angle_tol_deg:
                # the matcher reports an angle only when it explains the label clearly better than
                # straight; also asking for an anomalous label box missed a 6° skew at score 1.01 (cell
                # audit, seed 1) and changed no false-reject rate in bench/vision.py --quick
                label_kind = "skewed_label"
            if label_kind:
                defects.append(label_kind)
                regions.append({"kind": label_kind, "box": _to_image_box(M, [2 * v for v in bxh])})
        fill = self.meta.get("fill")
        if fill is not None:
            half_raw = cv2.resize(view, (cw // 2, ch // 2), interpolation=cv2.INTER_AREA)
            cov = _coverage_w(_floor_map(half_raw, self._fill_band, fill.get("band_l")), self.arrays["fill_weight"])
            meas["fill_coverage"] = cov
            if fill["active"] and not (fill["lo"] <= cov <= fill["hi"]):
                kind = "underfill" if cov < fill["lo"] else "overfill"
                defects.append(kind)
                ys, xs = np.nonzero(self.arrays["fill_well"])
                regions.append({"kind": kind, "box": _to_image_box(
                    M, (2 * int(xs.min()), 2 * int(ys.min()), 2 * int(xs.max()) + 2, 2 * int(ys.max()) + 2))})
        if r.part_size_tol is not None:
            # where segmentation is unsure of the outline (lk_scale), overall size from the aligned view's scale
            # (LK matched the part to the goods' mean, whatever segmentation made of its outline), and the
            # outline's only beyond its own disagreement; an outline the frame's edge cuts tells only the
            # extent it shows whole
            cl = blob.clipped
            cut_u, cut_v = cl[0] or cl[1], cl[2] or cl[3]
            dev = None
            if self.meta.get("lk_scale"):
                k = _scale_of(M) / ((L * (1 + 2 * MARGIN)) / cw)
                dev = abs(k - 1.0)
                if not (cut_u or cut_v):
                    # the outline's size and proportions too, beyond what the goods' own outlines disagree on
                    # (this path is taken because segmentation is unsure of the outline: a grey camera put two
                    # goods in 40 at 9 % off in proportion).  The aligned scale matches the whole view: a tray
                    # 20 % small with the label and rim of the taught one read less than 8 % small.  (Models
                    # before version 21: the proportions only, at no allowance.)
                    if "aspect_spread" in self.meta:
                        dev = max(dev, abs(math.sqrt(blob.length * blob.width / (L * W)) - 1.0)
                                  - 2.0 * max(self.meta["size_spread"]))
                    if mode == "flip2":
                        dev = max(dev, abs((blob.length / blob.width) / (L / W) - 1.0)
                                  - 2.0 * float(self.meta.get("aspect_spread", 0.0)))
            elif mode == "flip2" or cut_u or cut_v:
                devs = ([] if cut_u else [abs(blob.length / L - 1.0)]) + ([] if cut_v else [abs(blob.width / W - 1.0)])
                dev = max(devs) if devs else None
            else:
                dev = abs(math.sqrt(blob.length * blob.width) / L - 1.0)
            if dev is not None:
                meas["size_dev"] = dev
            if dev is not None and dev > r.part_size_tol and not truncated:
                defects.append("wrong_size")
                regions.append({"kind": "wrong_size", "box": _to_image_box(M, (0, 0, cw, ch))})
        # ---- anomalous regions, named by where and how they appear
        if score > thr:
            hot = (amap > thr).astype(np.uint8)
            # fragments a few pixels apart are one finding (a tear often shows as a chain of hot spots)
            n, lab, st, _ = cv2.connectedComponentsWithStats(cv2.dilate(hot, _K3, iterations=2), connectivity=8)
            part_area = float(self._eval.sum())
            band = self.arrays["band"] > 0
            bxf = None if self._label is None else [2 * v for v in self.meta["label_box_half"]]
            for i in range(1, n):
                x, y, w_, h_, _ = (int(v) for v in st[i])
                comp = (lab[y:y + h_, x:x + w_] == i) & (hot[y:y + h_, x:x + w_] > 0)
                area = int(comp.sum())
                if area == 0:
                    continue
                line = _line_like(comp, cw)
                kind = "anomaly"
                if bxf is not None and _overlap((x, y, x + w_, y + h_), bxf):
                    inside = comp[max(0, bxf[1] - y):max(0, bxf[3] - y), max(0, bxf[0] - x):max(0, bxf[2] - x)].sum()
                    if inside > 0.4 * area:
                        kind = label_kind or ("torn_film" if line else "label_defect")
                if kind == "anomaly":
                    if band[y:y + h_, x:x + w_][comp].mean() > 0.5:
                        kind = "seal_contamination"
                    elif area > 0.08 * part_area:
                        kind = "underfill" if "underfill" in defects else "anomaly"
                    elif line:
                        kind = "torn_film"
                    else:
                        kind = "foreign_body"
                if kind == label_kind:
                    continue            # already reported with the label box
                regions.append({"kind": kind, "box": _to_image_box(M, (x, y, x + w_, y + h_))})
                if kind not in defects:
                    defects.append(kind)
            if not defects:
                defects.append("anomaly")
        if truncated:
            defects.append("part_truncated")
        angle = math.degrees(math.atan2(M[1, 0], M[0, 0]))
        cx, cy = blob.cx, blob.cy
        if blob.split or any(blob.clipped):   # the outline was cut (neighbour, frame): the aligned view's centre
            cx, cy = (M @ ((cw - 1) / 2.0, (ch - 1) / 2.0, 1.0)).tolist()
        res = InspectionResult(
            defective=bool(defects), defects=defects, score=score, threshold=thr,
            pose_px=(float(cx), float(cy), float(angle_wrap(angle))),
            size_px=(float(blob.length), float(blob.width)), regions=regions, anomaly_map=amap,
            part_found=True, measurements=meas, canonical_to_image=M)
        res.ms = (time.perf_counter() - t0) * 1000.0
        return res

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the model as one ``.npz`` (arrays + a JSON header; no pickle)."""
        if not self.fitted:
            raise InspectionError("cannot save an unfitted inspector")
        p = Path(path)
        header = {"format": "axcell.vision.inspector", "version": MODEL_VERSION, "meta": self.meta,
                  "params": {"canon_long": self.canon_long, "coreset_size": self.coreset_size,
                             "folds": self.folds, "threshold_margin": self.threshold_margin, "seed": self.seed,
                             "blob_channel": self.blob_channel}}
        arrays = {k: np.asarray(v) for k, v in self.arrays.items()}
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        with open(p, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        return p

    @classmethod
    def load(cls, path: str | Path) -> "Inspector":
        p = Path(path)
        try:
            with open(p, "rb") as fh:
                if fh.read(2) != b"PK":  # np.load would try to unpickle anything else (refused, confusingly)
                    raise InspectionError(f"{p}: not an inspector model (not an .npz archive; write one with "
                                          f"`axcell vision fit`)")
        except OSError:
            pass  # reported by np.load below, as before
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise InspectionError(f"{p}: model file not found") from None
        except Exception as e:  # zipfile / format errors
            raise InspectionError(f"{p}: not an inspector model ({e.__class__.__name__}: {e})") from None
        if "__header__" not in arrays:
            raise InspectionError(f"{p}: not an inspector model (no header)")
        try:
            header = json.loads(arrays.pop("__header__").tobytes().decode())
        except ValueError as e:
            raise InspectionError(f"{p}: corrupt model header ({e})") from None
        if header.get("format") != "axcell.vision.inspector":
            raise InspectionError(f"{p}: not an inspector model (format {header.get('format')!r})")
        if header.get("version") not in READABLE_VERSIONS:
            raise InspectionError(f"{p}: model version {header.get('version')} is not supported "
                                  f"(this build reads versions {', '.join(map(str, READABLE_VERSIONS))}); "
                                  f"refit the model")
        for k, a in arrays.items():
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                # a fitted model never holds them; with them every comparison is false and defects pass as good
                raise InspectionError(f"{p}: damaged inspector model (NaN or infinite values in {k!r}); refit it")
        try:
            obj = cls(**header["params"])
            obj.meta = header["meta"]
            obj.arrays = arrays
            obj.rules = ProductRules(**obj.meta.get("rules", {}))
            obj.fitted = True
            obj._build()
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise InspectionError(f"{p}: damaged or incompatible inspector model "
                                  f"({e.__class__.__name__}: {e}); refit it") from None
        return obj


# --------------------------------------------------------------------------- product identification
def _is_grey(img: np.ndarray) -> bool:
    """Whether a BGR image carries no colour (all three channels equal, up to noise), judged on a sample."""
    # most colour frames show it on every eighth row of the sample already (a subset: same answer, 1/8 the work)
    for step in (56, 7):
        sm = img[::step, ::7].astype(np.int16)
        if np.abs(sm[..., 0] - sm[..., 1]).max() > 2 or np.abs(sm[..., 1] - sm[..., 2]).max() > 2:
            return False
    return True


def _id_hist(img: np.ndarray) -> np.ndarray:
    """Unit-norm square-root Lab histogram (4 L × 8 a × 8 b bins) of a 48-px-wide thumbnail."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (48, max(8, round(48 * h / w))), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_BGR2LAB)
    hist = cv2.calcHist([lab], [0, 1, 2], None, [4, 8, 8], [0, 256, 0, 256, 0, 256]).ravel()
    hist = np.sqrt(hist / max(1.0, float(hist.sum())))
    return (hist / max(1e-9, float(np.linalg.norm(hist)))).astype(np.float32)


def identify(image: np.ndarray, inspectors: dict[str, "Inspector"]) -> tuple[str, float]:
    """Which product's model should judge ``image``: ``(name, affinity)`` of the best match.

    One thumbnail histogram is computed for all models (~0.1 ms in total), so a
    cell runs only the chosen product's full inspection.
    """
    if not inspectors:
        raise InspectionError("no inspectors to choose from")
    h = _id_hist(as_bgr(image))
    scores = {n: ins.affinity(image, _hist=h) for n, ins in inspectors.items()}
    best = max(scores, key=scores.get)
    return best, scores[best]


# --------------------------------------------------------------------------- helpers
_U8_VALUES = np.arange(256, dtype=np.float32)[:, None]


def _photo_u8(v: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-channel gain / offset (``PhotoNorm.params``) applied to a uint8 view through a lookup table."""
    lut = np.clip(_U8_VALUES * p[:, 0][None, :] + p[:, 1][None, :] + 0.5, 0, 255).astype(np.uint8)
    # one single-channel table per plane: OpenCV applies a 3-channel table to a 3-channel image element by
    # element, and on the fine view (~77k pixels) splitting, three plain lookups and a merge took 2/3 the time
    return cv2.merge([cv2.LUT(c, np.ascontiguousarray(lut[:, k])) for k, c in enumerate(cv2.split(v))])


def _norm_grey(v: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(v, cv2.COLOR_BGR2GRAY).astype(np.float32)
    m, s = cv2.meanStdDev(g)
    return (g - float(m[0, 0])) / max(float(s[0, 0]), 1.0)


def _band_colour(half_bgr: np.ndarray, band_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = cv2.cvtColor(half_bgr, cv2.COLOR_BGR2LAB)
    return lab, _median_u8(np.take(lab.reshape(-1, 3), band_idx, axis=0))


def _floor_map(half_bgr: np.ndarray, band_idx: np.ndarray, ref_l: float | None = None) -> np.ndarray:
    """Bool map of the pixels that look like the bare tray (judged against the seal band's own colour);
    ``band_idx``: the band's pixels as flat indices (``np.flatnonzero`` of its mask); ``ref_l``: see floor_like."""
    lab, band = _band_colour(half_bgr, band_idx)
    return floor_like(lab, band, ref_l)


def _median_u8(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=0)`` of a uint8 (n, k) array, bit for bit: the middle order statistic(s) from one
    partition of the transposed (contiguous) columns, the two middle ones of an even count averaged in float64
    (np.median takes their mean).  np.median's generic machinery was most of the fill rule's colour estimate."""
    n = len(x)
    if n == 0:
        return np.median(x, axis=0)        # NaN, as before
    m = n // 2
    xt = np.ascontiguousarray(x.T)
    if n % 2:
        return np.partition(xt, m, axis=1)[:, m].astype(np.float64)
    p = np.partition(xt, (m - 1, m), axis=1)
    return (p[:, m - 1].astype(np.float64) + p[:, m]) / 2


def _fill_weight(p_floor: np.ndarray, well: np.ndarray) -> np.ndarray:
    """Per-pixel weight of the well for the fill rule: how rarely the goods show bare tray there (smoothed)."""
    p = cv2.GaussianBlur(p_floor.astype(np.float32), (0, 0), 1.5)
    w = np.clip(1.0 - p, 0.0, 1.0) * well
    if float(w.sum()) < 0.05 * max(1.0, float(well.sum())):      # the goods show tray everywhere: plain mean
        w = well.astype(np.float32)
    return (w / max(float(w.sum()), 1e-9)).astype(np.float32)


def _coverage_w(floor: np.ndarray, weight: np.ndarray) -> float:
    """Share of the (weighted) well covered by contents."""
    return 1.0 - float((floor * weight).sum())


def _auto_label_box(grays: np.ndarray, hmask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The printed label as seen on the goods: a textured region that repeats from part to part.

    Looks inside the part (away from its outline, where tray walls repeat too)
    for pixels whose median view has strong local contrast while the spread
    across the goods is small; returns the bounding box of the largest such
    region when it is plausibly label-sized, else None.
    """
    med = np.median(grays, axis=0).astype(np.float32)
    mad = np.median(np.abs(grays - med), axis=0).astype(np.float32)
    mu = cv2.blur(med, (5, 5))
    tex = np.sqrt(np.maximum(cv2.blur(med * med, (5, 5)) - mu * mu, 0))
    spread = cv2.blur(mad, (5, 5))
    h, w = hmask.shape
    short = min(h, w)
    inner = cv2.erode(hmask, np.ones((3, 3), np.uint8), iterations=max(2, int(0.1 * short))) > 0
    if inner.sum() < 50:
        return None
    cand = inner & (tex > 0.35) & (spread < 0.5 * np.maximum(tex, 0.2)) & (spread < np.quantile(spread[inner], 0.5))
    cand = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    n, lab, st, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    if n <= 1:
        return None
    i = 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh, area = (int(v) for v in st[i])
    part_area = float(hmask.sum())
    if not (0.015 * part_area <= bw * bh <= 0.45 * part_area) or area < 0.35 * bw * bh:
        return None
    return (x, y, x + bw, y + bh)


def _map_tail_levels(per_map: np.ndarray, floors: Sequence[float]) -> np.ndarray:
    """Per map, the level of its (normalised) out-of-fold good scores that a new good exceeds with probability
    ``MAP_TAIL_P``: a Gumbel tail fitted to the goods' per-image maxima, never below the largest of them, nor
    below ``floors[j]`` (a sparse map's floor, in its normalised units), nor below 1 (the map's own scale: a
    map is made less sensitive where its goods call for it, never more; levels under 1 from the 40 fitting goods
    gave the demo cell's live trays twice the false rejects), 1 for a map no good fired.

    The score is the maximum over the maps, so a new good is rejected when *any* map exceeds its level: with
    each map's level at the largest of N out-of-fold goods, each map alone rejects about 1 / (N + 1) of new goods
    and the maps add up (out-of-fold pixel, texture and blob maxima of 40 goods were each exceeded by about
    2 % of new goods, 13 products).  A fitted tail puts every map at the same, smaller, rejection rate, from
    all N values rather than from the largest one alone (a product whose goods vary more gets a higher level;
    one whose largest out-of-fold good was an outlier no longer has that one set the threshold)."""
    x = np.asarray(per_map, np.float64)
    lv = np.ones(x.shape[1])
    if len(x) < 10:
        return np.maximum(lv, x.max(axis=0)) if len(x) else lv
    for j in range(x.shape[1]):
        top = float(x[:, j].max())
        if top <= 0.0:
            continue
        lv[j] = max(top, float(gumbel_level(x[:, j], MAP_TAIL_P)), float(floors[j]), 1.0)
    return lv


def _line_like(comp: np.ndarray, canon_long: int) -> bool:
    """A hot region shaped like a line (a tear, a cut, a hair): long for its width, and not tiny.

    Elongation from the second moments of the region's pixels (any orientation, unlike a bounding box's
    aspect), length about 4 standard deviations along the major axis."""
    ys, xs = np.nonzero(comp)
    if len(xs) < 4:
        return False
    c = np.cov(np.stack([xs, ys]).astype(np.float64))
    ev = np.linalg.eigvalsh(c + 1e-9 * np.eye(2))
    major, minor = float(ev[1]), max(float(ev[0]), 0.25)
    return major / minor >= 9.0 and 4.0 * math.sqrt(major) >= 0.08 * canon_long


def _overlap(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _outline_spread(blobs: Sequence[Blob]) -> float:
    """How much found outlines disagree on the part's size: the sd of length and of width, relative to their
    medians, summed."""
    Ls = np.array([b.length for b in blobs])
    Ws = np.array([b.width for b in blobs])
    return float(np.std(Ls / np.median(Ls)) + np.std(Ws / np.median(Ws)))


def _beyond(M: np.ndarray, shape: tuple[int, ...], cw: int, ch: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Masks (uint8 0/1) of the canonical view's pixels, and of the fine view's, that ``M`` takes beyond the
    frame's edge (a warp there repeats the edge pixels); None when the whole view lies inside the frame."""
    h, w = shape[:2]
    q = _apply(M, np.array([[-0.5, -0.5], [cw - 0.5, -0.5], [-0.5, ch - 0.5], [cw - 0.5, ch - 0.5]]))
    if q[:, 0].min() >= -0.5 and q[:, 1].min() >= -0.5 and q[:, 0].max() <= w - 0.5 and q[:, 1].max() <= h - 0.5:
        return None
    masks = []
    for Mx, ww, hh in ((M, cw, ch), ((_h(M) @ _S_FINE)[:2], cw * FINE, ch * FINE)):
        u = np.arange(ww, dtype=np.float64)[None, :]
        v = np.arange(hh, dtype=np.float64)[:, None]
        x = Mx[0, 0] * u + Mx[0, 1] * v + Mx[0, 2]
        y = Mx[1, 0] * u + Mx[1, 1] * v + Mx[1, 2]
        masks.append(((x < -0.5) | (y < -0.5) | (x > w - 0.5) | (y > h - 0.5)).astype(np.uint8))
    return (masks[0], masks[1]) if masks[0].any() or masks[1].any() else None


def _apply(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ M[:, :2].T + M[:, 2]


def _to_image_box(M: np.ndarray, box) -> list[int]:
    x0, y0, x1, y1 = box
    pts = _apply(M, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], float))
    return [int(math.floor(pts[:, 0].min())), int(math.floor(pts[:, 1].min())),
            int(math.ceil(pts[:, 0].max())), int(math.ceil(pts[:, 1].max()))]


# --------------------------------------------------------------------------- overlay
def draw_overlay(image: np.ndarray, result: InspectionResult) -> np.ndarray:
    """A copy of ``image`` (BGR) with the part outline, +x arrow, regions and verdict drawn on it."""
    out = as_bgr(image).copy()
    h, w = out.shape[:2]
    t = max(1, round(max(h, w) / 640))
    col = (0, 0, 255) if result.defective else (0, 200, 0)
    if result.pose_px is not None and result.canonical_to_image is not None and result.anomaly_map is not None:
        M = result.canonical_to_image
        ch, cw = result.anomaly_map.shape
        pts = _apply(M, np.array([[0, 0], [cw, 0], [cw, ch], [0, ch]], float))
        cv2.polylines(out, [np.round(pts).astype(np.int32)], True, col, t, cv2.LINE_AA)
        cx, cy, a = result.pose_px
        L = 0.3 * (result.size_px[0] if result.size_px else 50)
        tip = (int(cx + L * math.cos(math.radians(a))), int(cy + L * math.sin(math.radians(a))))
        cv2.arrowedLine(out, (int(cx), int(cy)), tip, (255, 200, 0), t, cv2.LINE_AA, tipLength=0.2)
    for r in result.regions:
        x0, y0, x1, y1 = r["box"]
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 140, 255), t)
        cv2.putText(out, r["kind"], (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * t, (0, 140, 255), t)
    txt = ("NG " + ",".join(result.defects)) if result.defective else "OK"
    cv2.putText(out, f"{txt}  score {result.score:.2f}/{result.threshold:.2f}", (8, 22 * t),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6 * t, col, t + 1, cv2.LINE_AA)
    return out
