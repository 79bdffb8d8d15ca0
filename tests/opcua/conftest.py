"""OPC UA test helpers: a PKI per session, sim sealer servers per module, a driver factory.

Servers bind 127.0.0.1 on ephemeral ports.  Tests in a module share one event loop
(``loop_scope="module"``) so a server started once per module serves every test.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
NODESET = SHARED / "reference" / "opcua-nodesets" / "Opc.Ua.PackML.NodeSet2.xml"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from drivers.opcua_certs import generate

    d = tmp_path_factory.mktemp("pki")
    generate(d)
    return d


def make_driver(endpoint: str | None = None, *, events: list | None = None, resources: dict | None = None,
                **options: Any):
    """An OpcuaMachine on the wall clock; ``events`` collects (device, kind, message)."""
    from drivers.base import DeviceContext
    from drivers.clock import WallClock
    from drivers.opcua_machine import OpcuaMachine

    opts: dict[str, Any] = {"security": {"policy": "none", "allow_none": True}, "request_timeout_s": 1.0,
                            "watchdog_s": 0.5, "reconnect_interval_s": 0.2, "poll_interval_s": 0.02}
    if endpoint is not None:
        opts["endpoint"] = endpoint
    opts.update(options)
    res = dict(resources or {})
    if events is not None:
        res["device_events"] = lambda dev, kind, msg: events.append((dev, kind, msg))
    return OpcuaMachine("sealer", OpcuaMachine.Config.model_validate(opts),
                        DeviceContext(clock=WallClock(), resources=res, cell="test"))


async def wait_until(pred, timeout: float = 5.0, step: float = 0.02) -> float:
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("condition not met")
        await asyncio.sleep(step)
    return time.perf_counter() - t0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sealer():
    """A wall-clock sim sealer server on 127.0.0.1, one per test module."""
    from drivers.clock import WallClock
    from sim.opcua_sealer import SealerModel, SealerParams, SealerServer

    model = SealerModel(SealerParams(cycle_time_s=0.08, index_time_s=0.02, telemetry_period_s=0.1), WallClock())
    server = await SealerServer(model).start()
    yield server
    await server.close()


@pytest_asyncio.fixture(loop_scope="module")
async def driver(sealer):
    """A connected, reset driver; ``driver.events`` collects its device events."""
    await sealer.clear_faults()
    if not sealer.online:
        await sealer.start()
    events: list = []
    d = make_driver(sealer.endpoint, events=events)
    d.events = events
    await d.connect()
    await d.command("reset")
    yield d
    await d.close()
