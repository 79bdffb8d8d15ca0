"""Sensing skills: wait for a part at a photo-eye."""

from __future__ import annotations

from pydantic import Field

from drivers.conveyor import Conveyor
from drivers.io import DigitalIO

from .base import Skill, SkillContext, SkillParams, SkillResult
from .facts import TrackedPart


def flow_sign(ctx: SkillContext) -> float:
    """+1 when the line's conveyor runs towards cell +x, -1 towards -x (the cell file's ``line.flow``)."""
    line = ctx.config.get("line") or {}
    return -1.0 if line.get("flow") == "-x" else 1.0


class WaitForPart(Skill, name="wait_for_part"):
    """Wait for the rising edge of a photo-eye; stores the trigger time and encoder."""

    class Params(SkillParams):
        channel: str = Field(description="DigitalIO input wired to the photo-eye")
        timeout_s: float | None = Field(None, gt=0, description="give up after this long (None: wait forever)")
        eye_x: float | None = Field(None, description="cell x of the photo-eye beam (m; default: the beam x of the "
                                                      "channel's photo-eye in the cell file, else 0)")
        lead_m: float | None = Field(None, description="beam → part centre at the trigger, along the flow (m; "
                                                       "negative: upstream; default: half the mean product length "
                                                       "upstream)")
        lane_y: float | None = Field(None, description="nominal cell y of the lane (m; default: the line conveyor's y)")

    roles = {"io": DigitalIO, "conveyor": Conveyor}

    async def preconditions(self, ctx: SkillContext, params: Params) -> str | None:  # type: ignore[override]
        io = ctx.device("io", DigitalIO)
        if params.channel not in io.channels:
            return f"{io.name} has no channel {params.channel!r}"
        return None

    async def execute(self, ctx: SkillContext, params: Params) -> SkillResult:  # type: ignore[override]
        io = ctx.device("io", DigitalIO)
        conveyor = ctx.device("conveyor", Conveyor)
        ctx.feedback(0.0, "waiting")
        t = await io.wait_edge(params.channel, rising=True, timeout=params.timeout_s)
        enc = await conveyor.position()
        flow = flow_sign(ctx)
        geo = ctx.config.get("line_geometry") or {}
        eye_x = params.eye_x if params.eye_x is not None else float((geo.get("eyes") or {}).get(params.channel, 0.0))
        lead = params.lead_m if params.lead_m is not None else float(geo.get("lead_m", 0.0))
        lane_y = params.lane_y if params.lane_y is not None else float(geo.get("y", 0.0))
        # The part exists from this instant on: it gets a record even if inspection fails.
        part = TrackedPart(id=ctx.facts.new_part_id(), arrival=t, encoder=enc, x=eye_x + flow * lead,
                           y=lane_y, flow=flow)
        ctx.facts.queue.append(part)
        ctx.facts.values["pending"] = part
        ctx.emit("part_arrived", {"part": part})
        if ctx.config.get("inspects") is False:
            # a cell without an inspection step packs what arrives: at the nominal pose, of its only product
            products = list(ctx.config.get("products") or {})
            part.variant = products[0] if len(products) == 1 else None
            part.verdict = "good"
            ctx.facts.values.pop("pending", None)
            ctx.facts.announce_part(part)
        return SkillResult.success(part_id=part.id, time=t, encoder=enc)
