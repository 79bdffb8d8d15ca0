"""The inspector: localise → align → anomaly model + rules → verdict.

Usage::

    insp = Inspector().fit(good_images, rules=ProductRules(...))   # ~40 good images
    res = insp.inspect(image)        # InspectionResult
    insp.save("model.npz"); Inspector.load("model.npz")

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

from .anomaly import (CELL, cell_features, cell_index, colour_codes, colour_table, coreset, gather_bank,
                      nn_dist, normalise, novelty_map)
from .localise import (WORK_LONG, Blob, InspectionError, as_bgr, descriptor, find_part, warp_matrix)
from .rules import (LabelMatcher, ProductRules, angle_wrap, floor_like, ncc, part_to_canon_box)

__all__ = ["Inspector", "InspectionResult", "InspectionError", "draw_overlay", "MODEL_VERSION"]

MODEL_VERSION = 1
MARGIN = 0.04            # canonical view margin around the part (fraction of each side)


@dataclass
class InspectionResult:
    """Verdict for one image.

    ``pose_px`` is (cx, cy, angle_deg): the part centre and the direction of its
    canonical +x axis (label side when a label rule is configured) in image
    pixels, angle in (-180, 180].  ``size_px`` is (length, width).  ``regions``
    are ``{"kind", "box": [x0, y0, x1, y1]}`` in image pixels.  ``score`` is the
    anomaly score (≥ ``threshold`` means anomalous); ``anomaly_map`` is the
    per-cell normalised map on the canonical grid (None when no part).
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


