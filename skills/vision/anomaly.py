"""Anomaly maps on the aligned (canonical) part view — no network, no training beyond good images.

Three complementary maps, each computed on the *photometrically aligned*
canonical view (gain/offset/gradient per channel fitted to the good parts'
median on their stable pixels, so lighting drift and white balance cancel):

* **pixel z-map** — per-pixel robust z-score against the median / MAD of the
  aligned good parts.  Tight where the part is plain and repeatable (seal
  band, tray, label art): catches seal contamination, tears, label faults.
* **colour novelty** — for each pixel, how far (in quantised Lab bins) its
  colour is from every colour seen *in this region* of the part on good
  images (region = coarse grid cell plus its neighbours).  Catches foreign
  bodies and exposed tray floor in busy, randomly arranged food regions,
  where a per-pixel model is useless.
* **patch texture NN** — PatchCore in spirit: per cell, hand-crafted patch
  features (normalised colour means and spreads, structure tensor, 3×3-cell
  context), nearest neighbour in a per-position memory bank that includes
  the neighbouring positions, reduced by greedy k-centre coreset.

Each map is divided by a per-position scale measured on out-of-fold good
images, so a busy food region and a plain band are judged on their own spread.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["CELL", "cell_features", "gather_bank", "coreset", "nn_dist", "N_FEAT", "PhotoNorm", "ZoneColour", "max_pool2",
           "ColourModel", "PixelModel", "box_mean", "line_map", "blob_candidates",
           "blob_novelty", "blob_index", "blob_bank", "paint_blobs", "BLOB_BANK", "BLOB_DIM", "DarkSpots",
           "gumbel_level"]

CELL = 8
N_BASE = 10
N_FEAT = 2 * N_BASE


# --------------------------------------------------------------------------- photometric alignment
class PhotoNorm:
    """Per-channel gain (with a linear gradient) and offset mapping an aligned view onto a reference.

    Fitted by trimmed least squares on a fixed sample of *stable* pixels (low
    spread over the good images), so a defect on a few of them does not bend
    the fit.
    """

    def __init__(self, rq: np.ndarray, idx: np.ndarray, shape: tuple[int, int]):
        h, w = shape
        self.rq = np.asarray(rq, np.float32)         # (2, 3) reference 10th / 90th percentiles per channel
        self.idx = idx.astype(np.int64)              # flat pixel indices
        ys, xs = np.divmod(self.idx, w)
        self.u = ((xs / max(1, w - 1)) - 0.5).astype(np.float32)
        self.v = ((ys / max(1, h - 1)) - 0.5).astype(np.float32)
        self.U = (np.arange(w, dtype=np.float32) / max(1, w - 1) - 0.5)[None, :]
        self.V = (np.arange(h, dtype=np.float32) / max(1, h - 1) - 0.5)[:, None]

    def params(self, img: np.ndarray) -> np.ndarray:
        """(3, 4) per channel: gain, offset, gain gradient in x and y (gradient kept at 0: see below).

        Gain and offset match the 10th / 90th percentiles of the stable pixels to the
        reference's: robust to a defect on a minority of them and to clusters of
        very different brightness (dark tray, white label).
        """
        xq = self.quantiles(img)
        out = np.zeros((3, 4), np.float32)
        for c in range(3):
            dx = float(xq[1, c] - xq[0, c])
            dr = float(self.rq[1, c] - self.rq[0, c])
            g = dr / dx if dx > 4.0 else 1.0
            g = min(max(g, 0.5), 2.0)
            out[c, 0] = g
            out[c, 1] = float(0.5 * (self.rq[0, c] + self.rq[1, c]) - g * 0.5 * (xq[0, c] + xq[1, c]))
        return out

    def quantiles(self, img: np.ndarray) -> np.ndarray:
        """(2, 3) 10th / 90th percentiles per channel of the sampled pixels (linear interpolation)."""
        # (3, n); np.take gathers the rows several times faster than indexing with an array
        x = np.ascontiguousarray(np.take(img.reshape(-1, 3), self.idx, axis=0).T, dtype=np.float32)
        n = x.shape[1]
        out = np.empty((2, 3), np.float32)
        pos = [q * (n - 1) for q in (0.1, 0.9)]
        ks = sorted({int(math.floor(p)) for p in pos} | {min(n - 1, int(math.floor(p)) + 1) for p in pos})
        xp = np.partition(x, ks, axis=1)
        for i, p in enumerate(pos):
            lo = int(math.floor(p))
            hi = min(n - 1, lo + 1)
            t = p - lo
            out[i] = xp[:, lo] * (1.0 - t) + xp[:, hi] * t
        return out

    def apply(self, img: np.ndarray, p: np.ndarray) -> np.ndarray:
        f = img.astype(np.float32)
        for c in range(3):
            gain = p[c, 0] + p[c, 2] * self.U + p[c, 3] * self.V
            f[..., c] = f[..., c] * gain + p[c, 1]
        return f

    def apply_fast(self, img: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Gain/offset only (the gradient terms are zero)."""
        if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and p.dtype == np.float32:
            # the same float32 arithmetic on the 256 possible values, then a table lookup: numpy's broadcast
            # over a 3-long last axis was 3× slower
            lut = np.arange(256, dtype=np.float32)[:, None] * p[:, 0] + p[:, 1]
            return cv2.LUT(img, lut.reshape(256, 1, 3))
        f = img.astype(np.float32)
        f *= p[:, 0]
        f += p[:, 1]
        return f


