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
