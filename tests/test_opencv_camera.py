"""opencv.camera: real OpenCV on real files (AVI written with VideoWriter, folders of PNGs).

The only stand-in is at the lowest seam, ``drivers.opencv_camera._open_capture``: a real
``cv2.VideoCapture`` subclass whose ``grab`` blocks (a hung camera) or a real file opened for a ``/dev/``
source (a live camera whose stream ends, then comes back).
"""

from __future__ import annotations

import asyncio
import math
import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from cell.cli import main as axcell_main
from cell.plugins import load_kind
from drivers.base import DeviceContext
from drivers.clock import WallClock
from drivers.errors import ConfigurationError, DeviceOfflineError, DeviceTimeoutError, NotConnectedError
from drivers import opencv_camera as oc
from tests.conftest import DEMO

W, H = 96, 64


def _image(i: int) -> np.ndarray:
    """A frame that differs from its neighbours in level and in a moving bar (robust to JPEG loss)."""
    img = np.full((H, W, 3), 20 + 25 * (i % 9), np.uint8)
    x = (8 * i) % (W - 8)
    img[:, x:x + 8] = (255, 255, 255)
    img[4:12, 4:12] = (0, 0, 200)
    return img


def write_avi(path: Path, n: int) -> list[np.ndarray]:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (W, H))
    assert w.isOpened()
    frames = [_image(i) for i in range(n)]
    for f in frames:
        w.write(f)
    w.release()
    return frames


def write_folder(folder: Path, n: int) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    frames = [_image(i) for i in range(n)]
    for i, f in enumerate(frames):
        assert cv2.imwrite(str(folder / f"img{i}.png"), f)  # img2 before img10 (natural order)
    return frames


def make(options: dict, events: list | None = None):
    cls = load_kind("opencv.camera")
    resources = {"device_events": lambda *a: events.append(a)} if events is not None else {}
    return cls("cam", cls.Config.model_validate(options), DeviceContext(clock=WallClock(), resources=resources))


def run(coro):
    return asyncio.run(coro)


def _same(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(float) - b.astype(float)).mean()) <= tol


# -- replay ------------------------------------------------------------------------------------------
def test_video_file_replays_in_order_then_goes_offline(tmp_path: Path):
    written = write_avi(tmp_path / "v.avi", 12)
    events: list = []
    cam = make({"source": str(tmp_path / "v.avi")}, events)

    async def main():
        with pytest.raises(NotConnectedError):
            await cam.capture()
        await cam.connect()
        await cam.connect()
        got = []
        for _ in written:
            t0 = time.monotonic()
            f = await cam.capture()
            assert t0 <= f.stamp <= time.monotonic()
            got.append(f)
        with pytest.raises(DeviceOfflineError, match="end of stream after 12 frames"):
            await cam.capture()
        with pytest.raises(DeviceOfflineError):  # stays offline: a replay is not reopened
            await cam.capture()
        h = cam.health()
        await cam.close()
        await cam.close()
        return got, h

    got, h = run(main())
    for i, (f, ref) in enumerate(zip(got, written)):
        assert f.image.dtype == np.uint8
        # JPEG loss is a few grey levels; the neighbouring frames are ≥ 10 levels away on average
        assert _same(f.image, ref, 4.0), i
        assert not _same(f.image, written[(i + 1) % len(written)], 6.0), i
    assert all(a.stamp < b.stamp for a, b in zip(got, got[1:]))
    assert h["online"] is False and h["ended"] is True and h["frames"] == 12
    assert (h["width"], h["height"]) == (W, H) and h["fps"] == pytest.approx(10.0)
    assert events == [("cam", "offline", "end of stream after 12 frames")]
    assert cam.calibration is None


def test_video_loop_restarts_at_the_end(tmp_path: Path):
    written = write_avi(tmp_path / "v.avi", 4)
    cam = make({"source": str(tmp_path / "v.avi"), "loop": True})

    async def main():
        await cam.connect()
        frames = [await cam.capture() for _ in range(10)]
        await cam.close()
        return frames

    for k, f in enumerate(run(main())):
        assert _same(f.image, written[k % 4], 4.0), k


