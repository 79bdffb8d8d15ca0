"""Renderer: geometry, determinism, defects change pixels, speed."""

import math
import time

import numpy as np
import pytest

from sim.render import (DEFECT_KINDS, PRODUCTS, Lighting, PartSpec, ProductAppearance, generate_dataset,
                        get_product, make_top_down_calibration, part_pose_px, render_scene)


def test_calibration_maps_plane_centre_to_image_centre():
    cal = make_top_down_calibration(640, 480, 0.5, (0.1, -0.2), 1.0)
    u, v = cal.plane_to_pixel(0.1, -0.2, 0.0)
    assert abs(u - 319.5) < 1e-6 and abs(v - 239.5) < 1e-6
    u2, _ = cal.plane_to_pixel(0.1 + 0.05, -0.2, 0.0)
    assert abs((u2 - u) - 100.0) < 1e-6          # 50 mm / 0.5 mm/px
    x, y = cal.pixel_to_plane(u2, v, 0.0)
    assert abs(x - 0.15) < 1e-9 and abs(y + 0.2) < 1e-9


def test_same_seed_same_pixels_and_product_models_forbid_extra():
    cal = make_top_down_calibration(320, 256, 1.0)
    p = PartSpec(get_product("kimchi"), 0.0, 0.0, 0.3, ["torn_film"], seed=42)
    a = render_scene([p], cal)
    b = render_scene([PartSpec(get_product("kimchi"), 0.0, 0.0, 0.3, ["torn_film"], seed=42)], cal)
    assert np.array_equal(a, b)
    with pytest.raises(Exception):
        ProductAppearance(name="x", colour=(1, 2, 3))
    assert len(PRODUCTS) >= 3 and len(DEFECT_KINDS) == 6


def test_tray_lands_where_the_pose_says():
    cal = make_top_down_calibration(512, 410, 0.8)
    app = get_product("kimchi")            # white tray on a dark belt
    p = PartSpec(app, 0.03, -0.02, math.radians(30), seed=1)
    img = render_scene([p], cal)
    cx, cy, ang = part_pose_px(p, cal)
    assert abs(cx - (255.5 + 30 / 0.8)) < 0.5 and abs(cy - (204.5 + 20 / 0.8)) < 0.5
    assert abs(ang - (-30.0)) < 1e-6       # image y points along -y of the cell
    # the tray end along +x is bright flange, beyond it is belt
    ux, uy = math.cos(math.radians(ang)), math.sin(math.radians(ang))
    r = app.length_mm / 2 / 0.8
    inside = img[int(cy + uy * (r - 3)), int(cx + ux * (r - 3))].mean()
    outside = img[int(cy + uy * (r + 8)), int(cx + ux * (r + 8))].mean()
    assert inside > outside + 60


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_each_defect_changes_the_part(kind):
    cal = make_top_down_calibration(400, 320, 0.8)
    app = get_product("salad")
    good = render_scene([PartSpec(app, 0, 0, 0.2, [], seed=7)], cal)
    bad = render_scene([PartSpec(app, 0, 0, 0.2, [kind], seed=7)], cal)
    diff = np.abs(good.astype(int) - bad.astype(int)).max(axis=2) > 40
    assert diff.sum() > 10, kind


def test_partially_out_of_frame_and_mono_and_lighting():
    cal = make_top_down_calibration(300, 240, 1.0)
    p = PartSpec(get_product("beef_bulgogi"), 0.14, 0.0, 0.0, seed=3)   # mostly outside on the right
    img = render_scene([p], cal, lighting=Lighting(gain=1.2, offset=10, gradient=(0.1, -0.1), noise_sigma=3),
                       rng=np.random.default_rng(0), mono=True)
    assert img.shape == (240, 300) and img.dtype == np.uint8
    far = render_scene([PartSpec(get_product("beef_bulgogi"), 5.0, 5.0, 0.0, seed=3)], cal)
    assert far.shape == (240, 300, 3)


def test_render_speed_small_frame():
    cal = make_top_down_calibration(512, 410, 0.75)
    rng = np.random.default_rng(0)
    app = get_product("kimchi")
    render_scene([PartSpec(app, 0, 0, 0, seed=0)], cal)     # warm product caches
    ts = []
    for i in range(40):
        p = PartSpec(app, 0.0, 0.0, 0.1 * i, ["torn_film"] if i % 5 == 0 else [], seed=100 + i)
        t = time.perf_counter()
        render_scene([p], cal, lighting=Lighting.random(rng), rng=rng)
        ts.append(time.perf_counter() - t)
    # a new part every frame (sprite rendered) — generous bound for loaded CI machines
    assert np.median(ts) < 0.015


def test_generate_dataset_writes_labels(tmp_path):
    meta = generate_dataset(tmp_path, "kimchi", n_good=2, n_per_defect=1, size=(320, 256), seed=3,
                            defect_kinds=["missing_label", "underfill"])
    imgs = meta["images"]
    assert len(imgs) == 4 and (tmp_path / "labels.json").exists()
    assert sum(v["defective"] for v in imgs.values()) == 2
    for name in imgs:
        assert (tmp_path / name).exists()


