"""One contract suite per device contract, run against every implementation.

An implementation is provided by a *rig*: a factory that builds a simulated
cell and returns, for each contract, the device object to test, plus the
means to drive time.  The direct sim twins are the ``sim`` rig; transports
(ROS 2 proxies, OPC UA) add their own rigs to ``RIGS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cell.config import load_cell
from tests.conftest import DEMO


@dataclass
class Rig:
    """Devices under test plus the simulated world behind them."""

    cell: Any
    devices: dict[str, Any]          # contract → device under test
    twins: dict[str, Any]            # contract → the sim twin (for fault injection and truth)
    run: Callable[..., Any]          # run(coro, until=None) drives the sim clock
    teardown: Callable[[], None] = field(default=lambda: None)


def sim_rig() -> Rig:
    from cell.runtime import Cell
    from tests.conftest import run_sim

    cfg = load_cell(DEMO)
    cell = Cell(cfg, inspectors={})
    by_contract = {}
    for name in ("robot", "cup", "top_camera", "infeed", "eyes", "sealer"):
        dev = cell.devices.get(name)
        if dev is not None and dev.kind.startswith("sim."):  # the direct twins only
            by_contract[dev.contract] = dev
    if "machine" not in by_contract:  # the demo may drive its sealer over OPC UA: test the in-process twin too
        from drivers.base import DeviceContext
        from sim.devices import SimMachine

        ctx = DeviceContext(clock=cell.clock, resources={"world": cell.world}, cell=cell.name)
        by_contract["machine"] = SimMachine("sealer_twin", SimMachine.Config(), ctx)
    return Rig(cell=cell, devices=dict(by_contract), twins=dict(by_contract),
               run=lambda coro, until=None: run_sim(cell.clock, coro, until))


class _OnlySome(dict):
    """A rig's devices by contract; a contract the rig does not provide skips the test."""

    def __missing__(self, contract: str) -> Any:
        pytest.skip(f"this rig provides no {contract} (or no fault injection for it)")


def opencv_rig() -> Rig:
    """opencv.camera replaying a folder of PNGs on a wall clock (camera contract only; no fault injection)."""
    import asyncio
    import math
    import shutil
    import tempfile
    from pathlib import Path
    from types import SimpleNamespace

    import cv2
    import numpy as np

    from cell.plugins import load_kind
    from drivers.base import DeviceContext
    from drivers.clock import WallClock

    folder = Path(tempfile.mkdtemp(prefix="axcell-opencv-rig-"))
    w, h = 160, 120
    for i in range(5):
        img = np.full((h, w, 3), 40 * i, np.uint8)
        cv2.circle(img, (20 + 25 * i, 60), 12, (255, 255, 255), -1)
        cv2.imwrite(str(folder / f"frame{i}.png"), img)
    cls = load_kind("opencv.camera")
    cfg = cls.Config.model_validate({"source": str(folder), "loop": True, "calibration": {
        "K": [[200.0, 0, (w - 1) / 2], [0, 200.0, (h - 1) / 2], [0, 0, 1]], "dist": [0, 0, 0, 0, 0],
        "width": w, "height": h, "pose": {"x": 0.2, "y": 0.5, "z": 0.9, "roll": math.pi}}})
    clock = WallClock()
    cam = cls("opencv_camera", cfg, DeviceContext(clock=clock))

    def run(coro: Any, until: float | None = None) -> Any:
        async def main() -> Any:
            try:
                return await coro
            finally:
                await cam.close()  # the worker thread never outlives the test's event loop
        return asyncio.run(main())

    return Rig(cell=SimpleNamespace(clock=clock), devices=_OnlySome(camera=cam), twins=_OnlySome(), run=run,
               teardown=lambda: shutil.rmtree(folder, ignore_errors=True))


RIGS: dict[str, Callable[[], Rig]] = {"sim": sim_rig, "opencv": opencv_rig}

# -- ROS 2 rig hook (issue 3): the same suites through ros2.* proxies and device nodes over DDS --
try:
    import rclpy  # noqa: F401
    from axcell_interfaces.srv import DeviceCall  # noqa: F401
except Exception:  # noqa: BLE001 - ROS 2 not installed: only the other rigs run
    pass
else:
    from tests.contracts.ros_rig import ros_rig

    RIGS["ros"] = ros_rig
# -- end ROS 2 rig hook --


@pytest.fixture(params=sorted(RIGS))
def rig(request) -> Rig:
    r = RIGS[request.param]()
    yield r
    r.teardown()
