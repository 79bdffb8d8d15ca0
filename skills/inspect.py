"""Inspection skills: capture, inspect from pixels, locate the tray, decide its route."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Protocol

import numpy as np
from pydantic import Field

from drivers.camera import Camera
from drivers.conveyor import Conveyor

from .base import Skill, SkillContext, SkillParams, SkillResult
from .facts import TrackedPart
from .vision.worker import judge

log = logging.getLogger(__name__)


def roi_box(cal: Any, cx: float, cy: float, roi_m: tuple[float, float], plane_z: float,
            shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1) of a ``roi_m`` region centred on cell point (cx, cy).

    The box size depends only on the calibration and ``roi_m`` (not on where
    the part is), so every crop of one camera has the same shape; it is
    shifted, not shrunk, to stay inside the image.
    """
    u, v = cal.plane_to_pixel(cx, cy, plane_z)
    ux, _ = cal.plane_to_pixel(cx + roi_m[0], cy, plane_z)
    _, vy = cal.plane_to_pixel(cx, cy + roi_m[1], plane_z)
    h_img, w_img = shape[0], shape[1]
    w = min(w_img, max(16, int(round(abs(ux - u)))))
    h = min(h_img, max(16, int(round(abs(vy - v)))))
    x0 = min(max(0, int(round(u - w / 2))), w_img - w)
    y0 = min(max(0, int(round(v - h / 2))), h_img - h)
    return x0, y0, x0 + w, y0 + h


def default_roi_m(products: dict[str, dict[str, float]]) -> tuple[float, float]:
    """A region of interest that holds the largest product with room for yaw jitter and tracking error.

    ``products``: name → ``{"length_m", "width_m", ...}`` (the cell's product sizes).  The part's long
    axis runs along the flow, so the box is its length plus 6 cm by its width plus 8 cm.
    """
    if not products:
        return (0.25, 0.22)
    length = max(float(p["length_m"]) for p in products.values())
    width = max(float(p["width_m"]) for p in products.values())
    return (round(length + 0.06, 4), round(width + 0.08, 4))


def default_plane_z(products: dict[str, dict[str, float]]) -> float:
    """Height of the parts' top face above the belt: the tallest product (m)."""
    return max((float(p["height_m"]) for p in products.values()), default=0.0)


class InspectorLike(Protocol):
    """What the inspect skill needs of a fitted inspector (see :mod:`skills.vision`)."""

    def inspect(self, image: np.ndarray) -> Any: ...