def test_folder_replays_in_natural_name_order_and_loops(tmp_path: Path):
    written = write_folder(tmp_path / "shots", 12)
    cam = make({"source": str(tmp_path / "shots"), "loop": True, "color": False})

    async def main():
        await cam.connect()
        frames = [await cam.capture() for _ in range(15)]
        await cam.close()
        return frames

    frames = run(main())
    assert [f.meta["file"] for f in frames[:12]] == [f"img{i}.png" for i in range(12)]
    for k, f in enumerate(frames):
        assert np.array_equal(f.image, cv2.cvtColor(written[k % 12], cv2.COLOR_BGR2GRAY)), k  # PNG: exact
    assert all(a.stamp < b.stamp for a, b in zip(frames, frames[1:]))


def test_folder_without_loop_ends_offline_and_skips_unreadable_images(tmp_path: Path, caplog):
    d = tmp_path / "shots"
    written = write_folder(d, 3)
    (d / "img1b.png").write_bytes(b"\x89PNG not really")
    events: list = []
    cam = make({"source": str(d)}, events)

    async def main():
        await cam.connect()
        frames = [await cam.capture() for _ in range(3)]
        with pytest.raises(DeviceOfflineError, match="end of stream"):
            await cam.capture()
        h = cam.health()
        await cam.close()
        return frames, h

    frames, h = run(main())
    assert [f.meta["file"] for f in frames] == ["img0.png", "img1.png", "img2.png"]
    assert all(np.array_equal(f.image, w) for f, w in zip(frames, written))
    assert h["skipped_files"] == ["img1b.png"] and "not a readable image" in caplog.text
    assert [e[1] for e in events] == ["offline"]


def test_folder_where_nothing_decodes_is_offline(tmp_path: Path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.png").write_bytes(b"junk")
    cam = make({"source": str(d), "loop": True})

    async def main():
        await cam.connect()
        with pytest.raises(DeviceOfflineError, match="can be decoded"):
            await cam.capture()
        await cam.close()

    run(main())


# -- hung OpenCV, lost live stream -------------------------------------------------------------------
class _Hanging:
    """A real ``cv2.VideoCapture`` whose ``grab`` blocks until the gate opens (a hung camera).

    A wrapper, not a subclass: Python subclasses of cv2 types crash the garbage collector.
    """

    release_gate = threading.Event()

    def __init__(self, path: str) -> None:
        self._cap = cv2.VideoCapture(path)

    def grab(self) -> bool:
        _Hanging.release_gate.wait(20)
        return self._cap.grab()

    def __getattr__(self, name: str):
        return getattr(self._cap, name)


def test_a_hung_read_times_out_and_the_camera_stays_usable(tmp_path: Path, monkeypatch):
    write_avi(tmp_path / "v.avi", 6)
    _Hanging.release_gate = threading.Event()
    monkeypatch.setattr(oc, "_open_capture", lambda source, params: _Hanging(str(tmp_path / "v.avi")))
    # a /dev/ path is a live source, opened through the seam (the file stands in for the device)
    cam = make({"source": "/dev/video-axcell-test", "timeout_s": 5, "flush_frames": 0})

    async def main():
        await cam.connect()
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeoutError):
            await cam.capture(timeout=0.3)
        assert time.monotonic() - t0 < 0.3 + 0.4
        assert cam.health()["timeouts"] == 1 and cam.online  # a timeout alone is not offline
        _Hanging.release_gate.set()
        f = await cam.capture(timeout=2)
        assert f.meta["source_frame"] == 1  # the hung grab's frame (0) was thrown away, not returned late
        await cam.close()

    run(main())


def test_close_while_opencv_hangs_returns_promptly(tmp_path: Path, monkeypatch):
    write_avi(tmp_path / "v.avi", 3)
    _Hanging.release_gate = threading.Event()
    monkeypatch.setattr(oc, "_open_capture", lambda source, params: _Hanging(str(tmp_path / "v.avi")))
    cam = make({"source": "/dev/video-axcell-test", "timeout_s": 0.5})

    async def main():
        await cam.connect()
        with pytest.raises(DeviceTimeoutError):
            await cam.capture()
        t0 = time.monotonic()
        await cam.close()
        assert time.monotonic() - t0 < 0.5 + 1.0 + 0.5
        with pytest.raises(NotConnectedError):
            await cam.capture()

    try:
        run(main())
    finally:
        _Hanging.release_gate.set()


