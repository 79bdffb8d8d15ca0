"""Inspection on products, backgrounds and framings it was not designed on.

    python bench/vision_generality.py                  # 24 random products, 40 goods each
    python bench/vision_generality.py --products 6     # fewer
    python bench/vision_generality.py --backgrounds    # kimchi on five backgrounds (white, black, wood, ...)
    python bench/vision_generality.py --framing 15     # kimchi framed tightly (diagonal + 15 mm)
    python bench/vision_generality.py --camera         # six products, clean and through a real camera's faults
    python bench/vision_generality.py --fixture 4      # eight products in a fixture, framed with 4 mm to spare

Each random product draws its shape (oblong, square or round), size, tray and contents colours, kind of
contents, fill and label (size, place, colours; sometimes centred) from a seeded generator, so the set is
the same on every run and unlike the products the method was tuned on.  For each: fit on 40 goods
(with the product's rules), then AUROC over every defect kind, recall and false-reject rate at the
fitted threshold, against the raw-pixel nearest-neighbour baseline measured in the same run (see
``bench/vision.py``).  A summary line gives the mean and the worst.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vision as V  # noqa: E402

from sim.render import PRODUCTS, LabelAppearance, ProductAppearance  # noqa: E402


def _colour(r: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in r.integers(0, 256, 3))


def random_product(i: int, r: np.random.Generator) -> ProductAppearance:
    """A tray product drawn at random (oblong, square or round; any colours; any label)."""
    length = float(r.uniform(120, 240))
    width = length * float(r.choice([r.uniform(0.55, 0.85), 1.0, r.uniform(0.9, 1.0)]))
    shape = str(r.choice(["rect", "ellipse"]))
    lab_l, lab_w = float(r.uniform(0.25, 0.45) * length), float(r.uniform(0.3, 0.6) * width)
    offset = float(r.choice([r.uniform(0.15, 0.3) * length * r.choice([-1, 1]),
                             0.0 if r.uniform() < 0.2 else 0.22 * length]))
    kind = str(r.choice(["pieces", "granular", "smooth"]))
    n = int(r.integers(2, 6))
    return ProductAppearance(
        name=f"rand{i}", shape=shape, length_mm=length, width_mm=width,
        corner_radius_mm=float(r.uniform(0, 0.15 * width)), tray_color=_colour(r), rim_mm=float(r.uniform(5, 12)),
        wall_mm=float(r.uniform(2, 8)), film_alpha=float(r.uniform(0.03, 0.2)), gloss=float(r.uniform(0.1, 0.5)),
        contents_kind=kind, contents_colors=[_colour(r) for _ in range(n)], contents_base=_colour(r),
        piece_mm=float(r.uniform(6, 25)), fill_fraction=float(r.uniform(0.75, 0.98)),
        label=LabelAppearance(length_mm=lab_l, width_mm=lab_w, offset_mm=offset, color=_colour(r),
                              band_color=_colour(r), ink_color=_colour(r), stripes=int(r.integers(0, 8))))


def backgrounds(h: int = 1024, w: int = 1280) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    wood = cv2.resize(rng.normal(0, 1, (h // 8, 2)).astype(np.float32), (w, h))[..., None] * 25
    steel = np.linspace(120, 200, w, dtype=np.float32)[None, :, None] + rng.normal(0, 6, (h, w, 1))
    return {
        "white": np.full((h, w, 3), 235, np.uint8),
        "black": np.full((h, w, 3), 18, np.uint8),
        "wood": np.clip(wood + np.array([60, 110, 160], np.float32), 0, 255).astype(np.uint8),
        "steel": np.clip(steel, 0, 255).astype(np.uint8).repeat(3, axis=2),
        "blue": np.full((h, w, 3), (160, 90, 30), np.uint8),
    }


def camera_effects(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a real camera does that the renderer does not, drawn per frame: lens vignetting (15-30 % darker
    in the corners), slight defocus (Gaussian, sigma 0.5-1 px), a camera up to ~1.5 degrees off top-down
    (keystone), sensor noise (sigma 2-5 grey levels, independent per pixel and channel) and JPEG
    compression at quality 75-92."""
    h, w = img.shape[:2]
    out = img.astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rr = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    out *= (1.0 - float(rng.uniform(0.15, 0.3)) * rr)[..., None]
    out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, 1.0)))
    d = rng.uniform(-0.015, 0.015, 4) * w
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src + np.float32([[d[0], d[1]], [-d[0], d[1]], [d[2], d[3]], [-d[2], d[3]]])
    out = cv2.warpPerspective(out, cv2.getPerspectiveTransform(src, dst), (w, h), borderMode=cv2.BORDER_REFLECT)
    out += rng.normal(0.0, float(rng.uniform(2.0, 5.0)), out.shape).astype(np.float32)
    out = np.clip(out, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 93))])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def row(label: str, res: dict, dt: float) -> str:
    kinds = " ".join(f"{k[:6]} {v['auroc']:.2f}" for k, v in res["rows"].items())
    return (f"  {label:<34} AUROC {res['auroc']:.3f} (baseline {res['base_auroc']:.3f})  recall {res['recall']:.2f}  "
            f"FRR {100 * res['frr']:4.1f} %  | {kinds}  ({dt:.0f} s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=24, help="random products (default 24)")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--backgrounds", action="store_true", help="kimchi on five backgrounds instead")
    ap.add_argument("--framing", type=float, default=None, help="kimchi framed with this many mm to spare instead")
    ap.add_argument("--camera", action="store_true",
                    help="six products (three named, three random), each clean and through camera_effects")
    ap.add_argument("--fixture", type=float, default=None,
                    help="eight products (four named, four random), each within 3 mm and 4 deg of the frame's "
                         "centre and axes, framed with this many mm to spare: the frame's edge cuts many goods")
    ap.add_argument("--goods", type=int, default=40, help="test goods per case")
    ap.add_argument("--n-def", type=int, default=12, help="defective images per kind per case")
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)
    cases = []
    if a.camera:
        named = [("kimchi", PRODUCTS["kimchi"]), ("beef_bulgogi", PRODUCTS["beef_bulgogi"]), ("held_out_bowl", V.HELD_OUT)]
        rand = [(f"rand{a.seed + i}", random_product(a.seed + i, np.random.default_rng(a.seed + i))) for i in (1, 5, 9)]
        for j, (name, app) in enumerate(named + rand):   # the same frames before the camera: one seed per product
            cases.append((f"{name}, clean", app, dict(seed=a.seed + j)))
            cases.append((f"{name}, camera", app, dict(seed=a.seed + j, camera=camera_effects)))
    elif a.fixture is not None:
        named = [(n, PRODUCTS[n]) for n in ("kimchi", "beef_bulgogi", "salad", "rice_curry")]
        rand = [(f"rand{a.seed + i}", random_product(a.seed + i, np.random.default_rng(a.seed + i))) for i in range(4)]
        for name, app in named + rand:
            cases.append((f"{name}, {a.fixture:g} mm to spare", app, dict(fixture_mm=a.fixture)))
    elif a.backgrounds or a.framing is not None:
        app = PRODUCTS["kimchi"]
        for name, bg in (backgrounds().items() if a.backgrounds else [("belt", None)]):
            cases.append((f"kimchi on {name}" + (f", {a.framing:g} mm to spare" if a.framing is not None else ""),
                          app, dict(background=bg, margin_mm=a.framing if a.framing is not None else 60.0)))
    else:
        for i in range(a.products):
            app = random_product(a.seed + i, np.random.default_rng(a.seed + i))
            cases.append((f"{app.name} {app.shape} {app.length_mm:.0f}x{app.width_mm:.0f} {app.contents_kind}",
                          app, {}))
    out = []
    print(f"{len(cases)} cases: fit on 40 goods each, {a.goods} test goods, {a.n_def} per defect kind")
    for i, (label, app, kw) in enumerate(cases):
        t = time.perf_counter()
        try:
            kw = dict(kw)
            res = V.run_product(app, 40, a.goods, a.n_def, kw.pop("seed", a.seed + i), True, **kw)
        except Exception as e:  # noqa: BLE001 - a case that cannot be fitted is a result too
            print(f"  {label:<34} FAILED: {e.__class__.__name__}: {e}")
            out.append(None)
            continue
        print(row(label, res, time.perf_counter() - t), flush=True)
        out.append(res)
    ok = [r for r in out if r is not None]
    if ok:
        au = np.array([r["auroc"] for r in ok])
        base = np.array([r["base_auroc"] for r in ok])
        fr = np.array([r["frr"] for r in ok])
        print(f"summary: {len(ok)}/{len(out)} fitted; AUROC mean {au.mean():.3f} (worst {au.min():.3f}), "
              f"baseline mean {base.mean():.3f} -> ratio {au.mean() / max(base.mean(), 1e-9):.2f}; "
              f"false reject mean {100 * fr.mean():.1f} % (worst {100 * fr.max():.1f} %)")
    return 0 if len(ok) == len(out) else 1


if __name__ == "__main__":
    sys.exit(main())
