"""A cell file can name a fitted model per product; a simulated cell fits (and caches) its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cell.batch import run_batch
from cell.config import parse_cell
from cell.runtime import Cell
from cell.vision_models import cache_dir, prepare_inspectors
from skills.vision import Inspector
from tests.conftest import DEMO


def test_product_model_path_is_loaded_not_refitted(tmp_path: Path, demo_inspectors):
    model = tmp_path / "bulgogi.npz"
    demo_inspectors["bulgogi_tray"].save(model)
    text = DEMO.read_text().replace("    appearance: beef_bulgogi\n",
                                    f"    appearance: beef_bulgogi\n    model: {model}\n", 1)
    cfg = parse_cell(text, str(tmp_path / "cell.yaml"))
    assert cfg.products["bulgogi_tray"].model == str(model)
    inspectors = prepare_inspectors(cfg)
    assert isinstance(inspectors["bulgogi_tray"], Inspector)

    async def run():
        cell = Cell(cfg, inspectors=inspectors)
        try:
            return await run_batch(cell, 120.0)
        finally:
            await cell.close()

    report = asyncio.run(run())
    assert report["parts"]["inspected"] > 0 and report["parts"]["packed"] > 0


def test_a_missing_model_file_is_a_clear_error(tmp_path: Path):
    from skills.vision import InspectionError

    text = DEMO.read_text().replace("    appearance: beef_bulgogi\n",
                                    "    appearance: beef_bulgogi\n    model: nowhere.npz\n", 1)
    cfg = parse_cell(text, str(tmp_path / "cell.yaml"))
    with pytest.raises(InspectionError, match="not found"):
        prepare_inspectors(cfg)


def test_sim_models_are_cached_by_what_they_depend_on(demo_config, demo_inspectors):
    files = sorted(p.name for p in (cache_dir() / "models").glob("*.npz"))
    assert any(f.startswith("bulgogi_tray-") for f in files) and any(f.startswith("kimchi_tray-") for f in files)
    again = prepare_inspectors(demo_config)  # loads from the cache: the same model
    from cell.vision_models import fit_in_sim  # noqa: F401  (the cache is what made this fast)
    from sim import render
    from sim.devices import top_down_calibration
    from cell.vision_models import sample_good_crops

    cal = top_down_calibration(-0.5, 0.6, 0.0, 0.8, 512, 410, 0.9)
    crop = sample_good_crops(render.get_product("kimchi"), cal, n=1, roi=(0.25, 0.22), plane_z=0.045, strength=1.0,
                             lateral=0.02, yaw_deg=8, flip=0.5, seed=99)[0]
    a, b = again["kimchi_tray"].inspect(crop), demo_inspectors["kimchi_tray"].inspect(crop)
    assert a.score == pytest.approx(b.score) and a.defective == b.defective


def test_cached_models_are_keyed_by_the_fitting_code(tmp_path: Path):
    """A change to the code that draws, crops or learns from the simulated goods changes the cache key, so a
    machine with a cache fits again (keyed by the model format's version alone, it kept serving models that
    older code had fitted)."""
    from cell.vision_models import FIT_CODE, code_fingerprint

    names = {p.name for p in FIT_CODE}
    assert {"inspector.py", "localise.py", "anomaly.py", "render.py", "vision_models.py"} <= names
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    before = code_fingerprint((a, b))
    assert code_fingerprint((a, b)) == before                # the same code, the same key
    b.write_text("y = 3\n")
    assert code_fingerprint((a, b)) != before
    assert code_fingerprint() == code_fingerprint(FIT_CODE)
