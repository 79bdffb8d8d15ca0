"""Batch runs: Reset, Start, produce for a simulated duration, Stop, report."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from .packml import STOPPABLE, State
from .report import build_report
from .runtime import Cell


async def run_batch(cell: Cell, duration: float, *, speed: float | None = None,
                    progress: Callable[[float, float, dict[str, int]], None] | None = None,
                    on_started: Callable[[Cell], Any] | None = None) -> dict[str, Any]:
    """Run ``cell`` for ``duration`` seconds of cell time and return the report.

    With a simulated world the clock is driven here (as fast as possible, or
    at ``speed`` × real time).  With real devices the wall clock runs.
    """
    clock = cell.clock
    wall0 = time.perf_counter()
    done = asyncio.Event()
    error: list[BaseException] = []

    async def script() -> None:
        try:
            cell.command("reset", source="batch")
            await cell.wait_state({State.IDLE, State.ABORTED, State.STOPPED})
            if cell.fsm.state != State.IDLE:
                raise RuntimeError(f"cell did not reach Idle (now {cell.fsm.state.label}); "
                                   f"alarms: {[a.message for a in cell.alarms.history]}")
            cell.command("start", source="batch")
            await cell.wait_state({State.EXECUTE})
            if on_started is not None:
                r = on_started(cell)
                if asyncio.iscoroutine(r):
                    await r
            await clock.sleep_until(duration)
            if cell.fsm.state in STOPPABLE:
                cell.command("stop", source="batch")
            await cell.wait_state({State.STOPPED, State.ABORTED})
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            error.append(e)
        finally:
            done.set()
            stop = getattr(clock, "stop", None)
            if stop is not None:
                stop()

    async def ticker() -> None:
        last = 0.0
        while True:
            await clock.sleep(max(1.0, duration / 200))
            now = time.perf_counter()
            if progress is not None and (now - last > 0.1 or clock.now() >= duration):
                last = now
                progress(clock.now(), duration, cell.ledger.counts())

    loop = asyncio.get_running_loop()
    task = loop.create_task(script())
    tick = loop.create_task(ticker())
    try:
        run = getattr(clock, "run", None)
        if run is not None:
            await run(until=duration + 3600.0, speed=speed)
        await done.wait()
    finally:
        tick.cancel()
        if not task.done():
            task.cancel()
    if error:
        raise error[0]
    sim_seconds = clock.now()
    report = build_report(cell, wall_seconds=time.perf_counter() - wall0, sim_seconds=sim_seconds)
    return report


def progress_bar(stream=sys.stderr) -> Callable[[float, float, dict[str, int]], None]:
    def show(t: float, total: float, counts: dict[str, int]) -> None:
        frac = min(1.0, t / total) if total > 0 else 1.0
        n = int(frac * 30)
        stream.write(f"\r[{'#' * n}{'.' * (30 - n)}] {t:7.0f}/{total:.0f} s  "
                     f"packed {counts['packed']:5d}  rejected {counts['rejected']:4d}  missed {counts['missed']:4d}")
        if frac >= 1.0:
            stream.write("\n")
        stream.flush()

    return show
