"""Machine skills: run a cycle of a PLC-controlled machine, case-state conditions."""

from __future__ import annotations

from pydantic import Field

from drivers.errors import DeviceFaultError, DeviceOfflineError
from drivers.machine import Machine

from .base import Skill, SkillContext, SkillParams, SkillResult


class MachineCycle(Skill, name="machine_cycle"):
    """Run one machine cycle (e.g. seal the full case and index an empty one)."""

    class Params(SkillParams):
        timeout_s: float = Field(60.0, gt=0)
        new_case: bool = Field(True, description="the cycle replaces the case: reset the slot counter")

    roles = {"machine": Machine}

    async def preconditions(self, ctx: SkillContext, params: Params) -> str | None:  # type: ignore[override]
        st = await ctx.device("machine", Machine).status()
        if st.faulted:
            return f"machine faulted: {st.fault}"
        return None

    async def execute(self, ctx: SkillContext, params: Params) -> SkillResult:  # type: ignore[override]
        machine = ctx.device("machine", Machine)
        ctx.feedback(0.0, "cycling")
        try:
            res = await machine.cycle(timeout=params.timeout_s)
        except (DeviceFaultError, DeviceOfflineError) as e:
            return SkillResult.failure(str(e), alarm=f"{machine.name}: {e}")
        if not res.ok:
            return SkillResult.failure(res.message, alarm=f"{machine.name}: {res.message}")
        if params.new_case:
            ctx.emit("case_completed", {"case_id": ctx.facts.case_id, "slots": ctx.facts.case_fill,
                                        "telemetry": res.telemetry, "duration": res.finished - res.started})
            ctx.facts.case_id += 1
            ctx.facts.case_fill = 0
        ctx.feedback(1.0, "done")
        return SkillResult.success(res.message, telemetry=res.telemetry)


class CaseNotFull(Skill, name="case_not_full"):
    """Condition: SUCCESS while the current case still has a free slot."""

    class Params(SkillParams):
        slots: int = Field(6, ge=1, le=1000)

    async def execute(self, ctx: SkillContext, params: Params) -> SkillResult:  # type: ignore[override]
        if ctx.facts.case_fill < params.slots:
            return SkillResult.success()
        return SkillResult.failure("case full")
