"""Judge parts in a worker process, so the cell's own thread goes on while a tray is inspected.

Inspecting one tray is 7–10 ms of CPU, most of it Python calls into NumPy and OpenCV that hold
the GIL: a thread would not run beside the cell, a process does. :class:`InspectionWorker` holds
one process (a fresh interpreter, never a fork of one that runs DDS and OPC UA threads) with the
fitted inspectors; parts go to it in capture order and come back in that order, so it also keeps
the one piece of state that passes from part to part (the variant judged last, tried first next
time).

:func:`judge` is the whole decision for one image, the same in the worker and in the cell's own
thread (no worker): which product's model to run, which result to keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def judge(inspectors: dict[str, Any], image: np.ndarray, names: Sequence[str],
          last: str | None) -> tuple[str, Any, float]:
    """Judge ``image`` with the inspectors named in ``names``: (product, result, wall ms).

    With several fitted products a cheap appearance match picks the model to run first; otherwise
    the product judged last (``last``) goes first. A tray that passes the model it is tried on
    needs no other; otherwise the result closest to its own threshold (score / threshold) is kept.
    """
    names = list(names)
    wall0 = time.perf_counter()
    if len(names) > 1 and all(hasattr(inspectors[n], "affinity") for n in names):
        from . import identify

        chosen, _ = identify(image, {n: inspectors[n] for n in names})
        names = [chosen] + [n for n in names if n != chosen]
    elif last in names:
        names = [last] + [n for n in names if n != last]
    best_name, best, best_norm = None, None, math.inf
    for n in names:
        res = inspectors[n].inspect(image)
        thr = float(getattr(res, "threshold", 1.0) or 1.0)
        found = getattr(res, "pose_px", None) is not None
        norm = float(getattr(res, "score", 0.0)) / thr if found else math.inf
        if best is None or norm < best_norm:
            best_name, best, best_norm = n, res, norm
        if found and not getattr(res, "defective", False):
            break  # a tray that passes the model it resembles most needs no other
    assert best_name is not None
    return best_name, best, (time.perf_counter() - wall0) * 1000.0


# ---- framing: an 8-byte length, then a pickle ------------------------------------------------------
_HEAD = struct.Struct("!Q")


def _frame(obj: Any) -> bytes:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEAD.pack(len(body)) + body


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("pipe closed")
        buf += chunk
    return bytes(buf)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ---- the worker process's side ------------------------------------------------------------------
def _serve(fd_in: int, fd_out: int) -> None:
    """The worker's loop: models first, then (seq, image, names) → (seq, ok, (product, result, ms) | error).

    It ends when its input pipe closes (the cell closed it, or the cell's process is gone), so Ctrl-C
    meant for the cell is ignored here: the cell finishes its parts and closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):  # cosmetic: "axcell-inspect" in ps and top (Linux comm, 15 bytes)
        import ctypes

        ctypes.CDLL(None).prctl(15, b"axcell-inspect", 0, 0, 0)  # PR_SET_NAME
    try:
        import cv2

        cv2.setNumThreads(1)  # one core: the figure the inspection is held to
    except ImportError:
        pass
    nice = int(os.environ.get("AXCELL_INSPECT_NICE", "0") or 0)
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)

    def recv() -> Any:
        (n,) = _HEAD.unpack(_read_exact(fd_in, _HEAD.size))
        return pickle.loads(_read_exact(fd_in, n))

    inspectors, setup = recv()
    if setup is not None:
        setup()
    _write_all(fd_out, _frame((0, True, "ready")))
    last: str | None = None
    while True:
        try:
            msg = recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        seq, image, names = msg
        try:
            name, res, ms = judge(inspectors, image, names, last)
            last = name
            out = (seq, True, (name, res, ms))
        except Exception as e:  # noqa: BLE001 - one bad image must not end the worker
            out = (seq, False, f"{type(e).__name__}: {e}")
        try:
            _write_all(fd_out, _frame(out))
        except OSError:
            return


class WorkerUnavailable(RuntimeError):
    """The inspection worker process is gone (it died, or it was closed)."""


class InspectionFailed(RuntimeError):
    """The inspector raised on one image (the worker goes on)."""


