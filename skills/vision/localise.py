"""Find a part on the belt, measure its pose and warp it to a canonical view.

Everything here is generic: the part is the largest blob that differs from
the belt (background colour estimated from the image border, optionally
refined by a belt model learned from good images), its pose comes from
``cv2.minAreaRect`` and the orientation ambiguity (180° for oblong parts, 90°
for square ones, any angle for round ones) is resolved by correlation with a
learned canonical template.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["InspectionError", "Blob", "as_bgr", "find_part", "warp_matrix", "warp_canonical",
           "descriptor", "WORK_LONG"]

WORK_LONG = 320          # long side (px) of the downscaled image used for segmentation
MIN_SIDE = 32
SIGMA_THR = 4.0


class InspectionError(ValueError):
    """An input the inspector cannot work with (not an image, empty, wrong size, unfitted model...)."""


def as_bgr(image: object) -> np.ndarray:
    """Validate an image and return it as contiguous uint8 BGR (H, W, 3); raise InspectionError otherwise.

    Accepted: uint8, bool, uint16 (read as 8-, 12- or 16-bit data by its brightest pixel, so 12-bit camera
    data in a 16-bit file keeps its brightness) and floating point in [0, 1];
    grey, grey + alpha, BGR and BGRA.  Both sides must be at least 32 px.
    """
    if image is None:
        raise InspectionError("no image (None)")
    if not isinstance(image, np.ndarray):
        raise InspectionError(f"image must be a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise InspectionError("empty image")
    img = image
    if img.dtype == np.uint16:
        # 16-bit containers often hold 12-bit camera data (or plain 8-bit values): read as full 16-bit they
        # come out (nearly) black.  Only the common depths, so frames of one camera are scaled alike.
        top = int(img.max())
        bits = 8 if top < 256 else 12 if top < 4096 else 16
        img = (img >> (bits - 8)).astype(np.uint8)
    elif img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            if not np.isfinite(img).all():
                raise InspectionError(f"{img.dtype} image holds NaN or infinite pixels")
            lo, hi = float(img.min()), float(img.max())
            if not (lo >= 0.0 and hi <= 1.0):
                raise InspectionError(f"{img.dtype} pixels must lie in [0, 1]; this image spans "
                                      f"{lo:.4g}..{hi:.4g} (save it as 8- or 16-bit)")
            img = (img * 255.0 + 0.5).astype(np.uint8)
        else:
            raise InspectionError(f"unsupported pixel type {img.dtype} "
                                  f"(want 8- or 16-bit unsigned, or floating point in [0, 1])")
    if img.ndim == 3 and img.shape[2] == 2:      # grey + alpha
        img = img[..., :1]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise InspectionError(f"unsupported image shape {image.shape} (want HxW, HxWx3 or HxWx4)")
    if min(img.shape[:2]) < MIN_SIDE:
        raise InspectionError(f"image too small ({img.shape[1]}x{img.shape[0]}, need at least {MIN_SIDE}px)")
    return np.ascontiguousarray(img)


@dataclass
class Blob:
    """A found part, in full-resolution pixels.

    ``angle`` is the direction of the long axis in degrees, in (-90, 90];
    orientation (which end is which) is resolved later.
    """

    cx: float
    cy: float
    length: float
    width: float
    angle: float
    area: float
    touches_border: bool
    mask_small: np.ndarray          # filled blob mask at working scale (uint8 0/255)
    scale: float                    # full px per working px
    dist_small: np.ndarray = field(repr=False)   # distance to the belt (in belt spreads) at working scale
    #: cut off a touching neighbour (``_split_touching``): the outline lost a little at the cut, so the
    #: centre is better taken from the aligned view
    split: bool = False
    #: the outline's extent along the long axis (u, at ``angle``) and across it (v), full-resolution px about
    #: the image origin: (u_min, u_max, v_min, v_max)
    uv: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    #: which of those four ends lies on the frame's edge: that end of the part may be out of view, and its
    #: extent says nothing of the part's size or centre there
    clipped: tuple[bool, bool, bool, bool] = (False, False, False, False)

    @property
    def contrast(self) -> float:
        """Median distance-to-belt inside the blob vs. the threshold.  Worked out when asked: inspection never
        asks, and the median of the blob's pixels was about 1 % of a frame's inspection."""
        inside = self.dist_small[self.mask_small > 0]
        return float(np.partition(inside, inside.size // 2)[inside.size // 2] / SIGMA_THR) if inside.size else 0.0


def _downscale(img: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    s = max(h, w) / float(long_side)
    if s <= 1.0:
        return img, 1.0
    small = cv2.resize(img, (max(1, round(w / s)), max(1, round(h / s))), interpolation=cv2.INTER_AREA)
    return small, w / small.shape[1]


def find_part(img: np.ndarray, *, belt_lab: np.ndarray | None = None, belt_scale: np.ndarray | None = None,
              min_area_frac: float = 0.01, expected_area_frac: float | None = None,
              small: np.ndarray | None = None, scale: float | None = None,
              frame_lab: np.ndarray | None = None, shadow: bool = False) -> Blob | None:
    """Segment the part from the belt; None when nothing plausible is found.

    ``shadow``: a darker shade of the belt (its colour at a lower light, see :func:`_shadow_like`) is belt,
    not part: a shadow the part casts.  Only for products with nothing of that look (the inspector decides
    at fit): a black tray on a grey belt would lose pieces of itself.

    ``belt_lab``/``belt_scale``: learned belt colour (Lab, uint8 scale) and
    per-channel spread; the colour is re-centred on the image border so global
    lighting changes do not matter.  ``frame_lab``: the good frames' mean colour (Lab, as
    ``belt_lab``); with it a frame whose light shifted all colours still trusts its border.
    """
    if small is None:
        small, scale = _downscale(img, WORK_LONG)
    assert scale is not None
    sm = cv2.GaussianBlur(small, (3, 3), 0)
    lab = cv2.cvtColor(sm, cv2.COLOR_BGR2LAB).astype(np.float32)
    h, w = lab.shape[:2]
    seen = None             # the taught belt colour, as this frame's light shows it (see below)
    if belt_lab is not None:
        seen = np.asarray(belt_lab, np.float32)
        if frame_lab is not None:
            seen = seen + (lab.reshape(-1, 3).mean(axis=0) - np.asarray(frame_lab, np.float32))
    bg, sc_border = _background(lab, belt=seen)
    if belt_lab is not None:
        # trust the border only when it looks like the learned belt (a part may cover it)
        mid = bg[h // 2, w // 2]
        exp = np.asarray(belt_lab, np.float32)
        if (np.abs(mid - exp)[1:].max() > 12 or abs(mid[0] - exp[0]) > 80) and frame_lab is not None:
            # ... as the light of this frame shows it: a warmer or dimmer light shifts the whole frame, belt and
            # part alike (a white-balance shift of 15 % read as "the part covers the border", and the learned
            # belt colour then found no part at all)
            exp = seen
        if np.abs(mid - exp)[1:].max() > 12 or abs(mid[0] - exp[0]) > 80:
            bg = np.broadcast_to(exp, lab.shape)
    sc = np.maximum(np.asarray(belt_scale, np.float32), sc_border) if belt_scale is not None else sc_border
    d = cv2.subtract(lab, np.ascontiguousarray(bg, np.float32)) if bg.ndim == 3 and bg.strides[0] else \
        cv2.subtract(lab, tuple(float(v) for v in np.asarray(bg).reshape(-1, 3)[0]) + (0.0,))
    d = cv2.multiply(d, tuple(float(1.0 / v) for v in sc) + (0.0,))
    dist = cv2.sqrt(cv2.transform(cv2.multiply(d, d), _ONES3))
    if shadow:
        dist[_shadow_like(lab, bg, sc)] = 0.0
    thr = SIGMA_THR
    fg = cv2.compare(dist, thr, cv2.CMP_GT)          # 255 / 0
    k = max(3, (min(h, w) // 60) | 1)
    ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, ker)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, ker)
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    areas = [cv2.contourArea(c) for c in contours]
    if expected_area_frac:
        target = expected_area_frac * h * w
        i = int(np.argmin([abs(math.log(max(a, 1.0) / target)) for a in areas]))
        if areas[i] < 0.3 * target:
            i = int(np.argmax(areas))
    else:
        i = int(np.argmax(areas))
    c = contours[i]
    area = areas[i]
    split = False
    if area < min_area_frac * h * w:
        return None
    if expected_area_frac and max(area, cv2.contourArea(cv2.convexHull(c))) > 1.3 * target:
        # larger than the part (its outline, as the part's area was measured): it may touch a neighbouring
        # tray (trays queued on a line); cut at the neck
        got = _split_touching(c, (h, w), target)
        if got is not None:
            split = True
            c, area = got
            contours, areas = list(contours), list(areas)
            contours[i], areas[i] = c, area
    hull = _merge_fragments(fg, contours, areas, i, expected_area_frac * h * w if expected_area_frac else None)
    mask = np.zeros((h, w), np.uint8)
    cv2.drawContours(mask, [hull], -1, 255, -1)
    (cx, cy), (rw, rh), ang = cv2.minAreaRect(hull)
    if rw < rh:
        rw, rh = rh, rw
        ang += 90.0
    # The long axis from the mask's second moments when the part is clearly elongated: minAreaRect snaps to a
    # hull edge, and on oval / rounded parts at working resolution that edge is an arbitrary lattice direction
    # (an ellipse's bounding-box area barely changes over ±30°).  Square and round parts keep minAreaRect.
    mo = cv2.moments(mask, binaryImage=True)
    if mo["m00"] > 0:
        mu20, mu02, mu11 = mo["mu20"], mo["mu02"], mo["mu11"]
        tr = mu20 + mu02
        dd = math.sqrt(max((mu20 - mu02) ** 2 + 4 * mu11 * mu11, 0.0))
        lam1, lam2 = 0.5 * (tr + dd), 0.5 * (tr - dd)
        if lam1 > 0 and lam2 / lam1 < 0.8:
            ang = math.degrees(0.5 * math.atan2(2 * mu11, mu20 - mu02))
            a = math.radians(ang)
            pts = hull.reshape(-1, 2).astype(np.float64)
            u = pts[:, 0] * math.cos(a) + pts[:, 1] * math.sin(a)
            v = -pts[:, 0] * math.sin(a) + pts[:, 1] * math.cos(a)
            rw, rh = float(u.max() - u.min()), float(v.max() - v.min())
            uc, vc = 0.5 * (u.max() + u.min()), 0.5 * (v.max() + v.min())
            cx, cy = uc * math.cos(a) - vc * math.sin(a), uc * math.sin(a) + vc * math.cos(a)
    ang = (ang + 90.0) % 180.0 - 90.0
    touches = _touches(hull, h, w)
    s = float(scale)
    uv, clipped = _extent(hull, ang, h, w, s) if touches else ((0.0, 0.0, 0.0, 0.0), (False,) * 4)
    # minAreaRect works on pixel centres of the boundary: add one pixel of the working scale
    return Blob(cx=(cx + 0.5) * s - 0.5, cy=(cy + 0.5) * s - 0.5, length=(rw + 1.0) * s, width=(rh + 1.0) * s,
                angle=float(ang), area=float(cv2.contourArea(hull)) * s * s, touches_border=bool(touches),
                mask_small=mask, scale=s, dist_small=dist, split=split, uv=uv, clipped=clipped)


def _shadow_like(lab: np.ndarray, bg: np.ndarray, sc: np.ndarray) -> np.ndarray:
    """Pixels (of an 8-bit Lab image) that look like the belt ``bg`` (spread ``sc``) under less light: clearly
    darker, down to a third of its lightness, with its chroma shrunk in proportion (CIELAB chroma follows
    L* + 16 as the light dims)."""
    bg = np.broadcast_to(np.asarray(bg, np.float32), lab.shape)
    r = (lab[..., 0] + 40.8) / (bg[..., 0] + 40.8)            # (L* + 16) ratio, in 8-bit L units
    ok = (lab[..., 0] < bg[..., 0] - 2.0 * sc[0]) & (r >= 0.35)
    for c in (1, 2):
        ok &= np.abs((lab[..., c] - 128.0) - r * (bg[..., c] - 128.0)) < 3.0 * sc[c] + 3.0
    return ok


def _extent(hull: np.ndarray, ang: float, h: int, w: int, s: float):
    """The outline's extent along and across ``ang`` (full px, as :attr:`Blob.uv`) and which ends of it lie on
    the frame's edge (:attr:`Blob.clipped`): an end is cut when some outline point within a working pixel of
    that extreme sits on the edge."""
    pts = hull.reshape(-1, 2).astype(np.float64)
    edge = (pts[:, 0] <= 0.5) | (pts[:, 1] <= 0.5) | (pts[:, 0] >= w - 1.5) | (pts[:, 1] >= h - 1.5)
    full = (pts + 0.5) * s - 0.5
    a = math.radians(ang)
    c_, s_ = math.cos(a), math.sin(a)
    u = full[:, 0] * c_ + full[:, 1] * s_
    v = -full[:, 0] * s_ + full[:, 1] * c_
    tol = 1.0 * s
    ends = []
    for q, lo in ((u, True), (u, False), (v, True), (v, False)):
        near = q <= q.min() + tol if lo else q >= q.max() - tol
        ends.append(bool(edge[near].any()))
    half = 0.5 * s           # as the blob's length and width: the outline runs through boundary pixel centres
    return ((float(u.min()) - half, float(u.max()) + half, float(v.min()) - half, float(v.max()) + half),
            tuple(ends))


_RING: dict[tuple[int, int], tuple] = {}
_ONES3 = np.ones((1, 3), np.float32)


def _ring(h: int, w: int, b: int):
    """Per image size: border sample positions, their design matrix, the plane basis."""
    key = (h, w, b)
    r = _RING.get(key)
    if r is None:
        ring = np.zeros((h, w), bool)
        ring[:b] = ring[-b:] = True
        ring[:, :b] = ring[:, -b:] = True
        ys, xs = np.nonzero(ring)
        sub = slice(None, None, max(1, len(xs) // 800))          # a few hundred border pixels suffice
        ys, xs = ys[sub], xs[sub]
        A = np.stack([np.ones(len(xs)), xs / w - 0.5, ys / h - 0.5], 1)
        basis = np.empty((h, w, 2), np.float32)
        basis[..., 0] = (np.arange(w, dtype=np.float32) / w - 0.5)[None, :]
        basis[..., 1] = (np.arange(h, dtype=np.float32) / h - 0.5)[:, None]
        r = _RING[key] = (ys * w + xs, A.astype(np.float32), basis)
    return r


def _background(lab: np.ndarray, b: int = 3, belt: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Belt colour as a plane a + b·x + c·y per channel, fitted robustly to the image border; and its spread.

    ``belt``: the taught belt colour, when known.  Where less than half the border is near it (but some is),
    the part covers most of the border (a camera framed on the part alone): the plane and its spread are
    fitted to the border pixels near the taught colour.  Otherwise the first plane is fitted to the whole
    border, and the final one to the pixels within 4 spreads of it.  Before a belt colour is taught, the
    first plane is fitted to the border pixels near the border's densest colour instead: a part covering a
    tenth of the border (a tightly framed tray) tilted a plane fitted to all of it towards its own colour far
    enough that the whole tray passed for belt, its contents were taken for the part, and the tray's colour
    was taught as the belt's.  (On a plain border with a gradient of light the whole-border start is the
    better: a white belt saturated in one corner had its densest colour there, and the plane missed the rest.)"""
    h, w = lab.shape[:2]
    flat, A, basis = _ring(h, w, b)
    v = np.take(lab.reshape(-1, 3), flat, axis=0)       # the rows of lab[flat]: np.take gathers rows ~8x faster
    fit = None
    if belt is not None:
        dv = np.abs(v - belt)
        kb = np.flatnonzero((dv[:, 0] < BELT_NEAR[0]) & (np.maximum(dv[:, 1], dv[:, 2]) < BELT_NEAR[1]))
        if len(kb) >= 0.05 * len(v):
            fit = _border_plane(v, A, kb, 0.05 if len(kb) < 0.5 * len(v) else 0.3)
        if fit is None:
            fit = _border_plane(v, A, None, 0.3)
    else:
        d0 = np.abs(v - _shorth(v))
        q0 = d0 / np.maximum(_median0(d0) * 1.4826, _SC_FLOOR)
        k0 = _rows_within(q0)
        fit = _border_plane(v, A, k0 if len(k0) >= 0.3 * len(v) else None, 0.3)
    if fit is not None:
        coef, mad = fit
    else:                       # the part covers most of the border: fall back to a constant
        coef = np.zeros((3, 3), np.float32)
        coef[0] = np.median(v, axis=0)
        mad = np.median(np.abs(v - coef[0]), axis=0) * 1.4826
    c = coef.astype(np.float32)
    # plane = c0 + [x, y] @ [c1; c2], one matrix transform of the cached (x, y) basis
    bg = cv2.transform(basis, np.ascontiguousarray(np.concatenate([c[1:].T, c[0][:, None]], axis=1)))
    sc = np.maximum(mad * 1.5, _SC_FLOOR).astype(np.float32)
    return bg, sc


