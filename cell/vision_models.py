"""Inspection models for a cell: load the fitted model of each product, or fit one in simulation.

A product in the cell file may name a fitted model (``model: bulgogi.npz``,
relative to the cell file).  A simulated cell without one fits its model at
setup from simulated *good* trays only, rendered by the cell's own camera
twin and cropped the way the inspect skill crops; the result is cached under
``$AXCELL_CACHE`` (default ``~/.cache/axcell``) keyed by everything it
depends on.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from skills.inspect import roi_box
from skills.vision import Inspector
from skills.vision.inspector import MODEL_VERSION
from skills.vision.rules import ProductRules

from .config import CellConfig, SkillNode


def cache_dir() -> Path:
    return Path(os.environ.get("AXCELL_CACHE", Path.home() / ".cache" / "axcell"))


def _inspect_params(cfg: CellConfig) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def walk(n: Any) -> None:
        if isinstance(n, SkillNode):
            if n.skill == "inspect" and not found:
                found.update(n.with_)
            return
        for key in ("sequence", "fallback", "parallel"):
            for k in getattr(n, key, None) or []:
                walk(k)
        for key in ("retry", "timeout", "repeat"):
            k = getattr(n, key, None)
            if k is not None:
                walk(k)

    walk(cfg.process)
    return found


def _rules_for(spec: Any, appearance: Any) -> ProductRules:
    base = appearance.inspection_rules() if appearance is not None else {}
    return ProductRules(**{**base, **(spec.rules or {})})


def prepare_inspectors(cfg: CellConfig, *, n_good: int | None = None, log: Any = None) -> dict[str, Inspector]:
    """Product name → fitted :class:`Inspector` (loaded, cached or freshly fitted)."""
    out: dict[str, Inspector] = {}
    base_dir = cfg.source.parent if cfg.source else Path.cwd()
    for name, spec in cfg.products.items():
        if spec.model:
            out[name] = Inspector.load(base_dir / spec.model)
            continue
        if cfg.sim is None:
            raise ValueError(f"products.{name}.model: a real cell needs a fitted model "
                             f"(axcell vision fit --good DIR --out MODEL)")
        out[name] = fit_in_sim(cfg, name, n_good=n_good or spec.fit_good, log=log)
    return out


def fit_in_sim(cfg: CellConfig, product: str, *, n_good: int, log: Any = None) -> Inspector:
    from sim import render
    from sim.devices import SimCamera, top_down_calibration

    from .runtime import product_appearance

    spec = cfg.products[product]
    app = product_appearance(product, spec, render)
    cam = next((d for d in cfg.devices if d.kind == "sim.camera"), None)
    if cam is None:
        raise ValueError("a simulated cell needs a sim.camera to fit its inspection model")
    cam_cfg = SimCamera.Config.model_validate(cam.options)
    ip = _inspect_params(cfg)
    roi = tuple(ip.get("roi_m", (0.25, 0.22)))
    plane_z = float(ip.get("plane_z", spec.size_mm[2] / 1000.0))
    rules = _rules_for(spec, app)
    strength = cfg.sim.lighting.strength if cfg.sim else 1.0
    infeed = cfg.sim.infeed if cfg.sim else None
    key = hashlib.sha256(json.dumps({
        "v": MODEL_VERSION, "app": app.model_dump(mode="json"), "cam": cam_cfg.model_dump(mode="json"),
        "roi": roi, "plane_z": plane_z, "rules": rules.model_dump(mode="json"), "n": n_good, "light": strength,
        "infeed": infeed.model_dump(mode="json") if infeed else None, "renderer": 3,
    }, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "models" / f"{product}-{key}.npz"
    if path.exists():
        try:
            return Inspector.load(path)
        except Exception:  # noqa: BLE001 - a stale or torn cache file is refitted
            path.unlink(missing_ok=True)
    if log:
        log(f"fitting the inspection model of {product!r} from {n_good} simulated good trays ...")
    cal = top_down_calibration(cam_cfg.x, cam_cfg.y, cam_cfg.plane_z, cam_cfg.height_m, cam_cfg.width,
                               cam_cfg.height, cam_cfg.mm_per_px)
    images = sample_good_crops(app, cal, n=n_good, roi=roi, plane_z=plane_z, strength=strength,
                               lateral=infeed.lateral_jitter_m if infeed else 0.02,
                               yaw_deg=infeed.yaw_jitter_deg if infeed else 8.0,
                               flip=infeed.flip_probability if infeed else 0.5, color=cam_cfg.color)
    insp = Inspector().fit(images, rules=rules)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    insp.save(tmp)
    os.replace(tmp, path)
    return insp


def sample_good_crops(app: Any, cal: Any, *, n: int, roi: tuple[float, float], plane_z: float, strength: float,
                      lateral: float, yaw_deg: float, flip: float, color: bool = True, seed: int = 12345,
                      defects: tuple[str, ...] = ()) -> list[np.ndarray]:
    """Render ``n`` trays under the camera and crop them as the inspect skill does."""
    from sim import render

    rng = np.random.default_rng(seed)
    cx0, cy0 = float(cal.T_cell_cam[0, 3]), float(cal.T_cell_cam[1, 3])
    out = []
    for i in range(n):
        yaw = math.radians(rng.uniform(-yaw_deg, yaw_deg)) + (math.pi if rng.uniform() < flip else 0.0)
        x = cx0 + rng.uniform(-0.01, 0.01)
        y = cy0 + rng.uniform(-lateral, lateral)
        part = render.PartSpec(appearance=app, x=x, y=y, yaw=yaw, defects=defects, seed=int(rng.integers(2**31)),
                               z=plane_z)
        light = render.Lighting.random(rng, strength) if strength > 0 else None
        img = render.render_scene([part], cal, lighting=light, rng=rng, mono=not color)
        out.append(crop_around(img, cal, cx0, cy0, roi, plane_z))
    return out


def crop_around(img: np.ndarray, cal: Any, cx: float, cy: float, roi: tuple[float, float], plane_z: float) -> np.ndarray:
    x0, y0, x1, y1 = roi_box(cal, cx, cy, roi, plane_z, img.shape)
    return img[y0:y1, x0:x1].copy()
