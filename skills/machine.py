"""Machine skills: run a cycle of a PLC-controlled machine, case-state conditions."""

from __future__ import annotations

from pydantic import Field

from drivers.errors import DeviceFaultError, DeviceOfflineError
from drivers.machine import Machine

from .base import Skill, SkillContext, SkillParams, SkillResult


def machine_station(ctx: SkillContext, machine: str, station: str | None) -> str | None:
    """The case station a cycle of device ``machine`` closes: ``station`` when given, else the station whose
    ``machine:`` is that device, else the cell's only station with a pattern (else None)."""
    if station is not None:
        return station
    stations = ctx.config.get("stations") or {}
    served = [n for n, st in stations.items() if st.get("pattern") and st.get("machine") == machine]
    if len(served) == 1:
        return served[0]
    patterned = [n for n, st in stations.items() if st.get("pattern")]
    return patterned[0] if len(patterned) == 1 else None


class MachineCycle(Skill, name="machine_cycle"):
    """Run one machine cycle (e.g. seal the full case and index an empty one).

    The case it replaces is that of ``station``, else of the case station whose ``machine:`` is the bound
    machine device, else of the cell's only case station.
    """

    class Params(SkillParams):
        timeout_s: float = Field(60.0, gt=0)
        new_case: bool = Field(True, description="the cycle replaces the case: reset the slot counter")
        station: str | None = Field(None, description="the case station whose case the cycle closes (default: "
                                                      "the station whose `machine:` is this device)")

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
            station = machine_station(ctx, machine.name, params.station)
            case_id, fill = ctx.facts.close_case(station)
            ctx.emit("case_completed", {"case_id": case_id, "slots": fill, "station": station,
                                        "telemetry": res.telemetry, "duration": res.finished - res.started})
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
        if ctx.facts.fill(params.station) < slots:
            return SkillResult.success()
        return SkillResult.failure("case full")


class PartIs(Skill, name="part_is"):
    """Condition: SUCCESS when the held part is of ``product`` (FAILURE when it is another).

    For process trees that route by product themselves, e.g. a ``fallback`` of
    ``sequence: [part_is {product: a}, place_in_pattern {station: case_a}]`` branches.
    """

    class Params(SkillParams):
        product: str = Field(description="a product name (products: section of the cell file)")

    async def execute(self, ctx: SkillContext, params: Params) -> SkillResult:  # type: ignore[override]
        part = ctx.facts.values.get("holding")
        if part is None:
            return SkillResult.precondition("no part held")
        if part.variant == params.product:
            return SkillResult.success()
        return SkillResult.failure(f"part {part.id} is {part.variant or 'of unknown product'}, not {params.product}")