# --------------------------------------------------------------------------- per-pixel robust model
class PixelModel:
    """Median / MAD of the aligned good views in Lab; z-map = max over channels of |x − med| / spread.

    Lab separates lightness from chroma: a plain grey seal band has a very
    tight chroma spread, so a faint brownish smear on it stands out even when
    its brightness is close to the band's.
    """

    FLOOR = np.array([2.0, 1.5, 1.5], np.float32)

    def __init__(self, med: np.ndarray, spread: np.ndarray):
        self.med = med.astype(np.float32)
        self.inv = (1.0 / spread).astype(np.float32)

    @staticmethod
    def lab(view: np.ndarray) -> np.ndarray:
        x = np.clip(view, 0, 255).astype(np.float32, copy=False)     # a new array: scaled and converted in place
        x *= 1.0 / 255.0
        return cv2.cvtColor(x, cv2.COLOR_BGR2LAB, dst=x)

    @classmethod
    def fit(cls, labs: np.ndarray) -> "PixelModel":
        med = np.median(labs, axis=0)
        mad = np.median(np.abs(labs - med), axis=0) * 1.4826
        # the spread of a pixel also borrows from its neighbours (alignment jitter is spatial)
        mad = np.maximum(mad, cv2.dilate(mad, np.ones((3, 3), np.uint8)) * 0.5)
        return cls(med, mad + cls.FLOOR)

    def zmap(self, lab: np.ndarray) -> np.ndarray:
        d = cv2.absdiff(lab, self.med)
        cv2.multiply(d, self.inv, dst=d)
        c0, c1, c2 = cv2.split(d)
        return cv2.max(cv2.max(c0, c1, dst=c0), c2, dst=c0)


# --------------------------------------------------------------------------- colour novelty
L_SHIFT, AB_SHIFT = 4, 3                # 16 lightness bins × 32 × 32 chroma bins
NB_L, NB_AB = 256 >> L_SHIFT, 256 >> AB_SHIFT
NBINS = NB_L * NB_AB * NB_AB
NOV_CAP = 4
COMMON_FRAC = 2e-4       # share of all contents pixels that makes a colour "common" (seen in every pooled zone)


def colour_codes(view_u8: np.ndarray, lab: np.ndarray | None = None) -> np.ndarray:
    """Quantised Lab colour bin (0 .. NBINS - 1) per pixel of a uint8 view, as uint16."""
    if lab is None:
        lab = cv2.cvtColor(view_u8, cv2.COLOR_BGR2LAB)
    # on contiguous planes and in 16 bits: numpy's shifts on strided channel views of int32 took 3× as long
    L, a, b = cv2.split(lab)
    code = (L >> L_SHIFT).astype(np.uint16)
    code <<= 5
    code |= a >> AB_SHIFT
    code <<= 5
    code |= b >> AB_SHIFT
    return code


def _lookup(lut: np.ndarray, region_off: np.ndarray, code: np.ndarray) -> np.ndarray:
    """``lut[region_off + code]`` (uint8); ``np.take`` gathers faster than fancy indexing."""
    return np.take(lut, region_off + code)


