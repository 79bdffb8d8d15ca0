"""Inspection models for a cell: load the fitted model of each product, or fit one in simulation.

A product in the cell file may name a fitted model (``model: bulgogi.npz``,
relative to the cell file).  A simulated cell without one fits its model at
setup from simulated *good* trays only, rendered by the cell's own camera
twin and cropped the way the inspect skill crops; the result is cached under
``$AXCELL_CACHE`` (default ``~/.cache/axcell``) keyed by everything it
depends on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from skills.inspect import default_plane_z, default_roi_m, roi_box
from skills.vision import Inspector
from skills.vision.inspector import MODEL_VERSION
from skills.vision.rules import ProductRules

from .config import CellConfig, SkillNode


def cache_dir() -> Path:
    return Path(os.environ.get("AXCELL_CACHE", Path.home() / ".cache" / "axcell"))


_ROOT = Path(__file__).resolve().parents[1]
#: the code a simulated fit depends on: how goods are drawn and cropped, and how the model learns from them
FIT_CODE = (*sorted((_ROOT / "skills" / "vision").glob("*.py")), _ROOT / "sim" / "render.py", Path(__file__).resolve())


def code_fingerprint(paths: Sequence[Path] = FIT_CODE) -> str:
    """A digest of ``paths``' contents (name and bytes), part of a cached model's key: a cache keyed by the model
    format's version alone kept serving models fitted by older code after the fit changed."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0")
        h.update(Path(p).read_bytes() if Path(p).exists() else b"")
    return h.hexdigest()[:16]


def _first_node(cfg: CellConfig, skill: str) -> SkillNode | None:
    found: list[SkillNode] = []

    def walk(n: Any) -> None:
        if isinstance(n, SkillNode):
            if n.skill == skill and not found:
                found.append(n)
            return
        for key in ("sequence", "fallback", "parallel"):
            for k in getattr(n, key, None) or []:
                walk(k)
        for key in ("retry", "timeout", "repeat"):
            k = getattr(n, key, None)
            if k is not None:
                walk(k)

    walk(cfg.process)
    return found[0] if found else None


def _inspect_params(cfg: CellConfig) -> dict[str, Any]:
    node = _first_node(cfg, "inspect")
    return dict(node.with_) if node is not None else {}


def _product_sizes(cfg: CellConfig) -> dict[str, dict[str, float]]:
    """The product sizes as the runtime hands them to the skills (metres)."""
    return {n: {"length_m": p.size_mm[0] / 1000.0, "width_m": p.size_mm[1] / 1000.0, "height_m": p.size_mm[2] / 1000.0}
            for n, p in cfg.products.items()}


def _inspection_camera(cfg: CellConfig) -> Any:
    """The camera the inspect skill uses: its ``camera`` role binding, else the cell's only (first) sim.camera."""
    node = _first_node(cfg, "inspect")
    bound = node.devices.get("camera") if node is not None else None
    if bound is not None:
        spec = next((d for d in cfg.devices if d.name == bound), None)
        return spec if spec is not None and spec.kind == "sim.camera" else None
    return next((d for d in cfg.devices if d.kind == "sim.camera"), None)


def _belt_z(cfg: CellConfig) -> float:
    """Surface height of the simulated belt the parts arrive on (0 when unknown)."""
    name = cfg.sim.infeed.conveyor if cfg.sim is not None else cfg.line.conveyor
    spec = next((d for d in cfg.devices if d.name == name and d.kind == "sim.conveyor"), None)
    return float((spec.options or {}).get("z", 0.0)) if spec is not None else 0.0


def _capture_point(cfg: CellConfig, cam_cfg: Any) -> tuple[float, float]:
    """Where a part's centre is when the inspect skill captures it: the photo-eye trigger point of
    ``wait_for_part`` (``eye_x`` + ``lead_m`` along the flow, ``lane_y``), else under the camera."""
    from .runtime import line_geometry

    node = _first_node(cfg, "wait_for_part")
    geo = line_geometry(cfg)
    eye_x = node.with_.get("eye_x") if node is not None else None
    if node is not None and eye_x is None:
        eye_x = (geo.get("eyes") or {}).get(node.with_.get("channel"))
    if node is None or eye_x is None:
        return float(cam_cfg.x), float(cam_cfg.y)
    flow = -1.0 if cfg.line.flow == "-x" else 1.0
    lead = node.with_.get("lead_m")
    x = float(eye_x) + flow * float(lead if lead is not None else geo.get("lead_m", 0.0))
    lane = node.with_.get("lane_y")
    y = float(lane if lane is not None else cam_cfg.y)
    return round(x, 4), round(y, 4)  # sub-0.1 mm sums (-0.405 - 0.095) are the same point


def _rules_for(spec: Any, appearance: Any) -> ProductRules:
    base = appearance.inspection_rules() if appearance is not None else {}
    return ProductRules(**{**base, **(spec.rules or {})})


