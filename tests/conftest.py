"""Shared fixtures: isolated caches, ROS isolation, the demo cell file, a sim runner."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "launch" / "packaging_cell.yaml"
SHARED = REPO.parent / "shared"

# Every process the tests start stays on this machine's DDS.
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fitted inspection models are cached per test session, never in the user's home."""
    d = Path(os.environ.get("AXCELL_TEST_CACHE") or tmp_path_factory.mktemp("axcell-cache"))
    os.environ["AXCELL_CACHE"] = str(d)
    return d


@pytest.fixture(scope="session")
def demo_config():
    from cell.config import load_cell

    return load_cell(DEMO)


@pytest.fixture(scope="session")
def demo_inspectors(demo_config):
    from cell.vision_models import prepare_inspectors

    return prepare_inspectors(demo_config)


def run_sim(clock, coro, until: float | None = None):
    """Run ``coro`` while driving the simulated ``clock``; return its result."""

    async def main():
        task = asyncio.ensure_future(coro)
        task.add_done_callback(lambda _t: clock.stop())
        await clock.run(until=until)
        if not task.done():
            task.cancel()
            raise TimeoutError(f"coroutine still running at simulated t={clock.now():.3f}")
        return task.result()

    return asyncio.run(main())


def run_cell_batch(cfg, inspectors, *, seed: int, duration: float):
    """A simulated batch run of ``cfg`` in this process: ``(report, cell)``, the cell closed."""
    from cell.batch import run_batch
    from cell.runtime import Cell

    async def main():
        cell = Cell(cfg, seed=seed, inspectors=inspectors)
        try:
            return await run_batch(cell, duration), cell
        finally:
            await cell.close()

    return asyncio.run(main())
