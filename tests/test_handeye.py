"""Hand-eye (eye-to-hand) calibration: solver math, board rendering, the skill in the sim cell, the CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from skills.vision.handeye import (METHODS, BoardSpec, BoardView, Detection, calibrate_eye_to_hand,
                                   detect_charuco, estimate_board_pose, invert, pose_error, solve_eye_to_hand)

from tests.conftest import DEMO, REPO, run_sim

K = np.array([[900.0, 0, 320], [0, 900.0, 240], [0, 0, 1]])


def _rand_T(rng: np.random.Generator, rot: float, trans: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rng.normal(0, rot, 3))[0]
    T[:3, 3] = rng.normal(0, trans, 3)
    return T


# -- pure math --------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_solver_recovers_exact_transforms_from_random_poses(method):
    rng = np.random.default_rng(7)
    X, Z = _rand_T(rng, 1.0, 0.6), _rand_T(rng, 0.6, 0.15)
    A = [_rand_T(rng, 0.5, 0.3) for _ in range(10)]
    B = [invert(X) @ a @ Z for a in A]
    Xs, Zs = solve_eye_to_hand(A, B, method)
    assert pose_error(Xs, X)[0] < 1e-6 and pose_error(Xs, X)[1] < 1e-6
    assert pose_error(Zs, Z)[0] < 1e-6 and pose_error(Zs, Z)[1] < 1e-5


def test_solver_needs_three_poses_and_known_method():
    T = [np.eye(4)] * 2
    with pytest.raises(ValueError):
        solve_eye_to_hand(T, T)
    with pytest.raises(ValueError):
        solve_eye_to_hand([np.eye(4)] * 3, [np.eye(4)] * 3, "nope")


def _synthetic_views(rng, spec, X, Z, n, noise_px):
    """Robot poses around a camera looking down at the board, with projected (noisy) corners."""
    obj = spec.object_corners()
    robot, views = [], []
    while len(views) < n:
        Tb = np.eye(4)
        Tb[:3, :3] = cv2.Rodrigues(np.array([np.pi, 0, 0]) + rng.normal(0, 0.25, 3))[0]
        Tb[:3, 3] = [0.0, 0.0, 0.3] + rng.normal(0, 0.03, 3)
        T_cam_board = invert(X) @ Tb @ Z
        rvec = cv2.Rodrigues(T_cam_board[:3, :3])[0]
        uv, _ = cv2.projectPoints(obj, rvec, T_cam_board[:3, 3], K, np.zeros(5))
        uv = uv.reshape(-1, 2) + rng.normal(0, noise_px, (len(obj), 2))
        det = Detection(np.arange(len(obj)), uv, obj, 0)
        v = estimate_board_pose(det, K, None)
        if v is not None:
            robot.append(Tb)
            views.append(v)
    return robot, views


def test_refinement_beats_the_closed_form_under_pixel_noise():
    rng = np.random.default_rng(3)
    spec = BoardSpec()
    X = np.eye(4)
    X[:3, :3] = cv2.Rodrigues(np.array([np.pi, 0, 0.1]))[0]
    X[:3, 3] = [0.02, -0.01, 0.8]
    Z = np.eye(4)
    Z[:3, 3] = [-0.07, -0.05, 0.01]
    robot, views = _synthetic_views(rng, spec, X, Z, 15, noise_px=0.3)
    closed = calibrate_eye_to_hand(robot, views, K, None, spec, refine=False)
    fine = calibrate_eye_to_hand(robot, views, K, None, spec, refine=True)
    e_closed, e_fine = pose_error(closed.T_base_cam, X), pose_error(fine.T_base_cam, X)
    assert e_fine[0] < 1.0 and e_fine[1] < 0.1
    assert e_fine[0] <= e_closed[0] + 1e-6
    assert fine.reprojection_rms_px <= closed.reprojection_rms_px
    assert 0.15 < fine.reprojection_rms_px < 0.6  # ≈ the injected 0.3 px
    assert fine.residuals["trans_mm_rms"] > 0 and len(fine.residuals["per_pose_mm"]) == 15


def test_sim_and_skill_board_definitions_agree():
    from sim.charuco import BoardSpec as SimBoard

    sim_fields = {f.name: getattr(SimBoard(), f.name) for f in dataclasses.fields(SimBoard)}
    assert sim_fields == BoardSpec().model_dump()


def test_rendered_board_is_detected_at_its_true_pose():
    from sim.charuco import BoardSpec as SimBoard
    from sim.charuco import render_board

    spec = BoardSpec()
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.array([0.35, -0.25, 0.4]))[0]
    T[:3, 3] = [-0.06, -0.04, 0.5]
    img = render_board(np.full((480, 640, 3), 60, np.uint8), SimBoard(), T, K)
    det = detect_charuco(img, spec)
    assert len(det.ids) >= 20
    view = estimate_board_pose(det, K, None)
    assert view is not None and view.rms_px < 0.2
    mm, deg = pose_error(view.T_cam_board, T, spec.centre)
    assert mm < 0.2 and deg < 0.2
    # an empty image: no corners, no pose
    empty = detect_charuco(np.zeros((100, 100), np.uint8), spec)
    assert len(empty.ids) == 0 and estimate_board_pose(empty, K, None) is None


# -- the skill in the sim cell ---------------------------------------------------------------
def _sim_calibration(params: dict, *, mount: bool = True, **noise):
    from cell.config import load_cell
    from cell.runtime import Cell
    from sim.charuco import BoardMount, mount_transform
    from skills.base import SkillContext
    from skills.calibrate import HandEyeCalibration
    from skills.facts import CellFacts

    cell = Cell(load_cell(DEMO), seed=1)
    arm, cam = cell.devices["robot"], cell.devices["top_camera"]
    T_mount = mount_transform()
    truth = np.asarray(cam.calibration.T_cell_cam, float)

    async def go():
        await arm.connect()
        await cam.connect()
        if mount:
            cell.world.calibration_board = BoardMount(arm, T_mount, **noise)
        start = await arm.pose()
        centre = truth[:3, 3] + 0.5 * truth[:3, 2] - start.rotation() @ (
            T_mount[:3, :3] @ BoardSpec().centre + T_mount[:3, 3])
        ctx = SkillContext(devices={"arm": arm, "camera": cam}, clock=cell.clock, facts=CellFacts())
        p = {"centre": tuple(centre), "truth_T_base_cam": truth.tolist(), **params}
        return await HandEyeCalibration().run(ctx, p), start, await arm.pose()

    res, start, end = run_sim(cell.clock, go())
    return res, truth, T_mount, start, end


def test_skill_recovers_sim_camera_pose_without_noise():
    res, truth, T_mount, start, end = _sim_calibration({"poses": 15})
    assert res.ok, res.message
    d = res.data
    est = np.asarray(d["T_base_cam"]["matrix"])
    mm, deg = pose_error(est, truth)
    assert mm < 1.0 and deg < 0.1, (mm, deg)
    assert d["vs_truth"]["trans_mm"] == pytest.approx(mm, abs=1e-3)
    assert pose_error(np.asarray(d["T_tcp_board"]["matrix"]), T_mount)[0] < 1.0
    assert d["poses"] == 15 and d["reprojection_rms_px"] < 0.3
    assert np.allclose(start.position, end.position, atol=1e-6)  # back where it started


def test_skill_reports_its_error_with_noise():
    res, truth, *_ = _sim_calibration({"poses": 20},
                                      noise_px=0.3, image_noise=2.0, noise_mm=0.2, noise_deg=0.01, seed=2)
    assert res.ok, res.message
    d = res.data
    mm, deg = pose_error(np.asarray(d["T_base_cam"]["matrix"]), truth)
    assert mm < 4.0 and deg < 0.5, (mm, deg)  # sane bound (typically ≈ 0.2–1.3 mm / 0.03–0.16°)
    assert 0.2 < d["reprojection_rms_px"] < 1.5
    r = d["residuals"]
    assert r["trans_mm_rms"] > 0.05 and r["rot_deg_rms"] > 0.01
    assert {"trans_mm_rms", "trans_mm_max", "rot_deg_rms", "rot_deg_max"} <= set(r)


def test_unreachable_poses_are_skipped_without_failing():
    # centre the region on the workspace edge (x >= -0.4 m in the demo cell): many targets are refused
    res, truth, *_ = _sim_calibration({"poses": 8, "xy_range_m": 0.04, "seed": 5})
    assert res.ok
    base = res.data["attempts"]
    res2, *_ = _sim_calibration({"poses": 8, "centre": (-0.395, 0.6, 0.29), "xy_range_m": 0.04, "seed": 5})
    assert res2.ok, res2.message
    reasons = {s["reason"] for s in res2.data["skipped"]}
    assert "WorkspaceError" in reasons
    assert res2.data["attempts"] > base and res2.data["poses"] == 8
    assert res2.data["vs_truth"]["trans_mm"] < 1.0


def test_no_board_in_view_fails_cleanly():
    res, *_ = _sim_calibration({"poses": 5, "max_attempts": 4}, mount=False)
    assert not res.ok and res.status.value == "EXECUTION_FAILURE"
    assert all(s["reason"] == "board_not_seen" for s in res.data["skipped"])


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_calibrate_end_to_end(tmp_path):
    out = tmp_path / "calib.json"
    proc = subprocess.run([sys.executable, "-m", "cell.cli", "calibrate", str(DEMO), "--poses", "12",
                           "--noise-px", "0.2", "--noise-mm", "0.1", "--seed", "3", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "T_base_cam" in proc.stdout and "vs sim truth" in proc.stdout
    data = json.loads(out.read_text())
    assert data["status"] == "SUCCESS" and data["poses"] == 12
    assert data["vs_truth"]["trans_mm"] < 4.0 and data["vs_truth"]["rot_deg"] < 0.5
    assert len(data["T_base_cam"]["matrix"]) == 4
    bad = subprocess.run([sys.executable, "-m", "cell.cli", "calibrate", str(DEMO), "--poses", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--poses" in bad.stderr