class Inspect(Skill, name="inspect"):
    """Capture the tray that tripped the photo-eye, judge it from pixels and locate it.

    The part's verdict, defects, score and cell-frame pose (tied to the
    conveyor encoder) are appended to the tracking queue for the pick skill.
    """

    class Params(SkillParams):
        roi: bool = Field(True, description="crop around the tray's tracked position before inspecting")
        roi_m: tuple[float, float] | None = Field(
            None, description="region of interest around the part (m): the part at any yaw jitter plus tracking "
                              "error, but no neighbour (default: the largest product + 6 cm by + 8 cm)")
        plane_z: float | None = Field(None, description="height of the part's top in the cell frame (m; default: "
                                                        "the line conveyor's surface plus the tallest product's "
                                                        "height)")
        products: list[str] | None = Field(None, description="variants to try (None: every fitted product)")

    roles = {"camera": Camera, "conveyor": Conveyor}

    async def preconditions(self, ctx: SkillContext, params: Params) -> str | None:  # type: ignore[override]
        inspectors = ctx.config.get("inspectors") or {}
        if not inspectors:
            return "no inspection model loaded"
        if ctx.device("camera", Camera).calibration is None:
            return "camera is not calibrated"
        return None

    async def execute(self, ctx: SkillContext, params: Params) -> SkillResult:  # type: ignore[override]
        camera = ctx.device("camera", Camera)
        conveyor = ctx.device("conveyor", Conveyor)
        part: TrackedPart | None = ctx.facts.values.pop("pending", None)
        if part is None:
            return SkillResult.precondition("no part waiting for inspection (run wait_for_part first)")
        ctx.feedback(0.1, "capture")
        # the frame and the encoder together: less skew between them on a real line, one round trip
        # instead of two over a network
        frame, enc = await asyncio.gather(camera.capture(), conveyor.position())
        cal = frame.calibration or camera.calibration
        assert cal is not None
        image = frame.image
        products = ctx.config.get("products") or {}
        belt_z = float((ctx.config.get("line_geometry") or {}).get("z", 0.0))
        plane_z = params.plane_z if params.plane_z is not None else belt_z + default_plane_z(products)
        x0 = y0 = 0
        if params.roi:
            roi_m = params.roi_m if params.roi_m is not None else default_roi_m(products)
            x0, y0, x1, y1 = roi_box(cal, part.x_at(enc), part.y, roi_m, plane_z, image.shape)
            image = image[y0:y1, x0:x1]
        ctx.feedback(0.4, "inspect")
        inspectors: dict[str, InspectorLike] = ctx.config["inspectors"]
        names = params.products or list(inspectors)
        part.inspected_at = ctx.clock.now()
        crop = (image, x0, y0)
        worker = ctx.config.get("inspection_worker")
        if worker is None or not worker.usable():  # judge here, now (no worker, or it died: logged there)
            name, best, ms = judge(inspectors, image, names, ctx.facts.values.get("last_variant"))
            self._apply(ctx, part, frame, cal, crop, plane_z, enc, name, best, ms)
            ctx.facts.announce_part(part)  # wakes the pick skill
            ctx.emit("part_inspected", {"part": part})
            ctx.feedback(1.0, part.verdict)
            return self._result(part)

        def apply(result: Any) -> None:
            try:
                name, best, ms = result.result()
            except Exception as e:  # noqa: BLE001 - no verdict: the part is not packed
                log.error("inspection of %s failed: %s", part.id, e)
                part.verdict, part.defects = "none", ["inspection_failed"]
                part.meta["inspect_error"] = str(e)
                ctx.emit("part_inspected", {"part": part})
                return
            self._apply(ctx, part, frame, cal, crop, plane_z, enc, name, best, ms)
            ctx.emit("part_inspected", {"part": part})

        ctx.facts.judge_later(part, worker.submit(image, names), apply)
        ctx.facts.announce_part(part)  # a skill that needs the verdict settles it (facts.settle)
        if ctx.config.get("in_process_tree"):
            # the process goes on while the worker judges; the verdict is applied where it is needed
            ctx.feedback(1.0, "judging")
            return SkillResult.success("judging", part_id=part.id, verdict="pending", defects=[])
        await ctx.facts.settle(ctx.clock, upto=part)  # asked on its own (API, ROS 2 action): answer it
        ctx.feedback(1.0, part.verdict)
        return self._result(part)

    @staticmethod
    def _result(part: TrackedPart) -> SkillResult:
        return SkillResult.success(part.verdict, part_id=part.id, verdict=part.verdict, defects=part.defects)

    @staticmethod
    def _apply(ctx: SkillContext, part: TrackedPart, frame: Any, cal: Any, crop: tuple[np.ndarray, int, int],
               plane_z: float, enc: float, name: str, best: Any, ms: float) -> None:
        """Write a judgement into ``part``: variant, verdict, defects, score and the cell-frame pose
        (tied to ``enc``, the encoder when the frame was taken)."""
        _image, x0, y0 = crop
        ctx.facts.values["last_variant"] = name
        part.encoder, part.variant = enc, name
        pose_px = getattr(best, "pose_px", None)
        if pose_px is None:
            part.verdict = "none"
            part.defects = list(getattr(best, "defects", []) or ["no_part"])
        else:
            u, v, ang = float(pose_px[0]) + x0, float(pose_px[1]) + y0, math.radians(float(pose_px[2]))
            px, py = cal.pixel_to_plane(u, v, plane_z)
            qx, qy = cal.pixel_to_plane(u + 20 * math.cos(ang), v + 20 * math.sin(ang), plane_z)
            part.x, part.y, part.yaw = px, py, math.atan2(qy - py, qx - px)
            part.defects = list(getattr(best, "defects", []))
            part.verdict = "defective" if getattr(best, "defective", False) else "good"
        part.score = float(getattr(best, "score", 0.0))
        part.meta["inspect_ms"] = ms
        part.meta["frame"] = frame
        part.meta["crop"] = crop
        part.meta["result"] = best


class RejectDecision(Skill, name="reject_decision"):
    """Route the last inspected part: good trays go to the robot, others run on to the reject bin.

    A tray whose inspection failed (no verdict) is rejected: never pack what was not judged good.
    """

    class Params(SkillParams):
        min_score_margin: float = Field(0.0, ge=0, description="reject good trays whose score is within this margin of the threshold")

    async def execute(self, ctx: SkillContext, params: Params) -> SkillResult:  # type: ignore[override]
        if not ctx.facts.queue:
            return SkillResult.failure("no inspected part to route")
        part = ctx.facts.queue[-1]
        if ctx.facts.is_pending(part):
            if ctx.config.get("in_process_tree"):
                # its verdict is still being computed: route it the moment it is applied
                ctx.facts.after_judged(part, lambda: self._route(ctx, part, params))
                return SkillResult.success("pending", part_id=part.id, route="pending")
            await ctx.facts.settle(ctx.clock, upto=part)
        route = self._route(ctx, part, params)
        return SkillResult.success(route, part_id=part.id, route=route)

    @staticmethod
    def _route(ctx: SkillContext, part: TrackedPart, params: "RejectDecision.Params") -> str:
        route = "pack" if part.verdict == "good" else "reject"
        result = part.meta.get("result")
        thr = float(getattr(result, "threshold", 0.0) or 0.0)
        if route == "pack" and params.min_score_margin and thr and part.score > thr - params.min_score_margin:
            part.verdict = "defective"
            part.defects = part.defects or ["marginal"]
            route = "reject"
        part.meta["route"] = route
        ctx.emit("part_routed", {"part": part, "route": route})
        return route
