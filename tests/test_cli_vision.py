"""CLI end to end: fit, inspect with per-image errors, bad config; adversarial images, folders, models, outputs."""

import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from cell import cli_vision
from cell.cli import main as axcell_main
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
    capsys.readouterr()
    cfg.write_text("a: [1, 2\n")
    assert cli_vision.main(["fit", "--good", str(data / "good"), "--out", str(tmp_path / "m.npz"),
                            "--product", str(cfg)]) == 2
    assert f"{cfg}:2: (syntax): " in capsys.readouterr().err


def test_missing_model_and_dir(tmp_path, capsys):
    assert cli_vision.main(["inspect", "--model", str(tmp_path / "nope.npz"), str(tmp_path),
                            "--json", str(tmp_path / "o.json")]) == 2
    assert cli_vision.main(["fit", "--good", str(tmp_path / "nodir"), "--out", str(tmp_path / "m.npz")]) == 2
    assert "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------- adversarial inputs
# Small fixtures only: images come from the module's 480x384 `data` set; one model is fitted on six of them.


def _png(path: Path, w: int, h: int, ctype: int, depth: int, rows: list[bytes], plte: bytes | None = None,
         trns: bytes | None = None, idat: bytes | None = None) -> None:
    """A PNG written by hand: palette / grey+alpha / lying headers that OpenCV cannot write itself."""
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
    if plte is not None:
        out += chunk(b"PLTE", plte)
    if trns is not None:
        out += chunk(b"tRNS", trns)
    out += chunk(b"IDAT", idat if idat is not None else zlib.compress(b"".join(b"\0" + r for r in rows)))
    path.write_bytes(out + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def model(data, tmp_path_factory):
    """A model fitted (in-process) on six of the good images, and one good frame of its size."""
    from skills.vision import Inspector

    goods = sorted((data / "good").glob("*.png"))
    path = tmp_path_factory.mktemp("model") / "m.npz"
    Inspector().fit([cv2.imread(str(p)) for p in goods[:6]]).save(path)
    return path, cv2.imread(str(goods[6]))


def test_vision_user_errors_exit_2_through_axcell(tmp_path, capsys):
    # `axcell vision ...` used to end in "axcell: error: UserError: ..." with exit code 1
    assert axcell_main(["vision", "fit", "--good", str(tmp_path / "nodir"), "--out", str(tmp_path / "m.npz")]) == 2
    assert axcell_main(["vision", "inspect", "--model", str(tmp_path / "no.npz"), str(tmp_path),
                        "--json", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert "UserError" not in err and "Traceback" not in err
    assert "nodir: no such folder" in err and "no.npz: model file not found" in err


def test_every_common_image_flavour_reads_as_8bit_colour(data, tmp_path):
    src = cv2.imread(str(sorted((data / "good").glob("*.png"))[0]))
    h, w = src.shape[:2]
    grey = cv2.cvtColor(src, cv2.COLOR_BGR2GRAY)
    files = {
        "grey.png": grey, "grey16.png": grey.astype(np.uint16) * 257, "colour16.png": src.astype(np.uint16) * 257,
        "twelve_bit.png": src.astype(np.uint16) * 16, "eight_in_16.png": src.astype(np.uint16),
        "rgba.png": cv2.cvtColor(src, cv2.COLOR_BGR2BGRA), "a.jpg": src, "a.bmp": src, "a.tif": src, "a.webp": src,
    }
    for name, im in files.items():
        assert cv2.imwrite(str(tmp_path / name), im), name
    cv2.imwrite(str(tmp_path / "progressive.jpg"), src, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    idx = (src[..., 1] // 32).astype(np.uint8)                      # 8 grey levels through a palette
    pal = bytes(v for i in range(8) for v in (i * 32 + 16,) * 3)
    _png(tmp_path / "palette.png", w, h, 3, 8, [idx[y].tobytes() for y in range(h)], plte=pal, trns=b"\xff\x00")
    la = np.dstack([grey, np.full_like(grey, 200)])
    _png(tmp_path / "grey_alpha.png", w, h, 4, 8, [la[y].tobytes() for y in range(h)])
    for p in sorted(tmp_path.iterdir()):
        img = cli_vision._read(p)
        assert img.dtype == np.uint8 and img.shape == (h, w, 3), p.name
    # 12-bit data in a 16-bit file keeps its brightness (it used to be shifted by 8 bits: nearly black)
    assert abs(float(cli_vision._read(tmp_path / "twelve_bit.png").mean()) - float(src.mean())) < 2.0
    assert abs(float(cli_vision._read(tmp_path / "eight_in_16.png").mean()) - float(src.mean())) < 2.0


def test_bad_files_become_per_image_errors_and_the_batch_goes_on(model, tmp_path, capsys):
    path, good = model
    d = tmp_path / "in put"
    d.mkdir()
    cv2.imwrite(str(d / "ok.png"), good)
    cv2.imwrite(str(d / "ok.jpg"), good)                            # same stem as ok.png: overlays must not clash
    cv2.imwrite(str(d / "ünï côdé.png"), good)
    (d / "zero.png").write_bytes(b"")
    (d / "text.png").write_text("not a picture\n")
    data = (d / "ok.png").read_bytes()
    (d / "truncated.png").write_bytes(data[:len(data) // 2])
    (d / "folder.png").mkdir()
    os.symlink(d / "gone.png", d / "broken.png")
    cv2.imwrite(str(d / "small.png"), good[:8, :8])
    cv2.imwrite(str(d / "resized.png"), cv2.resize(good, (300, 240)))
    _png(d / "bomb.png", 30000, 30000, 2, 8, [], idat=zlib.compress(b"\0" * 1000))   # 2.7 GB if decoded
    cv2.imwrite(str(d / "float.tiff"), good.astype(np.float32))     # 0..255 floats: not [0, 1]
    (d / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (d / "._ok.png").write_bytes(b"\0\5\26\7AppleDouble")         # macOS resource fork: hidden, skipped
    (d / "README.txt").write_text("hello")
    (d / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    out, ov = tmp_path / "o.json", tmp_path / "ov"
    rc = cli_vision.main(["inspect", "--model", str(path), str(d), "--json", str(out), "--overlay", str(ov)])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    res = {Path(e["image"]).name: e for e in json.loads(out.read_text())["results"]}
    assert sorted(res) == sorted(["ok.png", "ok.jpg", "ünï côdé.png", "zero.png", "text.png", "truncated.png",
                                  "broken.png", "small.png", "resized.png", "bomb.png", "float.tiff"])
    expect = {"zero.png": "empty file", "text.png": "text file", "truncated.png": "corrupt or truncated PNG",
              "broken.png": "broken symbolic link", "small.png": "8x8, the model was fitted on 480x384",
              "resized.png": "300x240, the model was fitted on 480x384", "bomb.png": "30000x30000",
              "float.tiff": "must lie in [0, 1]"}
    for name, words in expect.items():
        assert words in res[name].get("error", ""), (name, res[name])
    for name in ("ok.png", "ok.jpg", "ünï côdé.png"):
        assert "error" not in res[name] and isinstance(res[name]["defective"], bool)
    overlays = {Path(res[n]["overlay"]).name for n in ("ok.png", "ok.jpg", "ünï côdé.png")}
    assert len(overlays) == 3 and all((ov / n).is_file() for n in overlays)


def test_damaged_or_foreign_models_are_one_line_errors(model, data, tmp_path, capsys):
    import json as _json

    path, good = model
    z = dict(np.load(path))
    header = _json.loads(z["__header__"].tobytes())

    def npz(name: str, hdr: object = None, drop: str | None = None) -> Path:
        arrays = {k: v for k, v in z.items() if k != drop}
        if hdr is not None:
            arrays["__header__"] = np.frombuffer(_json.dumps(hdr).encode(), np.uint8)
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    (tmp_path / "text.npz").write_text("garbage\n")
    (tmp_path / "zero.npz").write_bytes(b"")
    np.savez(tmp_path / "other.npz", a=np.arange(3))
    cases = {
        tmp_path / "text.npz": "not an .npz archive", tmp_path / "zero.npz": "not an .npz archive",
        tmp_path / "other.npz": "no header", npz("list.npz", [1, 2]): "damaged or incompatible",
        npz("noparams.npz", {k: v for k, v in header.items() if k != "params"}): "damaged or incompatible",
        npz("old.npz", {**header, "version": 1}): "model version 1 is not supported",
        npz("size.npz", {**header, "meta": {**header["meta"], "image_size": "big"}}): "damaged inspector model",
        tmp_path: "is a folder", data / "good" / "salad_0000_good.png": "not an .npz archive",
    }
    for m, words in cases.items():
        rc = cli_vision.main(["inspect", "--model", str(m), str(data / "test"), "--json", str(tmp_path / "o.json")])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and "Traceback" not in err and len(err.splitlines()) == 1, (m, err)
    # a model that loads but whose arrays are broken: every image fails inside, exit 1 with a hint, JSON kept
    cv2.imwrite(str(tmp_path / "g.png"), good)
    rc = cli_vision.main(["inspect", "--model", str(npz("noarr.npz", drop="template")), str(tmp_path / "g.png"),
                          "--json", str(tmp_path / "o.json")])
    assert rc == 1 and "refit it" in capsys.readouterr().err
    assert json.loads((tmp_path / "o.json").read_text())["results"][0]["error"].startswith("inspection failed")


@pytest.mark.parametrize("key", ["bank", "feat_inv", "pix_med"])
def test_model_with_non_finite_values_is_refused(model, data, tmp_path, capsys, key):
    # NaN in the fitted statistics makes every comparison false: defective trays passed as good, exit 0
    path, _ = model
    z = dict(np.load(path))
    z[key] = np.full_like(z[key], np.nan) if key != "pix_med" else np.where(z[key] > 0, np.inf, z[key])
    np.savez(tmp_path / "nan.npz", **z)
    rc = cli_vision.main(["inspect", "--model", str(tmp_path / "nan.npz"), str(data / "test"),
                          "--json", str(tmp_path / "o.json")])
    err = capsys.readouterr().err
    assert rc == 2 and f"NaN or infinite values in {key!r}" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o.json").exists()


def test_a_cell_whose_model_does_not_fit_its_camera_is_refused_by_check(model, tmp_path, capsys):
    # a model fitted on 480x384 frames in a cell whose camera crops 294x259: check said ok, and then every
    # inspection of the run crashed ("image is 294x259, the model was fitted on 480x384")
    import shutil

    path, _ = model
    shutil.copy(path, tmp_path / "salad.npz")
    cell = tmp_path / "cell.yaml"
    cell.write_text((ROOT / "launch" / "packaging_cell.yaml").read_text().replace(
        "    appearance: kimchi", "    appearance: kimchi\n    model: salad.npz", 1))
    assert axcell_main(["check", str(cell)]) == 2
    err = capsys.readouterr().err
    assert f"{cell}:15: products.kimchi_tray.model: the model was fitted on 480x384 images, but this cell's camera " \
           f"crops are 294x259" in err, err


def test_outputs_are_checked_before_work_and_never_clobber_inputs(model, data, tmp_path, capsys):
    path, _ = model
    before = path.read_bytes()
    afile = tmp_path / "afile"
    afile.write_text("x")
    runs = [
        (["fit", "--good", str(data / "good"), "--out", str(tmp_path / "no" / "m.npz")], "no: no such folder"),
        (["fit", "--good", str(data / "good"), "--out", str(afile / "m.npz")], "is a file, not a folder"),
        (["fit", "--good", str(data / "good"), "--out", str(tmp_path)], "is a folder"),
        (["inspect", "--model", str(path), str(data / "test"), "--json", str(tmp_path / "no" / "o.json")],
         "no such folder"),
        (["inspect", "--model", str(path), str(data / "test"), "--json", str(path)], "would overwrite an input"),
        (["inspect", "--model", str(path), str(data / "test"), "--json", str(tmp_path / "o.json"),
          "--overlay", str(afile)], "must be a folder"),
    ]
    for argv, words in runs:
        t0 = time.perf_counter()
        rc = cli_vision.main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and words in err and "Traceback" not in err, (argv, err)
        assert time.perf_counter() - t0 < 1.0, argv            # refused before fitting / inspecting
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.rglob("*.tmp")] and not list(path.parent.glob(".*.tmp"))


def test_fit_skips_unusable_good_images_by_name(data, tmp_path, capsys):
    goods = sorted((data / "good").glob("*.png"))
    d = tmp_path / "good"
    d.mkdir()
    for p in goods[:6]:
        (d / p.name).write_bytes(p.read_bytes())
    belt = cv2.imread(str(goods[0]))
    cv2.imwrite(str(d / "zz_empty_belt.png"), np.full_like(belt, belt[2, 2]))      # no part in the frame
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cv2.imwrite(str(d / "other_size.png"), cv2.resize(belt, (200, 160)))
    (d / "notes.txt").write_text("camera 2, lot 7")
    (d / ".DS_Store").write_bytes(b"\0")
    assert cli_vision.main(["fit", "--good", str(d), "--out", str(tmp_path / "m.npz")]) == 0
    cap = capsys.readouterr()
    assert "fitted on 6 good images (3 skipped)" in cap.out
    for name in ("zz_empty_belt.png: no part found", "corrupt.png: corrupt or truncated PNG",
                 "other_size.png: size 200x160 differs"):
        assert name in cap.err, cap.err
    assert "Traceback" not in cap.err
    # too few usable images: exit 2 naming what was skipped
    for p in sorted(d.glob("salad_*.png"))[:3]:
        p.unlink()
    assert cli_vision.main(["fit", "--good", str(d), "--out", str(tmp_path / "m2.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "4 usable good image(s), at least 5 needed" in err and "corrupt.png" in err
    assert not (tmp_path / "m2.npz").exists()


def test_fit_folder_problems_are_named(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "nested" / "day1").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "nested" / "day1" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "file.png").write_bytes(b"x")
    for d, words in (("empty", "no image files"), ("nested", "subfolders are not searched (day1)"),
                     ("file.png", "not a folder"), ("missing", "no such folder")):
        assert cli_vision.main(["fit", "--good", str(tmp_path / d), "--out", str(tmp_path / "m.npz")]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err


RULES = [  # (YAML, line, field path, words) — the message is FILE:LINE: path: problem (value)
    ("name: x\nlabel_angle_tol_deg: -3\n", 2, "label_angle_tol_deg", "greater than 0 (-3)"),
    ("fill_range: [0.8, 0.2]\n", 1, "fill_range", "min < max <= 1 ([0.8, 0.2])"),
    ("label_box: [0.1, 0.1, 0.5]\n", 1, "label_box", "too few values"),
    ("name: x\nanomaly_margin: .nan\n", 2, "anomaly_margin", "must be a finite number (nan)"),
    ("name: x\ncolour: red\n", 2, "colour", "unknown key ('red')"),
    ("rules:\n  seal_band_frac: 2\n", 2, "rules.seal_band_frac", "less than 0.5 (2)"),
    ("name: !!python/object/apply:os.system ['true']\n", 1, "name", "is not allowed"),
    ("name: a\nname: b\n", 2, "name", "duplicate key 'name'"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
     5, "e.", "aliases expand to more than"),            # refused while expanding, not after
    ("- 1\n- 2\n", 1, "(top)", "expected a mapping"),
    ("\tname: x\n", 1, "(syntax)", "'\\t'"),
]


@pytest.mark.parametrize("text,line,path,words", RULES)
def test_product_rules_errors_are_located(tmp_path, text, line, path, words):
    from cell.config import CellFileError

    f = tmp_path / "rules.yaml"
    f.write_text(text)
    with pytest.raises(CellFileError) as ei:
        cli_vision.load_rules(str(f))
    first = ei.value.problems[0].format(str(f))
    assert first.startswith(f"{f}:{line}: {path}") and words in first, first


def test_product_rules_file_level_problems(tmp_path, capsys):
    f = tmp_path / "r.yaml"
    f.write_bytes(b"name: caf\xe9\n")
    good = tmp_path / "none"
    assert cli_vision.main(["fit", "--good", str(good), "--out", str(tmp_path / "m.npz"), "--product", str(f)]) == 2
    assert f"{f}:1: (file): not UTF-8 text" in capsys.readouterr().err
    cell = ROOT / "launch" / "packaging_cell.yaml"
    assert cli_vision.main(["fit", "--good", str(good), "--out", str(tmp_path / "m.npz"), "--product", str(cell)]) == 2
    assert "this is a cell file" in capsys.readouterr().err
    assert cli_vision.main(["fit", "--good", str(good), "--out", str(tmp_path / "m.npz"), "--product",
                            str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_an_interrupted_or_failing_batch_keeps_what_was_inspected(model, tmp_path, monkeypatch, capsys):
    from skills.vision import Inspector

    path, good = model
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), good)
    real = Inspector.inspect
    calls = []

    def flaky(self, img):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure deep inside")
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self, img)

    monkeypatch.setattr(Inspector, "inspect", flaky)
    out = tmp_path / "o.json"
    out.write_text("previous results")
    rc = cli_vision.main(["inspect", "--model", str(path), str(tmp_path), "--json", str(out)])
    assert rc == 130 and "interrupted after 3 of 4" in capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["interrupted"] is True and len(doc["results"]) == 3
    assert "simulated failure" in doc["results"][1]["error"] and "error" not in doc["results"][2]
