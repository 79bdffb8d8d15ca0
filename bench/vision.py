"""Vision inspection benchmark.

    python bench/vision.py            # 40 train goods, 100 test goods, 20 per defect kind, per product
    python bench/vision.py --quick    # smaller set

For every product: render a labelled set with ``sim.render`` (1280×1024, random
pose incl. full yaw, random lighting), fit ``skills.vision.Inspector`` on good
images only, then print AUROC (overall, per defect kind), recall and
false-reject rate at the fitted threshold, and median / p99 ms per frame on one
core.  A naive baseline (raw-pixel nearest neighbour on 64×51 grey frames,
threshold = max leave-one-out distance of the goods) is measured in the same
run.  ``held_out_bowl`` is a product that was *not* used while designing the
method (oval blue tray, granular contents, small label).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

# one core means one core: numpy's BLAS threads too (cv2.setNumThreads(1) below covers OpenCV's)
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.render import (DEFECT_KINDS, PRODUCTS, LabelAppearance, Lighting, PartSpec,  # noqa: E402
                        ProductAppearance, make_top_down_calibration, render_scene)
from skills.vision import Inspector, ProductRules  # noqa: E402

HELD_OUT = ProductAppearance(
    name="held_out_bowl", shape="ellipse", length_mm=180, width_mm=130, corner_radius_mm=0,
    tray_color=(150, 90, 30), rim_mm=9, wall_mm=6, contents_kind="granular",
    contents_base=(200, 215, 220), contents_colors=[(215, 225, 230), (190, 205, 210), (40, 120, 200), (60, 60, 160)],
    piece_mm=10.0, fill_fraction=0.94, film_alpha=0.1, gloss=0.2,
    label=LabelAppearance(length_mm=45, width_mm=40, offset_mm=-50, color=(250, 250, 250),
                          band_color=(120, 30, 120), ink_color=(20, 20, 20), stripes=3),
)


NO_BLOB = False


def auroc(pos, neg) -> float:
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).mean()
    eq = (pos[:, None] == neg[None, :]).mean()
    return float(gt + 0.5 * eq)


def make_set(app: ProductAppearance, n: int, kinds: list[str], rng: np.random.Generator, cal,
             background: np.ndarray | None = None, camera=None, fixture: bool = False):
    """``n`` frames of ``app`` with the given defect kinds; on the simulated belt, or on ``background``.
    ``camera(frame, rng) -> frame``: what a real camera and its compression do to each frame.  ``fixture``:
    the part lies within 3 mm and 4° of the frame's centre and axes (either end first), not anywhere."""
    out = []
    for _ in range(n):
        if fixture:
            x, y = (float(rng.uniform(-0.003, 0.003)) for _ in range(2))
            yaw = math.radians(float(rng.uniform(-4.0, 4.0))) + (math.pi if rng.uniform() < 0.5 else 0.0)
        else:
            x, y = (float(rng.uniform(-0.02, 0.02)) for _ in range(2))
            yaw = float(rng.uniform(-math.pi, math.pi))
        part = PartSpec(app, x=x, y=y, yaw=yaw, defects=list(kinds), seed=int(rng.integers(1 << 31)))
        frame = render_scene([part], cal, lighting=Lighting.random(rng), rng=rng, image=background)
        out.append(frame if camera is None else camera(frame, rng))
    return out


