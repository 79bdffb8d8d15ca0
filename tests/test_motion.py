"""Jerk-limited joint trajectories (sim.motion, on ruckig)."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.kinematics import MODELS
from sim.motion import PlanningError, path_duration, plan, plan_path

LIM = MODELS["ur10e"].limits
Q0 = np.array(MODELS["ur10e"].home)
Q1 = Q0 + np.array([1.2, 0.4, -0.6, 0.3, -0.2, 2.5])


def _sample(traj, n: int = 400):
    ts = np.linspace(0.0, traj.duration, n)
    q, v, a = zip(*(traj.at(float(t)) for t in ts))
    return np.array(q), np.array(v), np.array(a)


def test_duration_positive_and_endpoints_exact() -> None:
    tr = plan(Q0, Q1, LIM)
    assert tr.duration > 0
    q, v, a = tr.at(0.0)
    assert np.allclose(q, Q0, atol=1e-12) and np.allclose(v, 0) and np.allclose(a, 0)
    q, v, a = tr.at(tr.duration)
    assert np.array_equal(q, Q1) and not v.any() and not a.any()
    q, _, _ = tr.at(tr.duration + 5.0)
    assert np.array_equal(q, Q1)
    # ruckig's own end state is exact to rounding too
    q_end = tr.position(tr.duration * (1 - 1e-12))
    assert np.allclose(q_end, Q1, atol=1e-9)


def test_zero_motion_has_zero_duration() -> None:
    tr = plan(Q0, Q0, LIM)
    assert tr.duration == 0.0
    assert np.array_equal(tr.at(0.0)[0], Q0)


@pytest.mark.parametrize("speed", [1.0, 0.5, 0.2])
def test_limits_respected_when_sampled(speed: float) -> None:
    tr = plan(Q0, Q1, LIM, speed=speed)
    _, v, a = _sample(tr)
    vmax = np.array(LIM.velocity) * speed
    amax = np.array(LIM.acceleration) * speed**2
    assert np.all(np.abs(v) <= vmax * (1 + 1e-9) + 1e-9)
    assert np.all(np.abs(a) <= amax * (1 + 1e-9) + 1e-9)
    # and the dominant joint actually reaches its velocity limit (time-optimal, long move)
    assert np.max(np.abs(v)[:, 5]) == pytest.approx(vmax[5], rel=1e-3)


def test_monotone_rest_to_rest_no_overshoot() -> None:
    tr = plan(Q0, Q1, LIM)
    q, _, _ = _sample(tr)
    lo, hi = np.minimum(Q0, Q1), np.maximum(Q0, Q1)
    assert np.all(q >= lo - 1e-9) and np.all(q <= hi + 1e-9)


def test_speed_scaling_is_exact_time_scaling() -> None:
    full = plan(Q0, Q1, LIM).duration
    for s in (0.8, 0.5, 0.25):
        assert plan(Q0, Q1, LIM, speed=s).duration == pytest.approx(full / s, rel=1e-9)


def test_synchronised_all_joints_finish_together() -> None:
    tr = plan(Q0, Q1, LIM)
    _, v, _ = _sample(tr)
    # every moving joint still moves just before the end
    v_late = np.abs(tr.at(tr.duration * 0.9)[1])
    assert np.all(v_late > 0)
    assert v.shape[1] == 6


def test_moving_start_continuous() -> None:
    first = plan(Q0, Q1, LIM)
    q, v, a = first.at(first.duration / 2)
    second = plan(q, Q0, LIM, v0=v, a0=a)
    q2, v2, a2 = second.at(0.0)
    assert np.allclose(q2, q) and np.allclose(v2, v) and np.allclose(a2, a)
    assert np.array_equal(second.at(second.duration)[0], Q0)


def test_plan_path_segments_stop_at_waypoints() -> None:
    wps = [Q0, Q1, Q0 + 0.3, Q0]
    segs = plan_path(wps, LIM, speed=0.7)
    assert len(segs) == 3
    for seg, a, b in zip(segs, wps, wps[1:]):
        assert np.allclose(seg.at(0)[0], a) and np.array_equal(seg.at(seg.duration)[0], b)
        assert not seg.at(seg.duration)[1].any()
    assert path_duration(segs) == pytest.approx(sum(s.duration for s in segs))
    with pytest.raises(ValueError):
        plan_path([Q0], LIM)


def test_invalid_input() -> None:
    with pytest.raises(ValueError):
        plan(Q0, Q1, LIM, speed=0.0)
    with pytest.raises(ValueError):
        plan(Q0, Q1, LIM, speed=1.5)
    with pytest.raises(ValueError):
        plan(Q0[:5], Q1, LIM)
    with pytest.raises(PlanningError):
        plan(Q0, Q1 * np.nan, LIM)
