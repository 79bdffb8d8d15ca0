"""The skill model: typed parameters, device roles, preconditions, async run, result.

A skill is a reusable unit of cell behaviour ("pick the next good tray",
"seal the case").  It sees only driver contracts (by *role*), the cell clock,
the shared :class:`skills.facts.CellFacts`, and a feedback callback::

    class Wave(Skill, name="wave"):
        \"\"\"Wave the arm.\"\"\"
        class Params(SkillParams):
            times: int = 1
        roles = {"arm": Arm}

        async def execute(self, ctx, params):
            for _ in range(params.times):
                await ctx.device("arm", Arm).move_joints(...)
            return SkillResult.success()

Contract:
  * ``run()`` never raises a driver error: errors become a :class:`SkillResult`
    (EXECUTION_FAILURE, or TIMEOUT for device timeouts and expired budgets).
  * Cancellation (``task.cancel()``) runs :meth:`Skill.on_cancel` — e.g. stop
    the arm — and then propagates ``CancelledError``.
  * Parameters are validated before anything runs; invalid ones give
    PRECONDITION_FAILURE.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from pydantic import ConfigDict, ValidationError

from drivers.base import Device
from drivers.clock import Clock
from drivers.configmodel import ConfigModel
from drivers.errors import DeviceError, DeviceTimeoutError, NotConnectedError

from .facts import CellFacts

log = logging.getLogger("axcell.skills")
D = TypeVar("D", bound=Device)


class Status(str, enum.Enum):
    SUCCESS = "SUCCESS"
    PRECONDITION_FAILURE = "PRECONDITION_FAILURE"
    EXECUTION_FAILURE = "EXECUTION_FAILURE"
    CANCELED = "CANCELED"
    TIMEOUT = "TIMEOUT"


@dataclass(frozen=True)
class SkillResult:
    """What a skill run ended with.  ``data`` carries outputs (JSON-serialisable)."""

    status: Status
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    alarm: str | None = None
    """When set, the supervisor raises an alarm with this text and holds the cell."""

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCESS

    @classmethod
    def success(cls, message: str = "", **data: Any) -> "SkillResult":
        return cls(Status.SUCCESS, message, data)

    @classmethod
    def failure(cls, message: str, *, alarm: str | None = None, **data: Any) -> "SkillResult":
        return cls(Status.EXECUTION_FAILURE, message, data, alarm)

    @classmethod
    def precondition(cls, message: str) -> "SkillResult":
        return cls(Status.PRECONDITION_FAILURE, message)


class SkillParams(ConfigModel):
    """Base of every skill's parameter model (unknown keys and NaN/infinite numbers refused).

    NaN passes every ``ge``/``le`` bound check (all comparisons are false), so without this a NaN pose or
    speed would reach the device; refusing it here fails the skill at its precondition, before anything moves.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Feedback = Callable[[float, str], None]
EventSink = Callable[[str, dict[str, Any]], None]


@dataclass
class SkillContext:
    """Everything a running skill may touch."""

    devices: dict[str, Device]
    """Role → device, bound from the process tree's ``devices:`` map."""
    clock: Clock
    facts: CellFacts
    feedback: Feedback = lambda progress, phase: None
    emit: EventSink = lambda kind, data: None
    config: dict[str, Any] = field(default_factory=dict)
    """Cell-level lookups a skill may need (stations, products); read-only."""

    def device(self, role: str, contract: type[D]) -> D:
        dev = self.devices.get(role)
        if dev is None:
            raise KeyError(f"no device bound to role {role!r}")
        if not isinstance(dev, contract):
            raise TypeError(f"role {role!r} is bound to {dev.name!r}, which is not a {contract.__name__}")
        return dev


_REGISTRY: dict[str, type["Skill"]] = {}


class Skill:
    """Base class of all skills; subclass with ``name=``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[SkillParams]] = SkillParams
    roles: ClassVar[dict[str, type[Device]]] = {}
    """Role name → required driver contract."""

    def __init_subclass__(cls, name: str | None = None, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if name:
            if name in _REGISTRY:
                raise ValueError(f"skill {name!r} registered twice")
            cls.name = name
            _REGISTRY[name] = cls

    @classmethod
    def describe(cls) -> dict[str, Any]:
        doc = (cls.__doc__ or "").strip()
        return {
            "name": cls.name,
            "description": doc.splitlines()[0] if doc else "",
            "roles": {r: c.contract for r, c in cls.roles.items()},
            "params_schema": cls.Params.model_json_schema(),
        }

    # -- hooks ------------------------------------------------------------------------------
    async def preconditions(self, ctx: SkillContext, params: SkillParams) -> str | None:
        """Return a reason string when the skill cannot start now; ``None`` when it can."""
        return None

    async def execute(self, ctx: SkillContext, params: SkillParams) -> SkillResult:  # pragma: no cover
        raise NotImplementedError

    async def on_cancel(self, ctx: SkillContext) -> None:
        """Bring devices to a safe rest after cancellation (default: nothing)."""
        return None

    # -- the one entry point -------------------------------------------------------------
    def parse(self, params: SkillParams | dict[str, Any] | None) -> SkillParams:
        if isinstance(params, self.Params):
            return params
        return self.Params.model_validate(params or {})

    async def run(self, ctx: SkillContext, params: SkillParams | dict[str, Any] | None = None,
                  *, timeout: float | None = None) -> SkillResult:
        """Validate, check preconditions and execute; see the module docstring for the contract."""
        try:
            p = self.parse(params)
        except ValidationError as e:
            return SkillResult.precondition(f"invalid parameters for {self.name}: {_first_error(e)}")
        missing = [r for r in self.roles if r not in ctx.devices]
        if missing:
            return SkillResult.precondition(f"{self.name}: no device bound to role(s) {missing}")
        try:
            reason = await self.preconditions(ctx, p)
            if reason:
                return SkillResult.precondition(reason)
            if timeout is None:
                return await self.execute(ctx, p)
            return await ctx.clock.wait_for(self.execute(ctx, p), timeout)
        except asyncio.CancelledError:
            try:
                await asyncio.shield(self.on_cancel(ctx))
            except NotConnectedError as e:
                # e.g. the device already disconnected because the whole cell is shutting down: one line
                log.warning("%s: cleanup after cancel skipped: %s", self.name, e)
            except Exception:  # noqa: BLE001 - cleanup must not mask the cancel
                log.exception("%s: on_cancel failed", self.name)
            raise
        except TimeoutError as e:
            await self.on_cancel(ctx)
            return SkillResult(Status.TIMEOUT, f"{self.name}: {e}")
        except DeviceTimeoutError as e:
            return SkillResult(Status.TIMEOUT, str(e))
        except DeviceError as e:
            return SkillResult.failure(str(e))


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']} ({err.get('input')!r})"