def _border_plane(v: np.ndarray, A: np.ndarray, start: np.ndarray | None, need: float):
    """(coef, spread) of a plane fitted to border colours ``v`` (design ``A``): first to the rows ``start`` (None:
    all), then to every row within 4 spreads of that plane (the spread of ``start``'s rows about it, or of all
    rows' when ``start`` is None or most of the rows).  None when fewer than ``need`` of the rows are within."""
    if start is None:
        Ak, vk = A, v
    else:
        Ak, vk = np.take(A, start, axis=0), np.take(v, start, axis=0)
    coef = _plane(Ak, vk)
    dev = np.abs(v - A @ coef)
    own = start is not None and len(start) < 0.5 * len(v)
    mad = _median0(np.abs(vk - Ak @ coef) if own else dev) * 1.4826 + 1e-3
    q = dev / mad
    keep = _rows_within(q)
    if len(keep) < need * len(v):
        return None
    Ak = np.take(A, keep, axis=0)      # = A[mask], v[mask] of the boolean mask (its indices, found once)
    vk = np.take(v, keep, axis=0)
    coef = _plane(Ak, vk)
    return coef, _median0(np.abs(vk - Ak @ coef)) * 1.4826 + 1e-3


def _plane(A: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Least-squares plane coefficients (3, 3) of colours ``v`` over design rows ``A`` (lightly regularised)."""
    return np.linalg.solve(A.T @ A + np.eye(3, dtype=np.float32) * 1e-6, A.T @ v)


def _rows_within(q: np.ndarray, k: float = 4.0) -> np.ndarray:
    """Indices of the rows of (n, 3) ``q`` whose largest value is below ``k``: the largest of the three channels,
    as .max(axis=1) gives it (a max is exact) without a reduction over a 3-long axis, which numpy runs row by
    row."""
    return np.flatnonzero(np.maximum(np.maximum(q[:, 0], q[:, 1]), q[:, 2]) < k)


_SC_FLOOR = np.array([2.0, 1.0, 1.0], np.float32)      # the least spread of the belt's L*, a*, b* (8-bit Lab)
#: a border pixel this near the taught belt colour (8-bit Lab: lightness, then a* and b*) may be belt
BELT_NEAR = (30.0, 10.0)


def _shorth(v: np.ndarray) -> np.ndarray:
    """Per column of (n, k) ``v``: the middle of the shortest interval that holds half the values (the densest
    half; unlike the median it stays on the belt when a part covers nearly half the border)."""
    x = np.sort(v, axis=0)
    m = len(x) // 2
    width = x[m:] - x[: len(x) - m]
    i = np.argmin(width, axis=0)
    cols = np.arange(x.shape[1])
    return 0.5 * (x[i, cols] + x[i + m, cols])


def _median0(x: np.ndarray) -> np.ndarray:
    """``np.median(x, axis=0)`` of a finite (n, k) float array, bit for bit: the middle order statistic(s) from one
    partition of the transposed (contiguous) columns, the two middle ones of an even count averaged in the
    array's own precision as numpy's median does ((a + b) / 2).  np.median's generic machinery and its
    partition along a strided axis took most of the ~50 µs it spent on the ~800 × 3 border samples (twice a
    frame).  Not for NaNs (np.median would return NaN): the samples are Lab values."""
    n = x.shape[0]
    m = n // 2
    xt = np.ascontiguousarray(x.T)
    if n % 2:
        return np.partition(xt, m, axis=1)[:, m]
    p = np.partition(xt, (m - 1, m), axis=1)
    return (p[:, m - 1] + p[:, m]) / 2


#: least share of a merged outline that must be foreground: pieces of one part leave only thin gaps (a dark
#: rim between a light flange and the contents), two trays side by side leave a wedge of belt between them
MERGE_FILL = 0.8


def _touches(c: np.ndarray, h: int, w: int) -> bool:
    x, y, bw, bh = cv2.boundingRect(c)
    return x <= 1 or y <= 1 or x + bw >= w - 1 or y + bh >= h - 1


def _split_touching(c: np.ndarray, shape: tuple[int, int], target: float) -> tuple[np.ndarray, float] | None:
    """The piece of an outline ``c`` that is one part of area ``target`` (working px), when ``c`` is that part
    and a neighbour touching it through a neck (corner to corner, or a short stretch of side); None if no
    erosion up to a fifth of the part's size cuts such a piece off.

    Erode the outline until it falls apart into cores, share the outline out between the cores (each pixel to
    the nearest: the cut runs through the neck), and keep the piece closest to the part's area (within
    -35 % .. +30 %) among those about as convex as a part's outline (area ≥ 90 % of the hull's). Trays
    pressed together along a whole side stay one blob (no neck to cut): the inspection then reports the wrong
    size rather than guess."""
    h, w = shape
    blob = np.zeros((h, w), np.uint8)
    cv2.drawContours(blob, [c], -1, 255, -1)
    r_max = max(2, int(0.2 * math.sqrt(target)))
    r = 1
    while r <= r_max:
        ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        n, lab, st, _ = cv2.connectedComponentsWithStats(cv2.erode(blob, ker), connectivity=8)
        cores = [k for k in range(1, n) if st[k, cv2.CC_STAT_AREA] >= 0.02 * target]
        if len(cores) >= 2:
            # distance of every pixel to each core; the nearest core takes it
            dist = np.stack([cv2.distanceTransform((lab != k).astype(np.uint8), cv2.DIST_L2, 3) for k in cores])
            owner = np.argmin(dist, axis=0)
            best, best_err = None, None
            for j in range(len(cores)):
                piece = cv2.bitwise_and(blob, (owner == j).astype(np.uint8) * 255)
                cs, _ = cv2.findContours(piece, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                if not cs:
                    continue
                pc = max(cs, key=cv2.contourArea)
                pa = cv2.contourArea(pc)
                err = abs(math.log(max(pa, 1.0) / target))
                # the inspection takes a part's convex hull: a piece still holding a strip of the neighbour
                # is far from convex (erode further)
                solid = pa / max(1.0, cv2.contourArea(cv2.convexHull(pc)))
                if 0.65 * target <= pa <= 1.3 * target and solid >= 0.9 and (best_err is None or err < best_err):
                    best, best_err = (pc, float(pa)), err
            if best is not None:
                return best
        r += 1 if r < 4 else 2
    return None


def _merge_fragments(fg: np.ndarray, contours, areas: list[float], i: int, target: float | None) -> np.ndarray:
    """Convex hull of contour ``i`` and the nearby fragments that belong to the same part.

    A dark rim may split a part in two; a neighbouring tray in the frame is a separate object. A fragment
    joins only when (a) it is near the part, (b) it does not run off the frame while the part does not (a
    neighbour cut by the frame's edge), (c) the joint outline stays mostly foreground (``MERGE_FILL``) and
    (d) with a taught area ``target`` (working px), the joint outline stays within 1.35× of it. Fragments are
    tried nearest first, each against the outline grown so far."""
    h, w = fg.shape[:2]
    c, area = contours[i], areas[i]
    tol = 0.1 * math.sqrt(area)
    cand = [j for j, (cc, a) in enumerate(zip(contours, areas))
            if j != i and a > 0.02 * area and _near(cc, c, tol)]
    if not cand:
        return cv2.convexHull(c)
    main_touch = _touches(c, h, w)
    mx, my = c.reshape(-1, 2).mean(axis=0)
    cand.sort(key=lambda j: float(np.hypot(*(contours[j].reshape(-1, 2).mean(axis=0) - (mx, my)))))
    kept = [c]
    hull = cv2.convexHull(c)
    for j in cand:
        cc = contours[j]
        if not main_touch and _touches(cc, h, w):
            continue
        trial = cv2.convexHull(np.concatenate(kept + [cc]))
        ha = cv2.contourArea(trial)
        if target is not None and ha > 1.35 * target:
            continue
        m = np.zeros((h, w), np.uint8)
        cv2.drawContours(m, [trial], -1, 255, -1)
        inside = int(np.count_nonzero(m))
        if inside and cv2.countNonZero(cv2.bitwise_and(fg, m)) < MERGE_FILL * inside:
            continue
        kept.append(cc)
        hull = trial
    return hull


def _near(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    if a is b:
        return True
    xa, ya, wa, ha = cv2.boundingRect(a)
    xb, yb, wb, hb = cv2.boundingRect(b)
    return not (xa > xb + wb + tol or xb > xa + wa + tol or ya > yb + hb + tol or yb > ya + ha + tol)


def warp_matrix(cx: float, cy: float, angle_deg: float, length: float, width: float,
                out_w: int, out_h: int, margin: float) -> np.ndarray:
    """2×3 affine mapping canonical pixels (u right = part +x) to image pixels."""
    a = math.radians(angle_deg)
    sx = length * (1 + 2 * margin) / out_w
    sy = width * (1 + 2 * margin) / out_h
    c, s = math.cos(a), math.sin(a)
    M = np.array([[c * sx, -s * sy, 0.0], [s * sx, c * sy, 0.0]])
    # centre of canonical pixel grid maps to part centre
    u0, v0 = (out_w - 1) / 2.0, (out_h - 1) / 2.0
    M[:, 2] = [cx - M[0, 0] * u0 - M[0, 1] * v0, cy - M[1, 0] * u0 - M[1, 1] * v0]
    return M


def warp_canonical(pyramid: list[tuple[np.ndarray, float]], M_full: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Warp with the pyramid level whose scale keeps the sampling step ≤ 2 source px (limits aliasing)."""
    step = math.hypot(M_full[0, 0], M_full[1, 0])
    src, f = pyramid[0]
    for img, fac in pyramid:
        if step / fac >= 1.0:
            src, f = img, fac
    M = M_full.copy()
    M[:, 2] = (M[:, 2] + 0.5) / f - 0.5
    M[:, :2] /= f
    return cv2.warpAffine(src, M, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def build_pyramid(img: np.ndarray, min_long: int = 160) -> list[tuple[np.ndarray, float]]:
    pyr = [(img, 1.0)]
    cur, f = img, 1.0
    while max(cur.shape[:2]) // 2 >= min_long:
        cur = cv2.pyrDown(cur)
        f *= 2.0
        pyr.append((cur, f))
    return pyr


def descriptor(canon: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Small lighting-normalised descriptor (flattened, zero mean / unit norm) for orientation matching."""
    small = cv2.resize(canon, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    small = cv2.cvtColor(small / 255.0, cv2.COLOR_BGR2LAB)
    small[..., 0] *= 0.5
    v = small.reshape(-1, 3)
    v = v - v.mean(axis=0)
    v = v.ravel()
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else v
