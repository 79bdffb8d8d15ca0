"""Simulation speed: sim-seconds per wall-second for one simulated hour of the demo cell.

    python bench/sim_speed.py [--duration 3600] [--seed 1] [--transport local|ros|processes|both|all]

Rows: ``local`` — every device an in-process twin; ``local+opcua`` — the demo as
configured, its case sealer over real OPC UA on loopback; ``ros`` — everything on
ROS 2 (``--transport ros``); ``processes`` — ROS 2 with every device node in a process of its
own (``--transport ros --processes``), for at most ``--processes-duration`` simulated seconds
(it is the slowest row; with the same duration its parts are checked against ``local+opcua``).
Each is printed against a baseline measured in the same run: the
bare discrete-event clock firing the same number of events with no cell on
top (what the scheduler alone costs), so the ratio shows what the cell adds.
Goals: >= 2000x in-process (local), >= 200x with everything on ROS 2.
Fitting the inspection models, connecting the devices (the simulated sealer's OPC UA server
starts in about 1.3 s) and starting the inspection worker are setup, excluded from the timing and
printed beside it. Each row also gives the CPU time of the thread that runs the cell (with
rclpy and the device nodes over ROS 2): less noisy than wall time on a shared host, and the
speed it allows if nothing ever waited. Trays are judged by the inspection worker, as ``axcell run`` does;
``--inspect-in-cell-thread`` judges them in the cell's thread (the same counts) to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# one BLAS thread, as `axcell run` has (cell/cli.py): set before numpy is imported; the environment wins
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cell.batch import run_batch  # noqa: E402
from cell.config import in_process_twins, load_cell  # noqa: E402
from cell.runtime import Cell  # noqa: E402
from cell.vision_models import prepare_inspectors  # noqa: E402
from sim.clock import SimClock  # noqa: E402


def bare_clock(events: int) -> float:
    """Wall seconds for the bare clock to fire ``events`` wake-ups in one task."""
    clock = SimClock()

    async def spin() -> None:
        for _ in range(events):
            await clock.sleep(0.01)
        clock.stop()

    async def main() -> None:
        asyncio.ensure_future(spin())
        await clock.run()

    t0 = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - t0


async def connect_devices(cell) -> float:
    """Connect every device before the timed run (wall seconds it took): setup, like fitting the models.

    The cell would connect them in Resetting, inside the run; the simulated sealer's OPC UA server
    alone takes about 1.3 s to build its standard address space."""
    t0 = time.perf_counter()
    await cell.connect_devices()
    return time.perf_counter() - t0


def local_run(cfg, inspectors, duration: float, seed: int, worker: bool = True) -> tuple[dict, int]:
    async def main():
        cell = Cell(cfg, seed=seed, inspectors=inspectors, inspection_worker=worker)
        try:
            connect_s = await connect_devices(cell)
            cpu0 = time.thread_time()
            report = await run_batch(cell, duration)
            report["cell_thread_cpu_s"] = round(time.thread_time() - cpu0, 3)
            report["connect_wall_s"] = round(connect_s, 3)
            ms = [r.inspect_ms for r in cell.ledger.records.values() if r.inspect_ms is not None]
            report["inspection_ms_median"] = round(float(np.median(ms)), 3) if ms else None
            report["verdict_waits"] = cell.facts.settle_waits
            report["verdict_wait_s"] = round(cell.facts.settle_wait_s, 3)
            return report, cell.clock.events_fired
        finally:
            await cell.close()

    return asyncio.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default=str(REPO / "launch" / "packaging_cell.yaml"))
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--transport", choices=["local", "ros", "processes", "both", "all"], default="local",
                    help="both: local and ros; all: local, ros and processes")
    ap.add_argument("--processes-duration", type=float, default=600.0,
                    help="simulated seconds of the processes row (bounded: it is the slowest)")
    ap.add_argument("--inspect-in-cell-thread", action="store_true",
                    help="judge each tray in the cell's own thread, as before the inspection worker "
                         "(the counts are the same; compare the speed)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    worker = not args.inspect_in_cell_thread
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass
    from cell.heap import keep_heap

    keep_heap()  # as `axcell run` does (see cell.heap)
    cfg = load_cell(args.cell)
    inspectors = prepare_inspectors(cfg)
    rows = {}
    for name, c in (("local", in_process_twins(cfg)), ("local+opcua", cfg)):
        report, events = local_run(c, inspectors, args.duration, args.seed, worker)
        wall = report["wall_seconds"]
        base = bare_clock(events)
        rows[name] = {"sim_s": report["sim_seconds"], "wall_s": wall, "x_real_time": report["sim_seconds"] / wall,
                      "events": events, "bare_clock_wall_s": base, "cell_vs_bare_clock": wall / base,
                      "parts": report["parts"]["arrived"], "inspect_ms_median": report["inspection_ms_median"],
                      "connect_wall_s": report["connect_wall_s"], "verdict_waits": report["verdict_waits"],
                      "verdict_wait_s": report["verdict_wait_s"], "cell_thread_cpu_s": report["cell_thread_cpu_s"]}
    if args.transport in ("ros", "both", "all"):
        try:
            from cell.ros.sim_speed import ros_run  # provided by the ROS transport
        except ImportError as e:
            rows["ros"] = {"error": f"ROS transport not available: {e}"}
        else:
            rows["ros"] = ros_run(cfg, inspectors, args.duration, args.seed, inspection_worker=worker)
    if args.transport in ("processes", "all"):
        try:
            from cell.ros.sim_speed import processes_run
        except ImportError as e:
            rows["processes"] = {"error": f"ROS transport not available: {e}"}
        else:
            d = min(args.duration, args.processes_duration)
            rows["processes"] = r = processes_run(cfg, inspectors, d, args.seed, inspection_worker=worker)
            if d == args.duration:
                r["same_parts_as_local+opcua"] = r["parts"] == rows["local+opcua"]["parts"]
    print(f"demo cell, {args.duration:.0f} simulated s, seed {args.seed}; trays judged "
          + ("in the cell's own thread" if not worker else "by the inspection worker process"))
    for name, r in rows.items():
        if "error" in r:
            print(f"  {name:<12} {r['error']}")
            continue
        print(f"  {name:<12} {r['x_real_time']:8.0f}x real time  ({r['sim_s']:.0f} sim s in {r['wall_s']:.2f} wall s"
              + (f" after {r['connect_wall_s']:.2f} s connecting" if r.get("connect_wall_s") is not None else "") + ", "
              f"{r.get('parts', '?')} parts, {r.get('events', '?')} clock events)"
              + (f"; {r['processes']} device processes, parts equal to local+opcua: "
                 f"{r.get('same_parts_as_local+opcua', 'not compared (shorter run)')}" if name == "processes" else "")
              + (f"; {r['device_calls']} DeviceCalls + {r.get('action_goals', '?')} FollowJointTrajectory goals "
                 f"over DDS, {r.get('proxy_local_answers', 0)} IK/duration answers computed in the proxy"
                 if name == "ros" and "device_calls" in r else "")
              + (f"; a verdict was not ready when needed {r['verdict_waits']} times ({r['verdict_wait_s']:.2f} s "
                 f"waited)" if r.get("verdict_waits") else "")
              + (f"; the cell's thread was busy {r['cell_thread_cpu_s']:.2f} s of it (CPU time: at most "
                 f"{r['sim_s'] / r['cell_thread_cpu_s']:.0f}x without any waiting)"
                 if r.get("cell_thread_cpu_s") else ""))
    r = rows["local"]
    print(f"  baseline: the bare clock fires the same {r['events']} events in {r['bare_clock_wall_s']:.3f} s; "
          f"the cell costs {r['cell_vs_bare_clock']:.1f}x that (inspection median {r['inspect_ms_median']} ms/part)")
    print(f"  goal in-process (local) >= 2000x: {'met' if r['x_real_time'] >= 2000 else 'NOT met'}; "
          f"'local+opcua' drives the sealer over real OPC UA on loopback, as the demo does")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    sys.exit(main())
