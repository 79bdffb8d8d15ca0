"""Patch features and a per-region memory bank (PatchCore spirit, no network).

Features are computed on the canonical (aligned) part view:

* the image is lighting-normalised per channel (zero mean, unit spread over
  the part), so global gain, offset and colour temperature cancel out;
* per cell (``CELL``×``CELL`` px): channel means, channel standard deviations
  (texture energy), and the intensity structure tensor (gx², gy², gx·gy →
  edge strength *and* orientation, so a rotated label edge looks different
  from an aligned one);
* a second, coarser scale: the 3×3-cell average of the same features.

The model keeps, for every cell position, a memory bank of features from the
good images at that position and its 4-neighbours (tolerates small alignment
error and the random arrangement of food), reduced by greedy k-centre coreset
selection.  A cell's anomaly is its nearest-neighbour distance divided by a
per-position scale measured on held-out good images (k-fold), so a busy food
region and a plain seal band are judged on their own spread.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["CELL", "cell_features", "gather_bank", "coreset", "nn_dist", "N_FEAT"]

CELL = 8
N_BASE = 10
N_FEAT = 2 * N_BASE


def normalise(canon: np.ndarray) -> np.ndarray:
    """float32 (h, w, 3) with each channel at zero mean / unit std over the view."""
    f = canon.astype(np.float32)
    mean, std = cv2.meanStdDev(f)
    f -= mean.reshape(1, 1, 3).astype(np.float32)
    f *= (1.0 / np.maximum(std.reshape(1, 1, 3), 2.0)).astype(np.float32)
    return f


def cell_features(canon: np.ndarray, norm: np.ndarray | None = None) -> np.ndarray:
    """Features (gh, gw, N_FEAT) float32 for a canonical uint8 BGR view whose sides are multiples of CELL."""
    h, w = canon.shape[:2]
    gh, gw = h // CELL, w // CELL
    n = normalise(canon) if norm is None else norm
    mean = cv2.resize(n, (gw, gh), interpolation=cv2.INTER_AREA)
    sq = cv2.resize(n * n, (gw, gh), interpolation=cv2.INTER_AREA)
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    gray = n.mean(axis=2)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    t = cv2.merge([gx * gx, gy * gy, gx * gy])
    t = cv2.resize(t, (gw, gh), interpolation=cv2.INTER_AREA)
    # compress the dynamic range (sign-preserving square root)
    t = np.sign(t) * np.sqrt(np.abs(t))
    base = np.concatenate([mean, std, t, np.sqrt(np.maximum(t[..., :1] ** 2 + t[..., 1:2] ** 2, 0))], axis=2)
    ctx = cv2.blur(base, (3, 3), borderType=cv2.BORDER_REPLICATE)
    return np.concatenate([base, ctx], axis=2).astype(np.float32)


SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


def gather_bank(feats: np.ndarray, shifts=SHIFTS) -> np.ndarray:
    """(N, gh, gw, d) → (gh*gw, N*len(shifts), d): per position, features of all images at shifted positions."""
    N, gh, gw, d = feats.shape
    out = []
    for dy, dx in shifts:
        ys = np.clip(np.arange(gh) + dy, 0, gh - 1)
        xs = np.clip(np.arange(gw) + dx, 0, gw - 1)
        out.append(feats[:, ys][:, :, xs])
    bank = np.concatenate(out, axis=0)            # (N*S, gh, gw, d)
    return np.ascontiguousarray(bank.reshape(bank.shape[0], gh * gw, d).transpose(1, 0, 2))


def coreset(bank: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """Greedy k-centre selection of ``m`` entries per position (vectorised over positions)."""
    P, M0, d = bank.shape
    if M0 <= m:
        return bank
    rng = np.random.default_rng(seed)
    sq = np.einsum("pmd,pmd->pm", bank, bank)
    idx = np.empty((P, m), np.int64)
    cur = rng.integers(0, M0, size=P)
    mind = np.full((P, M0), np.inf, np.float32)
    ar = np.arange(P)
    for k in range(m):
        idx[:, k] = cur
        c = bank[ar, cur]                                  # (P, d)
        dd = sq + (c * c).sum(1)[:, None] - 2.0 * np.einsum("pmd,pd->pm", bank, c)
        np.minimum(mind, dd, out=mind)
        cur = np.argmax(mind, axis=1)
    return np.ascontiguousarray(bank[ar[:, None], idx])


def nn_dist(bank: np.ndarray, bank_sq: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Nearest-neighbour distance per position. bank (P, M, d), bank_sq (P, M), q (P, d) or (N, P, d)."""
    if q.ndim == 2:
        dd = bank_sq - 2.0 * np.einsum("pmd,pd->pm", bank, q)
        return np.sqrt(np.maximum(dd.min(axis=1) + (q * q).sum(1), 0.0))
    dd = bank_sq[None] - 2.0 * np.einsum("pmd,npd->npm", bank, q)
    return np.sqrt(np.maximum(dd.min(axis=2) + (q * q).sum(2), 0.0))