class Baseline:
    """Raw-pixel nearest neighbour on downscaled grey frames."""

    def __init__(self, goods):
        self.bank = np.stack([self._f(g) for g in goods])
        d = np.linalg.norm(self.bank[:, None] - self.bank[None], axis=2)
        np.fill_diagonal(d, np.inf)
        self.threshold = float(d.min(axis=1).max())

    @staticmethod
    def _f(img):
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return cv2.resize(g, (64, 51), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()

    def score(self, img) -> float:
        return float(np.linalg.norm(self.bank - self._f(img), axis=1).min())


def make_cell_set(app: ProductAppearance, n: int, kinds: list[str], seed: int):
    """Crops as the demo cell's inspect skill sees them (512×410 camera at 0.9 mm/px, 0.25×0.22 m ROI)."""
    from cell.vision_models import sample_good_crops
    from sim.devices import top_down_calibration
    cal = top_down_calibration(-0.5, 0.6, 0.045, 0.8, 512, 410, 0.9)
    return sample_good_crops(app, cal, n=n, roi=(0.25, 0.22), plane_z=0.045, strength=1.0, lateral=0.02,
                             yaw_deg=8.0, flip=0.5, seed=seed, defects=tuple(kinds))


def run_product(app: ProductAppearance, n_train: int, n_good: int, n_def: int, seed: int, use_rules: bool,
                cell: bool = False, background: np.ndarray | None = None, margin_mm: float = 60.0, camera=None,
                fixture_mm: float | None = None):
    """Fit on ``n_train`` goods, score goods and every defect kind; ``margin_mm``: frame height = the part's
    diagonal + this (smaller: tighter framing); ``background``: a (1024, 1280, 3) frame instead of the belt;
    ``camera``: applied to every frame (see :func:`make_set`); ``fixture_mm``: instead, the part lies in a
    fixture (see :func:`make_set`) and the frame holds its length and width with this many mm to spare."""
    W, H = 1280, 1024
    mmpp = (math.hypot(app.length_mm, app.width_mm) + margin_mm) / H
    if fixture_mm is not None:
        mmpp = max((app.length_mm + fixture_mm) / W, (app.width_mm + fixture_mm) / H)
    cal = make_top_down_calibration(W, H, mmpp)
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    if cell:
        train = make_cell_set(app, n_train, [], seed)
        goods = make_cell_set(app, n_good, [], seed + 1)
        defs = {k: make_cell_set(app, n_def, [k], seed + 2 + i) for i, k in enumerate(DEFECT_KINDS)}
    else:
        fx = fixture_mm is not None
        train = make_set(app, n_train, [], rng, cal, background, camera, fx)
        goods = make_set(app, n_good, [], rng, cal, background, camera, fx)
        defs = {k: make_set(app, n_def, [k], rng, cal, background, camera, fx) for k in DEFECT_KINDS}
    gen_s = time.perf_counter() - t
    rules = ProductRules(**app.inspection_rules()) if use_rules else None
    t = time.perf_counter()
    ins = Inspector(blob_channel=not NO_BLOB).fit(train, rules)
    fit_s = time.perf_counter() - t
    base = Baseline(train)
    ms, g_sc, g_def, b_g = [], [], [], []
    for im in goods:
        r = ins.inspect(im)
        ms.append(r.ms)
        g_sc.append(r.score + (100.0 if any(x != "anomaly" for x in r.defects) else 0.0))
        g_def.append(r.defective)
        b_g.append(base.score(im))
    rows = {}
    all_pos, all_b, all_def = [], [], []
    for k, ims in defs.items():
        sc, dd, bs, named = [], [], [], []
        for im in ims:
            r = ins.inspect(im)
            ms.append(r.ms)
            # rule hits count as detections: score them above any anomaly-only score
            sc.append(r.score + (100.0 if any(x != "anomaly" for x in r.defects) else 0.0))
            dd.append(r.defective)
            named.append(k in r.defects)
            bs.append(base.score(im))
        rows[k] = dict(auroc=auroc(sc, g_sc),
                       recall=float(np.mean(dd)), named=float(np.mean(named)),
                       base_auroc=auroc(bs, b_g), base_recall=float(np.mean(np.array(bs) > base.threshold)))
        all_pos += sc
        all_b += bs
        all_def += dd
    g_adj = g_sc
    res = dict(product=app.name, rows=rows, auroc=auroc(all_pos, g_adj), recall=float(np.mean(all_def)),
               frr=float(np.mean(g_def)), base_auroc=auroc(all_b, b_g),
               base_recall=float(np.mean(np.array(all_b) > base.threshold)),
               base_frr=float(np.mean(np.array(b_g) > base.threshold)),
               ms_med=float(np.median(ms)), ms_p99=float(np.percentile(ms, 99)), fit_s=fit_s, gen_s=gen_s)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small set (fast smoke run)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-rules", action="store_true", help="anomaly model only (no product rules)")
    ap.add_argument("--products", nargs="*", default=None)
    ap.add_argument("--cell", action="store_true",
                    help="the demo cell's view instead: ROI crops (~280×245 px) of a 512×410 camera at 0.9 mm/px")
    ap.add_argument("--n-def", type=int, default=None, help="defective images per kind")
    ap.add_argument("--no-blob", action="store_true", help="without the compact-blob novelty channel")
    a = ap.parse_args(argv)
    global NO_BLOB
    NO_BLOB = a.no_blob
    cv2.setNumThreads(1)
    n_train, n_good, n_def = (40, 40, 8) if a.quick else (40, 100, 20)
    if a.n_def:
        n_def = a.n_def
    prods = [PRODUCTS[p] for p in ("beef_bulgogi", "kimchi", "salad", "rice_curry")] + [HELD_OUT]
    if a.products:
        prods = [p for p in prods if p.name in a.products]
    size = "cell ROI crops of 512x410 at 0.9 mm/px" if a.cell else "1280x1024"
    print(f"vision bench: {n_train} train goods, {n_good} test goods, {n_def} per defect kind, {size}, "
          f"1 thread, rules={'off' if a.no_rules else 'on'}")
    summary = []
    for i, app in enumerate(prods):
        r = run_product(app, n_train, n_good, n_def, a.seed + 17 * i, not a.no_rules, a.cell)
        summary.append(r)
        tag = " (held out: not used in design)" if app is HELD_OUT else ""
        print(f"\n== {app.name}{tag}: fit {r['fit_s']:.2f} s (render {r['gen_s']:.1f} s)")
        print(f"  {'kind':20s} {'AUROC':>6s} {'recall':>6s} {'named':>6s} | {'base AUROC':>10s} {'base rec':>8s}")
        for k, row in r["rows"].items():
            print(f"  {k:20s} {row['auroc']:6.3f} {row['recall']:6.2f} {row['named']:6.2f} | "
                  f"{row['base_auroc']:10.3f} {row['base_recall']:8.2f}")
        print(f"  {'overall':20s} {r['auroc']:6.3f} {r['recall']:6.2f} {'':6s} | {r['base_auroc']:10.3f} "
              f"{r['base_recall']:8.2f}")
        print(f"  false reject: {r['frr'] * 100:.1f} %  (baseline {r['base_frr'] * 100:.1f} %)   "
              f"ms/frame median {r['ms_med']:.2f}  p99 {r['ms_p99']:.2f}")
    print("\nproduct              AUROC  recall  FRR%   ms_med  ms_p99 | base AUROC")
    for r in summary:
        print(f"{r['product']:20s} {r['auroc']:5.3f}  {r['recall']:5.2f}  {r['frr'] * 100:4.1f}  "
              f"{r['ms_med']:6.2f}  {r['ms_p99']:6.2f} | {r['base_auroc']:5.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
