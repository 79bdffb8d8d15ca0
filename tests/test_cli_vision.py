"""CLI end to end: fit, inspect with per-image errors, bad config."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cell import cli_vision
from sim.render import generate_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("vis")
    good = d / "good"
    generate_dataset(good, "salad", n_good=20, n_per_defect=0, size=(480, 384), seed=1)
    (good / "labels.json").unlink()
    test = d / "test"
    generate_dataset(test, "salad", n_good=2, n_per_defect=1, size=(480, 384), seed=2,
                     defect_kinds=["missing_label", "underfill"])
    (test / "labels.json").unlink()
    (test / "corrupt.png").write_bytes(b"\x89PNG garbage")
    (test / "empty.png").write_bytes(b"")
    cv2.imwrite(str(test / "small.png"), np.zeros((100, 120, 3), np.uint8))
    return d


def test_fit_and_inspect_end_to_end(data, tmp_path):
    model = tmp_path / "m.npz"
    cfg = tmp_path / "p.yaml"
    cfg.write_text("name: salad\nlabel_angle_tol_deg: 6\nseal_band_frac: 0.06\n")
    r = subprocess.run([sys.executable, "-m", "cell.cli_vision", "fit", "--good", str(data / "good"),
                        "--out", str(model), "--product", str(cfg)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert model.exists()
    out = tmp_path / "o.json"
    rc = cli_vision.main(["inspect", "--model", str(model), str(data / "test"), "--json", str(out),
                          "--overlay", str(tmp_path / "ov")])
    assert rc == 0
    res = {Path(e["image"]).name: e for e in json.loads(out.read_text())["results"]}
    assert "error" in res["corrupt.png"] and "error" in res["empty.png"]
    assert "fitted on" in res["small.png"]["error"]
    ok = [e for n, e in res.items() if "error" not in e]
    assert len(ok) == 4
    for e in ok:
        assert set(e) >= {"image", "score", "defective", "defects", "pose", "ms"}
    bad = [e for n, e in res.items() if "error" not in e and "good" not in n]
    assert all(e["defective"] for e in bad), bad
    assert len(list((tmp_path / "ov").glob("*.png"))) == 4


def test_bad_config_is_one_line_exit_2(data, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("label_angle_tol_deg: -3\n")
    rc = cli_vision.main(["fit", "--good", str(data / "good"), "--out", str(tmp_path / "m.npz"),
                          "--product", str(cfg)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "bad.yaml" in err and "label_angle_tol_deg" in err and "-3" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    cfg.write_text("colour: red\n")
    assert cli_vision.main(["fit", "--good", str(data / "good"), "--out", str(tmp_path / "m.npz"),
                            "--product", str(cfg)]) == 2
    cfg.write_text("a: [1, 2\n")
    assert cli_vision.main(["fit", "--good", str(data / "good"), "--out", str(tmp_path / "m.npz"),
                            "--product", str(cfg)]) == 2
    assert "YAML" in capsys.readouterr().err


def test_missing_model_and_dir(tmp_path, capsys):
    assert cli_vision.main(["inspect", "--model", str(tmp_path / "nope.npz"), str(tmp_path),
                            "--json", str(tmp_path / "o.json")]) == 2
    assert cli_vision.main(["fit", "--good", str(tmp_path / "nodir"), "--out", str(tmp_path / "m.npz")]) == 2
    assert "Traceback" not in capsys.readouterr().err
