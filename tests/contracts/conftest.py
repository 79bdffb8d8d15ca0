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


RIGS: dict[str, Callable[[], Rig]] = {"sim": sim_rig}

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
