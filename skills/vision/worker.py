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
import mmap
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
from typing import Any, NamedTuple

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


# ---- framing ---------------------------------------------------------------------------------------
# A message is a header, a pickle (protocol 5) and the pickle's out-of-band buffers: its contiguous
# arrays, which are not copied into the pickle. The header holds the pickle's length, how many buffers
# there are and where they lie: after the pickle in the pipe (offset -1), or back to back (64-byte
# aligned) from that offset in the memory the two processes share (see _Arena); then each buffer's length.
_HEAD = struct.Struct("!QIq")
_LEN = struct.Struct("!Q")
_INLINE = -1


def _align(n: int) -> int:
    return (n + 63) & ~63


def _pickle(obj: Any) -> tuple[bytes, list[memoryview]]:
    """``obj`` pickled, and the raw memory of its out-of-band buffers."""
    bufs: list[pickle.PickleBuffer] = []
    body = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    return body, [b.raw() for b in bufs]


def _frame(body: bytes, raws: Sequence[memoryview], at: int = _INLINE) -> list[Any]:
    """One message as the byte strings to send one after the other (the buffers too when they go inline)."""
    head = _HEAD.pack(len(body), len(raws), at) + b"".join(_LEN.pack(r.nbytes) for r in raws)
    return [head, body, *raws] if at == _INLINE else [head, body]


def _slices(shared: memoryview, at: int, lens: Sequence[int]) -> list[memoryview]:
    """The buffers of a message that lie in shared memory from ``at``."""
    out = []
    for m in lens:
        out.append(shared[at:at + m])
        at += _align(m)
    return out


def _read_exact(fd: int, n: int) -> bytearray:
    """``n`` bytes, read straight into the buffer that is returned (writable: arrays built on it are too)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if not k:
            raise EOFError("pipe closed")
        got += k
    return buf


def _recv(fd: int) -> Any:
    """One object from a blocking pipe (its buffers inline)."""
    n, k, _at = _HEAD.unpack(_read_exact(fd, _HEAD.size))
    lens = struct.unpack(f"!{k}Q", _read_exact(fd, _LEN.size * k)) if k else ()
    body = _read_exact(fd, n)
    return pickle.loads(body, buffers=[_read_exact(fd, m) for m in lens])


class _Shared(NamedTuple):
    """An image the cell put in shared memory for the worker (see :class:`_Arena`): where, its shape, its dtype.
    Sent in its place, it pickles in a few microseconds where the array's own pickle took tens."""

    at: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def room(self) -> int:
        return _align(math.prod(self.shape) * np.dtype(self.dtype).itemsize)


def _write_all(fd: int, parts: Sequence[Any]) -> None:
    """Write ``parts`` one after the other to a blocking pipe, in one call when the pipe takes them (so the
    reader is woken once, with the whole message)."""
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        n = os.writev(fd, views[:_IOV_MAX])
        while views and n >= views[0].nbytes:
            n -= views.pop(0).nbytes
        if views and n:
            views[0] = views[0][n:]


