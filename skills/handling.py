"""Handling skills: pick a tray from the moving conveyor, place it into the case pattern."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, model_validator

from drivers.arm import Arm
from drivers.conveyor import Conveyor
from drivers.errors import GraspError, MotionTargetError
from drivers.gripper import Gripper
from drivers.types import Pose

from .base import Skill, SkillContext, SkillParams, SkillResult
from .facts import TrackedPart


def _wrap(a: float) -> float:
    return math.atan2(math.sin(a), math.cos(a))


def _half_turn(a: float) -> float:
    """Equivalent angle in [-π/2, π/2) for a symmetric (vacuum) tool."""
    a = _wrap(a)
    if a >= math.pi / 2:
        a -= math.pi
    elif a < -math.pi / 2:
        a += math.pi
    return a


def _product_height(ctx: SkillContext, variant: str | None, default: float | None) -> float:
    """The part's height: its product's, else ``default``, else (unknown variant, e.g. a cell without
    inspection and several products) the mean of the cell's products, else 5 cm."""
    products = ctx.config.get("products") or {}
    prod = products.get(variant or "")
    if prod and "height_m" in prod:
        return float(prod["height_m"])
    if default is not None:
        return default
    heights = [float(p["height_m"]) for p in products.values() if "height_m" in p]
    return sum(heights) / len(heights) if heights else 0.05


