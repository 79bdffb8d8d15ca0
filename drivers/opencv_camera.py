"""OpenCV camera driver (kind ``opencv.camera``): USB/V4L2 cameras, network streams, and file or folder replay.

::

    - name: top_camera
      kind: opencv.camera
      options:
        source: /dev/video0          # or 0, rtsp://10.0.0.30/stream1, recordings/line1.avi, shots/ (a folder)
        width: 1280                  # requested; health() reports what the device gives
        height: 720
        fps: 30
        color: true                  # false: mono8 frames
        timeout_s: 2.0               # default capture() timeout (wall seconds)
        reconnect_interval_s: 2.0    # clock seconds between reopen attempts of a lost live stream
        flush_frames: 4              # buffered frames dropped before the frame returned (default: 4 live, 0 replay)
        calibration: calib/top_camera.yaml   # or inline {K, dist, width, height, T_cell_cam | pose | handeye}

Sources.  An ``int`` or ``/dev/...`` is a local device, ``scheme://...`` a stream URL (RTSP, HTTP MJPEG,
GigE cameras that expose one), an existing file a video replayed frame by frame, and an existing folder the
images in it (``.png .jpg .jpeg .bmp .tif .tiff .pgm .ppm .webp``) replayed in natural name order
(``img2`` before ``img10``).  ``loop: true`` restarts a replay at its end; without it the end of the replay
marks the camera offline for good (:class:`DeviceOfflineError` "end of stream"; a replay is not reopened).
Relative paths are relative to the working directory of the process.  An image in a folder that cannot be
decoded is skipped with a warning and counted in ``health()["skipped_files"]``; a folder in which no image
decodes is offline.

Threads.  ``cv2.VideoCapture`` blocks, and is not thread-safe: every OpenCV call of one camera runs in that
camera's own worker thread, never on the event loop.  ``capture(timeout=)`` waits for the worker at most
``timeout`` wall seconds and raises :class:`DeviceTimeoutError` even when OpenCV hangs; the late result of a
timed-out grab is thrown away (never returned to a later caller).  A read of a live source that fails marks
the camera offline, reports ``offline`` through ``ctx.resources["device_events"]`` (the cell raises an alarm,
as for the OPC UA driver) and starts a reconnect loop that reopens the source every ``reconnect_interval_s``
and reports ``online`` when it is back.  Timeouts alone do not mark a camera offline (FFmpeg's own read
timeout turns a dead network stream into a failed read).

Freshness.  ``capture()`` grabs ``flush_frames`` frames and throws them away before grabbing the one it
returns, so a live camera's driver-side buffer (V4L2 keeps about four) never hands back an old exposure; the
capture buffer is also asked to hold one frame.  ``Frame.stamp`` is the cell-clock time at which the returned
frame's grab completed (on a wall clock; under a simulated clock the I/O is bracketed by ``clock.busy()`` and
the stamp is the simulated instant of the capture).

Calibration.  ``calibration`` is a YAML/JSON file or an inline mapping with ``K`` (3×3), ``dist`` (OpenCV
distortion vector), ``width``/``height`` (the calibrated image size: checked against the frames at connect)
and the camera's pose in the cell frame as one of ``T_cell_cam`` (4×4, camera → cell), ``pose``
(``{x, y, z, roll, pitch, yaw}``: metres, radians, R = Rz·Ry·Rx) or ``handeye`` (a path to the JSON written
by ``axcell calibrate --out``: its ``T_base_cam.matrix`` is used, the arm's base frame being the cell frame).

This is the only module of :mod:`drivers` that imports OpenCV.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import os
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .base import DeviceConfig, DeviceContext
from .camera import Camera
from .clock import WallClock
from .errors import ConfigurationError, DeviceError, DeviceOfflineError, DeviceTimeoutError
from .types import CameraCalibration, Frame, Pose

log = logging.getLogger("axcell.drivers.opencv")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
#: Flushed frames per capture when ``flush_frames`` is not given: live sources / replays.
DEFAULT_FLUSH_LIVE = 4


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def folder_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` (by extension) in natural name order."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
    return sorted(files, key=lambda p: _natural_key(p.name))


def source_type(source: int | str) -> str:
    """``device``, ``url``, ``folder`` or ``file``."""
    if isinstance(source, int):
        return "device"
    if _URL.match(source):
        return "url"
    if source.startswith("/dev/"):
        return "device"
    return "folder" if Path(source).is_dir() else "file"


# -- calibration ---------------------------------------------------------------------------------------
class PoseSpec(DeviceConfig):
    x: float
    y: float
    z: float
    roll: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0


class CalibrationSpec(DeviceConfig):
    """Intrinsics and the camera pose in the cell frame (one of ``T_cell_cam``, ``pose``, ``handeye``)."""

    K: list[list[float]] = Field(description="3x3 pinhole matrix (pixels)")
    dist: list[float] = Field(default_factory=list, description="OpenCV distortion coefficients (0, 4, 5, 8, "
                                                                 "12 or 14 values)")
    width: int = Field(gt=0, le=20000)
    height: int = Field(gt=0, le=20000)
    T_cell_cam: list[list[float]] | None = Field(None, description="4x4 transform camera → cell")
    pose: PoseSpec | None = None
    handeye: str | None = Field(None, description="JSON written by `axcell calibrate --out`")

    @model_validator(mode="after")
    def _check(self) -> "CalibrationSpec":
        k = np.asarray(self.K, float) if all(len(r) == 3 for r in self.K) else None
        if k is None or k.shape != (3, 3) or not np.all(np.isfinite(k)):
            raise ValueError("K must be a 3x3 matrix of finite numbers")
        if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]):
            raise ValueError("K must have positive focal lengths and last row [0, 0, 1]")
        if len(self.dist) not in (0, 4, 5, 8, 12, 14) or not all(math.isfinite(v) for v in self.dist):
            raise ValueError(f"dist must hold 0, 4, 5, 8, 12 or 14 finite values, not {len(self.dist)}")
        given = [n for n in ("T_cell_cam", "pose", "handeye") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give the camera pose as exactly one of `T_cell_cam`, `pose` or `handeye`"
                             + (f" (got {', '.join(given)})" if given else ""))
        self.transform()  # a bad matrix or hand-eye file is said here
        return self

    def transform(self) -> np.ndarray:
        if self.pose is not None:
            p = self.pose
            return Pose(p.x, p.y, p.z, p.roll, p.pitch, p.yaw).matrix()
        if self.handeye is not None:
            path = Path(self.handeye)
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                t = np.asarray(data["T_base_cam"]["matrix"], float)
            except OSError as e:
                raise ValueError(f"handeye: cannot read {self.handeye!r} ({e.strerror or e})") from None
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"handeye: {self.handeye!r} is not an `axcell calibrate --out` result with "
                                 f"T_base_cam.matrix ({type(e).__name__}: {e})") from None
        else:
            t = np.asarray(self.T_cell_cam, float) if all(len(r) == 4 for r in self.T_cell_cam or []) else None
        if t is None or t.shape != (4, 4) or not np.all(np.isfinite(t)):
            raise ValueError("T_cell_cam must be a 4x4 matrix of finite numbers")
        r = t[:3, :3]
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or not np.isclose(np.linalg.det(r), 1.0, atol=1e-4) \
                or not np.allclose(t[3], [0, 0, 0, 1]):
            raise ValueError("T_cell_cam must be a rigid transform (orthonormal rotation, last row [0, 0, 0, 1])")
        return t

    def calibration(self) -> CameraCalibration:
        return CameraCalibration(K=np.asarray(self.K, float), dist=np.asarray(self.dist or [0.0] * 5, float),
                                 T_cell_cam=self.transform(), width=self.width, height=self.height)


def load_calibration_file(path: str) -> CalibrationSpec:
    """Read a YAML or JSON calibration file (JSON is YAML).  Raises ValueError naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"cannot read calibration file {path!r} ({e.strerror or e})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"calibration file {path!r} is not YAML/JSON ({type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ValueError(f"calibration file {path!r} must hold a mapping with K, dist, width, height and a pose")
    try:
        return CalibrationSpec.model_validate(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ValueError(f"calibration file {path!r}: {where + ': ' if where else ''}{msg}") from None


# -- the worker thread and its sources (every OpenCV call happens in the worker) -----------------------
class _EndOfStream(Exception):
    """A replay reached its end (and does not loop)."""


class _ReadFailed(Exception):
    """A live source failed to deliver a frame."""


def _open_capture(source: int | str, params: list[int]) -> Any:
    """``cv2.VideoCapture`` for ``source`` (the lowest seam: tests replace it to simulate a hung camera)."""
    if isinstance(source, int) or source.startswith("/dev/") or _URL.match(source):
        return cv2.VideoCapture(source, cv2.CAP_ANY, params)
    return cv2.VideoCapture(source)


class _CaptureSource:
    """A video file, device or stream behind ``cv2.VideoCapture``."""

    def __init__(self, cfg: "OpencvCamera.Config", kind: str) -> None:
        self.cfg = cfg
        self.kind = kind
        self.cap: Any = None
        self.index = 0  # frames delivered since (re)open
        self.open()

    def open(self) -> None:
        cfg = self.cfg
        params: list[int] = []
        if self.kind in ("device", "url"):
            ms = int(cfg.open_timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = _open_capture(cfg.source, params)
        if not cap.isOpened():
            cap.release()
            raise _ReadFailed(f"cannot open {cfg.source!r}")
        if self.kind in ("device", "url"):
            for prop, val in ((cv2.CAP_PROP_FRAME_WIDTH, cfg.width), (cv2.CAP_PROP_FRAME_HEIGHT, cfg.height),
                              (cv2.CAP_PROP_FPS, cfg.fps), (cv2.CAP_PROP_BUFFERSIZE, 1)):
                if val is not None:
                    cap.set(prop, float(val))
        self.cap = cap
        self.index = 0

    def read(self, flush: int) -> tuple[np.ndarray, float, dict[str, Any]]:
        replay = self.kind == "file"
        for _ in range(flush + 1):
            ok = self.cap.grab()
            if not ok and replay and self.cfg.loop and self.index > 0:
                self.cap.release()
                self.open()
                ok = self.cap.grab()
            if not ok:
                if replay:
                    raise _EndOfStream(f"end of stream after {self.index} frames")
                raise _ReadFailed("read failed (stream ended or device lost)")
            self.index += 1
        grabbed = time.monotonic()
        ok, img = self.cap.retrieve()
        if not ok or img is None:
            raise _ReadFailed("frame could not be decoded")
        return img, grabbed, {"source_frame": self.index - 1}

    def info(self) -> dict[str, Any]:
        c = self.cap
        fps = float(c.get(cv2.CAP_PROP_FPS) or 0.0)
        out: dict[str, Any] = {"width": int(c.get(cv2.CAP_PROP_FRAME_WIDTH)),
                               "height": int(c.get(cv2.CAP_PROP_FRAME_HEIGHT)), "fps": round(fps, 3)}
        with contextlib.suppress(Exception):
            out["backend"] = c.getBackendName()
        return out

    def release(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class _FolderSource:
    """The images of a folder in natural name order."""

    def __init__(self, cfg: "OpencvCamera.Config", name: str) -> None:
        self.cfg = cfg
        self.name = name
        self.files = folder_images(Path(str(cfg.source)))
        if not self.files:
            raise _ReadFailed(f"no image files in folder {cfg.source!r}")
        self.pos = 0
        self.skipped: list[str] = []
        self.shape: tuple[int, ...] | None = None

    def _next(self) -> tuple[np.ndarray, Path]:
        tried = 0
        while True:
            if self.pos >= len(self.files):
                if not self.cfg.loop:
                    raise _EndOfStream(f"end of stream after {len(self.files)} images")
                self.pos = 0
            if tried >= len(self.files):
                raise _ReadFailed(f"no image in folder {self.cfg.source!r} can be decoded")
            path = self.files[self.pos]
            self.pos += 1
            tried += 1
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if img is None or img.size == 0:
                if path.name not in self.skipped:
                    self.skipped.append(path.name)
                    log.warning("%s: skipping %s: not a readable image", self.name, path)
                continue
            if img.dtype != np.uint8:  # 16-bit PNG/TIFF: scale to 8 bits
                img = cv2.convertScaleAbs(img, alpha=255.0 / max(1.0, float(np.iinfo(img.dtype).max)
                                                                 if img.dtype.kind in "ui" else 1.0))
            if img.ndim == 3 and img.shape[2] == 4:
                img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
            return img, path

    def read(self, flush: int) -> tuple[np.ndarray, float, dict[str, Any]]:
        for _ in range(flush):
            self._next()
        img, path = self._next()
        self.shape = img.shape
        return img, time.monotonic(), {"file": path.name, "source_frame": self.pos - 1}

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"images": len(self.files), "fps": None}
        if self.shape is None:
            with contextlib.suppress(_EndOfStream, _ReadFailed):
                saved = self.pos, list(self.skipped)
                img, _ = self._next()
                self.pos, self.skipped = saved
                self.shape = img.shape
        if self.shape is not None:
            out.update(height=int(self.shape[0]), width=int(self.shape[1]))
        return out

    def release(self) -> None:
        return None


class _Worker:
    """One thread that runs jobs in order; every job touches the camera's OpenCV objects."""

    def __init__(self, name: str, on_exit: Callable[[], None]) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._on_exit = on_exit
        self.thread = threading.Thread(target=self._run, name=f"opencv-camera-{name}", daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fut, fn, args))
        return fut

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        try:
            while True:
                item = self._jobs.get()
                if item is None:
                    return
                fut, fn, args = item
                if not fut.set_running_or_notify_cancel():
                    continue  # its caller timed out before it started
                try:
                    fut.set_result(fn(*args))
                except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                    fut.set_exception(e)
        finally:
            with contextlib.suppress(Exception):
                self._on_exit()


# -- the driver ----------------------------------------------------------------------------------------
class OpencvCamera(Camera, kind="opencv.camera"):
    """A camera read through OpenCV (see the module docstring)."""

    class Config(DeviceConfig):
        source: int | str = Field(description="device index, /dev/videoN, stream URL, video file or image folder")
        loop: bool = Field(False, description="replay a file or folder again from the start at its end")
        width: int | None = Field(None, gt=0, le=20000, description="requested width (live sources)")
        height: int | None = Field(None, gt=0, le=20000, description="requested height (live sources)")
        fps: float | None = Field(None, gt=0, le=1000, description="requested frame rate (live sources)")
        color: bool = Field(True, description="BGR8 frames; false: mono8")
        timeout_s: float = Field(2.0, gt=0, le=120, description="default capture() timeout (wall seconds)")
        open_timeout_s: float = Field(10.0, gt=0, le=120, description="opening the source (wall seconds)")
        reconnect_interval_s: float = Field(2.0, gt=0, le=300, description="clock seconds between reopens")
        flush_frames: int | None = Field(None, ge=0, le=100, description="frames dropped before each capture "
                                                                         "(default 4 live, 0 replay)")
        calibration: CalibrationSpec | None = Field(None, description="path of a YAML/JSON file, or inline values "
                                                                      "(K, dist, width, height and a pose)")

        @field_validator("source")
        @classmethod
        def _source(cls, v: int | str) -> int | str:
            if isinstance(v, int):
                if v < 0:
                    raise ValueError("a device index must be 0 or more")
                return v
            if not v.strip():
                raise ValueError("source is empty")
            if _URL.match(v) or v.startswith("/dev/"):
                return v  # live: may appear later (hot-plug, network); connect() and the reconnect loop tell
            p = Path(v)
            if p.is_dir():
                try:
                    if not folder_images(p):
                        raise ValueError(f"folder has no images ({' '.join(IMAGE_EXTENSIONS)})")
                except OSError as e:
                    raise ValueError(f"cannot list the folder ({e.strerror or e})") from None
            elif not p.is_file():
                raise ValueError("no such file or folder (nor a device index, /dev/ path or URL)")
            elif not os.access(p, os.R_OK):
                raise ValueError("file is not readable")
            return v

        @field_validator("calibration", mode="before")
        @classmethod
        def _calibration(cls, v: Any) -> Any:
            if isinstance(v, str):
                return load_calibration_file(v)
            return v

        @model_validator(mode="after")
        def _consistent(self) -> "OpencvCamera.Config":
            kind = source_type(self.source)
            if self.loop and kind not in ("file", "folder"):
                raise ValueError("`loop` applies to a video file or an image folder, not a live source")
            return self

        @property
        def source_kind(self) -> str:
            return source_type(self.source)

        def flush(self) -> int:
            if self.flush_frames is not None:
                return self.flush_frames
            return 0 if self.source_kind in ("file", "folder") else DEFAULT_FLUSH_LIVE

    config: Config

    def __init__(self, name: str, config: Config, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)
        self._calib = config.calibration.calibration() if isinstance(config.calibration, CalibrationSpec) else None
        self._source: _CaptureSource | _FolderSource | None = None  # owned by the worker thread
        self._worker: _Worker | None = None
        self._online = False
        self._ended = False
        self._closing = False
        self._reconnect_task: asyncio.Task | None = None
        self._wall = isinstance(self.clock, WallClock)
        self.offline_reason = ""
        self.last_error = ""
        self.frames = 0
        self.timeouts = 0
        self.reconnects = 0
        self._info: dict[str, Any] = {}

    @property
    def calibration(self) -> CameraCalibration | None:
        return self._calib

    @property
    def online(self) -> bool:
        return self._online

    # -- worker-thread jobs ------------------------------------------------------------------------------
    def _job_open(self) -> dict[str, Any]:
        self._job_release()
        kind = self.config.source_kind
        src = _FolderSource(self.config, self.name) if kind == "folder" else _CaptureSource(self.config, kind)
        self._source = src
        return src.info()

    def _job_read(self, flush: int) -> tuple[np.ndarray, float, dict[str, Any]]:
        if self._source is None:
            raise _ReadFailed("source is not open")
        img, grabbed, meta = self._source.read(flush)
        if self.config.color and img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif not self.config.color and img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return np.ascontiguousarray(img), grabbed, meta

    def _job_release(self) -> None:
        src, self._source = self._source, None
        if src is not None:
            src.release()

    async def _call(self, fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """Run ``fn`` on the worker; wait at most ``timeout`` wall seconds."""
        if self._worker is None:
            raise DeviceOfflineError("camera worker is not running", device=self.name)
        fut = self._worker.submit(fn, *args)
        try:
            async with self.clock.busy():
                return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            fut.cancel()  # not started: dropped; running: its result is never used
            raise DeviceTimeoutError(f"no answer from OpenCV within {timeout:g} s", device=self.name) from None
        except asyncio.CancelledError:
            fut.cancel()
            raise

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def _connect(self) -> None:
        self._closing = False
        self._ended = False
        self._worker = _Worker(self.name, self._job_release)
        try:
            info = await self._call(self._job_open, timeout=self.config.open_timeout_s)
        except _ReadFailed as e:
            await self._stop_worker()
            self.last_error = str(e)
            raise DeviceOfflineError(str(e), device=self.name) from None
        except DeviceError as e:
            await self._stop_worker()
            self.last_error = str(e)
            raise
        except Exception as e:  # noqa: BLE001 - OpenCV raising (cv2.error) on a bad source
            await self._stop_worker()
            self.last_error = f"{type(e).__name__}: {e}"
            raise DeviceOfflineError(f"cannot open {self.config.source!r}: {self.last_error}", device=self.name) \
                from None
        self._opened(info)
        cal = self._calib
        if cal is not None and "width" in info and (info["width"], info["height"]) != (cal.width, cal.height):
            await self._stop_worker()
            self._online = False
            raise ConfigurationError(f"the calibration is for {cal.width}x{cal.height} images but the source gives "
                                     f"{info['width']}x{info['height']}", device=self.name)

    def _opened(self, info: dict[str, Any]) -> None:
        self._info = info
        self._online = True
        self.offline_reason = ""
        c = self.config
        asked = {k: getattr(c, k) for k in ("width", "height", "fps") if getattr(c, k) is not None}
        differs = {k: (v, info.get(k)) for k, v in asked.items() if info.get(k) is not None and
                   not math.isclose(float(info[k]), float(v), rel_tol=0.01)}
        if differs and c.source_kind in ("device", "url"):
            log.warning("%s: asked for %s, the source gives %s", self.name,
                        {k: a for k, (a, _) in differs.items()}, {k: g for k, (_, g) in differs.items()})

    async def _close(self) -> None:
        self._closing = True
        task, self._reconnect_task = self._reconnect_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._online = False
        await self._stop_worker()

    async def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        worker.stop()  # the worker releases the capture when it leaves (after a hung read returns, if one is)
        async with self.clock.busy():  # real I/O: a simulated clock must not run out of events meanwhile
            await asyncio.to_thread(worker.thread.join, self.config.timeout_s + 1.0)
        if worker.thread.is_alive():
            log.warning("%s: OpenCV is still blocked in a read; the capture is released when it returns", self.name)

    # -- offline and reconnect ---------------------------------------------------------------------------
    def _mark_offline(self, reason: str, *, reconnect: bool) -> None:
        if not self._online or self._closing:
            return
        self._online = False
        self.offline_reason = reason
        log.warning("%s: offline: %s", self.name, reason)
        self._report("offline", reason)
        if reconnect and (self._reconnect_task is None or self._reconnect_task.done()):
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect(),
                                                                           name=f"opencv-reconnect-{self.name}")

    async def _reconnect(self) -> None:
        while not self._closing:
            await self.clock.sleep(self.config.reconnect_interval_s)
            if self._closing:
                return
            try:
                info = await self._call(self._job_open, timeout=self.config.open_timeout_s)
            except (_ReadFailed, DeviceError, Exception) as e:  # noqa: BLE001 - keep trying, say why
                self.last_error = f"reopen failed: {e}"
                log.info("%s: reopen failed: %s", self.name, e)
                continue
            self.reconnects += 1
            self._opened(info)
            log.warning("%s: back online (%s)", self.name, self.config.source)
            self._report("online", str(self.config.source))
            return

    # -- capture -----------------------------------------------------------------------------------------
    async def capture(self, *, timeout: float | None = None) -> Frame:
        self._require_connected()
        if not self._online:
            raise DeviceOfflineError(f"offline: {self.offline_reason or 'not open'}", device=self.name)
        t = self.config.timeout_s if timeout is None else timeout
        try:
            img, grabbed, meta = await self._call(self._job_read, self.config.flush(), timeout=t)
        except DeviceTimeoutError as e:
            self.timeouts += 1
            self.last_error = str(e)
            raise
        except _EndOfStream as e:
            self.last_error = str(e)
            self._ended = True
            self._mark_offline(str(e), reconnect=False)
            raise DeviceOfflineError(str(e), device=self.name) from None
        except (_ReadFailed, cv2.error) as e:
            self.last_error = str(e)
            self._mark_offline(str(e), reconnect=True)
            raise DeviceOfflineError(str(e), device=self.name) from None
        stamp = grabbed if self._wall else self.clock.now()
        self.frames += 1
        self._info.update(width=int(img.shape[1]), height=int(img.shape[0]))
        return Frame(image=img, stamp=stamp, camera=self.name, calibration=self._calib,
                     meta={"frame": self.frames, **meta})

    def health(self) -> dict[str, Any]:
        out = {**super().health(), "online": self._online, "source": self.config.source,
               "source_kind": self.config.source_kind, "frames": self.frames, "timeouts": self.timeouts,
               "reconnects": self.reconnects, **{k: v for k, v in self._info.items() if k != "images"}}
        if self.config.source_kind == "folder" and isinstance(self._source, _FolderSource):
            out["skipped_files"] = list(self._source.skipped)
        if self._ended:
            out["ended"] = True
        if self.offline_reason:
            out["offline_reason"] = self.offline_reason
        if self.last_error:
            out["last_error"] = self.last_error
        return out
