"""The dependency direction cell → skills → driver contracts ← implementations | sim is enforced."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    proc = subprocess.run([exe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "broken" in proc.stdout and "0 broken" in proc.stdout


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_skills_import_no_sim_and_no_transport_even_lazily():
    # import-linter sees module-level and function-level imports alike; this double-checks by AST.
    bad = {"sim", "cell", "rclpy", "asyncua", "fastapi", "uvicorn"}
    for py in (REPO / "skills").rglob("*.py"):
        assert not (_imports(py) & bad), f"{py.relative_to(REPO)} imports {_imports(py) & bad}"


def test_launch_is_not_a_python_package():
    assert not (REPO / "launch" / "__init__.py").exists()


def test_only_transport_modules_import_transport_libraries():
    allowed_prefixes = ("cell/ros/", "cell/opcua/", "cell/api/", "drivers/ros", "drivers/opcua", "sim/opcua")
    for lib in ("rclpy", "asyncua", "fastapi"):
        for py in REPO.glob("*/**/*.py"):
            rel = py.relative_to(REPO).as_posix()
            if rel.startswith(("tests/", "bench/", ".venv/", "build/", "launch/")):
                continue
            if lib in _imports(py):
                assert rel.startswith(allowed_prefixes), f"{rel} imports {lib}"