# --------------------------------------------------------------------------- colour novelty
NOV_L, NOV_AB = 8, 16                      # bins: normalised lightness, chroma a / b
NOV_BINS3 = NOV_L * NOV_AB * NOV_AB
NOV_CELL = 4   # px at half canonical scale (= CELL at full scale)
NOV_POS_TOL = 0


def colour_codes(half_bgr: np.ndarray) -> np.ndarray:
    """Quantised lighting-normalised colour of every pixel → int32 code in [0, NOV_BINS3).

    Lab with lightness z-scored over the view (gain/offset invariant) and chroma
    re-centred on the view's mean (white-balance drift), 5 units per chroma bin.
    """
    lab = cv2.cvtColor(half_bgr.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_BGR2LAB)
    mean, std = cv2.meanStdDev(lab)
    L = (lab[..., 0] - float(mean[0, 0])) * (NOV_L / 5.0 / max(float(std[0, 0]), 1.0)) + NOV_L / 2.0
    a = (lab[..., 1] - float(mean[1, 0])) * (NOV_AB / 80.0) + NOV_AB / 2.0
    b = (lab[..., 2] - float(mean[2, 0])) * (NOV_AB / 80.0) + NOV_AB / 2.0
    qL = np.clip(L.astype(np.int32), 0, NOV_L - 1)
    qa = np.clip(a.astype(np.int32), 0, NOV_AB - 1)
    qb = np.clip(b.astype(np.int32), 0, NOV_AB - 1)
    return (qL * NOV_AB + qa) * NOV_AB + qb


def cell_index(h: int, w: int) -> tuple[np.ndarray, int, int]:
    gh, gw = h // NOV_CELL, w // NOV_CELL
    ys = np.minimum(np.arange(h) // NOV_CELL, gh - 1)
    xs = np.minimum(np.arange(w) // NOV_CELL, gw - 1)
    return (ys[:, None] * gw + xs[None, :]).astype(np.int32), gh, gw


def colour_table(codes: np.ndarray, min_count: int = 2) -> np.ndarray:
    """Which colours were seen near each cell: bool (gh*gw, NOV_BINS³), dilated by one cell and one bin."""
    N, h, w = codes.shape
    gh = gw = 1                     # one table for the whole part: colours never seen on any good part
    B3 = NOV_BINS3
    cnt = np.bincount(codes.ravel(), minlength=B3).reshape(1, 1, B3)
    seen = cnt >= min_count
    for _ in range(NOV_POS_TOL):   # position tolerance in cells
        nb = seen.copy()
        nb[1:] |= seen[:-1]
        nb[:-1] |= seen[1:]
        s2 = nb.copy()
        s2[:, 1:] |= nb[:, :-1]
        s2[:, :-1] |= nb[:, 1:]
        seen = s2
    # one bin of lightness tolerance
    c = seen.reshape(gh * gw, NOV_L, NOV_AB * NOV_AB)
    d = c.copy()
    d[:, 1:] |= c[:, :-1]
    d[:, :-1] |= c[:, 1:]
    return d.reshape(gh * gw, B3)


def novelty_map(table: np.ndarray, half_bgr: np.ndarray, cidx: np.ndarray) -> np.ndarray:
    """Blurred share of never-seen colours around each pixel (float32, half canonical scale)."""
    codes = colour_codes(half_bgr)
    novel = (~table[0, codes]).astype(np.float32)
    return cv2.GaussianBlur(novel, (0, 0), 1.0)
