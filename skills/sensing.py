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
        eye_x: float = Field(0.0, description="cell x of the photo-eye beam (m)")
        lead_m: float = Field(0.0, description="beam → part centre at the trigger, along the flow (m; negative: upstream)")
        lane_y: float = Field(0.0, description="nominal cell y of the lane (m)")

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
        # The part exists from this instant on: it gets a record even if inspection fails.
        part = TrackedPart(id=ctx.facts.new_part_id(), arrival=t, encoder=enc, x=params.eye_x + flow * params.lead_m,
                           y=params.lane_y, flow=flow)
        ctx.facts.queue.append(part)
        ctx.facts.values["pending"] = part
        ctx.emit("part_arrived", {"part": part})
        return SkillResult.success(part_id=part.id, time=t, encoder=enc)
