"""Forward/inverse kinematics of the catalogued robots (drivers.kinematics).

Run one test: ``.venv/bin/python -m pytest tests/test_kinematics.py -k round_trip -q``
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivers import kinematics as kin
from drivers.errors import MotionTargetError, UnreachableError
from drivers.types import JointLimits, Pose

MODEL_NAMES = kin.model_names()


def _random_q(rng: np.random.Generator, m: kin.RobotModel) -> np.ndarray:
    return rng.uniform(np.maximum(m.limits.lower, -math.pi), np.minimum(m.limits.upper, math.pi))


def test_catalogue_has_required_models() -> None:
    assert {"ur5e", "ur10e"} <= set(kin.MODELS)
    for m in kin.MODELS.values():
        assert m.dof == 6 and m.analytic and m.source
        assert len(m.home) == 6
        assert all(v > 0 for v in m.limits.velocity + m.limits.acceleration + m.limits.jerk)


def test_ur10e_published_values() -> None:
    m = kin.MODELS["ur10e"]
    # UR's published DH table for the UR10e
    assert m.d == (0.1807, 0.0, 0.0, 0.17415, 0.11985, 0.11655)
    assert m.a == (0.0, -0.6127, -0.57155, 0.0, 0.0, 0.0)
    # datasheet: base and shoulder 120 °/s, other joints 180 °/s, ±360° on every joint
    assert np.allclose(np.degrees(m.limits.velocity), [120, 120, 180, 180, 180, 180])
    assert np.allclose(np.degrees(m.limits.upper), 360) and np.allclose(np.degrees(m.limits.lower), -360)
    assert m.reach == pytest.approx(1.3)


def test_ur10e_fk_at_zero_matches_published_geometry() -> None:
    m = kin.MODELS["ur10e"]
    t = kin.fk(m, [0.0] * 6)
    # zero pose: arm stretched along −x, flange offset −(d4 + d6) in y, z = d1 − d5
    assert t[:3, 3] == pytest.approx([-0.6127 - 0.57155, -(0.17415 + 0.11655), 0.1807 - 0.11985], abs=1e-12)
    assert np.allclose(t[:3, :3], [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-12)


def test_ur10e_home_is_tool_down() -> None:
    m = kin.MODELS["ur10e"]
    t = kin.fk(m, m.home)
    assert t[:3, 2] == pytest.approx([0, 0, -1], abs=1e-12)  # flange z points at the floor
    # upper arm vertical (a2 up), forearm horizontal (a3 along −x), wrist offsets
    assert t[:3, 3] == pytest.approx([-(0.57155 + 0.11985), -0.17415, 0.1807 + 0.6127 - 0.11655], abs=1e-12)


def test_tool_offset_moves_tcp_along_flange_z() -> None:
    m = kin.MODELS["ur10e"]
    mt = m.with_tool_z(0.2)
    q = m.home
    assert kin.fk(mt, q)[:3, 3] == pytest.approx(kin.fk(m, q)[:3, 3] + np.array([0, 0, -0.2]), abs=1e-12)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_round_trip_random_poses(name: str) -> None:
    m = kin.MODELS[name].with_tool_z(0.12)
    rng = np.random.default_rng(7)
    for _ in range(300):
        q = _random_q(rng, m)
        t = kin.fk(m, q)
        # seeded at the answer: the same joints come back
        assert np.allclose(kin.ik(m, t, q), q, atol=1e-9)
        # seeded nearby: some exact solution, never farther from the seed than the original
        seed = q + rng.normal(0.0, 0.05, 6)
        got = kin.ik(m, t, seed)
        assert np.abs(kin.fk(m, got) - t).max() < 1e-9
        assert np.linalg.norm(got - seed) <= np.linalg.norm(q - seed) + 1e-9


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_analytic_returns_all_branches(name: str) -> None:
    m = kin.MODELS[name]
    rng = np.random.default_rng(3)
    q = _random_q(rng, m)
    sols = kin.ik_analytic_all(m, kin.fk(m, q))
    assert 1 <= len(sols) <= 8
    for s in sols:
        assert np.abs(kin.fk(m, s) - kin.fk(m, q)).max() < 1e-9


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_numeric_fallback_round_trip(name: str) -> None:
    m = kin.MODELS[name]
    rng = np.random.default_rng(11)
    for _ in range(10):
        q = _random_q(rng, m)
        t = kin.fk(m, q)
        got = kin.ik(m, t, q + rng.normal(0, 0.1, 6), method="numeric")
        assert np.abs(kin.fk(m, got) - t).max() < 1e-5


def test_numeric_ik_for_a_non_ur_dh_robot() -> None:
    # a generic spherical-wrist DH arm (no closed form here): uses damped least squares
    lim = JointLimits((-math.pi,) * 6, (math.pi,) * 6, (2.0,) * 6, (8.0,) * 6, (80.0,) * 6)
    h = math.pi / 2
    m = kin.RobotModel(
        name="generic", a=(0.15, 0.6, 0.1, 0, 0, 0), d=(0.45, 0, 0, 0.6, 0, 0.1),
        alpha=(-h, 0, -h, h, -h, 0), theta=(0, -h, 0, 0, 0, 0),
        joint_names=tuple(f"j{i}" for i in range(1, 7)), limits=lim, reach=1.3,
    )
    assert not m.analytic
    rng = np.random.default_rng(5)
    q = rng.uniform(-1.0, 1.0, 6)
    t = kin.fk(m, q)
    got = kin.ik(m, t, q + 0.1)
    assert np.abs(kin.fk(m, got) - t).max() < 1e-5
    with pytest.raises(ValueError):
        kin.ik(m, t, q, method="analytic")


def test_ik_wraps_to_equivalent_nearest_the_seed() -> None:
    m = kin.MODELS["ur10e"]
    q = np.array(m.home)
    t = kin.fk(m, q)
    seed = q.copy()
    seed[0] += 2 * math.pi - 0.1  # near the other turn of the base joint
    got = kin.ik(m, t, seed)
    assert got[0] == pytest.approx(q[0] + 2 * math.pi)
    assert np.allclose(got[1:], q[1:], atol=1e-9)


def test_ik_respects_tightened_limits() -> None:
    m = kin.MODELS["ur10e"]
    q = np.array([0.3, -1.2, 1.4, -1.7, -1.57, 0.4])
    t = kin.fk(m, q)
    # forbid the elbow-up branch (elbow > 0): the solver must pick another branch or give up
    lim = m.limits
    tight = m.with_limits(
        JointLimits(lim.lower, (lim.upper[0], lim.upper[1], 0.0) + lim.upper[3:], lim.velocity, lim.acceleration, lim.jerk)
    )
    got = kin.ik(tight, t, q)
    assert got[2] <= 0.0
    assert np.all(got >= tight._lo - 1e-12) and np.all(got <= tight._hi + 1e-12)
    assert np.abs(kin.fk(tight, got) - t).max() < 1e-9
    # limits so tight that no branch fits
    narrow = m.with_limits(JointLimits((-0.1,) * 6, (0.1,) * 6, lim.velocity, lim.acceleration, lim.jerk))
    with pytest.raises(UnreachableError, match="none within the joint limits"):
        kin.ik(narrow, t, [0.0] * 6)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_ik_picks_the_nearest_branch_inside_the_limits(name: str) -> None:
    """Brute force: every closed-form branch, every joint moved by every whole turn inside the limits,
    the combination nearest the seed; ik must return that one (or raise when none fits)."""
    base_m = kin.MODELS[name].with_tool_z(0.12)
    lim = base_m.limits
    rng = np.random.default_rng(3)
    lower, upper = (-math.pi, -2.5, -0.5, -4.0, -math.pi, -1.0), (math.pi, 0.3, 2.8, 4.0, 0.2, 5.0)
    tight = base_m.with_limits(JointLimits(lower, upper, lim.velocity, lim.acceleration, lim.jerk))
    two_pi = 2 * math.pi
    for i in range(150):
        m = base_m if i % 2 else tight
        t = kin.fk(m, _random_q(rng, m))
        seed = rng.uniform(-7.0, 7.0, 6)
        seed_in = np.clip(seed, m._lo, m._hi)
        best, best_d2 = None, math.inf
        for sol in kin.ik_analytic_all(m, t @ m._tool_inv, float(seed[5])):
            fitted = []
            for j, s in enumerate(sol):
                turns = [s + k * two_pi for k in range(-4, 5) if m._lo[j] - 1e-9 <= s + k * two_pi <= m._hi[j] + 1e-9]
                if not turns:
                    break
                fitted.append(min(turns, key=lambda v, sd=seed_in[j]: abs(v - sd)))
            else:
                d2 = float(((np.clip(fitted, m._lo, m._hi) - seed_in) ** 2).sum())
                if d2 < best_d2:
                    best, best_d2 = np.clip(fitted, m._lo, m._hi), d2
        if best is None:
            with pytest.raises(UnreachableError):
                kin.ik(m, t, seed)
        else:
            assert np.abs(kin.ik(m, t, seed) - best).max() < 1e-12


def test_unreachable_raises_clear_error() -> None:
    m = kin.MODELS["ur10e"]
    far = Pose(3.0, 0.0, 0.5, math.pi, 0, 0).matrix()
    with pytest.raises(UnreachableError, match="out of reach") as exc:
        kin.ik(m, far, m.home)
    assert isinstance(exc.value, MotionTargetError)
    with pytest.raises(UnreachableError):
        kin.ik(m, far, m.home, method="numeric")
    # inside the shoulder-offset cylinder around the base axis
    with pytest.raises(UnreachableError):
        kin.ik(m, Pose(0.0, 0.0, 0.6, math.pi, 0, 0).matrix(), m.home)


def test_ik_rejects_malformed_input() -> None:
    m = kin.MODELS["ur5e"]
    with pytest.raises(ValueError):
        kin.ik(m, np.full((4, 4), np.nan), m.home)
    with pytest.raises(ValueError):
        kin.ik(m, np.eye(4), [0.0] * 5)


def test_base_mounting() -> None:
    m = kin.MODELS["ur5e"]
    base = kin.base_transform(1.0, -0.5, 0.8, math.pi / 2)
    q = np.array(m.home) + 0.2
    t_cell = kin.fk(m, q, base=base)
    assert np.allclose(t_cell, base @ kin.fk(m, q))
    assert np.allclose(kin.ik(m, t_cell, q, base=base), q, atol=1e-9)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_jacobian_matches_finite_differences(name: str) -> None:
    m = kin.MODELS[name].with_tool_z(0.1)
    rng = np.random.default_rng(1)
    eps = 1e-7
    for _ in range(5):
        q = _random_q(rng, m)
        j = kin.jacobian(m, q)
        t0 = kin.fk(m, q)
        for i in range(6):
            dq = np.zeros(6)
            dq[i] = eps
            t1 = kin.fk(m, q + dq)
            err = kin.pose_error(t0, t1) / eps  # (dp, dθ) per radian
            assert np.allclose(j[:, i], err, atol=1e-5)


def test_analytic_ik_is_fast() -> None:
    import time

    m = kin.MODELS["ur10e"]
    t = kin.fk(m, m.home)
    seed = np.array(m.home) + 0.05
    kin.ik(m, t, seed)
    n = 300
    t0 = time.perf_counter()
    for _ in range(n):
        kin.ik(m, t, seed)
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 1e-3  # typically ~25 µs; generous bound for loaded CI machines