class PickTracking(Skill, name="pick_tracking"):
    """Pick the next good tray from the moving conveyor inside the pick window (conveyor tracking).

    The intercept point is planned from the encoder-tied tray position and the
    arm's predicted motion time; the cup descends to meet the tray where it
    will be.  Trays that cannot be reached before the window's end are left
    to the tracker, which records them as missed.
    """

    class Params(SkillParams):
        window: tuple[float, float] = Field(description="cell-frame x range (m) where picking is allowed")
        belt_z: float | None = Field(None, description="belt surface height (m; default: the line conveyor's z, "
                                                       "else 0)")
        default_height_m: float | None = Field(None, gt=0, le=0.5, description="height of a part of unknown "
                                               "product (m; default: the mean of the cell's products)")
        approach_m: float = Field(0.06, gt=0, le=0.5)
        speed: float = Field(1.0, gt=0, le=1)
        wait_s: float = Field(3.0, gt=0, description="fail when no pickable tray arrives in this time")
        margin_s: float = Field(0.05, ge=0, le=2)

        @model_validator(mode="after")
        def _window(self) -> "PickTracking.Params":
            if not self.window[0] < self.window[1]:
                raise ValueError(f"window must be [x_min, x_max] with x_min < x_max (got {list(self.window)})")
            return self

    roles = {"arm": Arm, "gripper": Gripper, "conveyor": Conveyor}

    async def preconditions(self, ctx: SkillContext, params: Params) -> str | None:  # type: ignore[override]
        if await ctx.device("gripper", Gripper).is_holding():
            return "gripper already holds a tray"
        return None

    async def _choose(self, ctx: SkillContext, p: Params) -> tuple[TrackedPart, Pose, Pose] | None:
        arm, conv = ctx.device("arm", Arm), ctx.device("conveyor", Conveyor)
        enc, v = await conv.position(), await conv.velocity()
        facts = ctx.facts
        # the good parts not yet taken, as judged now; a verdict still being computed elsewhere is
        # applied when its part's turn comes (time holds meanwhile), as if it had been known already
        for part in facts.next_pickable(with_pending=True):
            if facts.is_pending(part):
                await facts.settle(ctx.clock, upto=part)
                if part.verdict != "good" or part not in facts.queue:
                    continue
            # plan along the flow: u = flow * x grows as the belt carries the part downstream
            f = part.flow
            u_min, u_max = sorted((f * p.window[0], f * p.window[1]))
            u_now = f * part.x_at(enc)
            if u_now > u_max:
                continue
            belt_z = p.belt_z if p.belt_z is not None else float((ctx.config.get("line_geometry") or {}).get("z", 0.0))
            z_pick = belt_z + _product_height(ctx, part.variant, p.default_height_m)
            yaw = _half_turn(part.yaw)
            u_i = max(u_min, u_now)
            try:
                t_desc = await arm.estimate_duration(Pose(f * u_i, part.y, z_pick, math.pi, 0.0, yaw), speed=p.speed)
                for _ in range(3):  # fixed-point iteration on the intercept
                    hover = Pose(f * u_i, part.y, z_pick + p.approach_m, math.pi, 0.0, yaw)
                    t_hover = await arm.estimate_duration(hover, speed=p.speed)
                    u_i = max(u_min, u_now + v * (t_hover + t_desc + p.margin_s))
            except MotionTargetError:
                continue
            if u_i > u_max:
                continue
            hover = Pose(f * u_i, part.y, z_pick + p.approach_m, math.pi, 0.0, yaw)
            pick = Pose(f * u_i, part.y, z_pick, math.pi, 0.0, yaw)
            return part, hover, pick
        return None

    async def execute(self, ctx: SkillContext, params: Params) -> SkillResult:  # type: ignore[override]
        arm, grip, conv = ctx.device("arm", Arm), ctx.device("gripper", Gripper), ctx.device("conveyor", Conveyor)
        deadline = ctx.clock.now() + params.wait_s
        ctx.feedback(0.0, "waiting for a tray")
        while True:
            chosen = await self._choose(ctx, params)
            if chosen is not None:
                break
            remaining = deadline - ctx.clock.now()
            if remaining <= 0:
                return SkillResult.failure("no pickable tray in the window")
            try:
                await ctx.clock.wait_for(ctx.facts.wait_new_part(), min(remaining, 0.5))
            except TimeoutError:
                pass
        part, hover, pick = chosen
        part.claimed = True
        try:
            ctx.feedback(0.2, "approach")
            await arm.move_pose(hover, speed=params.speed)
            v = await conv.velocity()
            t_desc = await arm.estimate_duration(pick, speed=params.speed)
            f = part.flow
            u_now = f * part.x_at(await conv.position())
            if v > 0:
                wait = (f * pick.x - v * t_desc - u_now) / v
                if wait > 0:
                    await ctx.clock.sleep(wait)
                else:  # arrived late: meet the part further downstream
                    u_new = f * pick.x
                    for _ in range(3):
                        u_new = u_now + v * await arm.estimate_duration(
                            Pose(f * u_new, pick.y, pick.z, pick.roll, pick.pitch, pick.yaw), speed=params.speed)
                    if u_new > max(f * params.window[0], f * params.window[1]):
                        raise MotionTargetError(f"part {part.id} left the pick window before the tool reached it")
                    pick = Pose(f * u_new, pick.y, pick.z, pick.roll, pick.pitch, pick.yaw)
            ctx.feedback(0.5, "descend")
            await arm.move_pose(pick, speed=params.speed)
            await grip.grip()
        except (GraspError, MotionTargetError) as e:
            part.claimed = False
            part.meta["pick_error"] = str(e)
            await self._retreat(arm, hover, params.speed)
            return SkillResult.failure(f"pick of {part.id} failed: {e}", part_id=part.id)
        part.picked_at = ctx.clock.now()
        part.meta["tool_yaw"] = pick.yaw  # the cup's yaw on the part: the place turns the part from it
        ctx.facts.values["holding"] = part
        ctx.facts.remove(part)
        ctx.emit("part_picked", {"part": part})
        ctx.feedback(0.8, "lift")
        await arm.move_pose(hover.translated(dz=0.05), speed=params.speed)
        ctx.feedback(1.0, "picked")
        return SkillResult.success(part_id=part.id)

    @staticmethod
    async def _retreat(arm: Arm, hover: Pose, speed: float) -> None:
        try:
            here = await arm.pose()
            await arm.move_pose(Pose(here.x, here.y, hover.z, here.roll, here.pitch, here.yaw), speed=speed)
        except MotionTargetError:
            pass

    async def on_cancel(self, ctx: SkillContext) -> None:
        await ctx.device("arm", Arm).stop()


def route_station(ctx: SkillContext, variant: str | None) -> str:
    """The case station a part of product ``variant`` goes to; raises ValueError with the reason when none.

    A case station's ``products:`` list names the products it takes.  Without any such list (or for a part of
    unknown product) the cell's only station with a pattern takes every part.
    """
    stations = ctx.config.get("stations") or {}
    patterned = [n for n, st in stations.items() if st.get("pattern")]
    if variant is not None:
        taking = [n for n in patterned if variant in (stations[n].get("products") or ())]
        if len(taking) == 1:
            return taking[0]
        if len(taking) > 1:
            raise ValueError(f"several case stations take product {variant!r}: {', '.join(taking)}")
    open_ = [n for n in patterned if stations[n].get("products") is None]
    if len(patterned) == 1:
        return patterned[0]
    if variant is not None and len(open_) == 1:
        return open_[0]  # the one station without a product list takes the rest
    what = f"product {variant!r}" if variant is not None else "a part of unknown product"
    raise ValueError(f"no case station takes {what} (give `station:` or list it in a station's `products:`)")