def test_a_lost_live_stream_goes_offline_reports_and_reconnects(tmp_path: Path, monkeypatch):
    write_avi(tmp_path / "v.avi", 3)
    opens = []

    def seam(source, params):
        opens.append(params)
        return cv2.VideoCapture(str(tmp_path / "v.avi"))  # the "device" delivers 3 frames, then is lost

    monkeypatch.setattr(oc, "_open_capture", seam)
    events: list = []
    cam = make({"source": "/dev/video-axcell-test", "flush_frames": 0, "reconnect_interval_s": 0.05}, events)

    async def main():
        await cam.connect()
        for _ in range(3):
            await cam.capture()
        with pytest.raises(DeviceOfflineError, match="read failed"):
            await cam.capture()
        with pytest.raises(DeviceOfflineError):
            await cam.capture()
        for _ in range(100):
            if cam.online:
                break
            await asyncio.sleep(0.02)
        f = await cam.capture()
        h = cam.health()
        await cam.close()
        return f, h

    f, h = run(main())
    assert f.meta["source_frame"] == 0
    assert [e[1] for e in events] == ["offline", "online"]
    assert h["reconnects"] == 1 and h["online"] and "read failed" in h["last_error"]
    assert cv2.CAP_PROP_OPEN_TIMEOUT_MSEC in opens[0]  # live sources get FFmpeg's open/read timeouts


def test_live_source_that_cannot_open_is_offline_at_connect(monkeypatch):
    cam = make({"source": "/dev/video-axcell-missing", "open_timeout_s": 1})

    async def main():
        with pytest.raises(DeviceOfflineError, match="cannot open"):
            await cam.connect()
        assert not cam.connected
        await cam.close()

    run(main())


# -- calibration -------------------------------------------------------------------------------------
K = [[100.0, 0, (W - 1) / 2], [0, 100.0, (H - 1) / 2], [0, 0, 1]]


def test_calibration_inline_file_and_handeye_result(tmp_path: Path):
    write_folder(tmp_path / "shots", 2)
    pose = {"x": 0.5, "y": 0.6, "z": 0.8, "roll": 3.141592653589793}
    inline = {"K": K, "dist": [0, 0, 0, 0, 0], "width": W, "height": H, "pose": pose}
    cam = make({"source": str(tmp_path / "shots"), "calibration": inline})
    cal = cam.calibration
    assert cal.T_cell_cam[:3, 3] == pytest.approx([0.5, 0.6, 0.8])
    x, y = cal.pixel_to_plane((W - 1) / 2, (H - 1) / 2, 0.0)
    assert (x, y) == pytest.approx((0.5, 0.6))
    # the same as a YAML file
    import yaml
    (tmp_path / "cal.yaml").write_text(yaml.safe_dump(inline))
    cam2 = make({"source": str(tmp_path / "shots"), "calibration": str(tmp_path / "cal.yaml")})
    assert np.allclose(cam2.calibration.T_cell_cam, cal.T_cell_cam)
    # the pose from `axcell calibrate --out` (T_base_cam.matrix), intrinsics given beside it
    (tmp_path / "he.json").write_text(json.dumps({"status": "SUCCESS", "T_base_cam": {
        "xyz_mm": [500, 600, 800], "matrix": cal.T_cell_cam.tolist()}}))
    (tmp_path / "cal.json").write_text(json.dumps({"K": K, "width": W, "height": H,
                                                   "handeye": str(tmp_path / "he.json")}))
    cam3 = make({"source": str(tmp_path / "shots"), "calibration": str(tmp_path / "cal.json")})
    assert np.allclose(cam3.calibration.T_cell_cam, cal.T_cell_cam)

    async def main():
        await cam3.connect()
        f = await cam3.capture()
        await cam3.close()
        return f

    assert run(main()).calibration is cam3.calibration