def test_fast_paths_match_their_references():
    """The per-product shortcuts compute what the straightforward code did."""
    import cv2

    from sim import render
    rng = np.random.default_rng(0)
    for _ in range(300):                                   # quantile without numpy's overhead
        v = rng.normal(0, 1, int(rng.integers(1, 3000))).astype(np.float32)
        q = float(rng.uniform(0, 1))
        assert render._quantile(v, q) == float(np.quantile(v, q))
    a = render._product_assets(get_product("salad"), 1.37)
    for _ in range(5):                                     # bicubic fill noise as two weight matrices
        n = rng.normal(0, 1, (5, 7)).astype(np.float32)
        ref = cv2.resize(n, (a["w"], a["h"]), interpolation=cv2.INTER_CUBIC)
        assert np.abs(np.einsum("ik,kj->ij", a["nf_ry"], n @ a["nf_rx"]) - ref).max() < 1e-5
    for name in PRODUCTS:                                  # contents are worked out in the floor's box only
        a = render._product_assets(get_product(name), 1.13)
        r0, r1, c0, c1 = a["fin"]
        floor = a["floor_bin"]
        assert floor[r0:r1, c0:c1].sum() == floor.sum()
        # 2 px of margin (or the sprite's edge) so the 3x3 shaded edge is as on the whole sprite
        assert (r0 == 0 or not floor[r0:r0 + 2].any()) and (r1 == a["h"] or not floor[r1 - 2:r1].any())
        assert (c0 == 0 or not floor[:, c0:c0 + 2].any()) and (c1 == a["w"] or not floor[:, c1 - 2:c1].any())


def test_label_band_warp_matches_the_whole_sprite_warp():
    """The label, warped into a band of the sprite only, gives the pixels of a whole-sprite warp."""
    import cv2

    from sim import render
    rng = np.random.default_rng(4)
    for _ in range(400):
        h, w = int(rng.integers(40, 200)), int(rng.integers(40, 260))
        lh, lw = int(rng.integers(4, 90)), int(rng.integers(4, 90))
        label = rng.integers(0, 256, (lh, lw, 3), np.uint8)
        M = cv2.getRotationMatrix2D(((lw - 1) / 2.0, (lh - 1) / 2.0), float(rng.uniform(-25, 25)), 1.0)
        M[:, 2] += rng.uniform(-0.4, 1.2, 2) * (w, h) - ((lw - 1) / 2.0, (lh - 1) / 2.0)   # partly outside too
        spr = rng.integers(0, 256, (h, w, 3), np.uint8)
        ref = spr.copy()
        cv2.warpAffine(label, M, (w, h), dst=ref, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
        render._warp_label_into(spr, label, M)
        assert np.array_equal(spr, ref)


def test_one_warp_premultiplied_blend_looks_like_the_float_blend():
    """Compositing (premultiplied uint8, one warp) ≈ warping colour and alpha apart and blending in float."""
    import cv2

    from sim import render
    cal = make_top_down_calibration(512, 410, 0.9, height_m=0.8)
    for i, (name, kinds) in enumerate([("kimchi", []), ("beef_bulgogi", ["torn_film"]), ("salad", ["seal_contamination"])]):
        p = PartSpec(get_product(name), 0.01 * i, -0.01, 0.4 + i, kinds, seed=20 + i, z=0.045)
        img = render_scene([p], cal).astype(int)
        A, ppm = render._local_affine(cal, p.x, p.y, p.z, p.yaw)
        ppm = round(ppm, 2)
        spr, alpha = render._render_sprite(p.appearance, p.defect_list(), p.seed, ppm)
        a = render._product_assets(p.appearance, ppm)
        S = np.array([[1 / ppm, 0, -a["ox"] / ppm], [0, -1 / ppm, a["oy"] / ppm], [0, 0, 1.0]])
        M = (A @ S)[:2]
        ws = cv2.warpAffine(spr, M, (512, 410)).astype(np.float32)
        wa = cv2.warpAffine(alpha, M, (512, 410))[..., None]
        ref = np.clip(np.round(ws * wa + render._belt(512, 410).astype(np.float32) * (1 - wa)), 0, 255)
        d = np.abs(img - ref)
        assert d.mean() < 0.05 and np.percentile(d, 99.9) <= 3, (name, d.mean(), d.max())


def test_new_part_costs_a_few_plain_warps():
    """A frame with a new tray vs one cv2.warpAffine of a same-size sprite (robust to the machine's speed)."""
    import cv2

    cal = make_top_down_calibration(512, 410, 0.9, height_m=0.8)
    rng = np.random.default_rng(1)
    apps = [get_product("beef_bulgogi"), get_product("kimchi")]
    for app in apps:
        render_scene([PartSpec(app, 0, 0, 0, seed=0, z=0.045)], cal)
    spr = rng.integers(0, 255, (177, 237, 3), np.uint8)
    frame = np.zeros((410, 512, 3), np.uint8)
    ts, tb = [], []
    for i in range(60):
        li = Lighting.random(rng)
        p = PartSpec(apps[i % 2], 0.0, 0.0, 0.1 * (i % 3) + math.pi * (i % 2), seed=500 + i, z=0.045)
        t = time.perf_counter()
        render_scene([p], cal, lighting=li, rng=rng)
        ts.append(time.perf_counter() - t)
        t = time.perf_counter()
        f = frame.copy()
        cv2.warpAffine(spr, cv2.getRotationMatrix2D((118, 88), 5.0 * i, 1.0), (237, 177), dst=f[100:277, 100:337],
                       borderMode=cv2.BORDER_TRANSPARENT)
        tb.append(time.perf_counter() - t)
    assert np.median(ts) < 20 * np.median(tb), (np.median(ts), np.median(tb))
