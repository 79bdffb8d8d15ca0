"""Keep the C heap of a long-running inspection process from shrinking and regrowing on every frame.

Inspecting a 1280×1024 frame allocates and frees several buffers of a few megabytes (the frame, its
pyramid, the warped views, the maps). glibc serves blocks that large with ``mmap`` and gives them
back with ``munmap`` (and trims the heap top above 128 KB), so every frame starts on fresh pages:
800–1,500 minor page faults a frame, about 1.5 ms of a 9–10 ms inspection, measured on a process
that loaded its model from a file. (A process that had fitted the model first did not show it:
fitting raises glibc's dynamic mmap threshold.)

:func:`keep_heap` raises the mmap threshold and the trim threshold, so those buffers come from the
heap and their pages are reused (blocks above 32 MB, glibc's largest threshold, still use mmap). The price is that the process keeps its peak heap (a few hundred
MB for inspection) instead of returning it to the system between frames. It changes the whole
process, so applications call it (``axcell vision inspect``, ``axcell run``), not the library.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

_done = False


def keep_heap(mmap_threshold: int = 32 << 20, trim_threshold: int = 512 << 20) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (see the module doc). Returns whether it
    took effect; False (and nothing changed) off glibc, e.g. on macOS, Windows or musl."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))
    _done = ok
    return ok
