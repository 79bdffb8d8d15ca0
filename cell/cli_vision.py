"""``axcell vision``: fit an inspection model on good images and inspect images with it.

    axcell vision fit --good DIR --out MODEL [--product CONFIG.yaml]
    axcell vision inspect --model MODEL IMAGES_OR_DIR... --json OUT.json [--overlay DIR]

Exit codes: 0 when the command ran (for ``inspect``: the batch ran, even if
some images had per-image errors — those carry an ``error`` entry in the JSON);
2 for user errors (bad arguments, unreadable config or model, no usable good
images); 1 for anything unexpected.  User errors print one line, no traceback.

Standalone: ``python -m cell.cli_vision fit ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


def register(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Add the ``vision`` command (with ``fit`` and ``inspect``) to an argparse subparsers object."""
    p = subparsers.add_parser("vision", help="fit / run the visual inspection model",
                              description="Visual inspection: teach on good images, then inspect.")
    sub = p.add_subparsers(dest="vision_cmd", metavar="{fit,inspect}")
    sub.required = True
    f = sub.add_parser("fit", help="learn a model from a folder of good images")
    f.add_argument("--good", required=True, metavar="DIR", help="folder of good images (PNG/JPEG)")
    f.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.npz)")
    f.add_argument("--product", metavar="CONFIG.yaml", help="ProductRules as YAML")
    f.set_defaults(func=cmd_fit)
    i = sub.add_parser("inspect", help="inspect images with a fitted model")
    i.add_argument("--model", required=True, metavar="MODEL")
    i.add_argument("images", nargs="+", metavar="IMAGES_OR_DIR")
    i.add_argument("--json", required=True, metavar="OUT.json", dest="json_out")
    i.add_argument("--overlay", metavar="DIR", help="write annotated images here")
    i.set_defaults(func=cmd_inspect)
    return p


# --------------------------------------------------------------------------- helpers
def _list_images(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for s in paths:
        p = Path(s)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
        elif p.exists():
            out.append(p)
        else:
            out.append(p)  # reported per image as "file not found"
    return out


def _read(path: Path):
    import cv2
    import numpy as np

    if not path.exists():
        raise FileNotFoundError("file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise ValueError("empty file")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("not a readable image (corrupt or unsupported format)")
    return img


def load_rules(path: str):
    """Read ProductRules from YAML; raise UserError with file, field and value on problems."""
    import yaml
    from pydantic import ValidationError

    from skills.vision import ProductRules

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{p}{where}: YAML syntax error: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of rule fields, got {type(data).__name__}")
    if isinstance(data.get("rules"), dict) and len(data) == 1:
        data = data["rules"]
    try:
        return ProductRules(**data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err.get("loc", ())) or "(root)"
        val = err.get("input")
        msg = err.get("msg", "invalid")
        more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise UserError(f"{p}: {field}: {msg} (value: {val!r}){more}") from None


# --------------------------------------------------------------------------- commands
def cmd_fit(args: argparse.Namespace) -> int:
    from skills.vision import InspectionError, Inspector

    rules = load_rules(args.product) if args.product else None
    d = Path(args.good)
    if not d.is_dir():
        raise UserError(f"{d}: not a directory")
    files = _list_images([str(d)])
    if not files:
        raise UserError(f"{d}: no images (PNG/JPEG) found")
    pairs = []
    for f in files:
        try:
            pairs.append((f, _read(f)))
        except (OSError, ValueError) as e:
            print(f"warning: skipped {f.name}: {e}", file=sys.stderr)
    imgs = []
    if pairs:  # keep the majority size; mis-sized images are skipped with a warning
        from collections import Counter
        main_size = Counter(im.shape[:2] for _, im in pairs).most_common(1)[0][0]
        for f, im in pairs:
            if im.shape[:2] != main_size:
                print(f"warning: skipped {f.name}: size {im.shape[1]}x{im.shape[0]} differs from "
                      f"{main_size[1]}x{main_size[0]}", file=sys.stderr)
            else:
                imgs.append(im)
    if not imgs:
        raise UserError(f"{d}: no readable images")
    t0 = time.perf_counter()
    try:
        ins = Inspector().fit(imgs, rules)
        out = ins.save(args.out)
    except InspectionError as e:
        raise UserError(f"fit failed: {e}") from None
    except OSError as e:
        raise UserError(f"{args.out}: cannot write model ({e.strerror or e})") from None
    print(f"fitted on {len(imgs)} good images in {time.perf_counter() - t0:.1f} s; "
          f"mode {ins.meta['mode']}, threshold {ins.meta['threshold']:.3f}; wrote {out}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import cv2

    from skills.vision import InspectionError, Inspector, draw_overlay

    try:
        ins = Inspector.load(args.model)
    except InspectionError as e:
        raise UserError(str(e)) from None
    files = _list_images(args.images)
    if not files:
        raise UserError("no images given (directories held no PNG/JPEG files)")
    ov = Path(args.overlay) if args.overlay else None
    if ov is not None:
        ov.mkdir(parents=True, exist_ok=True)
    results = []
    n_bad = n_err = 0
    for f in files:
        entry: dict = {"image": str(f)}
        try:
            img = _read(f)
            r = ins.inspect(img)
            entry.update({"score": round(r.score, 4), "defective": r.defective, "defects": r.defects,
                          "pose": None if r.pose_px is None else [round(v, 2) for v in r.pose_px],
                          "ms": round(r.ms, 3), "threshold": round(r.threshold, 4), "regions": r.regions})
            n_bad += int(r.defective)
            if ov is not None:
                cv2.imwrite(str(ov / (f.stem + "_overlay.png")), draw_overlay(img, r))
        except (OSError, ValueError) as e:  # InspectionError is a ValueError
            entry["error"] = str(e)
            n_err += 1
        results.append(entry)
    out = Path(args.json_out)
    try:
        out.write_text(json.dumps({"model": str(args.model), "results": results}, indent=1))
    except OSError as e:
        raise UserError(f"{out}: cannot write ({e.strerror or e})") from None
    print(f"inspected {len(files)} images: {n_bad} defective, {n_err} errors; wrote {out}")
    return 0


# --------------------------------------------------------------------------- entry points
def run(args: argparse.Namespace) -> int:
    """Dispatch a parsed ``vision`` namespace; user errors → one line on stderr, exit 2."""
    try:
        return int(args.func(args))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="axcell")
    sub = ap.add_subparsers(dest="cmd", metavar="{vision}")
    sub.required = True
    register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] != "vision":
        argv = ["vision"] + argv          # `python -m cell.cli_vision fit ...`
    args = ap.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
