"""Micro-benchmark: FK, IK (closed form vs numerical) and trajectory planning.

Run: ``.venv/bin/python bench/ik_motion.py [--n 2000] [--model ur10e]``

Prints median and p99 in µs per call.  The planning rows compare ruckig's
jerk-limited, time-optimal planner (what the sim arm uses) against a naive,
synchronised numpy trapezoid (velocity/acceleration only, no jerk limit)
measured in the same run on the same inputs.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from drivers import kinematics as kin  # noqa: E402
from sim.motion import plan  # noqa: E402


def trapezoid_duration(q0: np.ndarray, q1: np.ndarray, vmax: np.ndarray, amax: np.ndarray) -> float:
    """Baseline: per-joint trapezoid (or triangle) time, synchronised to the slowest joint."""
    d = np.abs(q1 - q0)
    t_acc = vmax / amax
    d_full = vmax * t_acc  # distance spent accelerating + decelerating at full speed
    t = np.where(d > d_full, d / vmax + t_acc, 2.0 * np.sqrt(d / amax))
    return float(t.max())


def timeit(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    for i in range(min(50, n)):  # warm-up
        fn(i)
    samples = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn(i)
        samples[i] = clock() - t0
    return float(np.median(samples) / 1e3), float(np.percentile(samples, 99) / 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="calls per row")
    ap.add_argument("--model", default="ur10e", choices=kin.model_names())
    args = ap.parse_args()
    n = args.n
    m = kin.MODELS[args.model].with_tool_z(0.15)
    lim = m.limits
    rng = np.random.default_rng(0)
    lo = np.maximum(lim.lower, -np.pi)
    hi = np.minimum(lim.upper, np.pi)
    qs = rng.uniform(lo, hi, size=(n, 6))
    targets = [kin.fk(m, q) for q in qs]
    seeds = qs + rng.normal(0.0, 0.05, size=qs.shape)
    n_num = max(20, n // 20)  # the numerical solver is ~20× slower: fewer calls
    vmax, amax = np.array(lim.velocity), np.array(lim.acceleration)

    # a moving start for the replan row
    moving = [plan(qs[i], qs[(i + 1) % n], lim).at(0.1) for i in range(n)]

    rows = [
        ("fk", n, lambda i: kin.fk(m, qs[i])),
        ("jacobian", n, lambda i: kin.jacobian(m, qs[i])),
        ("ik analytic (8 branches, nearest)", n, lambda i: kin.ik(m, targets[i], seeds[i])),
        ("ik numerical (DLS)", n_num, lambda i: kin.ik(m, targets[i], seeds[i], method="numeric")),
        ("plan ruckig, rest to rest", n, lambda i: plan(qs[i], qs[(i + 1) % n], lim)),
        ("plan ruckig, moving start", n,
         lambda i: plan(moving[i][0], qs[(i + 7) % n], lim, v0=moving[i][1], a0=moving[i][2])),
        ("plan numpy trapezoid (baseline)", n, lambda i: trapezoid_duration(qs[i], qs[(i + 1) % n], vmax, amax)),
    ]
    print(f"model {m.name}, {n} calls per row (numerical IK: {n_num})")
    print(f"{'operation':38s} {'median µs':>10s} {'p99 µs':>10s}")
    for name, count, fn in rows:
        med, p99 = timeit(fn, count)
        print(f"{name:38s} {med:10.1f} {p99:10.1f}")
    ruckig_t = np.mean([plan(qs[i], qs[(i + 1) % n], lim).duration for i in range(200)])
    trap_t = np.mean([trapezoid_duration(qs[i], qs[(i + 1) % n], vmax, amax) for i in range(200)])
    print(f"mean motion time: ruckig (jerk-limited) {ruckig_t:.3f} s, trapezoid (no jerk limit) {trap_t:.3f} s")


if __name__ == "__main__":
    main()
