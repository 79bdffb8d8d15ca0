"""``axcell vision``: fit an inspection model on good images and inspect images with it.

    axcell vision fit --good DIR --out MODEL [--product CONFIG.yaml]
    axcell vision inspect --model MODEL IMAGES_OR_DIR... --json OUT.json [--overlay DIR]

Exit codes: 0 when the command ran (for ``inspect``: the batch ran, even if
some images had per-image errors — those carry an ``error`` entry in the JSON);
2 for user errors (bad arguments, unreadable config or model, no usable good
images, an output that cannot be written); 1 for anything unexpected; 130 when
interrupted.  Errors print one line each, never a traceback (``AXCELL_DEBUG=1``
shows one for unexpected errors).

Input rules, the same for ``fit`` and ``inspect``:

* a directory contributes the image files directly in it (``.png``, ``.jpg``,
  ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``, ``.webp``, ``.pgm``/``.ppm``/``.pnm``);
  hidden files (``.DS_Store``, macOS ``._x.png``), other files (``README.txt``,
  ``Thumbs.db``) and subfolders are not read;
* grayscale, 16-bit (also 12-bit or 8-bit data in 16-bit files), palette and RGBA
  images are converted to 8-bit colour; images larger than 268 megapixels
  (or with a side under 32 px) are refused.

``fit`` skips, with a warning naming the file, every good image it cannot use:
unreadable or corrupt files, images of another size than most of the folder,
and frames in which no part is found (up to a quarter of the folder; more
means the folder is probably wrong and the fit stops).  It needs 5 usable
images.  ``inspect`` records such problems per image in the JSON and goes on.
Outputs (model, JSON) are written to a temporary file next to the target and
renamed into place, so an existing file is never left half-written; their
folders are checked before any work starts.

Standalone: ``python -m cell.cli_vision fit ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from . import cliargs

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm",
              ".pbm"}
MAX_PIXELS = 1 << 28            # 268 MP: decoding more is a memory hazard (a 2 MB PNG can hold 30000x30000)
MAX_FILE_BYTES = 1 << 30
MIN_GOOD = 5


class UserError(cliargs.UserError):
    """A problem the user can fix; printed as one line, exit code 2."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message, code)


