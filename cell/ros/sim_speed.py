"""``bench/sim_speed.py --transport ros``: the demo cell with every device call on ROS 2."""

from __future__ import annotations

import asyncio
import time
from typing import Any


def ros_run(cfg: Any, inspectors: dict[str, Any], duration: float, seed: int, *,
            inspection_worker: bool = True) -> dict[str, Any]:
    from ..batch import run_batch
    from ..runtime import Cell
    from .runtime import attach

    async def main() -> dict[str, Any]:
        cell = Cell(cfg, seed=seed, inspectors=inspectors, inspection_worker=inspection_worker)
        att = await attach(cell)
        try:
            t0 = time.perf_counter()
            await cell.connect_devices()  # setup, as in the in-process rows (bench/sim_speed.py)
            connect_s = time.perf_counter() - t0
            cpu0 = time.thread_time()  # this thread runs the cell, the device nodes and rclpy
            report = await run_batch(cell, duration)
            cpu_s = time.thread_time() - cpu0
        finally:
            await cell.close()
            await att.close()
        calls = sum(n.calls for n in att.device_nodes)
        goals = sum(getattr(n, "goals", 0) for n in att.device_nodes)
        local = sum(getattr(p, "local_calls", 0) for p in cell.devices.values())
        return {"sim_s": report["sim_seconds"], "wall_s": report["wall_seconds"],
                "x_real_time": report["sim_seconds"] / report["wall_seconds"], "parts": report["parts"]["arrived"],
                "events": cell.clock.events_fired, "device_calls": calls, "action_goals": goals,
                "proxy_local_answers": local, "report_parts": report["parts"], "connect_wall_s": round(connect_s, 3),
                "verdict_waits": cell.facts.settle_waits, "verdict_wait_s": round(cell.facts.settle_wait_s, 3),
                "cell_thread_cpu_s": round(cpu_s, 3)}

    return asyncio.run(main())


def processes_run(cfg: Any, inspectors: dict[str, Any], duration: float, seed: int, *,
                  inspection_worker: bool = True) -> dict[str, Any]:
    """``--transport processes``: every device node in its own process, clocks in lock-step."""
    from ..batch import run_batch
    from ..runtime import Cell
    from .runtime import attach

    async def main() -> dict[str, Any]:
        cell = Cell(cfg, seed=seed, inspectors=inspectors, inspection_worker=inspection_worker)
        att = await attach(cell, processes=True)
        try:
            report = await run_batch(cell, duration)
        finally:
            await cell.close()
            stats = att.leader.stats() if att.leader is not None else {}
            await att.close()
        return {"sim_s": report["sim_seconds"], "wall_s": report["wall_seconds"],
                "x_real_time": report["sim_seconds"] / report["wall_seconds"], "parts": report["parts"]["arrived"],
                "events": cell.clock.events_fired, "lockstep": stats, "report_parts": report["parts"],
                "processes": len(att.processes.pids) if att.processes is not None else 0}

    return asyncio.run(main())
