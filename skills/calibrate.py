"""Eye-to-hand calibration skill: the fixed camera's pose in the robot frame from ChArUco views.

The board is carried by the arm (its mounting need not be known: the solve
recovers it).  The skill samples TCP poses in a region under the camera —
tilts about two axes and turns about the tool axis, because rotation
diversity matters more than the number of poses — moves through the ones the
Arm contract accepts (unreachable, out-of-workspace or out-of-limit targets
are skipped without motion), captures, detects the ChArUco corners, measures
the board pose by PnP and solves ``T_base_tcp · T_tcp_board = T_base_cam ·
T_cam_board`` (see :mod:`skills.vision.handeye`).

"Base" is the frame of :meth:`Arm.pose` — the cell frame, which is the robot
base frame when the robot sits at the cell origin.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from pydantic import Field

from drivers.arm import Arm
from drivers.camera import Camera
from drivers.errors import MotionTargetError
from drivers.types import Pose

from .base import Skill, SkillContext, SkillParams, SkillResult
from .vision.handeye import (BoardSpec, BoardView, Method, calibrate_eye_to_hand, detect_charuco,
                             estimate_board_pose, pose_error, pose_summary)

_GOLDEN = math.pi * (3.0 - math.sqrt(5.0))


def _rot_axis(axis: np.ndarray, angle: float) -> np.ndarray:
    a = np.asarray(axis, float)
    a = a / np.linalg.norm(a)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * (K @ K)


def sample_poses(centre: np.ndarray, R_nominal: np.ndarray, n: int, *, tilt_deg: float, yaw_deg: float,
                 xy_range_m: float, z_range_m: float, seed: int) -> list[Pose]:
    """``n`` TCP poses around ``centre``: tilt about a tool-plane axis, turn about the tool axis.

    Tilt directions follow a golden-angle sequence (jittered) so that the
    rotation axes spread evenly; tilt magnitudes lie in [0.4, 1]·``tilt_deg``.
    """
    rng = np.random.default_rng(seed)
    out = []
    phase = rng.uniform(0, 2 * math.pi)
    for k in range(n):
        phi = phase + k * _GOLDEN + rng.uniform(-0.2, 0.2)
        tilt = math.radians(tilt_deg) * math.sqrt(rng.uniform(0.16, 1.0))
        yaw = math.radians(yaw_deg) * rng.uniform(-1.0, 1.0)
        R = R_nominal @ _rot_axis(np.array([0.0, 0.0, 1.0]), yaw) @ _rot_axis(
            np.array([math.cos(phi), math.sin(phi), 0.0]), tilt)
        p = centre + np.array([rng.uniform(-xy_range_m, xy_range_m), rng.uniform(-xy_range_m, xy_range_m),
                               rng.uniform(-z_range_m, z_range_m)])
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, p
        out.append(Pose.from_matrix(T))
    return out


class HandEyeCalibration(Skill, name="hand_eye_calibration"):
    """Eye-to-hand calibration: camera pose in the robot frame from ChArUco views of a board on the tool."""

    class Params(SkillParams):
        poses: int = Field(15, ge=3, le=200, description="views to collect (15–25 recommended)")
        max_attempts: int | None = Field(None, ge=1, le=2000,
                                         description="sampled poses to try at most (default 4 × poses)")
        centre: tuple[float, float, float] | None = Field(
            None, description="TCP centre of the sampling region (m, arm frame); default: on the camera's "
                              "configured optical axis, standoff_m below it")
        standoff_m: float = Field(0.5, gt=0.05, le=5.0)
        rpy_deg: tuple[float, float, float] | None = Field(
            None, description="nominal tool orientation (deg); default: the arm's orientation at the start")
        tilt_deg: float = Field(25.0, ge=0, le=60, description="tilt range about axes in the tool plane")
        yaw_deg: float = Field(20.0, ge=0, le=180, description="turn range about the tool axis")
        xy_range_m: float = Field(0.03, ge=0, le=1.0)
        z_range_m: float = Field(0.05, ge=0, le=1.0)
        board: BoardSpec = Field(default_factory=BoardSpec)
        min_corners: int = Field(8, ge=4, description="views with fewer ChArUco corners are dropped")
        min_poses: int = Field(6, ge=3, description="fail below this many usable views")
        method: Method = "shah"
        refine: bool = Field(True, description="refine by chain reprojection error (LM) after the closed form")
        speed: float = Field(0.5, gt=0, le=1)
        settle_s: float = Field(0.2, ge=0, le=10)
        seed: int = 0
        return_to_start: bool = True
        truth_T_base_cam: list[list[float]] | None = Field(
            None, description="known camera pose (4×4) to report the error against, when available")

    roles = {"arm": Arm, "camera": Camera}

    async def preconditions(self, ctx: SkillContext, params: Params) -> str | None:  # type: ignore[override]
        cam = ctx.device("camera", Camera)
        if cam.calibration is None:
            return f"{cam.name} has no intrinsics (K); calibrate the camera first"
        return None

    async def on_cancel(self, ctx: SkillContext) -> None:
        arm = ctx.devices.get("arm")
        if isinstance(arm, Arm) and arm.connected:
            await arm.stop()

    async def execute(self, ctx: SkillContext, params: Params) -> SkillResult:  # type: ignore[override]
        arm = ctx.device("arm", Arm)
        cam = ctx.device("camera", Camera)
        calib = cam.calibration
        assert calib is not None
        K, dist = np.asarray(calib.K, float), np.asarray(calib.dist, float)
        start_q = await arm.joints()
        start = await arm.pose()
        if params.rpy_deg is not None:
            r, p, y = (math.radians(v) for v in params.rpy_deg)
            R_nom = Pose(0, 0, 0, r, p, y).rotation()
        else:
            R_nom = start.rotation()
        if params.centre is not None:
            centre = np.asarray(params.centre, float)
        else:
            Tc = np.asarray(calib.T_cell_cam, float)
            centre = Tc[:3, 3] + params.standoff_m * Tc[:3, 2]
        attempts = params.max_attempts or 4 * params.poses
        candidates = sample_poses(centre, R_nom, attempts, tilt_deg=params.tilt_deg, yaw_deg=params.yaw_deg,
                                  xy_range_m=params.xy_range_m, z_range_m=params.z_range_m, seed=params.seed)
        robot: list[np.ndarray] = []
        views: list[BoardView] = []
        skipped: list[dict[str, Any]] = []
        detect_ms: list[float] = []
        for i, target in enumerate(candidates):
            if len(views) >= params.poses:
                break
            ctx.feedback(len(views) / params.poses, f"view {len(views) + 1}/{params.poses}")
            try:
                await arm.move_pose(target, speed=params.speed)
            except MotionTargetError as e:  # refused before any motion
                skipped.append({"attempt": i, "reason": type(e).__name__, "detail": str(e)})
                continue
            if params.settle_s:
                await ctx.clock.sleep(params.settle_s)
            reported = await arm.pose()
            frame = await cam.capture()
            t0 = time.perf_counter()
            det = detect_charuco(frame.image, params.board)
            view = estimate_board_pose(det, K, dist, params.min_corners)
            detect_ms.append((time.perf_counter() - t0) * 1000.0)
            if view is None:
                skipped.append({"attempt": i, "reason": "board_not_seen", "detail": f"{len(det.ids)} corners"})
                continue
            robot.append(reported.matrix())
            views.append(view)
            ctx.emit("calibration_view", {"view": len(views), "corners": len(det.ids), "rms_px": view.rms_px})
        if params.return_to_start:
            try:
                await arm.move_joints(start_q, speed=params.speed)
            except MotionTargetError:
                pass
        if len(views) < params.min_poses:
            return SkillResult.failure(
                f"only {len(views)} usable views of the board (need {params.min_poses}); "
                f"{len(skipped)} poses skipped", views=len(views), skipped=skipped)
        t0 = time.perf_counter()
        try:
            res = calibrate_eye_to_hand(robot, views, K, dist, params.board, method=params.method,
                                        refine=params.refine)
        except Exception as e:  # noqa: BLE001 - ValueError, LinAlgError, cv2.error
            return SkillResult.failure(f"hand-eye solve failed: {e}", views=len(views), skipped=skipped)
        solve_ms = (time.perf_counter() - t0) * 1000.0
        data: dict[str, Any] = res.to_dict()
        data["skipped"] = skipped
        data["attempts"] = len(views) + len(skipped)
        data["corners_per_view"] = [int(len(v.detection.ids)) for v in views]
        data["detect_ms_median"] = round(float(np.median(detect_ms)), 3) if detect_ms else None
        data["solve_ms"] = round(solve_ms, 2)
        data["frame"] = "arm"
        data["camera"] = cam.name
        configured = np.asarray(calib.T_cell_cam, float)
        mm, deg = pose_error(res.T_base_cam, configured)
        data["vs_configured"] = {"trans_mm": round(mm, 4), "rot_deg": round(deg, 5),
                                 "configured": pose_summary(configured)}
        if params.truth_T_base_cam is not None:
            truth = np.asarray(params.truth_T_base_cam, float)
            mm, deg = pose_error(res.T_base_cam, truth)
            data["vs_truth"] = {"trans_mm": round(mm, 4), "rot_deg": round(deg, 5)}
        r = res.residuals
        msg = (f"T_base_cam from {res.poses} views ({len(skipped)} skipped): reprojection "
               f"{res.reprojection_rms_px:.3f} px, consistency {r['trans_mm_rms']:.3f} mm / "
               f"{r['rot_deg_rms']:.4f}° rms")
        return SkillResult.success(msg, **data)