# ---- the worker process's side ------------------------------------------------------------------
def _serve(fd_in: int, fd_out: int, fd_shared: int = -1) -> None:
    """The worker's loop: models first, then (seq, image, names) → (seq, ok, (product, result, ms) | error).

    ``fd_shared``: the memory shared with the cell (see :class:`_Arena`; -1: none). An image that comes
    through it is read where the cell put it, and the answer's arrays go back in its place when they fit.

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
    shared = memoryview(mmap.mmap(fd_shared, 0)) if fd_shared >= 0 else None
    whole = np.frombuffer(shared, np.uint8) if shared is not None else None

    inspectors, setup = _recv(fd_in)
    if setup is not None:
        setup()
    _write_all(fd_out, _frame(*_pickle((0, True, "ready"))))
    last: str | None = None
    while True:
        try:
            msg = _recv(fd_in)
        except (EOFError, OSError):
            return
        if msg is None:
            return
        seq, image, names = msg
        room = None
        if isinstance(image, _Shared) and shared is not None:  # judged where the cell put it
            room = image
            image = np.ndarray(room.shape, room.dtype, buffer=shared, offset=room.at)
        try:
            name, res, ms = judge(inspectors, image, names, last)
            last = name
            out = (seq, True, (name, res, ms))
        except Exception as e:  # noqa: BLE001 - one bad image must not end the worker
            out = (seq, False, f"{type(e).__name__}: {e}")
        body, raws = _pickle(out)
        where = _INLINE
        if (room is not None and sum(_align(r.nbytes) for r in raws) <= room.room
                and not any(np.may_share_memory(np.frombuffer(r, np.uint8), whole) for r in raws)):
            # the image is judged: its room in shared memory takes the answer's arrays (the anomaly map)
            where = room.at
            for r, dst in zip(raws, _slices(shared, where, [r.nbytes for r in raws])):
                dst[:] = r
        try:
            _write_all(fd_out, _frame(body, raws, where))
        except OSError:
            return


class _Arena:
    """Memory the cell shares with the worker (a memfd both map), that images go to the worker through and
    the answers' arrays come back through: one copy of the crop into it and a message of a hundred bytes in
    the pipe. Through the pipe, a demo tray (a 230 KB crop out, a 77 KB anomaly map back, each copied by the
    kernel into and out of fresh pipe pages besides the pickling copies) cost the cell's thread about 0.42 ms
    of CPU; through the arena about 0.32 ms.

    Rooms are taken in submission order and given back when the answer is read (the worker answers in
    order), so the arena is a ring; with nothing in flight the next room starts at 0 again, so the same few
    pages are reused, warm. A frame that does not fit goes through the pipe as before."""

    SIZE = 16 << 20

    def __init__(self, size: int | None = None) -> None:
        size = size or self.SIZE
        self.fd = os.memfd_create("axcell-inspect", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self.map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        self.size = size
        self.rooms: dict[int, tuple[int, int]] = {}  # seq → (start, end), in submission order

    def take(self, seq: int, n: int) -> int | None:
        """Offset of a free room of ``n`` bytes for message ``seq``, or None."""
        n = _align(n)
        if not self.rooms:
            at: int | None = 0 if n <= self.size else None
        else:
            first = next(iter(self.rooms.values()))[0]  # the oldest room's start, the newest one's end
            last = next(reversed(self.rooms.values()))[1]
            if last > first:  # in use: [first, last)
                at = last if self.size - last >= n else 0 if first >= n else None
            else:  # wrapped round: [first, size) and [0, last)
                at = last if first - last >= n else None
        if at is not None:
            self.rooms[seq] = (at, at + n)
        return at

    def give_back(self, seq: int) -> None:
        self.rooms.pop(seq, None)

    def close(self) -> None:
        self.rooms.clear()
        with contextlib.suppress(BufferError, ValueError):
            self.map.close()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _make_arena() -> _Arena | None:
    try:
        return _Arena()
    except (AttributeError, OSError):  # no memfd (not Linux): every frame goes through the pipe
        return None


class WorkerUnavailable(RuntimeError):
    """The inspection worker process is gone (it died, or it was closed)."""


class InspectionFailed(RuntimeError):
    """The inspector raised on one image (the worker goes on)."""


class InspectionWorker:
    """One worker process judging parts in submission order (see the module doc).

    It is a plain ``python -m skills.vision._worker_main`` child with two pipes (and, where there is
    memfd, memory both map that the images and anomaly maps cross through: see :class:`_Arena`), not a
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
        self._arena: _Arena | None = None

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
        arena = _make_arena()
        fds = (to_r, from_w) + ((arena.fd,) if arena is not None else ())
        try:
            proc = subprocess.Popen([sys.executable, "-m", "skills.vision._worker_main", *map(str, fds)],
                                    pass_fds=fds, env=env, stdin=subprocess.DEVNULL)
        except BaseException:
            for fd in (to_r, to_w, from_r, from_w):
                os.close(fd)
            if arena is not None:
                arena.close()
            raise
        os.close(to_r)
        os.close(from_w)
        self._arena = arena
        try:
            _write_all(to_w, _frame(*_pickle((self.inspectors, self.setup))))
            ready, _, _ = select.select([from_r], [], [], timeout)
            if not ready:
                raise WorkerUnavailable(f"the inspection worker did not start within {timeout:.0f} s")
            _seq, ok, what = _recv(from_r)
            if not ok or what != "ready":
                raise WorkerUnavailable(f"the inspection worker did not start: {what}")
        except BaseException as e:
            proc.kill()
            proc.wait()
            os.close(to_w)
            os.close(from_r)
            self._arena = None
            if arena is not None:
                arena.close()
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
        self._send(self._message(self._seq, image, list(names)))
        return fut

    def _message(self, seq: int, image: Any, names: list[str]) -> list[Any]:
        """The parts of the message that hands ``image`` over: through shared memory when it is an array and
        there is room (one copy, straight from the caller's cropped frame), else through the pipe."""
        arena = self._arena
        if arena is not None and type(image) is np.ndarray and image.ndim and image.nbytes and image.dtype.kind in "biuf":
            at = arena.take(seq, image.nbytes)
            if at is not None:
                np.copyto(np.ndarray(image.shape, image.dtype, buffer=arena.map, offset=at), image)
                return _frame(*_pickle((seq, _Shared(at, image.shape, image.dtype.str), names)))
        return _frame(*_pickle((seq, np.ascontiguousarray(image), names)))

    def _send(self, parts: list[Any]) -> None:
        """Write a frame's parts; what the pipe does not take now is kept (copied) for :meth:`_flush`."""
        if not self._out and len(parts) <= _IOV_MAX:  # nothing queued before it: straight from the parts' memory
            try:
                n = os.writev(self._wfd, parts)
            except BlockingIOError:
                n = 0
            except OSError as e:
                self._fail_all(f"the inspection worker is gone ({e})")
                return
            for part in parts:
                size = memoryview(part).nbytes
                if n < size:
                    self._out += memoryview(part)[n:]
                n = max(0, n - size)
        else:
            for part in parts:
                self._out += part
        self._flush()

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
            n, k, at = _HEAD.unpack_from(self._in)
            start = _HEAD.size + _LEN.size * k  # where the pickle begins
            if len(self._in) < start:
                break
            lens = struct.unpack_from(f"!{k}Q", self._in, _HEAD.size)
            end = start + n + (sum(lens) if at == _INLINE else 0)
            if len(self._in) < end:
                break
            with memoryview(self._in) as view:
                body = bytes(view[start:start + n])
                if at == _INLINE:
                    bufs, pos = [], start + n
                    for m in lens:
                        bufs.append(bytearray(view[pos:pos + m]))
                        pos += m
                else:
                    assert self._arena is not None
                    with memoryview(self._arena.map) as shared:
                        bufs = [bytearray(b) for b in _slices(shared, at, lens)]
            # (copies of their own: the arrays outlive the receive buffer and the room in shared memory)
            del self._in[:end]
            seq, ok, what = pickle.loads(body, buffers=bufs)
            if self._arena is not None:
                self._arena.give_back(seq)
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
        if self._arena is not None:
            self._arena.rooms.clear()
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
        if self._arena is not None:
            self._arena.close()
            self._arena = None
        self.broken = True
        futs, self._futs = list(self._futs.values()), {}
        for fut in futs:
            if not fut.done():
                fut.set_exception(WorkerUnavailable("the inspection worker was closed"))


_F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's buffer size
_IOV_MAX = 512  # buffers per writev (the system's limit is at least 1024 on Linux)
