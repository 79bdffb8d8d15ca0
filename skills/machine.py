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


def station_slots(ctx: SkillContext, station: str | None) -> int | str:
    """Slots of the pattern of ``station`` (or of the cell's only patterned station); a message when unknown."""
    stations = ctx.config.get("stations") or {}
    if station is None:
        patterned = [n for n, st in stations.items() if st.get("pattern")]
        if len(patterned) != 1:
            return (f"name the station or give slots ({'no station has' if not patterned else 'several stations have'}"
                    f" a pattern)")
        station = patterned[0]
    st = stations.get(station)
    if st is None or not st.get("pattern"):
        return f"no station {station!r} with a pattern"
    return int(st["pattern"]["rows"]) * int(st["pattern"]["cols"])


class CaseNotFull(Skill, name="case_not_full"):
    """Condition: SUCCESS while the current case (fixture, pallet) still has a free slot.

    The slot count is ``slots`` when given, else the ``rows × cols`` of ``station``'s pattern (or of the
    cell's only station with a pattern).
    """

    class Params(SkillParams):
        slots: int | None = Field(None, ge=1, le=1000, description="slots per case (default: from the pattern)")
        station: str | None = Field(None, description="the station whose pattern gives the slot count")

    async def execute(self, ctx: SkillContext, params: Params) -> SkillResult:  # type: ignore[override]
        slots = params.slots if params.slots is not None else station_slots(ctx, params.station)
        if isinstance(slots, str):
            return SkillResult.precondition(slots)
        if ctx.facts.case_fill < slots:
            return SkillResult.success()
        return SkillResult.failure("case full")