# --------------------------------------------------------------------------- image preparation
def _levels(img: np.ndarray) -> tuple[list[tuple[np.ndarray, float]], np.ndarray, float]:
    """Halving pyramid (INTER_AREA) down to ≤ 2×WORK_LONG, plus the segmentation image and its scale."""
    pyr = [(img, 1.0)]
    cur, f = img, 1.0
    while max(cur.shape[:2]) > 2 * WORK_LONG:
        h, w = cur.shape[:2]
        cur = cv2.resize(cur, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        f *= 2.0
        pyr.append((cur, img.shape[1] / cur.shape[1]))
    small = cur
    if max(small.shape[:2]) > WORK_LONG * 1.25:
        h, w = small.shape[:2]
        s = max(h, w) / WORK_LONG
        small = cv2.resize(small, (max(1, round(w / s)), max(1, round(h / s))), interpolation=cv2.INTER_AREA)
    return pyr, small, img.shape[1] / small.shape[1]


def _warp(pyr: list[tuple[np.ndarray, float]], M_full: np.ndarray, cw: int, ch: int) -> np.ndarray:
    step = math.hypot(M_full[0, 0], M_full[1, 0])
    src, f = pyr[0]
    for im, fac in pyr:
        if step / fac >= 0.9:
            src, f = im, fac
    M = M_full.copy()
    M[:, :2] /= f
    M[:, 2] = (M[:, 2] + 0.5) / f - 0.5
    return cv2.warpAffine(src, M, (cw, ch), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _apply(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ M[:, :2].T + M[:, 2]


# --------------------------------------------------------------------------- the inspector
class Inspector:
    """Teach on good images (:meth:`fit`), then :meth:`inspect` frames."""

    def __init__(self, *, canon_long: int = 224, coreset_size: int = 64, folds: int = 5,
                 threshold_margin: float = 1.15, seed: int = 0):
        self.canon_long = int(canon_long)
        self.coreset_size = int(coreset_size)
        self.folds = int(folds)
        self.threshold_margin = float(threshold_margin)
        self.seed = int(seed)
        self.rules = ProductRules()
        self.fitted = False
        self._seen_cache: np.ndarray | None = None
        self._cidx_cache: np.ndarray | None = None
        self.meta: dict[str, Any] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self._label: LabelMatcher | None = None

    # ------------------------------------------------------------------ helpers
    def _locate(self, img: np.ndarray) -> tuple[list, Blob | None]:
        pyr, small, scale = _levels(img)
        belt = self.arrays.get("belt_lab")
        bscale = self.arrays.get("belt_scale")
        exp = self.meta.get("area_frac")
        blob = find_part(img, small=small, scale=scale, belt_lab=belt, belt_scale=bscale,
                         expected_area_frac=exp)
        return pyr, blob

    def _candidates(self, pyr, blob: Blob, mode: str, cw: int, ch: int, L: float, W: float,
                    angles: Sequence[float] | None = None) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """(angle, M canonical→image, canonical view) per orientation hypothesis."""
        out = []
        if mode == "free":
            base = [blob.angle + a for a in (angles if angles is not None else np.arange(0, 360, 15.0))]
        elif mode == "rot4":
            base = [blob.angle]
        else:
            base = [blob.angle]
        for a in base:
            M = warp_matrix(blob.cx, blob.cy, a, L, W, cw, ch, MARGIN)
            out.append((a, M, _warp(pyr, M, cw, ch)))
        if mode == "flip2":
            a, M, v = out[0]
            out.append((a + 180.0, warp_matrix(blob.cx, blob.cy, a + 180.0, L, W, cw, ch, MARGIN),
                        cv2.rotate(v, cv2.ROTATE_180)))
        elif mode == "rot4":
            a, M, v = out[0]
            for k, code in ((1, cv2.ROTATE_90_COUNTERCLOCKWISE), (2, cv2.ROTATE_180), (3, cv2.ROTATE_90_CLOCKWISE)):
                out.append((a + 90.0 * k, warp_matrix(blob.cx, blob.cy, a + 90.0 * k, L, W, cw, ch, MARGIN),
                            cv2.rotate(v, code)))
        return out

    def _orient(self, pyr, blob: Blob, template: np.ndarray | None, mode: str, cw: int, ch: int,
                L: float, W: float) -> tuple[float, np.ndarray, np.ndarray, float]:
        dsize = tuple(self.meta["desc_size"])
        cands = self._candidates(pyr, blob, mode, cw, ch, L, W)
        if template is None:
            a, M, v = cands[0]
            return a, M, v, 0.0
        scores = [float(descriptor(v, dsize) @ template) for _, _, v in cands]
        i = int(np.argmax(scores))
        a, M, v = cands[i]
        if mode == "free":  # refine around the best coarse angle
            fine = [a - blob.angle + d for d in (-10.0, -5.0, 5.0, 10.0, -2.5, 2.5)]
            more = self._candidates(pyr, blob, mode, cw, ch, L, W, angles=fine)
            for a2, M2, v2 in more:
                s2 = float(descriptor(v2, dsize) @ template)
                if s2 > scores[i]:
                    scores[i], a, M, v = s2, a2, M2, v2
        return a, M, v, scores[i]

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
        self._seen_cache = self._cidx_cache = None
        self.meta = {"version": MODEL_VERSION, "image_size": [hw[1], hw[0]],
                     "color": bool(any(not _is_gray(im) for im in imgs))}
        self.arrays = {}
        # ---- pass 1: segment with border-estimated belt colour, learn belt model
        blobs = []
        belt_px: list[np.ndarray] = []
        belt_sc: list[np.ndarray] = []
        for i, im in enumerate(imgs):
            pyr, small, scale = _levels(im)
            b = find_part(im, small=small, scale=scale)
            if b is None:
                raise InspectionError(f"good image #{i}: no part found (is the part visible against the belt?)")
            lab = cv2.cvtColor(cv2.GaussianBlur(small, (3, 3), 0), cv2.COLOR_BGR2LAB).reshape(-1, 3)
            bgm = cv2.dilate(b.mask_small, np.ones((9, 9), np.uint8)).ravel() == 0
            sel = lab[bgm].astype(np.float32)
            if len(sel) > 50:
                med = np.median(sel, axis=0)
                belt_px.append(med)
            blobs.append(b)
        if belt_px:
            belt_lab = np.median(np.array(belt_px), axis=0)
            self.arrays["belt_lab"] = belt_lab.astype(np.float32)
        areas = np.array([b.area for b in blobs]) / float(hw[0] * hw[1])
        self.meta["area_frac"] = float(np.median(areas))
        # ---- pass 2: segment with the belt model
        pyrs, blobs = [], []
        for i, im in enumerate(imgs):
            pyr, b = self._locate(im)
            if b is None:
                raise InspectionError(f"good image #{i}: no part found with the learned belt model")
            pyrs.append(pyr)
            blobs.append(b)
        Ls = np.array([b.length for b in blobs])
        Ws = np.array([b.width for b in blobs])
        L, W = float(np.median(Ls)), float(np.median(Ws))
        aspect = W / L
        rect_fill = float(np.median([b.area / (b.length * b.width) for b in blobs]))
        if aspect < 0.87:
            mode = "flip2"
        elif rect_fill > 0.86:
            mode = "rot4"
        else:
            mode = "free"
        cw = int(self.canon_long)
        ch = cw if mode != "flip2" else max(4 * CELL, int(round(cw * aspect / CELL)) * CELL)
        if mode != "flip2":
            L = W = float(np.sqrt(L * W))
        dsize = (32, max(8, int(round(32 * ch / cw))))
        self.meta.update({"mode": mode, "canon": [cw, ch], "nominal_px": [L, W], "desc_size": list(dsize),
                          "size_spread": [float(np.std(Ls / L)), float(np.std(Ws / W))]})
        # ---- orientation template (iterate: first image → mean)
        template = None
        views = []
        for it in range(3):
            views = []
            descs = []
            for pyr, b in zip(pyrs, blobs):
                if template is None and it == 0 and not views:
                    a, M, v, _ = self._orient(pyr, b, None, mode, cw, ch, L, W)
                else:
                    ref = template if template is not None else descs[0]
                    a, M, v, _ = self._orient(pyr, b, ref, mode, cw, ch, L, W)
                views.append((a, M, v))
                descs.append(descriptor(v, dsize))
            m = np.mean(descs, axis=0)
            template = m / max(1e-9, float(np.linalg.norm(m)))
        canon = np.stack([v for _, _, v in views])            # (N, ch, cw, 3)
        # ---- label side decides which end is +x
        if rules.label_box is not None and mode in ("flip2", "rot4"):
            g = np.stack([normalise(v).mean(axis=2) for v in canon])
            sd = g.std(axis=0)
            bx = part_to_canon_box(rules.label_box, cw, ch, MARGIN)
            fb = part_to_canon_box((1 - rules.label_box[2], 1 - rules.label_box[3],
                                    1 - rules.label_box[0], 1 - rules.label_box[1]), cw, ch, MARGIN)
            s_in = float(sd[bx[1]:bx[3], bx[0]:bx[2]].mean())
            s_fl = float(sd[fb[1]:fb[3], fb[0]:fb[2]].mean())
            if s_fl < s_in:   # the consistent region (label) is at the other end: turn the canonical frame
                canon = np.stack([cv2.rotate(v, cv2.ROTATE_180) for v in canon])
                views = [(a + 180.0, warp_matrix(b.cx, b.cy, a + 180.0, L, W, cw, ch, MARGIN), None)
                         for (a, _, _), b in zip(views, blobs)]
                m = np.mean([descriptor(v, dsize) for v in canon], axis=0)
                template = m / max(1e-9, float(np.linalg.norm(m)))
        self.arrays["template"] = template.astype(np.float32)
        # ---- canonical part mask (mean of per-image masks)
        masks = []
        for (a, M, _), b in zip(views, blobs):
            Ms = M.copy()
            Ms[:, :2] /= b.scale
            Ms[:, 2] = (Ms[:, 2] + 0.5) / b.scale - 0.5
            masks.append(cv2.warpAffine(b.mask_small, Ms, (cw, ch), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
        pmask = (np.mean(masks, axis=0) > 127).astype(np.uint8)
        self.arrays["part_mask"] = pmask
        # ---- anomaly model
        feats = np.stack([cell_features(v) for v in canon])     # (N, gh, gw, d)
        N, gh, gw, d = feats.shape
        fmean = feats.reshape(-1, d).mean(0)
        fstd = feats.reshape(-1, d).std(0) + 1e-3
        fstd = np.maximum(fstd, 0.05 * float(np.median(fstd)))
        feats = (feats - fmean) / fstd
        self.arrays["feat_mean"] = fmean.astype(np.float32)
        self.arrays["feat_std"] = fstd.astype(np.float32)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(N)
        k = max(2, min(self.folds, N))
        held = np.zeros((N, gh * gw), np.float32)
        for f in range(k):
            test = order[f::k]
            train = np.setdiff1d(order, test)
            bank = coreset(gather_bank(feats[train]), self.coreset_size, self.seed + f)
            bsq = np.einsum("pmd,pmd->pm", bank, bank)
            held[test] = nn_dist(bank, bsq, feats[test].reshape(len(test), gh * gw, d))
        q = np.quantile(held, 0.9, axis=0).reshape(gh, gw)
        q = 0.5 * q + 0.5 * cv2.blur(q, (3, 3), borderType=cv2.BORDER_REPLICATE)
        scale = (q + 0.1 * float(np.median(q))).astype(np.float32)
        self.arrays["pos_scale"] = scale
        cv_nn = (held.reshape(N, gh, gw) / scale).reshape(N, -1).max(axis=1)
        thr_nn = self._threshold_from(cv_nn)
        # colour novelty: colours never seen near this place on a good part
        halves = np.stack([cv2.resize(v, (cw // 2, ch // 2), interpolation=cv2.INTER_AREA) for v in canon])
        codes = np.stack([colour_codes(x) for x in halves])
        cidx, _, _ = cell_index(ch // 2, cw // 2)
        cv_nov = np.zeros(N)
        for f in range(k):
            test = order[f::k]
            train = np.setdiff1d(order, test)
            table = colour_table(codes[train])
            for i in test:
                cv_nov[i] = float(novelty_map(table, halves[i], cidx).max())
        thr_nov = max(self._threshold_from(cv_nov), 0.05)
        self.arrays["colour_seen"] = np.packbits(colour_table(codes), axis=1)
        self.meta["thr_nn"] = thr_nn
        self.meta["thr_nov"] = thr_nov
        cv_scores = np.maximum(cv_nn / thr_nn, cv_nov / thr_nov)
        thr = 1.0
        bank = coreset(gather_bank(feats), self.coreset_size, self.seed)
        self.arrays["bank"] = bank.astype(np.float32)
        self.arrays["bank_sq"] = np.einsum("pmd,pmd->pm", bank, bank).astype(np.float32)
        self.meta["threshold"] = thr
        self.meta["cv_scores"] = [round(float(s), 4) for s in cv_scores]
        self.meta["cv_nn"] = [round(float(s), 4) for s in cv_nn]
        self.meta["cv_nov"] = [round(float(s), 4) for s in cv_nov]
        # ---- rules learned from the good views
        self._fit_rules(canon, pmask)
        self.fitted = True
        self.meta["fit_s"] = round(time.perf_counter() - t0, 3)
        self.meta["n_good"] = N
        self.meta["rules"] = rules.model_dump(mode="json")
        return self

    def _threshold_from(self, s: np.ndarray) -> float:
        """Threshold from out-of-fold good scores: a robust upper tail bound (one odd good image may not set it)."""
        s = np.sort(np.asarray(s, float))
        q50, q90, q95 = (float(np.quantile(s, q)) for q in (0.5, 0.9, 0.95))
        hi = max(q90 + 2.0 * (q90 - q50), q95)
        return float(hi * self.threshold_margin)

    def _fit_rules(self, canon: np.ndarray, pmask: np.ndarray) -> None:
        r = self.rules
        cw, ch = self.meta["canon"]
        half = [cv2.resize(v, (cw // 2, ch // 2), interpolation=cv2.INTER_AREA) for v in canon]
        hmask = cv2.resize(pmask, (cw // 2, ch // 2), interpolation=cv2.INTER_NEAREST)
        # label template
        self._label = None
        if r.label_box is not None:
            bx = part_to_canon_box(r.label_box, cw // 2, ch // 2, MARGIN)
            grays = [normalise(v).mean(axis=2) for v in half]
            tpl = np.mean([g[bx[1]:bx[3], bx[0]:bx[2]] for g in grays], axis=0).astype(np.float32)
            self.arrays["label_template"] = tpl
            self.meta["label_box_half"] = list(bx)
            self._label = LabelMatcher(tpl, bx)
            sc = []
            angs = []
            for g in grays:
                s, a = self._label.match(g)
                sc.append(s)
                angs.append(a)
            sc = np.array(sc)
            lo = float(r.label_min_match) if r.label_min_match is not None else \
                float(min(0.8 * sc.min(), sc.mean() - 5 * sc.std(), 0.6))
            self.meta["label_min_match"] = max(lo, 0.15)
            self.meta["label_good_scores"] = [round(float(v), 3) for v in sc]
        # seal band
        self.meta.pop("seal", None)
        if r.seal_band_frac is not None:
            short = (ch // 2) / (1 + 2 * MARGIN)
            bw = max(2, int(round(r.seal_band_frac * short)))
            outer = cv2.erode(hmask, np.ones((3, 3), np.uint8), iterations=1)
            inner = cv2.erode(hmask, np.ones((3, 3), np.uint8), iterations=bw)
            band = (outer > 0) & (inner == 0)
            if band.sum() > 10:
                norms = np.stack([normalise(v) for v in half])            # (N, h, w, 3)
                med = np.median(norms, axis=0)
                mad = np.median(np.abs(norms - med), axis=0) * 1.4826
                spread = (mad + 0.15).astype(np.float32)
                z = (np.abs(norms - med) / spread).max(axis=3)              # (N, h, w)
                zb = z[:, band]
                zthr = float(max(5.0, 1.3 * np.quantile(zb, 0.999)))
                cnt = (zb > zthr).sum(axis=1)
                self.arrays["seal_band"] = band.astype(np.uint8)
                self.arrays["seal_med"] = med.astype(np.float32)
                self.arrays["seal_spread"] = spread
                part_area = float(hmask.sum())
                min_area = max(3.0, r.seal_min_area_frac * part_area, 2.0 * float(cnt.max()))
                self.meta["seal"] = {"zthr": zthr, "min_area": min_area, "band_px": bw}
        # fill coverage
        self.meta.pop("fill", None)
        if r.fill_check:
            bwp = self.meta.get("seal", {}).get("band_px", max(2, int(0.05 * ch / 2)))
            well = cv2.erode(hmask, np.ones((3, 3), np.uint8), iterations=bwp + 2) > 0
            band = (cv2.erode(hmask, np.ones((3, 3), np.uint8), iterations=1) > 0) & ~(
                cv2.erode(hmask, np.ones((3, 3), np.uint8), iterations=bwp) > 0)
            if "label_box_half" in self.meta:
                x0, y0, x1, y1 = self.meta["label_box_half"]
                well[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = False
            if well.sum() > 20 and band.sum() > 10:
                cov = np.array([self._coverage(v, well, band) for v in half])
                mu, sd = float(cov.mean()), float(cov.std())
                if r.fill_range is not None:
                    lo, hi = r.fill_range
                else:
                    lo, hi = mu - max(0.12, 5 * sd), 1.01
                active = r.fill_range is not None or mu > 0.6
                self.arrays["fill_well"] = well.astype(np.uint8)
                self.arrays["fill_band"] = band.astype(np.uint8)
                self.meta["fill"] = {"lo": float(lo), "hi": float(hi), "active": bool(active),
                                     "good_mean": mu, "good_std": sd}

    @staticmethod
    def _coverage(half_bgr: np.ndarray, well: np.ndarray, band: np.ndarray) -> float:
        lab = cv2.cvtColor(half_bgr, cv2.COLOR_BGR2LAB)
        band_lab = np.median(lab[band], axis=0)
        fl = floor_like(lab, band_lab)
        return 1.0 - float(fl[well].mean())

    # ------------------------------------------------------------------ inspect
    def inspect(self, image: np.ndarray) -> InspectionResult:
        """Inspect one frame (any size the model was fitted on).  See the module docstring."""
        t0 = time.perf_counter()
        if not self.fitted:
            raise InspectionError("the inspector is not fitted (call fit() or load())")
        img = as_bgr(image)
        W0, H0 = self.meta["image_size"]
        if img.shape[1] != W0 or img.shape[0] != H0:
            raise InspectionError(f"image is {img.shape[1]}x{img.shape[0]}, the model was fitted on {W0}x{H0}")
        thr = float(self.meta["threshold"]) * self.rules.anomaly_margin
        pyr, blob = self._locate(img)
        if blob is None:
            return InspectionResult(True, ["no_part"], 0.0, thr, None, None, part_found=False,
                                    ms=(time.perf_counter() - t0) * 1000)
        cw, ch = self.meta["canon"]
        L, W = self.meta["nominal_px"]
        mode = self.meta["mode"]
        ang, M, view, osc = self._orient(pyr, blob, self.arrays["template"], mode, cw, ch, L, W)
        # anomaly
        f = cell_features(view)
        gh, gw, d = f.shape
        f = (f - self.arrays["feat_mean"]) / self.arrays["feat_std"]
        dist = nn_dist(self.arrays["bank"], self.arrays["bank_sq"], f.reshape(gh * gw, d)).reshape(gh, gw)
        amap = dist / self.arrays["pos_scale"] / float(self.meta["thr_nn"])
        half = cv2.resize(view, (cw // 2, ch // 2), interpolation=cv2.INTER_AREA)
        hn = normalise(half)
        table = self._seen()
        cidx = self._cidx(ch // 2, cw // 2)
        nmap = novelty_map(table, half, cidx) / float(self.meta["thr_nov"])
        nmap_cells = nmap[:gh * 4, :gw * 4].reshape(gh, 4, gw, 4).max(axis=(1, 3))
        s_nn, s_nov = float(amap.max()), float(nmap_cells.max())
        amap = np.maximum(amap, nmap_cells)
        score = float(amap.max())
        defects: list[str] = []
        regions: list[dict] = []
        meas: dict[str, float] = {"orientation_match": osc, "score_patch": s_nn, "score_colour": s_nov}
        rule_boxes: list[tuple[int, int, int, int]] = []   # canonical px
        # rules
        r = self.rules
        if self._label is not None:
            g = hn.mean(axis=2)
            s, a = self._label.match(g)
            meas["label_match"] = s
            meas["label_angle_deg"] = a
            bx = [2 * v for v in self.meta["label_box_half"]]
            if s < self.meta["label_min_match"]:
                defects.append("missing_label")
                rule_boxes.append(tuple(bx))
            elif abs(a) > r.label_angle_tol_deg:
                defects.append("skewed_label")
                rule_boxes.append(tuple(bx))
        seal = self.meta.get("seal")
        if seal is not None:
            band = self.arrays["seal_band"] > 0
            z = (np.abs(hn - self.arrays["seal_med"]) / self.arrays["seal_spread"]).max(axis=2)
            bad = ((z > seal["zthr"]) & band).astype(np.uint8)
            n, lab, st, _ = cv2.connectedComponentsWithStats(bad, connectivity=8)
            worst = 0
            for i in range(1, n):
                # merge: measure area within a small neighbourhood (spots and droplets count together)
                worst = max(worst, int(st[i, cv2.CC_STAT_AREA]))
            tot = int(bad.sum())
            meas["seal_dirty_px"] = float(tot)
            if tot >= seal["min_area"] and worst >= 2:
                defects.append("seal_contamination")
                ys, xs = np.nonzero(bad)
                rule_boxes.append((2 * int(xs.min()), 2 * int(ys.min()), 2 * int(xs.max()) + 2, 2 * int(ys.max()) + 2))
        fill = self.meta.get("fill")
        if fill is not None:
            cov = self._coverage(half, self.arrays["fill_well"] > 0, self.arrays["fill_band"] > 0)
            meas["fill_coverage"] = cov
            if fill["active"] and not (fill["lo"] <= cov <= fill["hi"]):
                defects.append("underfill" if cov < fill["lo"] else "overfill")
                ys, xs = np.nonzero(self.arrays["fill_well"])
                rule_boxes.append((2 * int(xs.min()), 2 * int(ys.min()), 2 * int(xs.max()) + 2, 2 * int(ys.max()) + 2))
        if r.part_size_tol is not None and mode == "flip2":
            dl = blob.length / L - 1.0
            dw = blob.width / W - 1.0
            meas["size_dev"] = max(abs(dl), abs(dw))
            if max(abs(dl), abs(dw)) > r.part_size_tol and not blob.touches_border:
                defects.append("wrong_size")
                rule_boxes.append((0, 0, cw, ch))
        elif r.part_size_tol is not None:
            dev = math.sqrt(blob.length * blob.width) / L - 1.0
            meas["size_dev"] = abs(dev)
            if abs(dev) > r.part_size_tol and not blob.touches_border:
                defects.append("wrong_size")
                rule_boxes.append((0, 0, cw, ch))
        # anomaly regions not explained by a rule
        if score > thr:
            hot = (amap > thr).astype(np.uint8)
            n, _, st, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
            unexplained = False
            for i in range(1, n):
                x, y, w_, h_ = st[i, :4]
                box = (int(x * CELL), int(y * CELL), int((x + w_) * CELL), int((y + h_) * CELL))
                if not any(_overlap(box, rb) for rb in rule_boxes):
                    unexplained = True
                    regions.append({"kind": "anomaly", "box": _to_image_box(M, box)})
            if unexplained or not defects:
                defects.append("anomaly")
        for kind, rb in zip([k for k in defects if k not in ("anomaly",)], rule_boxes):
            regions.append({"kind": kind, "box": _to_image_box(M, rb)})
        if blob.touches_border:
            defects.append("part_truncated")
        # pose: canonical +x direction in the image
        angle = math.degrees(math.atan2(M[1, 0], M[0, 0]))
        res = InspectionResult(
            defective=bool(defects), defects=defects, score=score, threshold=thr,
            pose_px=(float(blob.cx), float(blob.cy), float(angle_wrap(angle))),
            size_px=(float(blob.length), float(blob.width)), regions=regions, anomaly_map=amap,
            part_found=True, measurements=meas, canonical_to_image=M)
        res.ms = (time.perf_counter() - t0) * 1000.0
        return res

    def _seen(self) -> np.ndarray:
        t = getattr(self, "_seen_cache", None)
        if t is None:
            from .anomaly import NOV_BINS3
            t = np.unpackbits(self.arrays["colour_seen"], axis=1, count=NOV_BINS3).astype(bool)
            self._seen_cache = t
        return t

    def _cidx(self, h: int, w: int) -> np.ndarray:
        c = getattr(self, "_cidx_cache", None)
        if c is None or c.shape != (h, w):
            c = cell_index(h, w)[0]
            self._cidx_cache = c
        return c

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the model as one ``.npz`` (arrays + a JSON header; no pickle)."""
        if not self.fitted:
            raise InspectionError("cannot save an unfitted inspector")
        p = Path(path)
        header = {"format": "axcell.vision.inspector", "version": MODEL_VERSION, "meta": self.meta,
                  "params": {"canon_long": self.canon_long, "coreset_size": self.coreset_size,
                             "folds": self.folds, "threshold_margin": self.threshold_margin, "seed": self.seed}}
        arrays = {k: np.asarray(v) for k, v in self.arrays.items()}
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        with open(p, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        return p

    @classmethod
    def load(cls, path: str | Path) -> "Inspector":
        p = Path(path)
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
        if header.get("version") != MODEL_VERSION:
            raise InspectionError(f"{p}: model version {header.get('version')} is not supported "
                                  f"(this build reads version {MODEL_VERSION}); refit the model")
        obj = cls(**header["params"])
        obj.meta = header["meta"]
        obj.arrays = arrays
        obj.rules = ProductRules(**obj.meta.get("rules", {}))
        if "label_template" in arrays:
            obj._label = LabelMatcher(arrays["label_template"], tuple(obj.meta["label_box_half"]))
        obj.fitted = True
        return obj


def _is_gray(im: np.ndarray) -> bool:
    s = im[::7, ::7].astype(np.int16)
    return bool(np.abs(s[..., 0] - s[..., 1]).max() == 0 and np.abs(s[..., 1] - s[..., 2]).max() == 0)


def _overlap(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


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
        gh, gw = result.anomaly_map.shape
        cw, ch = gw * CELL, gh * CELL
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