def register(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Add the ``vision`` command (with ``fit`` and ``inspect``) to an argparse subparsers object."""
    p = subparsers.add_parser("vision", help="fit / run the visual inspection model",
                              description="Visual inspection: teach on good images, then inspect.")
    sub = p.add_subparsers(dest="vision_cmd", metavar="{fit,inspect}")
    sub.required = True
    f = sub.add_parser("fit", help="learn a model from a folder of good images",
                       description="Learn a model from good images. Unusable images are skipped with a warning.")
    f.add_argument("--good", required=True, metavar="DIR", help="folder of good images (PNG/JPEG/...; not searched "
                                                                "recursively); at least 5 usable")
    f.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.npz)")
    f.add_argument("--product", metavar="CONFIG.yaml", help="ProductRules as YAML")
    f.set_defaults(func=run, vision_func=cmd_fit)
    i = sub.add_parser("inspect", help="inspect images with a fitted model",
                       description="Inspect images; per-image problems are recorded in the JSON and the batch goes on.")
    i.add_argument("--model", required=True, metavar="MODEL")
    i.add_argument("images", nargs="+", metavar="IMAGES_OR_DIR")
    i.add_argument("--json", required=True, metavar="OUT.json", dest="json_out")
    i.add_argument("--overlay", metavar="DIR", help="write annotated images here")
    i.set_defaults(func=run, vision_func=cmd_inspect)
    return p


def _warn(msg: str) -> None:
    print(f"axcell: warning: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------- listing and reading images
def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTS


def _list_dir(d: Path) -> tuple[list[Path], list[str]]:
    """Image files directly in ``d`` (sorted; broken links included, so they are reported) and its subfolders."""
    try:
        entries = sorted(d.iterdir(), key=lambda q: q.name)
    except OSError as e:
        raise UserError(f"{d}: cannot list the folder ({e.strerror or e.__class__.__name__})") from None
    files, subdirs = [], []
    for q in entries:
        try:
            if q.is_dir():
                if not q.name.startswith("."):
                    subdirs.append(q.name)
                continue
        except OSError:
            pass
        if _is_image_name(q.name) and (q.is_file() or q.is_symlink()):
            files.append(q)
    return files, subdirs


def _no_images_hint(d: Path, subdirs: list[str], how: str = "pass them instead") -> str:
    msg = f"{d}: no image files (PNG/JPEG/BMP/TIFF/WebP/PNM) in this folder"
    if subdirs:
        shown = ", ".join(subdirs[:5]) + (", ..." if len(subdirs) > 5 else "")
        msg += f"; subfolders are not searched ({shown}): {how}"
    return msg


def _list_images(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for s in paths:
        p = Path(s)
        if p.is_dir():
            files, subdirs = _list_dir(p)
            if not files:
                _warn(_no_images_hint(p, subdirs))
            out += files
        else:
            out.append(p)  # a missing / unreadable file is reported per image
    return out


def _peek_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, BMP, GIF or WebP file without decoding it."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"\xff\xd8":
            i, n = 2, len(data)
            while i + 9 < n:
                if data[i] != 0xFF:
                    i += 1
                    continue
                m = data[i + 1]
                if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7 or m == 0xFF:
                    i += 1 if m == 0xFF else 2
                    continue
                seg = struct.unpack(">H", data[i + 2:i + 4])[0]
                if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", data[i + 5:i + 9])
                    return w, h
                i += 2 + seg
            return None
        if data[:2] == b"BM" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            e = "<" if data[:2] == b"II" else ">"
            off = struct.unpack(e + "I", data[4:8])[0]
            n = struct.unpack(e + "H", data[off:off + 2])[0]
            dims: dict[int, int] = {}
            for k in range(min(n, 512)):
                tag, typ = struct.unpack(e + "HH", data[off + 2 + 12 * k:off + 6 + 12 * k])
                if tag in (256, 257):
                    raw = data[off + 10 + 12 * k:off + 14 + 12 * k]
                    dims[tag] = struct.unpack(e + "H", raw[:2])[0] if typ == 3 else struct.unpack(e + "I", raw)[0]
            return (dims[256], dims[257]) if len(dims) == 2 else None
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8X":
                return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
            if kind == b"VP8L":
                b = int.from_bytes(data[21:25], "little")
                return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF)
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
    except (struct.error, IndexError):
        return None
    return None


_MAGIC = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF",
          b"GIF8": "GIF", b"RIFF": "WebP"}


def _undecodable(data: bytes) -> str:
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            return f"corrupt or truncated {name} file (cannot be decoded)"
    head = data[:512]
    if head and all(32 <= c < 127 or c in (9, 10, 13) for c in head):
        return "not an image: this is a text file"
    return "not an image file (unknown format)"


def _read(path: Path, expect_wh: tuple[int, int] | None = None):
    """Decode one image file to uint8 BGR; ``ValueError``/``OSError`` with a one-line reason otherwise."""
    import cv2
    import numpy as np

    from skills.vision import as_bgr

    if path.is_symlink() and not path.exists():
        raise FileNotFoundError(f"broken symbolic link (points to {os.readlink(path)})")
    if not path.exists():
        raise FileNotFoundError("file not found")
    if path.is_dir():
        raise IsADirectoryError("is a folder, not an image")
    if not path.is_file():
        raise ValueError("not a regular file (a device, pipe or socket)")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"file larger than {MAX_FILE_BYTES >> 20} MB")
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise OSError(f"cannot read ({e.strerror or e.__class__.__name__})") from None
    if not data:
        raise ValueError("empty file (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"file larger than {MAX_FILE_BYTES >> 20} MB")
    wh = _peek_size(data)
    if wh is not None:
        w, h = wh
        if w * h > MAX_PIXELS:
            raise ValueError(f"image is {w}x{h} ({w * h / 1e6:.0f} MP), more than the {MAX_PIXELS / 1e6:.0f} MP "
                             f"this tool decodes")
        if expect_wh is not None and (w, h) != tuple(expect_wh):
            raise ValueError(f"image is {w}x{h}, the model was fitted on {expect_wh[0]}x{expect_wh[1]}")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        if "MAX_IMAGE_PIXELS" in str(e):
            raise ValueError(f"image is more than the {MAX_PIXELS / 1e6:.0f} MP this tool decodes") from None
        raise ValueError(_undecodable(data)) from None
    if img is None:
        raise ValueError(_undecodable(data))
    return as_bgr(img)


# --------------------------------------------------------------------------- product rules
def load_rules(path: str):
    """Read ProductRules from YAML; raise :class:`~cell.config.CellFileError` (FILE:LINE: field: problem (value))."""
    from pydantic import ValidationError

    from skills.vision import ProductRules

    from . import yamlsafe
    from .config import CellFileError, Problem, _problems_from, _sorted

    file = str(path)

    def fail(line: int, where: str, msg: str, value: Any = None) -> None:
        raise CellFileError(file, [Problem(line=line, path=where, message=msg, value=value)])

    try:
        data, lines = yamlsafe.load(yamlsafe.read(path))
    except yamlsafe.YamlError as e:
        fail(e.line, e.path, e.message)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        fail(1, "(top)", "expected a mapping of rule fields (label_box, fill_range, ...)", type(data).__name__)
    prefix: tuple[Any, ...] = ()
    if isinstance(data.get("rules"), dict) and len(data) == 1:
        prefix, rules = ("rules",), data["rules"]
    else:
        rules = data
    if "products" in data and ("cell" in data or "devices" in data):
        fail(1, "(top)", "this is a cell file; --product takes one product's rules (the mapping under "
                         "products.NAME.rules) in a file of its own")
    problems = [Problem(line=yamlsafe.line_for(lines, p), path=".".join(map(str, p)), message="must be a finite number",
                        value=v) for p, v in yamlsafe.non_finite(data)]
    if not problems:
        try:
            return ProductRules.model_validate(rules)
        except ValidationError as e:
            problems = _problems_from(e, data, lines, prefix)
    raise CellFileError(file, _sorted(problems))


# --------------------------------------------------------------------------- outputs
class _Output:
    """A file written atomically: a temporary file beside the target (created up front, so an unwritable
    place fails before any work), renamed over it at :meth:`commit`."""

    def __init__(self, target: str, what: str, option: str) -> None:
        if not str(target).strip():
            raise UserError(f"{option}: empty file name")
        self.path = Path(target)
        self.what = what
        if self.path.is_dir():
            raise UserError(f"{self.path}: is a folder; give a file name for the {what}")
        parent = self.path.parent
        if not parent.is_dir():
            why = "no such folder" if not parent.exists() else "is a file, not a folder"
            raise UserError(f"{self.path}: cannot write the {what}: {parent}: {why}")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=parent)
            os.close(fd)
            os.chmod(tmp, 0o666 & ~_umask())      # mkstemp makes 0600; the result gets the usual mode
        except OSError as e:
            raise UserError(f"{self.path}: cannot write the {what} ({e.strerror or e.__class__.__name__})") from None
        self.tmp = Path(tmp)

    def commit(self) -> Path:
        try:
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.discard()
            raise UserError(f"{self.path}: cannot write the {self.what} "
                            f"({e.strerror or e.__class__.__name__})") from None
        return self.path

    def discard(self) -> None:
        try:
            self.tmp.unlink()
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# --------------------------------------------------------------------------- commands
def cmd_fit(args: argparse.Namespace) -> int:
    from skills.vision import InspectionError, Inspector

    rules = load_rules(args.product) if args.product else None
    d = Path(args.good)
    if not d.is_dir():
        raise UserError(f"{d}: {'not a folder' if d.exists() else 'no such folder'} (--good takes a folder of "
                        f"good images)")
    files, subdirs = _list_dir(d)
    if not files:
        raise UserError(_no_images_hint(d, subdirs, "give one of them as --good"))
    out = _Output(args.out, "model", "--out")
    try:
        return _fit(d, files, rules, out, Inspector, InspectionError)
    finally:
        out.discard()


def _fit(d: Path, files: list[Path], rules: Any, out: _Output, Inspector: Any, InspectionError: Any) -> int:
    skipped: list[str] = []

    def skip(f: Path, why: str) -> None:
        _warn(f"skipped {f}: {why}")
        skipped.append(f.name)

    pairs = []
    for f in files:
        try:
            pairs.append((f, _read(f)))
        except (OSError, ValueError) as e:  # InspectionError is a ValueError
            skip(f, str(e))
    if pairs:  # keep the majority size; mis-sized images are skipped with a warning
        from collections import Counter
        main_size = Counter(im.shape[:2] for _, im in pairs).most_common(1)[0][0]
        kept = []
        for f, im in pairs:
            if im.shape[:2] != main_size:
                skip(f, f"size {im.shape[1]}x{im.shape[0]} differs from {main_size[1]}x{main_size[0]} (most images)")
            else:
                kept.append((f, im))
        pairs = kept

    def too_few() -> UserError:
        why = f"; skipped {len(skipped)}: {', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}" \
            if skipped else ""
        return UserError(f"{d}: {len(pairs)} usable good image(s), at least {MIN_GOOD} needed{why}")

    if len(pairs) < MIN_GOOD:
        raise too_few()
    max_drop = len(pairs) // 4
    dropped = 0
    t0 = time.perf_counter()
    while True:
        try:
            ins = Inspector().fit([im for _, im in pairs], rules)
            break
        except InspectionError as e:
            msg = str(e)
            m = re.match(r"good image #(\d+): (.*)", msg)
            if m is None or not 0 <= int(m.group(1)) < len(pairs):
                raise UserError(f"{d}: fit failed: {msg}") from None
            f = pairs[int(m.group(1))][0]
            if "no part found" not in m.group(2):
                raise UserError(f"{f}: fit failed: {m.group(2)}") from None
            if dropped >= max_drop:
                raise UserError(f"{f}: {m.group(2)}; no part was found in {dropped + 1} of the {len(pairs) + dropped} "
                                f"good images: are these images of parts on the belt?") from None
            skip(f, m.group(2))
            pairs.pop(int(m.group(1)))
            dropped += 1
            if len(pairs) < MIN_GOOD:
                raise too_few() from None
        except Exception as e:  # noqa: BLE001 - the fit must never end in a traceback
            if os.environ.get("AXCELL_DEBUG"):
                raise
            raise UserError(f"{d}: fit failed unexpectedly on these images ({_brief(e)})",
                            code=1) from None
    try:
        ins.save(out.tmp)
    except OSError as e:
        raise UserError(f"{out.path}: cannot write the model ({e.strerror or e.__class__.__name__})") from None
    path = out.commit()
    note = f" ({len(skipped)} skipped)" if skipped else ""
    print(f"fitted on {len(pairs)} good images{note} in {time.perf_counter() - t0:.1f} s; "
          f"mode {ins.meta['mode']}, threshold {ins.meta['threshold']:.3f}; wrote {path}")
    return 0


def _load_model(path: str):
    from skills.vision import InspectionError, Inspector

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: model file not found")
    if p.is_dir():
        raise UserError(f"{p}: is a folder, not a model file")
    if not p.is_file():
        raise UserError(f"{p}: not a regular file (a device, pipe or socket), not a model file")  # a pipe blocks
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError as e:
        raise UserError(f"{p}: cannot read the model ({e.strerror or e.__class__.__name__})") from None
    if head[:2] != b"PK":
        raise UserError(f"{p}: not an inspector model (not an .npz archive; write one with `axcell vision fit`)")
    try:
        ins = Inspector.load(p)
    except InspectionError as e:
        raise UserError(" ".join(str(e).split())) from None
    except Exception as e:  # noqa: BLE001 - a damaged or foreign model must not end in a traceback
        raise UserError(f"{p}: damaged or incompatible inspector model ({_brief(e)}); "
                        f"refit it with `axcell vision fit`") from None
    size = ins.meta.get("image_size") if isinstance(ins.meta, dict) else None
    thr = ins.meta.get("threshold") if isinstance(ins.meta, dict) else None
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
            and isinstance(thr, (int, float)) and math.isfinite(thr)):
        raise UserError(f"{p}: damaged inspector model (bad image size or threshold in its header); "
                        f"refit it with `axcell vision fit`")
    return ins, (int(size[0]), int(size[1]))


def _brief(e: BaseException, limit: int = 200) -> str:
    """``Class: message`` on one line, shortened (pydantic and numpy messages run over several lines)."""
    errors = getattr(e, "errors", None)
    if callable(errors) and e.__class__.__name__ == "ValidationError":
        try:
            first = e.errors()[0]
            text = f"{'.'.join(map(str, first.get('loc', ())))}: {first.get('msg')} (value: {first.get('input')!r})"
        except Exception:  # noqa: BLE001
            text = str(e)
    else:
        text = str(e)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{e.__class__.__name__}: {text}"


def _json_safe(v: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays to Python, NaN/inf to None."""
    import numpy as np

    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.ndarray):
        return _json_safe(v.tolist())
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _overlay_name(ov: Path, f: Path, used: set[str]) -> Path:
    """``<stem>_overlay.png``, made unique within the run (a.png and a.jpg, or two folders' a.png)."""
    name = f"{f.stem}_overlay.png"
    k = 2
    while name in used:
        name = f"{f.stem}-{k}_overlay.png"
        k += 1
    used.add(name)
    return ov / name