class ColourModel:
    """Per region: distance (in bins, capped) from a colour to the nearest colour seen there on good parts."""

    def __init__(self, lut: np.ndarray, region: np.ndarray):
        self.lut = lut                     # (R * NBINS,) uint8
        self.region_off = region.astype(np.int32) * NBINS   # (h, w)

    @staticmethod
    def regions(mask: np.ndarray, grid: int) -> tuple[np.ndarray, int, int]:
        h, w = mask.shape
        gy = max(1, int(round(grid * h / max(h, w))))
        gx = max(1, grid)
        ry = np.minimum(np.arange(h) * gy // h, gy - 1)
        rx = np.minimum(np.arange(w) * gx // w, gx - 1)
        return (ry[:, None] * gx + rx[None, :]).astype(np.int32), gy, gx

    @classmethod
    def fit(cls, codes: np.ndarray, region: np.ndarray, gy: int, gx: int, valid: np.ndarray,
            min_count: int = 2) -> "ColourModel":
        R = gy * gx
        idx = (region[None] * NBINS + codes)[:, valid]
        cnt = np.bincount(idx.ravel(), minlength=R * NBINS).reshape(gy, gx, NBINS).astype(np.int32)
        # position tolerance: a colour seen in a neighbouring region counts too
        p = np.pad(cnt, ((1, 1), (1, 1), (0, 0)))
        nb = sum(p[1 + dy:1 + dy + gy, 1 + dx:1 + dx + gx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        seen = (nb >= min_count).reshape(R, NB_L, NB_AB, NB_AB)
        dist = np.full(seen.shape, NOV_CAP, np.uint8)
        cur = seen
        for k in range(NOV_CAP):
            dist[cur & (dist == NOV_CAP)] = k
            cur = _dilate3(cur)
        return cls(dist.reshape(-1), region)

    def novelty(self, view_u8: np.ndarray) -> np.ndarray:
        """uint8 distance (bins, capped at NOV_CAP) of each pixel's colour to the colours seen in its region."""
        return _lookup(self.lut, self.region_off, colour_codes(view_u8))


def _dilate3(b: np.ndarray) -> np.ndarray:
    """Dilate a (R, L, A, B) bool array by one bin along the three colour axes (26-neighbourhood)."""
    out = b.copy()
    for ax in (1, 2, 3):
        src = out.copy()
        sl_a = [slice(None)] * 4
        sl_b = [slice(None)] * 4
        sl_a[ax], sl_b[ax] = slice(1, None), slice(None, -1)
        out[tuple(sl_a)] |= src[tuple(sl_b)]
        out[tuple(sl_b)] |= src[tuple(sl_a)]
    return out


def box_mean(m: np.ndarray, k: int = 3) -> np.ndarray:
    return cv2.blur(m, (k, k), borderType=cv2.BORDER_REPLICATE)


# --------------------------------------------------------------------------- patch texture features
def cell_features(n: np.ndarray) -> np.ndarray:
    """Features (gh, gw, N_FEAT) float32 of a float32 (h, w, 3) view with sides multiple of CELL.

    ``n`` should be lighting-normalised (roughly unit spread per channel).
    """
    h, w = n.shape[:2]
    gh, gw = h // CELL, w // CELL
    mean = cv2.resize(n, (gw, gh), interpolation=cv2.INTER_AREA)
    sq = cv2.resize(cv2.multiply(n, n), (gw, gh), interpolation=cv2.INTER_AREA)     # cv2: the same products, faster
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    gray = cv2.cvtColor(n, cv2.COLOR_BGR2GRAY)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    t = cv2.merge([cv2.multiply(gx, gx), cv2.multiply(gy, gy), cv2.multiply(gx, gy)])
    t = cv2.resize(t, (gw, gh), interpolation=cv2.INTER_AREA)
    t = np.sign(t) * np.sqrt(np.abs(t))
    mag = np.sqrt(t[..., :1] ** 2 + t[..., 1:2] ** 2)
    base = np.concatenate([mean, std, t, mag], axis=2)
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
    bank = np.concatenate(out, axis=0)
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
        c = bank[ar, cur]
        dd = sq + (c * c).sum(1)[:, None] - 2.0 * np.einsum("pmd,pd->pm", bank, c)
        np.minimum(mind, dd, out=mind)
        cur = np.argmax(mind, axis=1)
    return np.ascontiguousarray(bank[ar[:, None], idx])


def nn_dist(bank: np.ndarray, bank_sq: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Nearest-neighbour distance per position. bank (P, M, d), bank_sq (P, M), q (P, d) or (N, P, d)."""
    if q.ndim == 2:
        dd = bank_sq - 2.0 * np.matmul(bank, q[:, :, None])[:, :, 0]
        return np.sqrt(np.maximum(dd.min(axis=1) + (q * q).sum(1), 0.0))
    dd = bank_sq[None] - 2.0 * np.einsum("pmd,npd->npm", bank, q)
    return np.sqrt(np.maximum(dd.min(axis=2) + (q * q).sum(2), 0.0))


# --------------------------------------------------------------------------- zoned colour novelty
def _seen_dist(cnt: np.ndarray, min_count: np.ndarray | int, l_tol: int = 0,
               common: np.ndarray | None = None) -> np.ndarray:
    """(gy, gx, NBINS) counts → (gy*gx*NBINS,) uint8 distance (bins, capped) to a colour seen in the cell or a
    neighbouring cell at least ``min_count`` times; ``l_tol`` lightness bins either side come free (shading and
    highlights change lightness far more than chroma)."""
    gy, gx = cnt.shape[:2]
    p = np.pad(cnt, ((1, 1), (1, 1), (0, 0)))
    nb = sum(p[1 + dy:1 + dy + gy, 1 + dx:1 + dx + gx] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    mc = np.asarray(min_count)
    if mc.ndim:
        mc = mc.reshape(gy, gx, 1)
    seen = (nb >= mc).reshape(gy * gx, NB_L, NB_AB, NB_AB)
    if common is not None:                       # colours common everywhere count as seen in every cell
        seen |= common.reshape(1, NB_L, NB_AB, NB_AB)
    for _ in range(l_tol):
        s2 = seen.copy()
        s2[:, 1:] |= seen[:, :-1]
        s2[:, :-1] |= seen[:, 1:]
        seen = s2
    dist = np.full(seen.shape, NOV_CAP, np.uint8)
    cur = seen
    for k in range(NOV_CAP):
        dist[cur & (dist == NOV_CAP)] = k
        cur = _dilate3(cur)
    return dist.reshape(-1)


class ZoneColour:
    """Colour novelty in two kinds of zones.

    Where the good parts repeat (seal band, tray walls, label) a colour is
    judged against the colours seen at that *position* (fine grid, plus the
    neighbouring cells).  Where they vary from part to part (randomly arranged
    food) a position-matched model only learns where pieces happened to lie,
    so there colours are pooled over large zones (a coarse grid, plus
    neighbours): a white piece is normal anywhere in the contents, a blue chip
    is novel everywhere.  Rare colours need a minimum share of the zone's
    pixels to count as seen, so one stray pixel in 40 images does not teach
    the model that a foreign body's colour is normal.

    A colour that is *common* in the contents as a whole (at least ``common_frac`` of all the pooled
    zones' pixels: a kind of food piece, e.g. white or green chunks) counts as seen in every pooled zone:
    with ~40 goods a frequent but lumpy food colour is otherwise missing from some zone by chance, and its
    pieces landing there were false rejects.  Rare colours (label ink at the label's edge, specks) stay
    zone-local, so a foreign body of such a colour is still novel.
    """

    def __init__(self, lut: np.ndarray, region: np.ndarray):
        self.lut = lut
        self.region_off = region.astype(np.int32) * NBINS

    @staticmethod
    def regions(busy: np.ndarray, grid_pos: int, grid_pool: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        h, w = busy.shape
        r1, gy1, gx1 = ColourModel.regions(busy, grid_pos)
        r2, gy2, gx2 = ColourModel.regions(busy, grid_pool)
        region = np.where(busy, gy1 * gx1 + r2, r1).astype(np.int32)
        return region, (gy1, gx1), (gy2, gx2)

    @classmethod
    def fit(cls, codes: np.ndarray, region: np.ndarray, g1: tuple[int, int], g2: tuple[int, int],
            valid: np.ndarray, min_count: int = 2, pool_frac: float = 3e-5,
            common_frac: float | None = None) -> "ZoneColour":
        R1, R2 = g1[0] * g1[1], g2[0] * g2[1]
        idx = (region[None] * NBINS + codes)[:, valid]
        cnt = np.bincount(idx.ravel(), minlength=(R1 + R2) * NBINS).astype(np.int32)
        c1 = cnt[:R1 * NBINS].reshape(g1[0], g1[1], NBINS)
        c2 = cnt[R1 * NBINS:].reshape(g2[0], g2[1], NBINS)
        # pooled zones: a colour must make up a small but real share of the zone's pixels
        tot = c2.sum(axis=2)
        p = np.pad(tot, 1)
        nbt = sum(p[1 + dy:1 + dy + g2[0], 1 + dx:1 + dx + g2[1]] for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        mc2 = np.maximum(min_count, np.round(pool_frac * nbt)).astype(np.int32)
        common_frac = COMMON_FRAC if common_frac is None else common_frac
        allc = c2.reshape(-1, NBINS).sum(axis=0)
        common = allc >= max(min_count, common_frac * float(allc.sum())) if common_frac > 0 else None
        lut = np.concatenate([_seen_dist(c1, min_count), _seen_dist(c2, mc2, l_tol=2, common=common)])
        return cls(lut, region)

    def novelty(self, view_u8: np.ndarray, lab: np.ndarray | None = None) -> np.ndarray:
        """uint8 distance (bins, capped at NOV_CAP) of each pixel's colour to the colours seen in its zone."""
        return _lookup(self.lut, self.region_off, colour_codes(view_u8, lab))


class DarkSpots:
    """Spots and thin lines darker than anything the good parts show nearby.

    A black rubber chip, or the dark gap of a torn film, on dark food is darker than any piece of the food, yet
    the colour bins are too coarse to tell it from the darkest shadows between pieces, and its shape need not be
    unusual.  A lower bound on lightness needs no binning.  Two local means are bounded: a small box (a compact
    spot: a few fine pixels, so one noisy pixel is not a spot) and the darkest of four short oriented lines (a
    thin dark line is diluted by its bright surroundings in any box, but not along itself).  Per zone (a coarse
    grid over the contents, pooled with the neighbouring zones) the good parts' darkest value of each bounds what
    is normal, and the map is how far a spot or line lies below its bound, in 8-bit Lab lightness units.  A zone
    whose darkest value varies from good to good (deep shadows where pieces overlap) has its bound pushed down
    to the level a good falls below with probability ``TAIL_P`` (a Gumbel tail fitted to the goods' minima);
    where the goods hold black print or food the bound is low and the map stays quiet.

    Dark only: the brightest spots of food under film are specular glints at full scale, so a bright bound
    would catch nothing.
    """

    GRID = 8          # zones along the part's long side
    TAIL_P = 0.01

    def __init__(self, bound: np.ndarray, mask: np.ndarray, box: int, line: int):
        self.bound = bound.astype(np.float32)     # (2, h, w) darkest normal box / line mean in each pixel's zone
        self.off = mask == 0                      # where the map is not evaluated
        # 1 on the mask, 0 off it: multiplying the (non-negative, finite) map by it zeroes the same pixels as
        # ``out[off] = 0`` did, in one pass instead of a boolean scatter
        self._on = (mask != 0).astype(np.float32)
        self.box, self.line = int(box), int(line)
        self._lines = _line_kernels(self.line)
        self._box_k = _box_kernel(self.box)

    @staticmethod
    def sizes(fine_long: int) -> tuple[int, int]:
        """Odd box side and line length (fine px): about 1.3 % and 2 % of the part's long side."""
        return max(3, 2 * int(round(0.0065 * fine_long)) + 1), max(5, 2 * int(round(0.0094 * fine_long)) + 1)

    @staticmethod
    def spots(lab_u8: np.ndarray, box: int, line: int, lines: tuple[np.ndarray, ...] | None = None,
              L: np.ndarray | None = None, box_kernel: np.ndarray | None = None) -> np.ndarray:
        """(2, h, w): box mean of lightness, and the darkest mean along four oriented lines.  ``L``:
        ``lab_u8[..., 0]`` as float32 when the caller has it (only read)."""
        if L is None:
            L = lab_u8[..., 0].astype(np.float32)
        out = np.empty((2,) + L.shape, np.float32)
        ks = lines or _line_kernels(line)
        # filter2D, not blur: OpenCV's small-kernel correlation was twice as fast as its box filter here
        cv2.filter2D(L, -1, _box_kernel(box) if box_kernel is None else box_kernel, dst=out[0],
                     borderType=cv2.BORDER_REPLICATE)
        cv2.filter2D(L, -1, ks[0], dst=out[1], borderType=cv2.BORDER_REPLICATE)
        tmp = np.empty_like(L)
        for K in ks[1:]:
            cv2.filter2D(L, -1, K, dst=tmp, borderType=cv2.BORDER_REPLICATE)
            cv2.min(out[1], tmp, dst=out[1])
        return out

    @staticmethod
    def zone_minima(spots: np.ndarray, region: np.ndarray, mask: np.ndarray, n_zones: int) -> np.ndarray:
        """(N, 2, n_zones): each image's darkest box / line mean per zone inside ``mask`` (NaN: no mask pixels).
        ``spots`` is (N, 2, h, w)."""
        N = len(spots)
        lo = np.full((N, 2, n_zones), np.nan, np.float32)
        flat = spots.reshape(N, 2, -1)
        rz = region.ravel()
        m = mask.ravel() > 0
        for z in range(n_zones):
            idx = np.flatnonzero(m & (rz == z))
            if len(idx):
                lo[:, :, z] = flat[:, :, idx].min(axis=2)
        return lo

    @classmethod
    def fit(cls, zmin: np.ndarray, region: np.ndarray, grid: tuple[int, int], mask: np.ndarray, box: int,
            line: int) -> "DarkSpots":
        """From the goods' per-zone minima (see :meth:`zone_minima`)."""
        gy, gx = grid
        bounds = []
        for j in range(2):
            zm = zmin[:, j]
            lo = np.full(gy * gx, np.inf)
            have = ~np.isnan(zm).any(axis=0) if len(zm) else np.zeros(gy * gx, bool)
            if have.any():
                m = zm[:, have].astype(np.float64)
                lo[have] = m.min(axis=0)
                if len(m) >= 5:          # the minima's tail: the maxima's of the negated values
                    lo[have] = np.minimum(lo[have], -gumbel_level(-m, cls.TAIL_P))
            p = np.pad(lo.reshape(gy, gx), 1, constant_values=np.inf)
            lo_n = np.min([p[1 + dy:1 + dy + gy, 1 + dx:1 + dx + gx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
            bounds.append(np.where(np.isfinite(lo_n), lo_n, 0.0).ravel()[region])   # no goods' pixels around: no bound
        return cls(np.stack(bounds), mask, box, line)

    def below(self, lab_u8: np.ndarray, L: np.ndarray | None = None) -> np.ndarray:
        """(h, w) how far each spot or line is darker than the goods' bound (0 above it and off the mask).
        ``L``: see :meth:`spots`."""
        sp = self.spots(lab_u8, self.box, self.line, self._lines, L, self._box_k)
        cv2.subtract(self.bound, sp, dst=sp)
        out = cv2.max(sp[0], sp[1])
        cv2.max(out, 0.0, dst=out)
        return cv2.multiply(out, self._on, dst=out)


def _line_kernels(n: int) -> tuple[np.ndarray, ...]:
    """Mean kernels along n pixels in four directions: across, down and the two diagonals."""
    d = np.eye(n, dtype=np.float32) / n
    return (np.full((1, n), 1.0 / n, np.float32), np.full((n, 1), 1.0 / n, np.float32), d,
            np.ascontiguousarray(d[:, ::-1]))


def _box_kernel(n: int) -> np.ndarray:
    return np.full((n, n), 1.0 / (n * n), np.float32)


def gumbel_level(x: np.ndarray, p: float) -> np.ndarray:
    """Per column of ``x`` (samples along axis 0), the level a further sample exceeds with probability ``p``,
    from a Gumbel distribution fitted by moments (the tail of per-image maxima)."""
    x = np.asarray(x, np.float64)
    beta = np.maximum(x.std(axis=0) * (math.sqrt(6.0) / math.pi), 1e-6)
    return x.mean(axis=0) - 0.5772 * beta + beta * math.log(1.0 / p)


def max_pool2(m: np.ndarray) -> np.ndarray:
    """2×2 max pooling of a 2-D map with even sides."""
    return np.ascontiguousarray(cv2.dilate(m, _K2, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)[::2, ::2])


_K2 = np.ones((2, 2), np.uint8)


# --------------------------------------------------------------------------- fine structure: compact blobs and coherent lines
def _hessian(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second derivatives (xx, yy, xy) of a smoothed float32 image (3×3 Sobel, unit gain)."""
    a = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3, scale=0.25)
    c = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3, scale=0.25)
    b = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3, scale=0.25)
    return a, c, b


def _hessian4(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4 × :func:`_hessian`, exactly: OpenCV applies Sobel's ``scale`` to one of the separable kernels, and a
    power of two there changes no rounding."""
    a = cv2.Sobel(g, cv2.CV_32F, 2, 0, ksize=3)
    c = cv2.Sobel(g, cv2.CV_32F, 0, 2, ksize=3)
    b = cv2.Sobel(g, cv2.CV_32F, 1, 1, ksize=3)
    return a, c, b


def line_map(L: np.ndarray, fine_long: int) -> np.ndarray:
    """Orientation-coherent ridge energy of a fine lightness view (float32, same size as ``L``).

    Ridge strength ``min(|trace H|, |λ1 − λ2|)`` (thin dark or bright lines: cuts, tears, wrinkles) at a
    small scale; the ridge vectors ``(cos 2θ, sin 2θ)·strength`` are then averaged over a neighbourhood, so
    randomly oriented food edges cancel while a long, straight-ish tear or wrinkle adds up.  Lightness
    units (Lab L, 0..255): scored against per-position scales learned on the good parts.
    """
    fl = float(fine_long)
    sl = max(1.0, 0.004 * fl)
    g = cv2.GaussianBlur(L, (0, 0), sl)
    a, c, b = _hessian(g)
    amc = a - c
    b2 = 2.0 * b
    diff = cv2.sqrt(amc * amc + b2 * b2)
    ridge = cv2.min(cv2.absdiff(a, -c), diff) * (sl * sl)
    w = ridge / (diff + 1e-3)
    sc = max(2.0, 0.015 * fl)
    vx = cv2.GaussianBlur(w * amc, (0, 0), sc)
    vy = cv2.GaussianBlur(w * b2, (0, 0), sc)
    return cv2.sqrt(vx * vx + vy * vy)


# blob descriptor: Lab centre colour (L, a, b), ring lightness contrast, strength, position (x, y), scale,
# ring chroma contrast (a, b); weights:
BLOB_W = np.array([1 / 10.0, 1 / 8.0, 1 / 8.0, 1 / 10.0, 1 / 15.0, 1.0, 1.0, 1.0, 1 / 8.0, 1 / 8.0], np.float32)
BLOB_DIM = len(BLOB_W)
BLOB_POS = 0.3           # one descriptor unit of position = this share of the part's long side
# candidates kept per scale and image (strongest).  Was 48: a foreign body is seldom among the strongest blobs of
# busy contents (food pieces of high contrast outrank it; its candidates ranked 50th-400th of ~600 at the smallest
# scale), so it was never described, whatever its colour.  Every candidate is now described and the goods' bank is
# learned from all of theirs; the cap only bounds the work on pathological frames.  10 products (5 named, 5 random),
# 24 foreign bodies each, with BLOB_MIN 4 and no blobs on the label (see Inspector.fit): foreign-body AUROC
# 0.834 -> 0.882, detection 0.60 -> 0.69, false rejects 3.2 % -> 3.0 %.  Scoring ~600 candidates against the bank
# is one matrix product (see :func:`blob_index`).
BLOB_MAX = 1024
# weakest response (lightness units) that counts as a candidate.  Was 2 under the cap of 48; with every candidate
# scored, responses of 2-4 are mostly specks of noise: a fifth of the candidates, and their goods' tail hid weak
# foreign bodies (10 products, label still searched: foreign-body AUROC 0.857 with 2, 0.868 with 4, 0.854 with 6)
BLOB_MIN = 4.0
BLOB_BANK = 512          # good-blob descriptors kept (greedy k-centre) per model


def blob_candidates(lab: np.ndarray, fine_long: int, mask: np.ndarray | None = None,
                    L: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Compact blobs of a fine Lab view (uint8): weighted descriptors (n, BLOB_DIM) and positions (n, 3: x, y, σ).

    Candidates are local maxima of the scale-normalised determinant of the Hessian of lightness
    (``σ²·sqrt(det H)``) at two scales (≈ 1 % and 2 % of the part's long side: objects of a few mm).
    det H is large only for compact, closed shapes — dark or bright — and vanishes along edges, stripes and
    the gaps between pieces.  Each blob is described by its centre colour at its own scale, its contrast to
    the surrounding ring, its strength, position and scale, so it can be judged against the population of
    blobs the good parts show in that zone (a brown piece of meat is a blob, so is a rubber chip: they
    differ in colour, contrast or size).

    The ring's *chroma* contrast (surrounding a, b minus the centre's) is part of the descriptor too: a
    neutral black or grey object lying amid brown food has a strongly chromatic ring, while the dark
    neutral blobs the goods show (tray floor in a gap between pieces, label print) sit in neutral or
    mixed surroundings; with centre colour alone a black rubber chip on dark meat looked normal (cell
    audit, 1800 s, with the threshold margin 1.00: recall seed 3 0.945, seed 5 0.769 → 0.788).

    ``L``: ``lab[..., 0]`` as float32 when the caller has it already (it is only read).
    """
    fl = float(fine_long)
    # the full-resolution planes are the bulk of the work: filters and arithmetic write into the arrays they
    # read where that gives the same values, which saves allocating (and, in a fresh process, page-faulting)
    # a dozen fine-view-sized temporaries per call
    # the first scale's blur straight from the unblurred plane (one full-resolution pass, where a unit blur and
    # then the rest of the scale took two: 0.1 ms a frame, which the all-candidates scoring below spends); the
    # centre colour is still read at about unit scale there (``col_sigma``)
    Lg = lab[..., 0].astype(np.float32) if L is None else L      # L is only read: the first blur makes a new array
    found = []                  # per scale: (si, sf, f, col_sigma, xs, ys, responses)
    s_prev = 0.0        # current blur (px of the current level)
    f = 1               # current level's pixel size in fine px
    for si, sf in enumerate((max(1.0, 0.0055 * fl), max(2.0, 0.011 * fl), max(4.0, 0.022 * fl))):
        if sf / f >= 4.0:                                 # coarse scales run at half resolution
            Lg = np.ascontiguousarray(Lg[::2, ::2]) if (Lg.shape[0] % 2 == 0 and Lg.shape[1] % 2 == 0) else \
                cv2.resize(Lg, (Lg.shape[1] // 2, Lg.shape[0] // 2), interpolation=cv2.INTER_NEAREST)
            f *= 2
            s_prev /= 2.0
        s = sf / f
        col_sigma = max(1.0, s_prev * f)   # the blob's colour is read at about half its scale: its own, not its ring's
        sig = math.sqrt(max(s * s - s_prev * s_prev, 0.25))
        Lg = cv2.GaussianBlur(Lg, (0, 0), sig, dst=None if Lg is L else Lg)
        s_prev = s
        # the Hessian at 4× unit gain (OpenCV's plain 3×3 Sobel takes a faster path than one with scale=0.25,
        # and gives exactly 4× its values): 16·det H, its root 4·sqrt(det H), and the quarter folded into the
        # σ² factor.  Scaling by powers of two commutes with float rounding, so r is bit for bit the unit-gain one.
        a, c, b = _hessian4(Lg)
        r = cv2.multiply(a, c, dst=a)                               # det H, then its scaled root, in a's array
        cv2.subtract(r, cv2.multiply(b, b, dst=b), dst=r)
        cv2.max(r, 0.0, dst=r)
        cv2.sqrt(r, dst=r)
        r *= np.float32(s * s) * np.float32(0.25)
        k = 2 * int(round(1.5 * s)) + 1
        # local maxima above BLOB_MIN inside the mask, as uint8 masks and findNonZero (the same points in the
        # same order as numpy's boolean masks and nonzero; the function is about 10 % faster for it)
        peak = cv2.compare(r, cv2.dilate(r, np.ones((k, k), np.uint8), dst=c), cv2.CMP_GE)
        cv2.bitwise_and(peak, cv2.compare(r, BLOB_MIN, cv2.CMP_GT), dst=peak)
        if mask is not None:
            mk = mask.view(np.uint8) if mask.dtype == bool else mask
            mk = mk if f == 1 else np.ascontiguousarray(mk[::f, ::f])
            cv2.bitwise_and(peak, cv2.compare(mk, 0, cv2.CMP_GT), dst=peak)
        pts = cv2.findNonZero(peak)
        if pts is None:
            continue
        xs, ys = pts[:, 0, 0], pts[:, 0, 1]
        if len(xs) > BLOB_MAX:
            sel = np.argpartition(-r[ys, xs], BLOB_MAX)[:BLOB_MAX]
            ys, xs = ys[sel], xs[sel]
        if not len(xs):
            continue
        found.append((si, sf, f, col_sigma, xs, ys, r[ys, xs]))
    if not found:
        return np.zeros((0, BLOB_DIM), np.float32), np.zeros((0, 3), np.float32)
    # The candidates of all scales are described together: every step below is elementwise per candidate (or
    # exact integer box sums), so one pass over the concatenated arrays gives each row the values the per-scale
    # passes gave, in the same (scale by scale) order, at a third of the numpy calls.
    cnt = [len(e[4]) for e in found]
    xs = np.concatenate([e[4] for e in found])
    ys = np.concatenate([e[5] for e in found])
    rv = np.concatenate([e[6] for e in found])
    fs = np.repeat([e[2] for e in found], cnt)                                # level pixel size (fine px)
    sfs = np.repeat([e[1] for e in found], cnt)                               # scale σ (fine px)
    half_c = np.repeat([_box_half(e[3]) for e in found], cnt)                 # centre box: about half the scale
    half_r = np.repeat([_box_half(2.7 * e[1]) for e in found], cnt)           # ring box: the surroundings
    X = xs * fs + (fs - 1) // 2
    Y = ys * fs + (fs - 1) // 2
    # colours are read as box means from one integral image (a box of side ≈ 3.5 σ has the spread of a
    # Gaussian of σ): the scale-space pyramid then needs the lightness channel only.  Built after the scale
    # loop (the same integer sums), so the 1.3 MB of int32 sums and the full-resolution Hessian planes are
    # not held at once.
    ii = cv2.integral(np.ascontiguousarray(lab, dtype=np.uint8))      # int32 sums
    col, ring = _box_means_half(ii, Y, X, (half_c, half_r))           # (n, 3) Lab: centre, surroundings
    d = np.empty((len(xs), BLOB_DIM), np.float32)
    d[:, :3] = col
    d[:, 3] = ring[:, 0] - col[:, 0]
    d[:, 8:10] = ring[:, 1:] - col[:, 1:]
    d[:, 4] = rv
    d[:, 5] = xs * fs / (BLOB_POS * fl)
    d[:, 6] = ys * fs / (BLOB_POS * fl)
    d[:, 7] = np.repeat([e[0] for e in found], cnt)
    d[:, :5] *= BLOB_W[:5]
    d[:, 8:] *= BLOB_W[8:]
    pos = np.stack([xs * fs + 0.5 * (fs - 1), ys * fs + 0.5 * (fs - 1), sfs], 1).astype(np.float32)
    return d, pos


def _box_half(sigma: float) -> int:
    """Half side (px) of the box whose mean stands in for a Gaussian average of spread σ (side ≈ 3.5 σ)."""
    return max(1, int(round(1.73 * sigma - 0.5)))


def _box_means_half(ii: np.ndarray, ys: np.ndarray, xs: np.ndarray, halves: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Per box family (an array of half sides, one per point): the mean of the image behind the integral image
    ``ii`` over the square of that half side centred on each point (clipped at the border), (n, channels)
    float32.  All the corners are gathered at once, as flat indices.  (Was ``_box_means_at``, one σ for all
    points: the half side now comes per point, so the candidates of all scales are read in one call; the
    integer corner sums and areas, and so the means, are the same.)"""
    h, w = ii.shape[0] - 1, ii.shape[1] - 1
    corners, areas = [], []
    for half in halves:
        # the points lie inside the image, so each corner can leave it on one side only
        y0 = np.maximum(ys - half, 0)
        y1 = np.minimum(ys + half + 1, h)
        x0 = np.maximum(xs - half, 0)
        x1 = np.minimum(xs + half + 1, w)
        areas.append(np.maximum((y1 - y0) * (x1 - x0), 1)[:, None])
        y0 *= w + 1
        y1 *= w + 1
        corners += [y1 + x1, y0 + x1, y1 + x0, y0 + x0]
    v = np.take(ii.reshape(-1, ii.shape[2]), np.concatenate(corners), axis=0).reshape(len(corners), len(ys), -1)
    return [((v[4 * i] - v[4 * i + 1] - v[4 * i + 2] + v[4 * i + 3]) / a).astype(np.float32)
            for i, a in enumerate(areas)]


def blob_bank(descs: np.ndarray, m: int | None = None, seed: int = 0) -> np.ndarray:
    """Good-blob memory bank: ``descs`` (M, BLOB_DIM) reduced to at most ``m`` rows by greedy k-centre (every good
    blob stays within the coreset radius of a kept one, unusual goods included)."""
    descs = np.ascontiguousarray(descs, np.float32)
    m = BLOB_BANK if m is None else int(m)
    if len(descs) <= m:
        return descs
    return coreset(descs[None], m, seed)[0]


def blob_index(bank: np.ndarray) -> np.ndarray:
    """(M, BLOB_DIM + 1) float32 ``[-2·bank, |bank|²]``: its product with a query column ``[q; 1]`` is each
    squared distance less ``|q|²``, so scoring a frame's several hundred candidates is one matrix product and a
    minimum (900 candidates: 0.2 ms; the separate product, broadcast sum and row minimum took 0.5 ms)."""
    bank = np.asarray(bank, np.float32)
    return np.ascontiguousarray(np.concatenate([-2.0 * bank, np.einsum("md,md->m", bank, bank)[:, None]], axis=1),
                                dtype=np.float32)


def _sq_novelty(index: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Squared distance of each query row to its nearest row of the bank behind ``index`` (float32, ≥ 0)."""
    qa = np.empty((q.shape[1] + 1, len(q)), np.float32)
    qa[:-1] = q.T
    qa[-1] = 1.0
    m = (index @ qa).min(axis=0)
    m += np.einsum("nd,nd->n", q, q)
    return np.maximum(m, 0.0, out=m)


def blob_novelty(bank: np.ndarray, q: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """Distance of each query blob descriptor to its nearest good blob (bank (M, BLOB_DIM), q (n, BLOB_DIM));
    ``index``: :func:`blob_index` of the bank when the caller keeps it."""
    if not len(q) or not len(bank):
        return np.zeros(len(q), np.float32)
    return np.sqrt(_sq_novelty(blob_index(bank) if index is None else index, np.asarray(q, np.float32)))


def paint_blobs(pos: np.ndarray, val: np.ndarray, shape: tuple[int, int], f: int) -> np.ndarray:
    """A (h, w) map (canonical grid = fine grid / f) with each blob's value painted as a disc of its size."""
    m = np.zeros(shape, np.float32)
    order = np.argsort(val)
    for (x, y, s), v in zip(pos[order], val[order]):
        if v > 0:
            cv2.circle(m, (int(x) // f, int(y) // f), max(1, int(round(1.4 * s / f))), float(v), -1)
    return m