class InspectionWorker:
    """One worker process judging parts in submission order (see the module doc).

    It is a plain ``python -m skills.vision._worker_main`` child with two pipes, not a
    multiprocessing pool: nothing of the parent's ``__main__`` is imported again, so any script may
    start one. Both pipes are non-blocking and served by the asyncio loop that started the worker
    (``add_reader``/``add_writer``): no helper thread, so a frame goes out and a verdict comes in
    at the loop's next turn instead of waiting for a thread to get the GIL (up to 5 ms each way
    beside a busy loop).

    :meth:`start` launches it (a second or so: it imports NumPy and OpenCV and receives the models);
    :meth:`submit` returns an asyncio future of ``(product, result, ms)``. After the process died,
    what it held and every later submission fail with :class:`WorkerUnavailable`; the caller
    decides what a part without a verdict means.
    """

    def __init__(self, inspectors: dict[str, Any], *, setup: Callable[[], Any] | None = None) -> None:
        self.inspectors = inspectors
        self.setup = setup
        self.proc: subprocess.Popen | None = None
        self.broken = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wfd = self._rfd = -1
        self._out = bytearray()  # frames not yet written
        self._in = bytearray()  # bytes read, not yet a whole frame
        self._futs: dict[int, asyncio.Future] = {}
        self._seq = 0
        self._writing = False

    @property
    def running(self) -> bool:
        return self.proc is not None and not self.broken

    def usable(self) -> bool:
        """Running, and served by the event loop the caller runs on (its pipes belong to that loop)."""
        try:
            return self.running and asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _launch(self, timeout: float) -> tuple[subprocess.Popen, int, int]:
        """Start the process and hand it the models; blocking (run in a thread)."""
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        for fd in (to_w, from_r):  # room for a few frames: a send never waits for the worker
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)
        root = str(Path(__file__).resolve().parents[2])  # the directory that holds the skills package
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        # one core: BLAS and OpenMP pools of one thread (a pool per core busy-waits after every small
        # call and, beside the cell's own process on a 2-core machine, made each frame 3x slower)
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        try:
            proc = subprocess.Popen([sys.executable, "-m", "skills.vision._worker_main", str(to_r), str(from_w)],
                                    pass_fds=(to_r, from_w), env=env, stdin=subprocess.DEVNULL)
        except BaseException:
            for fd in (to_r, to_w, from_r, from_w):
                os.close(fd)
            raise
        os.close(to_r)
        os.close(from_w)
        try:
            _write_all(to_w, _frame((self.inspectors, self.setup)))
            ready, _, _ = select.select([from_r], [], [], timeout)
            if not ready:
                raise WorkerUnavailable(f"the inspection worker did not start within {timeout:.0f} s")
            (n,) = _HEAD.unpack(_read_exact(from_r, _HEAD.size))
            _seq, ok, what = pickle.loads(_read_exact(from_r, n))
            if not ok or what != "ready":
                raise WorkerUnavailable(f"the inspection worker did not start: {what}")
        except BaseException as e:
            proc.kill()
            proc.wait()
            os.close(to_w)
            os.close(from_r)
            if isinstance(e, (EOFError, OSError)):
                raise WorkerUnavailable(f"the inspection worker exited while starting (code {proc.returncode})") from e
            raise
        return proc, to_w, from_r

    async def start(self, timeout: float = 120.0) -> None:
        """Launch the process; the running loop serves its pipes from now on."""
        if self.proc is not None:
            return
        loop = asyncio.get_running_loop()
        proc, wfd, rfd = await asyncio.to_thread(self._launch, timeout)
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        self.proc, self._wfd, self._rfd, self._loop = proc, wfd, rfd, loop
        loop.add_reader(rfd, self._on_readable)

    def submit(self, image: np.ndarray, names: Sequence[str]) -> asyncio.Future:
        """Queue one image; the future resolves to ``(product, result, ms)`` (on the starting loop)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self.proc is None or self.broken:
            fut.set_exception(WorkerUnavailable("the inspection worker is not running"))
            return fut
        if loop is not self._loop:
            fut.set_exception(WorkerUnavailable("the inspection worker serves another event loop"))
            return fut
        self._seq += 1
        self._futs[self._seq] = fut
        self._out += _frame((self._seq, np.ascontiguousarray(image), list(names)))
        self._flush()
        return fut

    def _flush(self) -> None:
        try:
            while self._out:
                n = os.write(self._wfd, self._out)
                del self._out[:n]
        except BlockingIOError:
            pass
        except OSError as e:
            self._fail_all(f"the inspection worker is gone ({e})")
            return
        want = bool(self._out)
        if want != self._writing and self._loop is not None:
            if want:
                self._loop.add_writer(self._wfd, self._flush)
            else:
                self._loop.remove_writer(self._wfd)
            self._writing = want

    def _on_readable(self) -> None:
        try:
            while True:
                chunk = os.read(self._rfd, 1 << 16)
                if not chunk:
                    self._fail_all("the inspection worker process ended")
                    return
                self._in += chunk
                if len(chunk) < (1 << 16):
                    break
        except BlockingIOError:
            pass
        except OSError as e:
            self._fail_all(f"the inspection worker is gone ({e})")
            return
        while len(self._in) >= _HEAD.size:
            (n,) = _HEAD.unpack_from(self._in)
            if len(self._in) < _HEAD.size + n:
                break
            seq, ok, what = pickle.loads(bytes(self._in[_HEAD.size:_HEAD.size + n]))
            del self._in[:_HEAD.size + n]
            fut = self._futs.pop(seq, None)
            if fut is None or fut.done():
                continue
            if ok:
                fut.set_result(what)
            else:
                fut.set_exception(InspectionFailed(str(what)))

    def _fail_all(self, why: str) -> None:
        if not self.broken and self.proc is not None:
            log.error("%s; the parts it held get no verdict", why)
        self.broken = True
        self._detach()
        futs, self._futs = list(self._futs.values()), {}
        for fut in futs:
            if not fut.done():
                fut.set_exception(WorkerUnavailable(why))

    def _detach(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(Exception):
            loop.remove_reader(self._rfd)
        if self._writing:
            with contextlib.suppress(Exception):
                loop.remove_writer(self._wfd)
            self._writing = False

    def close(self, timeout: float = 5.0) -> None:
        """Stop the process (it finishes the image in hand, then sees its pipe close); waits up to
        ``timeout`` s, then kills it. Call it on the loop's thread."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        self._detach()
        self._out.clear()
        for fd in (self._wfd, self._rfd):
            with contextlib.suppress(OSError):
                os.close(fd)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.broken = True
        futs, self._futs = list(self._futs.values()), {}
        for fut in futs:
            if not fut.done():
                fut.set_exception(WorkerUnavailable("the inspection worker was closed"))


_F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's buffer size