def expected_crop_size(cfg: CellConfig) -> tuple[int, int] | None:
    """(width, height) of the crops the inspect skill will hand the models in this simulated cell (its sim
    camera, its ROI), or None when that cannot be known before the cell runs (no simulated camera)."""
    from sim.devices import SimCamera, top_down_calibration

    cam = _inspection_camera(cfg)
    if cam is None:
        return None
    c = SimCamera.Config.model_validate(cam.options)
    ip = _inspect_params(cfg)
    sizes = _product_sizes(cfg)
    roi = tuple(ip.get("roi_m") or default_roi_m(sizes))
    plane_z = float(ip["plane_z"]) if ip.get("plane_z") is not None else default_plane_z(sizes)
    cal = top_down_calibration(c.x, c.y, c.plane_z, c.height_m, c.width, c.height, c.mm_per_px)
    x0, y0, x1, y1 = roi_box(cal, float(c.x), float(c.y), roi, plane_z, (c.height, c.width))
    return x1 - x0, y1 - y0


def prepare_inspectors(cfg: CellConfig, *, n_good: int | None = None, log: Any = None) -> dict[str, Inspector]:
    """Product name → fitted :class:`Inspector` (loaded, cached or freshly fitted)."""
    out: dict[str, Inspector] = {}
    base_dir = cfg.source.parent if cfg.source else Path.cwd()
    from .runtime import uses_skill

    if not uses_skill(cfg, "inspect"):
        return out  # no inspection step: nothing to fit
    for name, spec in cfg.products.items():
        if spec.model:
            out[name] = Inspector.load(base_dir / spec.model)
            continue
        if cfg.sim is None:
            raise ValueError(f"products.{name}.model: a real cell needs a fitted model "
                             f"(axcell vision fit --good DIR --out MODEL)")
        out[name] = fit_in_sim(cfg, name, n_good=n_good or spec.fit_good, log=log)
    return out


@functools.lru_cache(maxsize=1)
def _fingerprint() -> str:
    return code_fingerprint()


def fit_in_sim(cfg: CellConfig, product: str, *, n_good: int, log: Any = None) -> Inspector:
    from sim import render
    from sim.devices import SimCamera, top_down_calibration

    from .runtime import product_appearance

    spec = cfg.products[product]
    app = product_appearance(product, spec, render)
    cam = _inspection_camera(cfg)
    if cam is None:
        raise ValueError("a simulated cell needs a sim.camera (the inspect skill's camera) to fit its inspection model")
    cam_cfg = SimCamera.Config.model_validate(cam.options)
    ip = _inspect_params(cfg)
    sizes = _product_sizes(cfg)
    roi = tuple(ip.get("roi_m") or default_roi_m(sizes))
    plane_z = float(ip["plane_z"]) if ip.get("plane_z") is not None else _belt_z(cfg) + default_plane_z(sizes)
    at = _capture_point(cfg, cam_cfg)
    top_z = _belt_z(cfg) + spec.size_mm[2] / 1000.0  # where this product's top really is under the camera
    rules = _rules_for(spec, app)
    strength = cfg.sim.lighting.strength if cfg.sim else 1.0
    infeed = cfg.sim.infeed if cfg.sim else None
    key = hashlib.sha256(json.dumps({
        "v": MODEL_VERSION, "app": app.model_dump(mode="json"), "cam": cam_cfg.model_dump(mode="json"),
        "roi": roi, "plane_z": plane_z, "rules": rules.model_dump(mode="json"), "n": n_good, "light": strength,
        "infeed": infeed.model_dump(mode="json") if infeed else None, "code": _fingerprint(),
        **({"at": at} if at != (float(cam_cfg.x), float(cam_cfg.y)) else {}),
        **({"top_z": top_z} if top_z != plane_z else {}),
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
                               flip=infeed.flip_probability if infeed else 0.5, color=cam_cfg.color, at=at, part_z=top_z)
    insp = Inspector().fit(images, rules=rules)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    insp.save(tmp)
    os.replace(tmp, path)
    return insp


def sample_good_crops(app: Any, cal: Any, *, n: int, roi: tuple[float, float], plane_z: float, strength: float,
                      lateral: float, yaw_deg: float, flip: float, color: bool = True, seed: int = 12345,
                      defects: tuple[str, ...] = (), at: tuple[float, float] | None = None,
                      part_z: float | None = None) -> list[np.ndarray]:
    """Render ``n`` parts at ``at`` (default: under the camera) with their top at ``part_z`` (default:
    ``plane_z``) and crop them as the inspect skill does (around ``at`` on ``plane_z``)."""
    from sim import render

    rng = np.random.default_rng(seed)
    cx0, cy0 = (float(cal.T_cell_cam[0, 3]), float(cal.T_cell_cam[1, 3])) if at is None else at
    out = []
    for i in range(n):
        yaw = math.radians(rng.uniform(-yaw_deg, yaw_deg)) + (math.pi if rng.uniform() < flip else 0.0)
        x = cx0 + rng.uniform(-0.01, 0.01)
        y = cy0 + rng.uniform(-lateral, lateral)
        part = render.PartSpec(appearance=app, x=x, y=y, yaw=yaw, defects=defects, seed=int(rng.integers(2**31)),
                               z=plane_z if part_z is None else part_z)
        light = render.Lighting.random(rng, strength) if strength > 0 else None
        img = render.render_scene([part], cal, lighting=light, rng=rng, mono=not color)
        out.append(crop_around(img, cal, cx0, cy0, roi, plane_z))
    return out


def crop_around(img: np.ndarray, cal: Any, cx: float, cy: float, roi: tuple[float, float], plane_z: float) -> np.ndarray:
    x0, y0, x1, y1 = roi_box(cal, cx, cy, roi, plane_z, img.shape)
    return img[y0:y1, x0:x1].copy()
