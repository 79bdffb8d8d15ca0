"""Renderer speed: ms per frame of ``sim.render.render_scene`` with a new tray every frame.

    python bench/render_speed.py [--frames 600] [--module path/to/render.py]

Rows: ``cell 512x410`` — the packaging-cell camera (0.9 mm/px on the belt, 0.8 m
up, trays 45 mm high, bulgogi/kimchi alternating, some defects, random lighting,
colour); ``dataset 1280x1024`` — ``generate_dataset``'s default geometry.  Each
row is printed against a baseline measured in the same run: one plain
``cv2.warpAffine`` of a same-size sprite into a frame-size image plus a frame copy
(what compositing a ready sprite costs at least).  Product assets (tray body,
contents bank, label art) are built once per product and scale, before timing;
their cold cost is printed separately.  Single-threaded OpenCV.
``--module`` times another copy of the renderer (e.g. the previous version) in
the same process, for before/after numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load(path: str | None):
    if not path:
        import sim.render as r
        return r
    spec = importlib.util.spec_from_file_location("render_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["render_under_test"] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def stats(ts: list[float]) -> tuple[float, float]:
    a = np.asarray(ts) * 1000.0
    return float(np.median(a)), float(np.percentile(a, 99))


def baseline(W: int, H: int, sw: int, sh: int, n: int) -> list[float]:
    rng = np.random.default_rng(0)
    spr = rng.integers(0, 255, (sh, sw, 3), np.uint8)
    bg = rng.integers(0, 255, (H, W, 3), np.uint8)
    ts = []
    for i in range(n):
        t = time.perf_counter()
        f = bg.copy()
        M = cv2.getRotationMatrix2D((sw / 2, sh / 2), 3.0 * i, 1.0)
        x0, y0 = (W - sw) // 2, (H - sh) // 2
        cv2.warpAffine(spr, M, (sw, sh), dst=f[y0:y0 + sh, x0:x0 + sw], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_TRANSPARENT)
        ts.append(time.perf_counter() - t)
    return ts


def scenario(r, name: str, W: int, H: int, mm_per_px: float, height_m: float, z: float,
             products: list[str], n: int, defect_every: int = 7):
    cal = r.make_top_down_calibration(W, H, mm_per_px, (0.0, 0.0), height_m)
    apps = [r.get_product(p) for p in products]
    # cold product assets
    r.clear_caches()
    cold = []
    for app in apps:
        t = time.perf_counter()
        r.render_scene([r.PartSpec(app, 0.0, 0.0, 0.0, seed=0, z=z)], cal)
        cold.append(time.perf_counter() - t)
    rng = np.random.default_rng(1)
    prng = np.random.default_rng(2)
    ts = []
    kinds = list(r.DEFECT_KINDS)
    span = 0.3 * W * mm_per_px / 1000.0
    for i in range(n):
        app = apps[i % len(apps)]
        defects = [kinds[(i // defect_every) % len(kinds)]] if i % defect_every == 0 else []
        part = r.PartSpec(app, float(prng.uniform(-span, span)), float(prng.uniform(-0.01, 0.01)),
                          float(prng.uniform(-math.pi, math.pi)), defects, seed=1000 + i, z=z)
        t = time.perf_counter()
        r.render_scene([part], cal, lighting=r.Lighting.random(rng, 1.0), rng=rng, mono=False)
        ts.append(time.perf_counter() - t)
    # sprite size for the baseline
    A, ppm = r._local_affine(cal, 0.0, 0.0, z, 0.0)
    app = apps[0]
    sw = int(math.ceil((app.length_mm + 10) * ppm))
    sh = int(math.ceil((app.width_mm + 10) * ppm))
    base = baseline(W, H, min(sw, W), min(sh, H), max(200, n))
    return name, stats(ts), stats(base), [c * 1000 for c in cold]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--module", default=None, help="path of a render.py to time instead of sim.render")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    r = load(args.module)
    rows = [
        scenario(r, "cell 512x410", 512, 410, 0.9, 0.8, 0.045, ["beef_bulgogi", "kimchi"], args.frames),
        scenario(r, "dataset 1280x1024", 1280, 1024, (math.hypot(190, 140) + 60) / 1024, 1.0, 0.0,
                 ["beef_bulgogi", "kimchi", "salad", "rice_curry"], max(100, args.frames // 4)),
    ]
    print(f"renderer: {args.module or 'sim/render.py'}   (cv2 threads={args.threads})")
    print(f"{'scenario':<20}{'median ms':>11}{'p99 ms':>9}{'baseline med':>14}{'ratio':>8}   cold product assets ms")
    for name, (med, p99), (bmed, _), cold in rows:
        print(f"{name:<20}{med:>11.3f}{p99:>9.3f}{bmed:>14.3f}{med / bmed:>8.1f}   "
              + " ".join(f"{c:.0f}" for c in cold))


if __name__ == "__main__":
    main()