def _write_overlay(path: Path, img: Any) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("could not encode the overlay")
    with open(path, "wb") as fh:
        fh.write(buf.tobytes())


def cmd_inspect(args: argparse.Namespace) -> int:
    from .heap import keep_heap

    keep_heap()  # a batch of frames: reuse their pages instead of faulting fresh ones in (see cell.heap)
    ins, wh = _load_model(args.model)
    files = _list_images(args.images)
    if not files:
        raise UserError("no images to inspect (the folders given hold no image files)")
    for src in [Path(args.model)] + files:
        if _same_file(Path(args.json_out), src):
            raise UserError(f"{args.json_out}: --json would overwrite an input ({src})")
    ov = Path(args.overlay) if args.overlay else None
    if ov is not None:
        if ov.exists() and not ov.is_dir():
            raise UserError(f"{ov}: --overlay must be a folder, and this is a file")
        try:
            ov.mkdir(parents=True, exist_ok=True)
            fd, t = tempfile.mkstemp(dir=ov, prefix=".write-test.")
            os.close(fd)
            os.unlink(t)
        except OSError as e:
            raise UserError(f"{ov}: cannot write overlays there ({e.strerror or e.__class__.__name__})") from None
    out = _Output(args.json_out, "JSON results", "--json")
    try:
        return _inspect(args, ins, wh, files, ov, out)
    finally:
        out.discard()