def test_calibration_for_another_image_size_is_refused_at_connect(tmp_path: Path):
    write_folder(tmp_path / "shots", 1)
    cam = make({"source": str(tmp_path / "shots"),
                "calibration": {"K": K, "width": 640, "height": 480, "T_cell_cam": np.eye(4).tolist()}})

    async def main():
        with pytest.raises(ConfigurationError, match="calibration is for 640x480 images but the source gives 96x64"):
            await cam.connect()
        assert not cam.connected

    run(main())


# -- bad options -------------------------------------------------------------------------------------
def _problems(options: dict) -> list[tuple[str, str]]:
    cls = load_kind("opencv.camera")
    with pytest.raises(ValidationError) as ei:
        cls.Config.model_validate(options)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in ei.value.errors()]


def test_bad_options_are_named(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    write_folder(tmp_path / "shots", 1)
    (tmp_path / "bad.yaml").write_text("K: [[1, 0], [0, 1]]\nwidth: 10\nheight: 10\nT_cell_cam: [[1]]\n")
    (tmp_path / "broken.yaml").write_text("K: [1, 2\n")
    shots = str(tmp_path / "shots")
    cases = [
        ({"source": str(tmp_path / "nope.avi")}, "source", "no such file or folder"),
        ({"source": str(tmp_path / "empty")}, "source", "folder has no images"),
        ({"source": str(tmp_path / "notes")}, "source", "folder has no images"),
        ({"source": -1}, "source", "0 or more"),
        ({"source": shots, "fps": 0}, "fps", "greater than 0"),
        ({"source": shots, "exposure": 3}, "exposure", "Extra inputs"),
        ({"source": "rtsp://10.0.0.3/s", "loop": True}, "", "`loop` applies to a video file or an image folder"),
        ({"source": shots, "calibration": str(tmp_path / "missing.yaml")}, "calibration",
         "cannot read calibration file"),
        ({"source": shots, "calibration": str(tmp_path / "bad.yaml")}, "calibration", "K must be a 3x3 matrix"),
        ({"source": shots, "calibration": str(tmp_path / "broken.yaml")}, "calibration", "is not YAML/JSON"),
        ({"source": shots, "calibration": {"K": K, "width": W, "height": H}}, "calibration",
         "exactly one of `T_cell_cam`, `pose` or `handeye`"),
        ({"source": shots, "calibration": {"K": K, "width": W, "height": H,
                                           "T_cell_cam": (2 * np.eye(4)).tolist()}}, "calibration",
         "rigid transform"),
    ]
    for options, where, words in cases:
        probs = _problems(options)
        assert any(loc.startswith(where) and words in msg for loc, msg in probs), (options, probs)


def test_axcell_check_locates_bad_camera_options(tmp_path: Path, capsys):
    demo = DEMO.read_text()
    old = "kind: sim.camera\n    options: {x: -0.5, y: 0.6, height_m: 0.8, width: 512, height: 410, mm_per_px: 0.9}"
    assert old in demo
    missing = tmp_path / "gone.avi"
    f = tmp_path / "cell.yaml"
    f.write_text(demo.replace(old, f"kind: opencv.camera\n    options:\n      source: {missing}\n      loop: true"))
    line = f.read_text().splitlines().index(f"      source: {missing}") + 1
    assert axcell_main(["check", str(f)]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (f"{f}:{line}: devices.4.options.source: no such file or folder (nor a device index, /dev/ "
                     f"path or URL) ({str(missing)!r})"), first
    # an empty folder and a bad calibration file, at their own lines
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "shots", 1)
    (tmp_path / "cal.yaml").write_text("K: [[100, 0, 10], [0, 100, 10], [0, 0, 1]]\nwidth: 20\nheight: 20\n")
    for opts, key, words in (
            (f"source: {tmp_path / 'empty'}", "source", "folder has no images"),
            (f"source: {tmp_path / 'shots'}\n      calibration: {tmp_path / 'cal.yaml'}", "calibration",
             f"calibration file {str(tmp_path / 'cal.yaml')!r}: give the camera pose as exactly one of")):
        f.write_text(demo.replace(old, f"kind: opencv.camera\n    options:\n      {opts}"))
        line = next(i for i, t in enumerate(f.read_text().splitlines(), 1) if t.startswith(f"      {key}:"))
        assert axcell_main(["check", str(f)]) == 2
        first = capsys.readouterr().err.splitlines()[0]
        assert first.startswith(f"{f}:{line}: devices.4.options.{key}: ") and words in first, first
    # a good replay source passes the check (the camera kind is known and its options valid)
    f.write_text(demo.replace(old, f"kind: opencv.camera\n    options: {{source: {tmp_path / 'shots'}}}"))
    assert axcell_main(["check", str(f)]) == 0, capsys.readouterr().err


def test_only_the_opencv_driver_imports_cv2_among_drivers():
    import ast

    root = Path(oc.__file__).resolve().parent
    users = []
    for py in root.rglob("*.py"):
        tree = ast.parse(py.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "cv2" for n in names):
                users.append(py.relative_to(root).as_posix())
    assert sorted(set(users)) == ["opencv_camera.py"]


# -- end to end: rendered trays replayed through the camera, judged by a fitted inspector ---------------
def test_inspector_on_rendered_trays_replayed_through_the_camera(tmp_path: Path):
    import yaml

    from sim.render import generate_dataset, get_product, make_top_down_calibration
    from skills.vision.inspector import Inspector
    from skills.vision.rules import ProductRules

    size = (480, 384)
    train = generate_dataset(tmp_path / "train", "salad", n_good=16, n_per_defect=0, size=size, seed=1)
    meta = generate_dataset(tmp_path / "line", "salad", n_good=3, n_per_defect=1, size=size, seed=2,
                            defect_kinds=["missing_label", "underfill"])
    app = get_product("salad")
    ins = Inspector().fit([cv2.imread(str(tmp_path / "train" / n)) for n in train["images"]],
                          ProductRules(**app.inspection_rules()))
    cal = make_top_down_calibration(*size, meta["mm_per_px"])
    (tmp_path / "cal.yaml").write_text(yaml.safe_dump({
        "K": cal.K.tolist(), "dist": [0.0] * 5, "width": size[0], "height": size[1],
        "T_cell_cam": cal.T_cell_cam.tolist()}))
    cam = make({"source": str(tmp_path / "line"), "calibration": str(tmp_path / "cal.yaml")})

    async def main():
        await cam.connect()
        frames = [await cam.capture() for _ in meta["images"]]
        await cam.close()
        return frames

    frames = run(main())
    assert [f.meta["file"] for f in frames] == sorted(meta["images"])
    for f in frames:
        label = meta["images"][f.meta["file"]]
        res = ins.inspect(f.image)
        assert res.defective == label["defective"], (f.meta["file"], res.defects, res.score)
        if not label["defective"]:
            u, v = res.pose_px[0], res.pose_px[1]
            assert (u, v) == pytest.approx(label["pose_px"][:2], abs=3.0)
            x, y = f.calibration.pixel_to_plane(u, v, 0.0)  # PartSpec.z = 0: the imaged plane
            assert math.hypot(x - label["pose"][0], y - label["pose"][1]) < 0.004  # where the renderer put it


def test_capture_under_a_simulated_clock_holds_time_while_opencv_works(tmp_path: Path):
    """A real camera in a simulated cell: the I/O is ``clock.busy()``, the stamp the simulated instant."""
    from sim.clock import SimClock
    from tests.conftest import run_sim

    write_folder(tmp_path / "shots", 3)
    clock = SimClock()
    cls = load_kind("opencv.camera")
    cam = cls("cam", cls.Config.model_validate({"source": str(tmp_path / "shots")}), DeviceContext(clock=clock))

    async def main():
        await cam.connect()
        stamps = []
        for _ in range(3):
            await clock.sleep(0.5)
            stamps.append((await cam.capture()).stamp)
        await cam.close()
        return stamps

    assert run_sim(clock, main()) == pytest.approx([0.5, 1.0, 1.5])
