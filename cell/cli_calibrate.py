"""``axcell calibrate``: eye-to-hand calibration of a cell's fixed camera against its arm.

    axcell calibrate FILE [--poses N] [--noise-px S] [--noise-mm S] [--noise-deg S]
                          [--seed N] [--method shah] [--out calib.json]

In a simulated cell it mounts a ChArUco board on the arm's tool (see
:mod:`sim.charuco`), runs the ``hand_eye_calibration`` skill with the
simulated clock and prints the recovered camera pose, the error figures and
the error against the simulator's true camera pose.  On hardware it runs the
same skill on the real devices (the board must already be on the tool; pass
``--centre`` with a TCP position under the camera).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .cliargs import _finite, seed_arg, writable_file

MIN_POSES = 6   # the skill's default min_poses: fewer views can never give a calibration
from .config import load_cell


def _poses(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not MIN_POSES <= v <= 200:
        raise argparse.ArgumentTypeError(f"--poses must be between {MIN_POSES} and 200 (the solver needs "
                                         f"{MIN_POSES} usable views), got {v}")
    return v


def _bounded(lo: float, hi: float, *, lo_open: bool = False) -> Any:
    """An argument type: a finite number in [lo, hi] (``(lo, hi]`` with ``lo_open``)."""
    def parse(text: str) -> float:
        v = _finite(text)
        if not ((lo < v) if lo_open else (lo <= v)) or not v <= hi:
            raise argparse.ArgumentTypeError(f"expected a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], "
                                             f"got {text!r}")
        return v
    return parse


def register(sub: Any) -> None:
    """Add the ``calibrate`` subcommand to the ``axcell`` parser."""
    from skills.vision.handeye import METHODS

    c = sub.add_parser("calibrate", help="hand-eye (eye-to-hand) calibration of the cell camera",
                       description="Compute the camera-to-robot transform from ChArUco board views.")
    c.add_argument("file", help="cell file")
    c.add_argument("--poses", type=_poses, default=20, help="board views to collect (default 20)")
    c.add_argument("--noise-px", type=_bounded(0, 50), default=0.0, help="sim: image corner noise, px (default 0)")
    c.add_argument("--noise-mm", type=_bounded(0, 100), default=0.0, help="sim: robot pose noise per stop, mm (default 0)")
    c.add_argument("--noise-deg", type=_bounded(0, 45), default=None,
                   help="sim: robot pose rotation noise per stop, deg (default 0.05 × --noise-mm)")
    c.add_argument("--seed", type=seed_arg, default=0, help="pose sampling and noise seed")
    c.add_argument("--method", choices=METHODS, default="shah", help="closed-form solver (default shah)")
    c.add_argument("--no-refine", action="store_true", help="report the closed-form solution only")
    c.add_argument("--arm", help="arm device (default: the only/first arm)")
    c.add_argument("--camera", help="camera device (default: the first camera)")
    c.add_argument("--centre", type=_bounded(-50, 50), nargs=3, metavar=("X", "Y", "Z"),
                   help="TCP centre of the sampling region (m); sim default: board centre under the camera")
    c.add_argument("--standoff", type=_bounded(0.05, 5.0, lo_open=True), default=0.5,
                   help="sim: camera → board distance at the centre (m)")
    c.add_argument("--out", type=Path, help="write the calibration and its figures as JSON")
    c.add_argument("--json", action="store_true", help="print the JSON instead of the summary")
    c.set_defaults(func=cmd_calibrate)


def _pick(devices: dict[str, Any], contract: type, name: str | None, what: str) -> Any:
    from .cliargs import UserError

    if name is not None:
        dev = devices.get(name)
        if dev is None:
            raise UserError(f"no device named {name!r} (have {', '.join(sorted(devices))})", 2)
        if not isinstance(dev, contract):
            raise UserError(f"device {name!r} is not an {what}", 2)
        return dev
    found = [d for d in devices.values() if isinstance(d, contract)]
    if not found:
        raise UserError(f"the cell has no {what}", 2)
    return found[0]


async def _calibrate(args: argparse.Namespace) -> dict[str, Any]:
    from drivers.arm import Arm
    from drivers.camera import Camera
    from skills.base import SkillContext
    from skills.calibrate import HandEyeCalibration
    from skills.facts import CellFacts

    from .cliargs import UserError
    from .runtime import Cell

    cfg = load_cell(args.file)
    cell = Cell(cfg, seed=args.seed)
    arm = _pick(cell.devices, Arm, args.arm, "arm")
    cam = _pick(cell.devices, Camera, args.camera, "camera")
    if cam.calibration is None:
        raise UserError(f"camera {cam.name!r} has no intrinsics", 2)
    await arm.connect()
    await cam.connect()
    params: dict[str, Any] = {"poses": args.poses, "seed": args.seed, "method": args.method,
                              "refine": not args.no_refine, "standoff_m": args.standoff}
    truth: np.ndarray | None = None
    mount = None
    if cell.world is not None:
        from sim.charuco import BoardMount, mount_transform

        noise_deg = args.noise_deg if args.noise_deg is not None else 0.05 * args.noise_mm
        mount = BoardMount(arm, mount_transform(), noise_px=args.noise_px,
                           image_noise=2.0 if args.noise_px > 0 else 0.0, blur_px=0.0,
                           noise_mm=args.noise_mm, noise_deg=noise_deg, seed=args.seed)
        cell.world.calibration_board = mount
        # true camera pose in the arm's pose frame (the cell frame)
        truth = np.asarray(cam.calibration.T_cell_cam, float)
        params["truth_T_base_cam"] = truth.tolist()
        if args.centre is None:
            start = await arm.pose()
            Tc = truth
            board_centre = Tc[:3, 3] + args.standoff * Tc[:3, 2]
            T = mount.T_tcp_board
            w, h = mount.spec.size_m
            offset = T[:3, :3] @ np.array([w / 2, h / 2, 0.0]) + T[:3, 3]
            params["centre"] = tuple(float(v) for v in board_centre - start.rotation() @ offset)
    if args.centre is not None:
        params["centre"] = tuple(args.centre)
        await _check_centre(arm, tuple(args.centre))
    ctx = SkillContext(devices={"arm": arm, "camera": cam}, clock=cell.clock, facts=CellFacts())
    skill = HandEyeCalibration()
    wall0 = time.perf_counter()
    if cell.world is not None:
        task = asyncio.ensure_future(skill.run(ctx, params))
        task.add_done_callback(lambda _t: cell.clock.stop())
        await cell.clock.run()
        if not task.done():
            task.cancel()
            raise UserError(f"calibration did not finish (simulated t={cell.clock.now():.1f} s)")
        result = task.result()
    else:
        result = await skill.run(ctx, params)
    wall = time.perf_counter() - wall0
    await arm.close()
    await cam.close()
    out: dict[str, Any] = {"cell": cfg.cell.name, "arm": arm.name, "camera": cam.name,
                           "status": result.status.value, "message": result.message,
                           "wall_s": round(wall, 3), "cell_time_s": round(cell.clock.now(), 3),
                           "noise": {"px": args.noise_px, "mm": args.noise_mm,
                                     "deg": mount.noise_deg if mount is not None else None},
                           **result.data}
    if mount is not None and "T_tcp_board" in result.data:
        from skills.vision.handeye import pose_error

        mm, deg = pose_error(np.asarray(result.data["T_tcp_board"]["matrix"]), mount.T_tcp_board)
        out["T_tcp_board_vs_truth"] = {"trans_mm": round(mm, 4), "rot_deg": round(deg, 5)}
    return out


async def _check_centre(arm: Any, centre: tuple[float, float, float]) -> None:
    """Refuse a ``--centre`` the arm cannot reach (workspace, IK, joint limits) before anything moves.

    The skill holds the tool at the arm's current orientation around the centre, so that is the pose checked,
    with the arm's own checks (the ones ``move_pose`` applies): an unreachable centre would only have every
    sampled view skipped and end in "0 usable views".
    """
    from drivers.errors import MotionTargetError
    from drivers.types import Pose

    from .cliargs import UserError

    start = await arm.pose()
    target = Pose(*centre, start.roll, start.pitch, start.yaw)
    try:
        arm.check_pose(target)
        arm.check_joints(await arm.solve_ik(target))
    except MotionTargetError as e:
        x, y, z = centre
        raise UserError(f"--centre {x:g} {y:g} {z:g}: arm {arm.name!r} cannot reach it with the tool as it is now "
                        f"({e}); give a point within reach under the camera (nothing moved)", 2) from None


def _fmt_pose(p: dict[str, Any]) -> str:
    x, y, z = p["xyz_mm"]
    r, pi, yw = p["rpy_deg"]
    return f"xyz [{x:9.3f} {y:9.3f} {z:9.3f}] mm   rpy [{r:9.4f} {pi:9.4f} {yw:9.4f}] deg"


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .cliargs import UserError

    if args.out is not None:
        writable_file(args.out, "the calibration JSON")  # before the arm moves, not after
        if args.out.resolve() == Path(args.file).resolve():
            raise UserError(f"{args.out}: --out would overwrite the cell file; give another file name", 2)
    data = asyncio.run(_calibrate(args))
    if args.out is not None:
        try:
            args.out.write_text(json.dumps(data, indent=2))
        except OSError as e:
            raise UserError(f"{args.out}: cannot write the calibration ({e.strerror or e})", 2) from None
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"{data['cell']}: {data['camera']} → {data['arm']}: {data['status']} — {data['message']}")
        if "T_base_cam" in data:
            r = data["residuals"]
            print(f"  T_base_cam   {_fmt_pose(data['T_base_cam'])}")
            print(f"  T_tcp_board  {_fmt_pose(data['T_tcp_board'])}")
            print(f"  views {data['poses']} used, {len(data['skipped'])} skipped; method {data['method']}"
                  f"{' + LM refinement' if data['refined'] else ''}")
            print(f"  reprojection rms {data['reprojection_rms_px']:.3f} px (per-view PnP "
                  f"{data['pnp_rms_px']:.3f} px)")
            print(f"  consistency  {r['trans_mm_rms']:.3f} mm rms / {r['trans_mm_max']:.3f} mm max, "
                  f"{r['rot_deg_rms']:.4f}° rms / {r['rot_deg_max']:.4f}° max")
            if "vs_truth" in data:
                v = data["vs_truth"]
                print(f"  vs sim truth: translation {v['trans_mm']:.3f} mm, rotation {v['rot_deg']:.4f}°")
            else:
                v = data["vs_configured"]
                print(f"  vs configured camera pose: {v['trans_mm']:.3f} mm, {v['rot_deg']:.4f}°")
            if "T_tcp_board_vs_truth" in data:
                v = data["T_tcp_board_vs_truth"]
                print(f"  board mount vs sim truth: {v['trans_mm']:.3f} mm, {v['rot_deg']:.4f}°")
            print(f"  {data['wall_s']:.2f} s wall, {data['cell_time_s']:.1f} s cell time")
        if args.out is not None:
            print(f"  wrote {args.out}")
    if data["status"] != "SUCCESS":
        raise UserError(data["message"] or "calibration failed")
    return 0