def _inspect_one(ins: Any, f: Path, wh: tuple[int, int], ov: Path | None, used: set[str]) -> dict:
    """One image's JSON entry; a problem with this image becomes its ``error``, never an exception."""
    from skills.vision import InspectionError, draw_overlay

    entry: dict = {"image": str(f)}
    try:
        img = _read(f, expect_wh=wh)
    except (OSError, ValueError) as e:      # the file: missing, unreadable, corrupt, wrong size...
        entry["error"] = " ".join(str(e).split())
        return entry
    except Exception as e:  # noqa: BLE001 - a decoder failing in some other way
        entry["error"] = f"cannot read the image ({_brief(e)})"
        return entry
    try:
        r = ins.inspect(img)
    except InspectionError as e:
        entry["error"] = " ".join(str(e).split())
        return entry
    except Exception as e:  # noqa: BLE001 - one bad image must not end the batch
        entry["error"] = f"inspection failed ({_brief(e)})"
        entry["internal"] = True
        return entry
    entry.update({"score": round(float(r.score), 4), "defective": bool(r.defective), "defects": list(r.defects),
                  "pose": None if r.pose_px is None else [round(float(v), 2) for v in r.pose_px],
                  "ms": round(float(r.ms), 3), "threshold": round(float(r.threshold), 4), "regions": r.regions})
    if ov is not None:
        target = _overlay_name(ov, f, used)
        try:
            _write_overlay(target, draw_overlay(img, r))
            entry["overlay"] = str(target)
        except Exception as e:  # noqa: BLE001 - the verdict stands even if its picture cannot be written
            entry["overlay_error"] = f"{target}: {getattr(e, 'strerror', None) or _brief(e)}"
    return entry