class PlaceInPattern(Skill, name="place_in_pattern"):
    """Place the held tray into the next free slot of its case station's case (rows × cols pattern).

    Without ``station`` the tray goes to the case station that takes its product (the station's
    ``products:`` list), or to the cell's only case station.
    """

    class Params(SkillParams):
        station: str | None = Field(None, description="case station name (stations: section of the cell file); "
                                                      "default: the station whose `products:` takes the held part")
        approach_m: float = Field(0.08, gt=0, le=0.5)
        speed: float = Field(1.0, gt=0, le=1)
        default_height_m: float | None = Field(None, gt=0, le=0.5, description="height of a part of unknown "
                                               "product (m; default: the mean of the cell's products)")

    roles = {"arm": Arm, "gripper": Gripper}

    @staticmethod
    def _station(ctx: SkillContext, params: "PlaceInPattern.Params", part: TrackedPart) -> str:
        return params.station if params.station is not None else route_station(ctx, part.variant)

    async def preconditions(self, ctx: SkillContext, params: Params) -> str | None:  # type: ignore[override]
        part = ctx.facts.values.get("holding")
        if part is None:
            return "no tray held"
        try:
            name = self._station(ctx, params, part)
        except ValueError as e:
            return str(e)
        station = (ctx.config.get("stations") or {}).get(name)
        if station is None or "pattern" not in station or not station["pattern"]:
            return f"no case station {name!r}"
        takes = station.get("products")
        if takes is not None and part.variant is not None and part.variant not in takes:
            return f"case station {name!r} does not take product {part.variant!r} (it takes {', '.join(takes) or 'none'})"
        rows, cols = station["pattern"]["rows"], station["pattern"]["cols"]
        if ctx.facts.fill(name) >= rows * cols:
            return "case is full" if len(ctx.facts.case_stations) <= 1 else f"case at {name} is full"
        return None

    @staticmethod
    def slot_pose(station: dict[str, Any], slot: int, z: float, yaw: float) -> Pose:
        f, pat = station["frame"], station["pattern"]
        cols, rows = pat["cols"], pat["rows"]
        r, c = divmod(slot, cols)
        dx = (c - (cols - 1) / 2) * pat["pitch_m"][0]
        dy = (r - (rows - 1) / 2) * pat["pitch_m"][1]
        cy, sy = math.cos(f["yaw"]), math.sin(f["yaw"])
        return Pose(f["x"] + cy * dx - sy * dy, f["y"] + sy * dx + cy * dy, z, math.pi, 0.0, yaw)

    async def execute(self, ctx: SkillContext, params: Params) -> SkillResult:  # type: ignore[override]
        arm, grip = ctx.device("arm", Arm), ctx.device("gripper", Gripper)
        part: TrackedPart = ctx.facts.values["holding"]
        name = self._station(ctx, params, part)
        station = ctx.config["stations"][name]
        slot = ctx.facts.fill(name)
        h = _product_height(ctx, part.variant, params.default_height_m)
        # tool yaw so the tray ends aligned with the case (tray yaw = case yaw)
        # the cup's yaw on the part, as the pick commanded it (a pick skill that does not say: read the arm)
        tool_pick = part.meta.get("tool_yaw")
        if tool_pick is None:
            tool_pick = (await arm.pose()).yaw
        tray_rel = _wrap(part.yaw - tool_pick)
        yaw = _half_turn(station["frame"]["yaw"] - tray_rel) if abs(_wrap(tray_rel)) > math.pi / 2 else _wrap(
            station["frame"]["yaw"] - tray_rel)
        target = self.slot_pose(station, slot, station["frame"]["z"] + h, yaw)
        above = target.translated(dz=params.approach_m)
        ctx.feedback(0.1, "transfer and descend")
        await arm.move_path([above, target], speed=params.speed)  # one command: both checked before moving
        await grip.release()
        part.placed_at = ctx.clock.now()
        part.case_id, part.slot = ctx.facts.add_to_case(name)
        part.station = name
        ctx.facts.values["holding"] = None
        ctx.emit("part_placed", {"part": part})
        ctx.feedback(0.8, "retract")
        await arm.move_pose(above, speed=params.speed)
        ctx.feedback(1.0, "placed")
        return SkillResult.success(part_id=part.id, case_id=part.case_id, slot=slot, station=name)

    async def on_cancel(self, ctx: SkillContext) -> None:
        await ctx.device("arm", Arm).stop()
