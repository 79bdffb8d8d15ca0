"""Motion skills."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from drivers.arm import Arm
from drivers.types import Pose

from .base import Skill, SkillContext, SkillParams, SkillResult


class PoseParam(SkillParams):
    """A TCP pose in the cell frame: metres and degrees (tool pointing down by default)."""

    x: float
    y: float
    z: float
    roll_deg: float = 180.0
    pitch_deg: float = 0.0
    yaw_deg: float = 0.0

    def to_pose(self) -> Pose:
        return Pose(self.x, self.y, self.z, math.radians(self.roll_deg), math.radians(self.pitch_deg),
                    math.radians(self.yaw_deg))


class Move(Skill, name="move"):
    """Move the arm to a joint target or a TCP pose (targets are checked before motion)."""

    class Params(SkillParams):
        joints_deg: list[float] | None = None
        pose: PoseParam | None = None
        speed: float = Field(1.0, gt=0, le=1)

        @model_validator(mode="after")
        def _one_target(self) -> "Move.Params":
            if (self.joints_deg is None) == (self.pose is None):
                raise ValueError("give exactly one of joints_deg or pose")
            return self

    roles = {"arm": Arm}

    async def execute(self, ctx: SkillContext, params: Params) -> SkillResult:  # type: ignore[override]
        arm = ctx.device("arm", Arm)
        ctx.feedback(0.0, "moving")
        if params.joints_deg is not None:
            await arm.move_joints([math.radians(v) for v in params.joints_deg], speed=params.speed)
        else:
            assert params.pose is not None
            await arm.move_pose(params.pose.to_pose(), speed=params.speed)
        ctx.feedback(1.0, "done")
        return SkillResult.success()

    async def on_cancel(self, ctx: SkillContext) -> None:
        await ctx.device("arm", Arm).stop()
