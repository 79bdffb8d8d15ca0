"""Renderer speed: ms per frame of ``sim.render.render_scene`` with a new tray every frame.

    python bench/render_speed.py [--frames 800] [--module path/to/render.py] [--compare path/to/old_render.py]

Rows: ``cell 512x410`` — the packaging-cell camera (0.9 mm/px on the belt, 0.8 m
up, trays 45 mm high, bulgogi/kimchi alternating, some defects, random lighting,
colour); ``dataset 1280x1024`` — ``generate_dataset``'s default geometry.  Each
row is printed against a baseline measured in the same run: one plain
``cv2.warpAffine`` of a same-size sprite into a frame-size image plus a frame copy
(what compositing a ready sprite costs at least).  Product assets (tray body,
contents bank, label art) are built once per product and scale, before timing;
their cold cost is printed separately.  Single-threaded OpenCV.
``--compare`` times another copy of the renderer (e.g. the previous version) in
the same process, frame by frame in turn with this one, for fair before/after
numbers on a loaded machine; ``--module`` replaces ``sim/render.py`` itself.
Cell trays are yawed like the world's (±8°, some turned round); dataset trays any way.
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


def scenario(mods, name: str, W: int, H: int, mm_per_px: float, height_m: float, z: float,
             products: list[str], n: int, yaw_jitter_deg: float | None, defect_every: int = 8):
    """Frames with a new tray each; the renderers in ``mods`` take turns frame by frame (fair under load)."""
    r0 = mods[0]
    cal = r0.make_top_down_calibration(W, H, mm_per_px, (0.0, 0.0), height_m)
    colds, ts = [], [[] for _ in mods]
    for r in mods:                      # cold product assets
        r.clear_caches()
        cold = []
        for p in products:
            t = time.perf_counter()
            r.render_scene([r.PartSpec(r.get_product(p), 0.0, 0.0, 0.0, seed=0, z=z)], cal)
            cold.append((time.perf_counter() - t) * 1000)
        colds.append(cold)
    prng = np.random.default_rng(2)
    kinds = list(r0.DEFECT_KINDS)
    span = 0.3 * W * mm_per_px / 1000.0
    for i in range(n):
        prod = products[i % len(products)]
        defects = [kinds[(i // defect_every) % len(kinds)]] if i % defect_every == 0 else []
        if yaw_jitter_deg is None:
            yaw = float(prng.uniform(-math.pi, math.pi))
        else:
            yaw = math.radians(float(prng.uniform(-yaw_jitter_deg, yaw_jitter_deg))) + math.pi * (i % 3 == 0)
        x, y = float(prng.uniform(-span, span)), float(prng.uniform(-0.01, 0.01))
        light_seed = int(prng.integers(1 << 30))
        for k, r in enumerate(mods[::1 if i % 2 else -1]):
            k = k if i % 2 else len(mods) - 1 - k
            part = r.PartSpec(r.get_product(prod), x, y, yaw, defects, seed=1000 + i, z=z)
            rng = np.random.default_rng(light_seed)
            li = r.Lighting.random(rng, 1.0)
            t = time.perf_counter()
            r.render_scene([part], cal, lighting=li, rng=rng, mono=False)
            ts[k].append(time.perf_counter() - t)
    A, ppm = r0._local_affine(cal, 0.0, 0.0, z, 0.0)
    app = r0.get_product(products[0])
    sw = int(math.ceil((app.length_mm + 10) * ppm))
    sh = int(math.ceil((app.width_mm + 10) * ppm))
    base = baseline(W, H, min(sw, W), min(sh, H), max(300, n))
    return name, [stats(t) for t in ts], stats(base), colds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=800)
    ap.add_argument("--module", default=None, help="path of a render.py to time instead of sim.render")
    ap.add_argument("--compare", default=None, help="path of another render.py, timed in turn with it")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    mods = [load(args.module)]
    labels = [args.module or "sim/render.py"]
    if args.compare:
        spec = importlib.util.spec_from_file_location("render_reference", args.compare)
        ref = importlib.util.module_from_spec(spec)
        sys.modules["render_reference"] = ref
        spec.loader.exec_module(ref)  # type: ignore[union-attr]
        mods.append(ref)
        labels.append(args.compare)
    rows = [
        scenario(mods, "cell 512x410", 512, 410, 0.9, 0.8, 0.045, ["beef_bulgogi", "kimchi"], args.frames, 8.0),
        scenario(mods, "dataset 1280x1024", 1280, 1024, (math.hypot(190, 140) + 60) / 1024, 1.0, 0.0,
                 ["beef_bulgogi", "kimchi", "salad", "rice_curry"], max(100, args.frames // 4), None),
    ]
    print(f"cv2 threads={args.threads}; a new tray every frame; median / p99 ms per render_scene call")
    print(f"{'scenario':<19}{'renderer':<28}{'median':>8}{'p99':>9}{'baseline':>10}{'x base':>8}   cold assets ms")
    for name, st, (bmed, _), colds in rows:
        for lab, (med, p99), cold in zip(labels, st, colds):
            print(f"{name:<19}{lab[-27:]:<28}{med:>8.3f}{p99:>9.3f}{bmed:>10.3f}{med / bmed:>8.1f}   "
                  + " ".join(f"{c:.0f}" for c in cold))


if __name__ == "__main__":
    main()
