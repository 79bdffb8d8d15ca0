"""ROS 2 isolation helpers: pure Python, importable without rclpy.

Every process that uses ROS 2 must run with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and
its own ``ROS_DOMAIN_ID``. These helpers set that up (only where the environment does not
already say otherwise), pick collision-free domain ids, point Fast DDS at the shipped
large-shared-memory profile, and find/remove the Fast DDS shared-memory files a process leaves
in ``/dev/shm`` (a SIGKILLed process cannot clean its own).

rmw reads these variables when a context is initialised (``rclpy.init``), so call
``ensure_ros_isolation()`` before that, and pass ``ros_env()`` to child processes.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path

#: Fast DDS profile shipped with axcell: localhost UDP + 16 MB shared-memory segments.
FASTDDS_PROFILE_PATH = Path(__file__).resolve().parent / "fastdds_profile.xml"

DISCOVERY_RANGE_VAR = "ROS_AUTOMATIC_DISCOVERY_RANGE"
DOMAIN_VAR = "ROS_DOMAIN_ID"
PROFILE_VAR = "FASTDDS_DEFAULT_PROFILES_FILE"

#: Domain ids we hand out: 1..101 (0 is the ROS default, so a stray un-isolated process
#: never lands in ours; >101 collides with ephemeral ports on Linux for some ids).
DOMAIN_MIN = 1
DOMAIN_MAX = 101
_DOMAIN_SPAN = DOMAIN_MAX - DOMAIN_MIN + 1

SHM_DIR = Path("/dev/shm")
# Fast DDS 2.x names its files fastrtps_*, 3.x fastdds_*; the port mutexes are sem.fast*_port*.
_SHM_RE = re.compile(r"^(?:sem\.)?fast(?:rtps|dds)_")


def pick_domain_id(key: str | int | None = None) -> int:
    """A domain id in 1..101 derived from ``key`` (default: this process's pid).

    Deterministic, so a parent can compute a child's domain, and spread so that concurrent
    processes (pids) rarely share one. Use ``xdist_domain_id`` in tests under pytest-xdist.
    """
    if key is None:
        key = os.getpid()
    if isinstance(key, int):
        return DOMAIN_MIN + key % _DOMAIN_SPAN
    return DOMAIN_MIN + zlib.crc32(key.encode()) % _DOMAIN_SPAN


def xdist_domain_id(env: Mapping[str, str] | None = None, pid: int | None = None) -> int:
    """Domain id for a test session: distinct per pytest-xdist worker within one run.

    Worker ``gwN`` of a run gets ``base + N`` (mod the range), where ``base`` comes from the
    xdist controller's testrun uid (shared by all workers of one run) or, without xdist, from
    the pid. So the workers of one run never collide with each other, and separate runs
    (different pids/uids) are spread over the range.
    """
    env = os.environ if env is None else env
    worker = env.get("PYTEST_XDIST_WORKER", "")
    m = re.fullmatch(r"gw(\d+)", worker)
    if not m:
        return pick_domain_id(os.getpid() if pid is None else pid)
    uid = env.get("PYTEST_XDIST_TESTRUNUID") or str(os.getppid())
    base = zlib.crc32(uid.encode()) % _DOMAIN_SPAN
    return DOMAIN_MIN + (base + int(m.group(1))) % _DOMAIN_SPAN


class DomainClaim:
    """A ROS domain id held for this process through an flock'ed file (see ``claim_domain_id``)."""

    def __init__(self, domain_id: int, fd: int, path: Path):
        self.domain_id, self._fd, self.path = domain_id, fd, path

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # drops the lock
            self._fd = -1

    def __enter__(self) -> DomainClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DomainClaim({self.domain_id})"


def claim_domain_id(start: int | None = None, lock_dir: str | os.PathLike | None = None) -> DomainClaim:
    """Claim a domain id in 1..101 that no other axcell process on this host holds.

    Starts at ``start`` (default ``pick_domain_id()``) and takes the first id whose lock file
    (``<tmp>/axcell-ros-domains/<id>.lock``) it can ``flock``. The lock lives as long as the
    returned claim (or the process: the kernel drops it even on SIGKILL), so concurrent test
    sessions and runs that all claim never share a domain. Raises RuntimeError if all are held.
    """
    import fcntl
    import tempfile

    base = Path(lock_dir) if lock_dir else Path(tempfile.gettempdir()) / "axcell-ros-domains"
    base.mkdir(parents=True, exist_ok=True)
    first = pick_domain_id() if start is None else int(start)
    for k in range(_DOMAIN_SPAN):
        dom = DOMAIN_MIN + (first - DOMAIN_MIN + k) % _DOMAIN_SPAN
        path = base / f"{dom}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return DomainClaim(dom, fd, path)
    raise RuntimeError(f"all ROS domain ids {DOMAIN_MIN}..{DOMAIN_MAX} are claimed ({base})")


def ros_env(
    domain_id: int | None = None,
    *,
    base: Mapping[str, str] | None = None,
    shm_profile: bool = False,
    force: bool = False,
) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with ROS 2 isolation set.

    - ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` unless already set (or always, with ``force``).
    - ``ROS_DOMAIN_ID``: ``domain_id`` if given; else the existing value; else ``pick_domain_id()``.
      With ``force`` and no ``domain_id``, the existing value is still kept.
    - ``shm_profile=True``: ``FASTDDS_DEFAULT_PROFILES_FILE`` = the shipped profile, unless set.

    Use it for child processes: ``subprocess.Popen(..., env=ros_env())`` after
    ``ensure_ros_isolation()`` gives the child this process's domain.
    """
    env = dict(os.environ if base is None else base)
    if force or not env.get(DISCOVERY_RANGE_VAR):
        env[DISCOVERY_RANGE_VAR] = "LOCALHOST"
    if domain_id is not None:
        env[DOMAIN_VAR] = str(_check_domain(domain_id))
    elif not env.get(DOMAIN_VAR):
        env[DOMAIN_VAR] = str(pick_domain_id())
    if shm_profile and not env.get(PROFILE_VAR):
        env[PROFILE_VAR] = str(FASTDDS_PROFILE_PATH)
    return env


def ensure_ros_isolation(
    domain_id: int | None = None,
    *,
    shm_profile: bool = False,
    environ: MutableMapping[str, str] | None = None,
) -> dict[str, str]:
    """Set the isolation variables in ``os.environ`` (where not already set); return them.

    An explicit ``domain_id`` overrides an existing ``ROS_DOMAIN_ID``. Call before
    ``rclpy.init``. Returns the three variables' effective values (absent ones omitted).
    """
    environ = os.environ if environ is None else environ
    env = ros_env(domain_id, base=environ, shm_profile=shm_profile)
    out = {}
    for var in (DISCOVERY_RANGE_VAR, DOMAIN_VAR, PROFILE_VAR):
        if var in env:
            if environ.get(var) != env[var]:
                environ[var] = env[var]
            out[var] = env[var]
    return out


def current_domain_id(default: int = 0) -> int:
    """The ``ROS_DOMAIN_ID`` of this process's environment (``default`` if unset)."""
    val = os.environ.get(DOMAIN_VAR, "").strip()
    return int(val) if val else default


def _check_domain(domain_id: int) -> int:
    domain_id = int(domain_id)
    if not 0 <= domain_id <= 232:
        raise ValueError(f"ROS_DOMAIN_ID must be in 0..232, got {domain_id}")
    return domain_id


# --------------------------------------------------------------------------- /dev/shm hygiene


def is_fastdds_shm_file(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.parent == SHM_DIR and bool(_SHM_RE.match(p.name))


def fastdds_shm_files() -> set[Path]:
    """All Fast DDS files currently in /dev/shm (any process's)."""
    try:
        return {p for p in SHM_DIR.iterdir() if _SHM_RE.match(p.name)}
    except OSError:
        return set()


def shm_files_of(pid: int | None = None) -> set[Path]:
    """The Fast DDS /dev/shm files process ``pid`` (default: this one) has mapped or open.

    Read from ``/proc/<pid>/maps`` and ``/proc/<pid>/fd``; call it *before* killing a process
    to know what to clean after. Shared port files (``fastrtps_port*``) are included if mapped;
    ``remove_shm_files`` leaves the ones other processes still use.
    """
    pid = os.getpid() if pid is None else pid
    found: set[Path] = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    path = parts[5].strip().removesuffix(" (deleted)")
                    if path.startswith("/dev/shm/") and is_fastdds_shm_file(path):
                        found.add(Path(path))
    except OSError:
        pass
    try:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("/dev/shm/") and is_fastdds_shm_file(target):
                found.add(Path(target))
    except OSError:
        pass
    # A port segment's mutex is a POSIX semaphore (sem.<port file>_mutex), not seen as mapped.
    for p in list(found):
        if p.name.startswith(("fastrtps_port", "fastdds_port")) and not p.name.endswith("_el"):
            sem = SHM_DIR / f"sem.{p.name}_mutex"
            if sem.exists():
                found.add(sem)
    return found


def _users_of(paths: set[Path], exclude_pids: set[int]) -> set[Path]:
    """Which of ``paths`` some live process (not in ``exclude_pids``) maps or holds open."""
    if not paths:
        return set()
    names = {str(p) for p in paths}
    used: set[Path] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in exclude_pids:
            continue
        for p in shm_files_of(int(proc.name)):
            if str(p) in names:
                used.add(p)
    return used


def remove_shm_files(paths: Iterable[str | os.PathLike], *, keep_in_use: bool = True) -> list[Path]:
    """Remove the given Fast DDS /dev/shm files; returns what was removed.

    With ``keep_in_use`` (default) files another live process still maps or holds open are
    left alone, so cleaning after a killed child never pulls a segment from under a live one.
    Paths outside /dev/shm or not named like Fast DDS files are ignored.
    """
    cand = {Path(p) for p in paths if is_fastdds_shm_file(p)}
    cand = {p for p in cand if p.exists()}
    if keep_in_use:
        used = _users_of(cand, exclude_pids=set())
        cand -= used
        # keep a port's semaphore while its port segment is in use
        cand -= {p for p in cand if p.name.startswith("sem.")
                 and SHM_DIR / p.name[4:].removesuffix("_mutex") in used}
    removed = []
    for p in sorted(cand):
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
        except OSError:
            pass
    return removed


def limit_blas_threads(n: int = 1) -> int | None:
    """Cap the OpenBLAS thread pool of this process at ``n``; returns the previous size, or None.

    A cell over ROS 2 in one process runs on the asyncio loop's thread (the rclpy executor
    included, ``RosBridge(executor="loop")``). numpy's OpenBLAS otherwise starts a worker per
    core whose threads busy-wait for work after every small BLAS call: on a 2-core machine one
    of them spins on the other core (measured: about as much CPU as the whole ROS run). With
    ``OPENBLAS_NUM_THREADS`` set in the environment nothing is changed.
    """
    if os.environ.get("OPENBLAS_NUM_THREADS"):
        return None
    try:
        import ctypes

        import numpy  # noqa: F401 - loads its OpenBLAS

        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "openblas" in line.split()[-1].lower()
                           and ".so" in line.split()[-1]})
        for path in libs:
            lib = ctypes.CDLL(path)
            for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", ""), ("scipy_openblas", "")):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None:
                    before = int(getter()) if getter is not None else None
                    setter(int(n))
                    return before
    except Exception:  # noqa: BLE001 - no OpenBLAS (or not Linux): nothing to do
        return None
    return None