def _inspect(args: argparse.Namespace, ins: Any, wh: tuple[int, int], files: list[Path], ov: Path | None,
             out: _Output) -> int:
    results: list[dict] = []
    used: set[str] = set()
    interrupted = False
    for f in files:
        try:
            results.append(_inspect_one(ins, f, wh, ov, used))
        except KeyboardInterrupt:
            interrupted = True
            break
    doc: dict = {"model": str(args.model), "results": results}
    if interrupted:
        doc["interrupted"] = True
    try:
        with open(out.tmp, "w", encoding="utf-8") as fh:
            json.dump(_json_safe(doc), fh, indent=1, allow_nan=False)
    except OSError as e:
        raise UserError(f"{out.path}: cannot write the JSON results ({e.strerror or e.__class__.__name__})") from None
    path = out.commit()
    n_bad = sum(1 for e in results if e.get("defective"))
    n_err = sum(1 for e in results if "error" in e)
    n_internal = sum(1 for e in results if e.get("internal"))
    n_ov = sum(1 for e in results if "overlay_error" in e)
    if interrupted:
        print(f"interrupted after {len(results)} of {len(files)} images; wrote {path}", file=sys.stderr)
        return 130
    extra = f", {n_ov} overlays not written" if n_ov else ""
    print(f"inspected {len(files)} images: {n_bad} defective, {n_err} errors{extra}; wrote {path}")
    if n_internal and n_err == len(results):
        first = next(e["error"] for e in results if e.get("internal"))
        print(f"axcell: error: every image that could be read failed inside the inspector ({first}); the model "
              f"{args.model} is probably damaged: refit it with `axcell vision fit`", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- entry points
def run(args: argparse.Namespace) -> int:
    """Dispatch a parsed ``vision`` namespace; user errors → one line each on stderr, exit 2."""
    from .config import CellFileError

    # OpenCV reads this once, at its first decode: set before any, as a second guard behind _peek_size
    # (formats whose size _peek_size cannot read)
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
    try:
        import cv2
        # a corrupt file is reported once, by us, in the per-image error: not also by OpenCV's logger
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR if os.environ.get("AXCELL_DEBUG")
                                      else cv2.utils.logging.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):  # pragma: no cover - older OpenCV
        pass
    try:
        return int(args.vision_func(args))
    except CellFileError as e:
        from .cli import print_problems

        print_problems(e, summary=len(e.problems) > 1)
        return 2
    except cliargs.UserError as e:
        print(f"axcell: error: {e}", file=sys.stderr)
        return e.code
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
    try:
        return run(args)
    except Exception as e:  # noqa: BLE001
        if os.environ.get("AXCELL_DEBUG"):
            raise
        print(f"axcell: error: {e.__class__.__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
