"""The cell file: one YAML document describing devices, stations, products, process and settings.

:func:`load_cell` returns a validated :class:`CellConfig` or raises
:class:`CellFileError` carrying every problem found, each located by file,
line and field path.  Validation has two layers:

1. structure and ranges, by the pydantic models below (unknown keys refused);
2. meaning: device kinds exist and their options pass the driver's own
   ``Config`` model, references name existing devices/stations/products,
   skills exist and their parameters pass the skill's ``Params`` model, roles
   bind to devices of the right contract.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator,
)

from drivers.configmodel import MIXUP, ConfigModel
from sim.world import WorldConfig

from . import yamlsafe
from .plugins import KindError, load_kind

NAME = r"^[a-z][a-z0-9_]{0,62}$"


class _M(ConfigModel):
    model_config = ConfigDict(extra="forbid")


class CellInfo(_M):
    name: str = Field(pattern=NAME, description="lower_snake_case; used in ROS 2 topic and OPC UA names")
    description: str = ""


class DeviceSpec(_M):
    name: str = Field(pattern=NAME)
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*$", description="<provider>.<type>, e.g. sim.arm")
    options: dict[str, Any] = Field(default_factory=dict, description="validated by the driver's Config model")

    @property
    def simulated(self) -> bool:
        return self.kind.startswith("sim.")


class FrameSpec(_M):
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0
    yaw_deg: float = Field(0.0, ge=-360, le=360)

    @model_validator(mode="after")
    def _finite(self) -> "FrameSpec":
        for k in ("x", "y", "z", "yaw_deg"):
            if not math.isfinite(getattr(self, k)):
                raise ValueError(f"{k} must be finite")
        return self


class PatternSpec(_M):
    rows: int = Field(ge=1, le=50)
    cols: int = Field(ge=1, le=50)
    pitch_mm: tuple[float, float] = Field(description="slot spacing along x and y of the station frame (mm)")

    @field_validator("pitch_mm")
    @classmethod
    def _pitch(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 < p <= 2000 for p in v):
            raise ValueError("pitches must be in (0, 2000] mm")
        return v


class StationSpec(_M):
    kind: Literal["inspection", "pick", "case", "reject", "generic"] = "generic"
    frame: FrameSpec = Field(default_factory=FrameSpec)
    pattern: PatternSpec | None = None
    machine: str | None = Field(None, description="device serving this station (e.g. the case sealer)")
    products: list[str] | None = Field(None, description="case station: the products it takes (place_in_pattern "
                                                         "without `station:` sends each part to its product's station)")

    @model_validator(mode="after")
    def _case(self) -> "StationSpec":
        if self.kind == "case" and self.pattern is None:
            raise ValueError("a case station needs a pattern (rows, cols, pitch_mm)")
        if self.products is not None and self.pattern is None:
            raise ValueError("only a station with a pattern (a case station) takes products")
        return self


class ProductSpec(_M):
    size_mm: tuple[float, float, float] = Field(description="length, width, height of the tray (mm)")
    appearance: str | dict[str, Any] | None = Field(None, description="simulator look (preset name or parameters)")
    rules: dict[str, Any] | None = Field(None, description="vision rule checks (ProductRules)")
    model: str | None = Field(None, description="fitted inspection model (path relative to the cell file)")
    fit_good: int = Field(40, ge=5, le=2000, description="simulated good trays to fit a model from when none is given")

    @field_validator("size_mm")
    @classmethod
    def _size(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0 < s <= 2000 for s in v):
            raise ValueError("sizes must be in (0, 2000] mm")
        return v


class LineSpec(_M):
    conveyor: str = Field(description="the conveyor that carries parts past inspection and the robot")
    exit_x: float = Field(description="cell x where parts leave the belt into the reject bin (m)")
    flow: Literal["+x", "-x"] = Field("+x", description="the way the conveyor carries parts along the cell x axis")
    design_speed_ppm: float = Field(gt=0, le=2000, description="MachDesignSpeed: parts per minute the cell is designed for")
    tracker_period_s: float = Field(0.5, gt=0, le=10)


class RecipeSpec(_M):
    description: str = ""
    products: list[str] | None = None
    conveyor_speed: float | None = Field(None, gt=0, le=5)


# -- the process tree ------------------------------------------------------------------------
class SkillNode(_M):
    skill: str
    name: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    devices: dict[str, str] = Field(default_factory=dict, description="role → device name")
    timeout_s: float | None = Field(None, gt=0, le=86400)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SequenceNode(_M):
    sequence: list["ProcessNode"] = Field(min_length=1)
    name: str | None = None


class FallbackNode(_M):
    fallback: list["ProcessNode"] = Field(min_length=1)
    name: str | None = None


class ParallelNode(_M):
    parallel: list["ProcessNode"] = Field(min_length=1)
    policy: Literal["all", "one"] = "all"
    name: str | None = None


class RetryNode(_M):
    retry: "ProcessNode"
    times: int = Field(3, ge=1, le=1000)
    name: str | None = None


class TimeoutNode(_M):
    timeout: "ProcessNode"
    seconds: float = Field(gt=0, le=86400)
    name: str | None = None


class RepeatNode(_M):
    repeat: "ProcessNode"
    times: int = Field(-1, ge=-1, description="-1: forever (until the cell stops)")
    ignore_failure: bool = True
    name: str | None = None


PATTERN_SKILLS = ("case_not_full", "place_in_pattern")
"""Skills whose ``station`` must have a slot pattern."""

NODE_KINDS = ("skill", "sequence", "fallback", "parallel", "retry", "timeout", "repeat")


def _node_kind(v: Any) -> str | None:
    if isinstance(v, dict):
        for k in NODE_KINDS:
            if k in v:
                return k
        return None
    for k in NODE_KINDS:
        if hasattr(v, k):
            return k
    return None


ProcessNode = Annotated[
    Union[
        Annotated[SkillNode, Tag("skill")],
        Annotated[SequenceNode, Tag("sequence")],
        Annotated[FallbackNode, Tag("fallback")],
        Annotated[ParallelNode, Tag("parallel")],
        Annotated[RetryNode, Tag("retry")],
        Annotated[TimeoutNode, Tag("timeout")],
        Annotated[RepeatNode, Tag("repeat")],
    ],
    Discriminator(_node_kind, custom_error_type="process_node",
                  custom_error_message=f"a process node needs one of the keys: {', '.join(NODE_KINDS)}"),
]
for _m in (SequenceNode, FallbackNode, ParallelNode, RetryNode, TimeoutNode, RepeatNode):
    _m.model_rebuild()


class SupervisorSpec(_M):
    auto_recover: bool = Field(True, description="batch runs: unhold after the operator cleared a fault")
    hold_on_alarm: bool = True


class ApiSpec(_M):
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)
    token: str | None = Field(None, min_length=8, description="bearer token (AXCELL_API_TOKEN overrides)")
    open_reads: bool = True


class OpcuaSpec(_M):
    port: int | None = Field(None, ge=1, le=65535)
    host: str = "127.0.0.1"
    allow_anonymous_read: bool = False
    users: dict[str, dict[str, str]] = Field(default_factory=dict, description="user → {password, role}")


class StoreSpec(_M):
    path: str | None = Field(None, description="SQLite file (default: <run dir>/cell.sqlite)")
    sample_good_images: float = Field(0.02, ge=0, le=1)


class CellConfig(_M):
    cell: CellInfo
    products: dict[str, ProductSpec] = Field(min_length=1)
    devices: list[DeviceSpec] = Field(min_length=1)
    stations: dict[str, StationSpec] = Field(default_factory=dict)
    line: LineSpec
    recipes: dict[str, RecipeSpec] = Field(default_factory=dict)
    process: ProcessNode
    sim: WorldConfig | None = None
    supervisor: SupervisorSpec = Field(default_factory=SupervisorSpec)
    api: ApiSpec = Field(default_factory=ApiSpec)
    opcua: OpcuaSpec = Field(default_factory=OpcuaSpec)
    store: StoreSpec = Field(default_factory=StoreSpec)

    source: Path | None = Field(None, exclude=True, description="(set by the loader)")

    def device(self, name: str) -> DeviceSpec:
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)

    @property
    def simulated(self) -> bool:
        return any(d.simulated for d in self.devices)


# -- errors ----------------------------------------------------------------------------------
class Problem(BaseModel):
    line: int
    path: str
    message: str
    value: Any = None

    def format(self, file: str) -> str:
        val = "" if self.value is None else f" ({_short(self.value)})"
        return f"{file}:{self.line}: {self.path or '(top)'}: {self.message}{val}"


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


class CellFileError(Exception):
    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(p.format(file) for p in problems))


def _clean_loc(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Walk ``loc`` against the data, skipping union/tag segments that are not real keys.

    A process node's tag (``skill``, ``sequence``…) comes before the node's field in pydantic's location and
    may equal a real key (``skill``): it is skipped once per node, when the node would be tagged that way.
    """
    out: list[Any] = []
    cur = data
    tagged: int | None = None
    for part in loc:
        if part == "[key]":
            break  # the key itself is wrong: the path ends at it
        if isinstance(cur, dict) and part in NODE_KINDS and tagged != id(cur) and _node_kind(cur) == part:
            tagged = id(cur)       # the discriminator's tag, not a key
            continue
        if isinstance(cur, dict) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) and part == "with_" and "with" in cur:
            out.append("with")
            cur = cur["with"]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) or isinstance(cur, list) or cur is None:
            if isinstance(part, str) and part not in NODE_KINDS and not part.startswith("function-"):
                out.append(part)  # a missing key: still name it
                cur = None
        else:
            break
    return tuple(out)


def _problems_from(e: ValidationError, data: Any, lines: dict, prefix: tuple[Any, ...] = ()) -> list[Problem]:
    out: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for err in e.errors(include_url=False):
        loc = prefix + _clean_loc(tuple(err["loc"]), _dig(data, prefix))
        msg = err["msg"]
        if err["type"] == MIXUP:     # point at the item inside the field (size_mm.1), not the whole field
            ctx = err.get("ctx") or {}
            loc += tuple(ctx.get("where") or ())
            msg = ctx.get("message", msg)
            err = {**err, "input": ctx.get("bad", err.get("input"))}
        path = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing" and err["loc"] and isinstance(err["loc"][-1], int):
            msg = f"too few values (item {err['loc'][-1]} is missing)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["loc"] and err["loc"][-1] == "[key]":
            msg = f"bad key: {msg}"
        if (path, msg) in seen:
            continue
        seen.add((path, msg))
        value = err.get("input") if err["type"] not in ("missing",) else None
        if isinstance(value, dict) or (isinstance(value, list) and not _short_flat(value)):
            value = None
        if isinstance(value, float) and not math.isfinite(value):
            continue  # reported as "not a finite number" by _non_finite_problems
        out.append(Problem(line=yamlsafe.line_for(lines, loc), path=path, message=msg, value=value))
    return out


def _short_flat(v: list) -> bool:
    """A list worth echoing in a message: a few plain values (``[0.8, 0.2]``), not a section."""
    return len(v) <= 6 and all(isinstance(x, (int, float, str, bool)) or x is None for x in v)


def _dig(data: Any, path: tuple[Any, ...]) -> Any:
    cur = data
    for p in path:
        try:
            cur = cur[p]
        except (KeyError, IndexError, TypeError):
            return None
    return cur


# -- semantic checks ---------------------------------------------------------------------------
def _check_devices(data: dict, lines: dict) -> tuple[list[Problem], dict[str, type], set[str]]:
    """Device kinds, options (the driver's own Config model) and device-to-device references.

    Returns the problems, name → class of every device whose kind is known, and the names of devices whose
    kind is not (their contract is unknown, so role checks must not cascade from them).
    """
    problems: list[Problem] = []
    classes: dict[str, type] = {}
    unknown: set[str] = set()
    devices = data.get("devices")
    if not isinstance(devices, list):
        return problems, classes, unknown
    all_names = {d.get("name") for d in devices if isinstance(d, dict) and isinstance(d.get("name"), str)}
    names: dict[str, int] = {}
    for i, d in enumerate(devices):
        if not isinstance(d, dict):
            continue
        name, kind = d.get("name"), d.get("kind")
        if isinstance(name, str):
            if name in names:
                problems.append(Problem(line=yamlsafe.line_for(lines, ("devices", i, "name")), path=f"devices.{i}.name",
                                        message=f"duplicate device name (first at devices.{names[name]})", value=name))
            else:
                names[name] = i
        if not isinstance(kind, str):
            if isinstance(name, str):
                unknown.add(name)
            continue
        kline = yamlsafe.line_for(lines, ("devices", i, "kind"))
        try:
            cls = load_kind(kind)
        except KindError as e:
            problems.append(Problem(line=kline, path=f"devices.{i}.kind",
                                    message=str(e).replace(f" {kind!r}", "", 1), value=kind))
            if isinstance(name, str):
                unknown.add(name)
            continue
        except Exception as e:  # noqa: BLE001 - a third-party provider that fails on import
            problems.append(Problem(line=kline, path=f"devices.{i}.kind", value=kind,
                                    message=f"the driver failed to load ({e.__class__.__name__}: {e})"))
            if isinstance(name, str):
                unknown.add(name)
            continue
        if isinstance(name, str) and name not in classes:
            classes[name] = cls  # known contract even when its options are wrong: no cascading errors
        opts = d.get("options")
        if opts is None and "options" not in d:
            opts = {}
        if not isinstance(opts, dict):
            continue  # DeviceSpec reports "options: should be a mapping"; the driver would only repeat it
        oline = yamlsafe.line_for(lines, ("devices", i, "options"))
        try:
            cfg = cls.Config.model_validate(opts)
        except ValidationError as e:
            problems += _problems_from(e, data, lines, ("devices", i, "options"))
            continue
        except Exception as e:  # noqa: BLE001 - a driver's validator that raises something else
            problems.append(Problem(line=oline, path=f"devices.{i}.options",
                                    message=f"the {kind} driver rejected the options ({e.__class__.__name__}: {e})"))
            continue
        problems += _check_sim_server(cls, cfg, i, data, lines)
        if isinstance(name, str):
            try:
                deps = list(cls.requires(cfg))
            except Exception as e:  # noqa: BLE001
                problems.append(Problem(line=oline, path=f"devices.{i}.options",
                                        message=f"the {kind} driver failed on the options "
                                                f"({e.__class__.__name__}: {e})"))
                continue
            for dep in deps:
                if dep not in all_names:
                    problems.append(Problem(line=oline, path=f"devices.{i}.options",
                                            message=f"refers to device {dep!r}, which does not exist", value=dep))
    return problems, classes, unknown


def _check_sim_server(cls: type, opts: Any, i: int, data: dict, lines: dict) -> list[Problem]:
    """Options of the simulated protocol server a driver asks for (``sim_server``), e.g. the OPC UA sealer.

    The driver keeps them as a plain mapping (drivers never import :mod:`sim`); unchecked, a bad value
    only failed when the server started, and the cell ran on without its machine.
    """
    hook = getattr(cls, "sim_server", None)
    if hook is None:
        return []
    try:
        wanted = hook(opts)
        if not wanted:
            return []
        profile, key = wanted
        from sim.sim_servers import options_model

        model = options_model(profile)
        model.model_validate(getattr(opts, key) or {})
    except ValidationError as e:
        return _problems_from(e, data, lines, ("devices", i, "options", key))
    except Exception as e:  # noqa: BLE001
        return [Problem(line=yamlsafe.line_for(lines, ("devices", i, "options")), path=f"devices.{i}.options",
                        message=f"the simulated server refused the options ({e.__class__.__name__}: {e})")]
    return []


def _check_products(data: dict, lines: dict, cfg: "CellConfig") -> list[Problem]:
    """Each product's simulator look (preset name or parameters) and vision rules (``ProductRules``).

    The look is checked as the simulator draws it (``runtime.product_appearance``): sized by ``size_mm``,
    a preset's (or the default) label shrunk to fit the tray, an explicit label kept as given.  A tray too
    small for its look, or an explicit label that does not fit on it, would otherwise only fail when the
    cell starts.
    """
    problems: list[Problem] = []
    if cfg.sim is None and not any(p.appearance is not None or p.rules for p in cfg.products.values()):
        return problems
    from sim import render
    from skills.vision.rules import ProductRules

    from .runtime import product_appearance

    for name, spec in cfg.products.items():
        base: dict[str, Any] | None = {}
        app = spec.appearance
        where = ("products", name, "appearance")
        if isinstance(app, str) and app not in render.PRODUCTS:
            known = ", ".join(sorted(render.PRODUCTS))
            problems.append(Problem(line=yamlsafe.line_for(lines, where), path=".".join(where), value=app,
                                    message=f"unknown appearance (built-ins: {known})"))
            base = None
        elif isinstance(app, dict):
            try:
                render.ProductAppearance.model_validate({"name": name, **app})
            except ValidationError as e:
                problems += _problems_from(e, data, lines, where)
                base = None
        if base is not None and (cfg.sim is not None or app is not None or spec.rules):
            size_at = ("products", name, "size_mm")
            look_name = app if isinstance(app, str) else name if isinstance(app, dict) else next(iter(render.PRODUCTS))

            def too_small(e: ValidationError) -> Problem:
                err = e.errors(include_url=False)[0]
                field = ".".join(str(x) for x in err["loc"])
                msg = err["msg"].removeprefix("Value error, ")
                return Problem(line=yamlsafe.line_for(lines, size_at), path=".".join(size_at),
                               value=list(spec.size_mm),
                               message=f"tray too small for its look ({look_name}: {field}: {msg})")

            try:
                sized = product_appearance(name, spec, render)
                sized = render.ProductAppearance.model_validate(sized.model_dump())
            except ValidationError as e:
                problems.append(too_small(e))
                continue
            base = sized.inspection_rules()
            if spec.rules is None or "label_box" not in spec.rules:
                try:
                    ProductRules.model_validate(base)
                except ValidationError as e:
                    if isinstance(app, dict) and "label" in app:  # kept as given: the label is at fault
                        lab, at = sized.label, where + ("label",)
                        problems.append(Problem(
                            line=yamlsafe.line_for(lines, at), path=".".join(map(str, at)),
                            message=f"the label ({lab.length_mm:g} x {lab.width_mm:g} mm at offset "
                                    f"{lab.offset_mm:g} mm) does not fit on the {spec.size_mm[0]:g} x "
                                    f"{spec.size_mm[1]:g} mm product"))
                    else:  # even shrunk, the look does not fit: the tray is at fault
                        problems.append(too_small(e))
                    continue
        if spec.rules:
            try:
                ProductRules.model_validate({**(base or {}), **spec.rules})
            except ValidationError as e:
                problems += _problems_from(e, data, lines, ("products", name, "rules"))
    return problems


def _non_finite_problems(data: Any, lines: dict) -> list[Problem]:
    """NaN and infinities (``.nan``, ``.inf``, ``1e400``) are never meaningful in a cell file."""
    return [Problem(line=yamlsafe.line_for(lines, path), path=".".join(map(str, path)),
                    message="must be a finite number", value=v)
            for path, v in yamlsafe.non_finite(data)]


def _check_semantics(cfg: CellConfig, data: dict, lines: dict, classes: dict[str, type],
                     unknown: frozenset[str] | set[str] = frozenset()) -> list[Problem]:
    from skills import registry

    problems: list[Problem] = []

    def add(path: tuple[Any, ...], msg: str, value: Any = None) -> None:
        problems.append(Problem(line=yamlsafe.line_for(lines, path), path=".".join(map(str, path)), message=msg,
                                value=value))

    def contract_of(dev: str) -> str | None:
        cls = classes.get(dev)
        return getattr(cls, "contract", None)

    dev_names = {d.name for d in cfg.devices}
    if cfg.line.conveyor not in dev_names:
        add(("line", "conveyor"), "no such device", cfg.line.conveyor)
    elif classes.get(cfg.line.conveyor) is not None and contract_of(cfg.line.conveyor) != "conveyor":
        add(("line", "conveyor"), f"device is a {contract_of(cfg.line.conveyor)}, not a conveyor", cfg.line.conveyor)
    conv = next((d for d in cfg.devices if d.name == cfg.line.conveyor), None)
    if conv is not None and conv.kind == "sim.conveyor" and isinstance(conv.options, dict):
        twin_flow = conv.options.get("flow", "+x")
        if twin_flow in ("+x", "-x") and twin_flow != cfg.line.flow:
            add(("line", "flow"), f"the conveyor {conv.name!r} runs towards {twin_flow} (its options.flow)",
                cfg.line.flow)
    for sname, st in cfg.stations.items():
        if st.machine is not None and st.machine not in dev_names:
            add(("stations", sname, "machine"), "no such device", st.machine)
        elif st.machine is not None and classes.get(st.machine) is not None and contract_of(st.machine) != "machine":
            add(("stations", sname, "machine"), f"device is a {contract_of(st.machine)}, not a machine", st.machine)
    problems += _check_case_routing(cfg, add)
    for rname, r in cfg.recipes.items():
        for j, p in enumerate(r.products or []):
            if p not in cfg.products:
                add(("recipes", rname, "products", j), "no such product", p)
    if cfg.sim is not None:
        for v in cfg.sim.infeed.mix:
            if v not in cfg.products:
                add(("sim", "infeed", "mix", v), "no such product", v)
        if cfg.sim.infeed.conveyor not in dev_names:
            add(("sim", "infeed", "conveyor"), "no such device", cfg.sim.infeed.conveyor)
        for j, f in enumerate(cfg.sim.faults):
            if f.device not in dev_names:
                add(("sim", "faults", j, "device"), "no such device", f.device)
    elif any(d.simulated for d in cfg.devices):
        first = next(i for i, d in enumerate(cfg.devices) if d.simulated)
        add(("devices", first, "kind"), "simulated devices need a `sim:` section", cfg.devices[first].kind)

    skills = registry()
    by_contract: dict[str, list[str]] = {}
    for name in dict.fromkeys(d.name for d in cfg.devices):
        c = contract_of(name)
        if c:
            by_contract.setdefault(c, []).append(name)

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        if isinstance(node, SkillNode):
            cls = skills.get(node.skill)
            if cls is None:
                add(path + ("skill",), f"unknown skill (known: {', '.join(sorted(skills))})", node.skill)
                return
            try:
                cls.Params.model_validate(node.with_)
            except ValidationError as e:
                problems.extend(_problems_from(e, data, lines, path + ("with",)))
            except Exception as e:  # noqa: BLE001 - a skill's validator that raises something else
                add(path + ("with",), f"skill {node.skill} rejected its parameters ({e.__class__.__name__}: {e})")
            for role in node.devices:
                if role not in cls.roles:
                    add(path + ("devices", role), f"skill {node.skill} has no role {role!r} (roles: {sorted(cls.roles)})")
            for role, contract in cls.roles.items():
                dev = node.devices.get(role)
                if dev is None:
                    cands = by_contract.get(contract.contract, [])
                    if not cands and unknown:
                        continue  # a device of unknown kind may be it: its kind is reported already
                    if len(cands) != 1:
                        article = "an" if contract.contract[0] in "aeio" else "a"
                        add(path + ("devices",), f"role {role!r} needs {article} {contract.contract} device: "
                            f"{'none exists' if not cands else 'several exist, name one: ' + _names(cands)}")
                elif dev not in dev_names:
                    add(path + ("devices", role), "no such device", dev)
                elif classes.get(dev) is not None and contract_of(dev) != contract.contract:
                    add(path + ("devices", role), f"device is a {contract_of(dev)}, role needs a {contract.contract}", dev)
            station = node.with_.get("station")
            if node.skill == "machine_cycle":
                _check_machine_cycle(cfg, node, path, add)
            if node.skill == "place_in_pattern" and station is None:
                patterned = [n for n, st in cfg.stations.items() if st.pattern is not None]
                if not patterned:
                    add(path + ("with",), "give `station:` (no station has a pattern)")
                elif len(patterned) > 1 and all(cfg.stations[n].products is None for n in patterned):
                    add(path + ("with",), "give `station:`, or list in each case station the `products:` it takes "
                        f"(several case stations: {_names(patterned)})")
            if node.skill == "part_is" and isinstance(node.with_.get("product"), str) \
                    and node.with_["product"] not in cfg.products:
                add(path + ("with", "product"), "no such product", node.with_["product"])
            if isinstance(station, str) and station not in cfg.stations:
                add(path + ("with", "station"), "no such station", station)
            elif isinstance(station, str) and node.skill in PATTERN_SKILLS and cfg.stations[station].pattern is None:
                add(path + ("with", "station"), "station has no pattern (rows, cols, pitch_mm)", station)
            elif (node.skill == "case_not_full" and station is None and node.with_.get("slots") is not None
                  and sum(st.pattern is not None for st in cfg.stations.values()) > 1):
                add(path + ("with",), "give `station:`: each case station has a case of its own (several have a "
                    "pattern: " + _names([n for n, st in cfg.stations.items() if st.pattern is not None]) + ")")
            elif node.skill == "case_not_full" and station is None and node.with_.get("slots") is None:
                patterned = [n for n, st in cfg.stations.items() if st.pattern is not None]
                if len(patterned) != 1:
                    add(path + ("with",), "give `station:` or `slots:` (the slot count comes from a station's "
                        f"pattern; {'none has one' if not patterned else 'several have one: ' + _names(patterned)})")
            return
        for key in ("sequence", "fallback", "parallel"):
            kids = getattr(node, key, None)
            if kids is not None:
                for i, k in enumerate(kids):
                    walk(k, path + (key, i))
                return
        for key in ("retry", "timeout", "repeat"):
            kid = getattr(node, key, None)
            if kid is not None:
                walk(kid, path + (key,))

    walk(cfg.process, ("process",))
    for extra in (_check_reach, _check_line):
        try:
            problems += extra(cfg, lines, classes)
        except Exception:  # noqa: BLE001 - a geometry check that trips over an odd cell is no verdict on it
            logging.getLogger("axcell.config").debug("%s skipped", extra.__name__, exc_info=True)
    return problems


def _check_case_routing(cfg: CellConfig, add: Any) -> list[Problem]:
    """Case stations' ``products:`` lists (routing by product) and their machines.

    Refused: a product in no case station's list when some station has one (unless exactly one case station
    has no list and so takes the rest), a product two stations claim, an unknown product, and one machine
    named by two case stations (the simulator cannot tell which case a shared machine closes).
    """
    patterned = {n: st for n, st in cfg.stations.items() if st.pattern is not None}
    claims: dict[str, list[str]] = {}
    for sname, st in patterned.items():
        for j, p in enumerate(st.products or []):
            if p not in cfg.products:
                add(("stations", sname, "products", j), "no such product", p)
            elif sname in claims.get(p, []):
                add(("stations", sname, "products", j), "listed twice", p)
            else:
                claims.setdefault(p, []).append(sname)
    if any(st.products is not None for st in patterned.values()):
        for p, owners in claims.items():
            if len(owners) > 1:
                j = (patterned[owners[1]].products or []).index(p)
                add(("stations", owners[1], "products", j), f"product {p!r} is taken by several case stations "
                    f"({_names(owners)}): a part could go to either", p)
        open_ = [n for n, st in patterned.items() if st.products is None]
        if len(open_) > 1:
            add(("stations", open_[0]), f"several case stations have no `products:` list ({_names(open_)}) "
                "while others have one: list the products each takes")
        elif not open_:
            for p in cfg.products:
                if p not in claims:
                    first = next(iter(n for n, st in patterned.items() if st.products is not None))
                    add(("stations", first, "products"), f"no case station takes product {p!r} (list it in a case "
                        "station's `products:`)", p)
    served: dict[str, str] = {}
    for sname, st in patterned.items():
        if st.machine is None:
            continue
        if st.machine in served:
            add(("stations", sname, "machine"), f"machine {st.machine!r} already serves case station "
                f"{served[st.machine]!r}: one machine per case station", st.machine)
        else:
            served[st.machine] = sname
    return []


def _check_machine_cycle(cfg: CellConfig, node: "SkillNode", path: tuple[Any, ...], add: Any) -> None:
    """The case a ``machine_cycle`` closes must be known: its ``station:``, or the one station its machine serves."""
    if node.with_.get("new_case") is False:
        return
    patterned = {n: st for n, st in cfg.stations.items() if st.pattern is not None}
    station = node.with_.get("station")
    if isinstance(station, str) and station in cfg.stations and station not in patterned:
        add(path + ("with", "station"), "station has no pattern (rows, cols, pitch_mm)", station)
        return
    if len(patterned) <= 1:
        return
    machine = node.devices.get("machine")
    if machine is None:
        machines = [d.name for d in cfg.devices if any(st.machine == d.name for st in patterned.values())]
        add(path + ("devices",), "several case stations: bind the machine (`devices: {machine: ...}`) "
            f"(machines named by case stations: {_names(machines) if machines else 'none'})")
        return
    served = [n for n, st in patterned.items() if st.machine == machine]
    if not served:
        add(path + ("devices", "machine"), "no case station names this machine (`machine:`), so which case its "
            f"cycle closes is unknown (case stations: {_names(list(patterned))})", machine)
    elif isinstance(station, str) and station in patterned and station not in served:
        add(path + ("with", "station"), f"the cycle of {machine!r} closes the case of {_names(served)}, not of this "
            "station", station)


def _check_line(cfg: CellConfig, lines: dict, classes: dict[str, type]) -> list[Problem]:
    """The line's conveyor against what works on it, and the layout along the flow.

    Trays appear on the belt, the photo-eyes and the camera look at it (a spawn point or photo-eye off the
    belt, or a camera whose image does not cover the belt, passes every per-device check but makes a cell
    that never sees a tray); and where parts appear, the photo-eyes, the camera's view where the inspect
    step captures a part, the pick window and the exit must come in an order in which parts can pass them.
    """
    from .runtime import line_geometry

    problems: list[Problem] = []
    belt_name = cfg.line.conveyor
    if belt_name not in {d.name for d in cfg.devices}:
        return problems
    belt = _validated_options(cfg, belt_name, classes)
    x0, x1, by, bw = (getattr(belt, k, None) for k in ("x_start", "x_end", "y", "width"))
    if None in (x0, x1):
        return problems

    def add(path: tuple[Any, ...], msg: str, value: Any = None) -> None:
        problems.append(Problem(line=yamlsafe.line_for(lines, path), path=".".join(map(str, path)), message=msg,
                                value=value))

    # the order along the flow is only checked when the belt and line.flow agree (else reported as line.flow)
    in_order = getattr(belt, "flow", cfg.line.flow) == cfg.line.flow
    f = -1.0 if cfg.line.flow == "-x" else 1.0
    geo = line_geometry(cfg)
    nodes = _skill_nodes(cfg.process, ("process",))
    span = f"belt {belt_name!r} runs from x={x0:g} to x={x1:g} m"
    exit_on_belt = x0 <= cfg.line.exit_x <= x1
    if not exit_on_belt:
        add(("line", "exit_x"), f"the exit must lie on the belt ({span})", cfg.line.exit_x)
    elif in_order:
        # the exit must not lie upstream of a whole pick window (every good part would be closed as missed
        # before it could be picked; an exit inside the window only shortens it)
        for node, path in nodes:
            win = node.with_.get("window") if node.skill == "pick_tracking" else None
            if (isinstance(win, (list, tuple)) and len(win) == 2 and all(isinstance(v, (int, float)) for v in win)
                    and f * cfg.line.exit_x <= min(f * win[0], f * win[1]) + 1e-9):
                add(("line", "exit_x"), f"the exit is upstream of the pick window {list(win)} (the belt runs "
                    f"towards {cfg.line.flow}): every part would be closed as missed before it could be picked",
                    cfg.line.exit_x)
                break
    top = getattr(belt, "max_speed", None)
    for rname, r in cfg.recipes.items():
        if top is not None and r.conveyor_speed is not None and r.conveyor_speed > top:
            add(("recipes", rname, "conveyor_speed"), f"faster than belt {belt_name!r} can run (max_speed {top:g} m/s)",
                r.conveyor_speed)
    tray_mm = max(max(p.size_mm[0], p.size_mm[1]) for p in cfg.products.values())
    spawn = None
    if cfg.sim is not None and cfg.sim.infeed.conveyor == belt_name:
        spawn = cfg.sim.infeed.spawn_x
        if not x0 <= spawn <= x1:
            add(("sim", "infeed", "spawn_x"), f"trays would appear off the belt ({span})", spawn)
            spawn = None
    eyes_on_belt: set[str] = set()
    for i, d in enumerate(cfg.devices):
        opts = _validated_options(cfg, d.name, classes)
        for ch_name, ch in (getattr(opts, "channels", None) or {}).items():
            eye = getattr(ch, "photo_eye", None)
            if eye is not None and getattr(eye, "conveyor", None) == belt_name:
                if not x0 <= eye.x <= x1:
                    add(("devices", i, "options", "channels", ch_name, "photo_eye", "x"),
                        f"the photo-eye is off the belt ({span})", eye.x)
                else:
                    eyes_on_belt.add(str(ch_name))
    # a photo-eye the process waits on, upstream of where parts appear: no part would ever trip it
    for node, path in nodes:
        ch = node.with_.get("channel") if node.skill == "wait_for_part" else None
        eye = (geo.get("eyes") or {}).get(ch)
        if in_order and spawn is not None and ch in eyes_on_belt and eye is not None and f * eye <= f * spawn:
            add(path + ("with", "channel"), f"the photo-eye of {ch!r} (x={eye:g}) is upstream of where parts appear "
                f"(sim.infeed.spawn_x {spawn:g}, the belt runs towards {cfg.line.flow}): no part would ever trip it",
                ch)
    # where the inspect step captures a part: the trigger (photo-eye + lead) on the lane, per camera
    cams = [d.name for d in cfg.devices if getattr(classes.get(d.name), "contract", None) == "camera"]
    captured: dict[str, tuple[float, float]] = {}
    wfp = next((n for n, _ in nodes if n.skill == "wait_for_part"), None)
    if in_order and wfp is not None:
        eye = wfp.with_.get("eye_x")
        if eye is None:
            eye = (geo.get("eyes") or {}).get(wfp.with_.get("channel"))
        lead = wfp.with_.get("lead_m", geo.get("lead_m", 0.0))
        lane = wfp.with_.get("lane_y", geo.get("y"))
        if isinstance(eye, (int, float)) and isinstance(lane, (int, float)):
            for node, _ in nodes:
                if node.skill == "inspect":
                    cam = node.devices.get("camera") or (cams[0] if len(cams) == 1 else None)
                    if cam is not None:
                        captured[cam] = (float(eye) + f * float(lead if lead is not None else 0.0), float(lane))
    big_l = max(p.size_mm[0] for p in cfg.products.values()) / 1000.0
    big_w = max(p.size_mm[1] for p in cfg.products.values()) / 1000.0
    tallest = max(p.size_mm[2] for p in cfg.products.values()) / 1000.0
    for i, d in enumerate(cfg.devices):
        if getattr(classes.get(d.name), "contract", None) != "camera" or None in (by, bw):
            continue
        opts = _validated_options(cfg, d.name, classes)
        try:
            cx, cy = float(opts.x), float(opts.y)
            half_w = opts.width * opts.mm_per_px / 2000.0
            half_h = opts.height * opts.mm_per_px / 2000.0
        except (AttributeError, TypeError, ValueError):
            continue  # not a top-down camera with a known footprint
        if 2000 * min(half_w, half_h) < tray_mm:
            add(("devices", i, "options"),
                f"camera {d.name!r} sees {2000 * half_w:.0f} x {2000 * half_h:.0f} mm (width, height x mm_per_px): "
                f"too small for the largest tray ({tray_mm:g} mm)")
        elif cx + half_w < x0 or cx - half_w > x1 or cy + half_h < by - bw / 2 or cy - half_h > by + bw / 2:
            add(("devices", i, "options"),
                f"camera {d.name!r} sees x {cx - half_w:.3f}..{cx + half_w:.3f}, y {cy - half_h:.3f}.."
                f"{cy + half_h:.3f} m, which misses the belt ({span}, y {by - bw / 2:.3f}..{by + bw / 2:.3f})")
        elif d.name in captured and getattr(opts, "height_m", None):
            # the view on the parts' top face (a top-down camera: the footprint shrinks with height)
            px, py = captured[d.name]
            plane = float(getattr(opts, "plane_z", 0.0) or 0.0)
            part_top = float(geo.get("z", plane)) + tallest
            scale = max(0.0, (opts.height_m - (part_top - plane)) / opts.height_m)
            hx, hy = half_w * scale, half_h * scale
            over_x = abs(px - cx) + big_l / 2 - hx
            over_y = abs(py - cy) + big_w / 2 - hy
            if over_x > 0.01 + 0.2 * big_l or over_y > 0.01 + 0.2 * big_w:  # more than a fifth of the part out
                add(("devices", i, "options"), f"camera {d.name!r} sees x {cx - hx:.3f}..{cx + hx:.3f}, "
                    f"y {cy - hy:.3f}..{cy + hy:.3f} m on the parts' top; the inspect step captures a part centred "
                    f"at ({px:.3f}, {py:.3f}) m and up to {big_l * 1000:g} x {big_w * 1000:g} mm: it would not be "
                    f"in view")
    return problems


def _skill_nodes(node: Any, path: tuple[Any, ...]) -> list[tuple[SkillNode, tuple[Any, ...]]]:
    """Every skill node of the process tree with its field path."""
    if isinstance(node, SkillNode):
        return [(node, path)]
    out: list[tuple[SkillNode, tuple[Any, ...]]] = []
    for key in ("sequence", "fallback", "parallel"):
        for i, k in enumerate(getattr(node, key, None) or []):
            out += _skill_nodes(k, path + (key, i))
    for key in ("retry", "timeout", "repeat"):
        kid = getattr(node, key, None)
        if kid is not None:
            out += _skill_nodes(kid, path + (key,))
    return out


# -- where the robot has to go -----------------------------------------------------------------------
_SLOT_SKILLS = ("place_in_pattern",)
_BELT_SKILLS = ("pick_tracking",)
_MOVE_SKILLS = ("move",)


def _validated_options(cfg: CellConfig, name: str, classes: dict[str, type]) -> Any:
    """The device's options parsed by its driver's ``Config`` model, or None (unknown kind, bad options)."""
    cls = classes.get(name)
    if cls is None or not hasattr(cls, "Config"):
        return None
    try:
        return cls.Config.model_validate(cfg.device(name).options)
    except Exception:  # noqa: BLE001 - reported by _check_devices already
        return None


def _arm_envelope(opts: Any) -> tuple[Any, Any]:
    """(workspace box or None, (base xyz, reach) or None) of an arm's validated options."""
    ws = getattr(opts, "workspace", None)
    box = None
    if ws is not None and hasattr(ws, "min") and hasattr(ws, "max"):
        box = (tuple(float(v) for v in ws.min), tuple(float(v) for v in ws.max))
    reach = None
    model = getattr(opts, "model", None)
    if isinstance(model, str):
        try:
            from drivers import kinematics

            rm = kinematics.MODELS.get(model)
        except Exception:  # noqa: BLE001 - no kinematics for this arm: no reach check
            rm = None
        if rm is not None and getattr(rm, "reach", None):
            base = tuple(getattr(opts, "base", (0.0, 0.0, 0.0)))[:3]
            reach = (tuple(float(v) for v in base), float(rm.reach) + float(getattr(opts, "tool_z", 0.0) or 0.0))
    return box, reach


def _m(v: float) -> str:
    return f"{v:.3f}" if abs(v) < 1e6 else f"{v:.3g}"


def _at(p: tuple[float, ...]) -> str:
    return "(" + ", ".join(_m(v) for v in p) + ") m"


def _outside(p: tuple[float, float, float], arm: str, box: Any, reach: Any) -> str | None:
    """Why arm ``arm``'s TCP cannot go to ``p`` (workspace box, then reach), or None."""
    if box is not None:
        lo, hi = box
        bad = [f"{a} {_m(v)} not in [{mn:g}, {mx:g}]" for a, v, mn, mx in zip("xyz", p, lo, hi)
               if not mn - 1e-9 <= v <= mx + 1e-9]
        if bad:
            return f"outside the workspace of arm {arm!r} (" + ", ".join(bad) + ")"
    if reach is not None:
        base, r = reach
        d = math.dist(p, base)
        if d > r + 0.02:
            return f"out of the reach of arm {arm!r} ({_m(d)} m from its base, reach {r:.3f} m)"
    return None


def _check_reach(cfg: CellConfig, lines: dict, classes: dict[str, type]) -> list[Problem]:
    """Targets the handling skills will send the arm to: case slots, the pick window on the belt, ``move`` targets.

    The arm refuses such targets at run time (before moving), but then every cycle fails and trays are
    missed: a cell with a case slot out of the arm's workspace box, reach or IK (the driver's
    ``target_problem``), or a pick window no point of which the arm can reach, is refused here; so is a
    ``move`` pose (in its own orientation) or joint target the arm cannot take.
    Also: a case pattern whose pitch is smaller than the largest tray (trays would overlap).
    """
    from skills import registry

    problems: list[Problem] = []
    if not cfg.products:
        return problems
    skills = registry()
    heights = [p.size_mm[2] / 1000.0 for p in cfg.products.values()]
    h_lo, h_hi = min(heights), max(heights)
    longest = max(p.size_mm[0] for p in cfg.products.values())
    widest = max(p.size_mm[1] for p in cfg.products.values())
    arms = [d.name for d in cfg.devices if getattr(classes.get(d.name), "contract", None) == "arm"]
    reported: set[tuple[str, ...]] = set()

    def add(path: tuple[Any, ...], msg: str, value: Any = None) -> None:
        key = (".".join(map(str, path)), msg.split(" (")[0])
        if key in reported:
            return
        reported.add(key)
        problems.append(Problem(line=yamlsafe.line_for(lines, path), path=key[0], message=msg, value=value))

    for sname, st in cfg.stations.items():
        if st.pattern is not None and (st.pattern.pitch_mm[0] < longest or st.pattern.pitch_mm[1] < widest):
            add(("stations", sname, "pattern", "pitch_mm"),
                f"slots are closer than the largest tray ({longest:g} x {widest:g} mm): trays would overlap",
                list(st.pattern.pitch_mm))

    def arm_for(node: SkillNode) -> str | None:
        name = node.devices.get("arm")
        if name is not None:
            return name if name in arms else None
        return arms[0] if len(arms) == 1 else None

    def slots(st: StationSpec) -> list[tuple[int, float, float]]:
        f, pat = st.frame, st.pattern
        assert pat is not None
        cy, sy = math.cos(math.radians(f.yaw_deg)), math.sin(math.radians(f.yaw_deg))
        out = []
        for k in range(pat.rows * pat.cols):
            r, c = divmod(k, pat.cols)
            dx = (c - (pat.cols - 1) / 2) * pat.pitch_mm[0] / 1000.0
            dy = (r - (pat.rows - 1) / 2) * pat.pitch_mm[1] / 1000.0
            out.append((k, f.x + cy * dx - sy * dy, f.y + sy * dx + cy * dy))
        return out

    fill_checks: list[tuple[tuple[Any, ...], int, Any]] = []
    case_stations: set[str] = set()
    reach_checked: set[tuple[str, str]] = set()
    geo: dict[str, Any] | None = None

    def visit(node: SkillNode, path: tuple[Any, ...]) -> None:
        nonlocal geo
        if node.skill == "case_not_full":
            n_slots = node.with_.get("slots")  # None: the skill counts the station's pattern itself
            if isinstance(n_slots, int) and not isinstance(n_slots, bool):
                fill_checks.append((path, n_slots, node.with_.get("station")))
            return
        if node.skill in _SLOT_SKILLS and isinstance(node.with_.get("station"), str):
            case_stations.add(node.with_["station"])
        if node.skill not in _SLOT_SKILLS + _BELT_SKILLS + _MOVE_SKILLS:
            return
        cls = skills.get(node.skill)
        if cls is None:
            return
        try:
            params = cls.Params.model_validate(node.with_)
        except Exception:  # noqa: BLE001 - reported by _check_semantics
            return
        arm = arm_for(node)
        if arm is None:
            return
        arm_opts = _validated_options(cfg, arm, classes)
        box, reach = _arm_envelope(arm_opts)
        ik_hook = getattr(classes.get(arm), "target_problem", None)

        def why_not(p: tuple[float, float, float], rpy: tuple[float, float, float] | None = None) -> str | None:
            """Outside the workspace box; else, for an arm whose driver solves IK (``target_problem``), no IK
            solution (said as out of reach when the point is beyond the published reach); else (no IK) beyond
            the published reach."""
            why = _outside(p, arm, box, None)
            if why is not None:
                return why
            if ik_hook is None or arm_opts is None:
                return _outside(p, arm, None, reach)
            try:
                ik_why = ik_hook(arm_opts, *p) if rpy is None else ik_hook(arm_opts, *p, rpy=rpy)
            except Exception:  # noqa: BLE001 - a driver's check that fails is no verdict
                return None
            if ik_why:
                return _outside(p, arm, None, reach) or f"unreachable for arm {arm!r} ({ik_why})"
            return None
        approach = float(getattr(params, "approach_m", 0.0) or 0.0)
        if node.skill in _MOVE_SKILLS:
            pose, joints = getattr(params, "pose", None), getattr(params, "joints_deg", None)
            if pose is not None:
                p = (float(pose.x), float(pose.y), float(pose.z))
                rpy = tuple(math.radians(float(getattr(pose, k, d)))
                            for k, d in (("roll_deg", 180.0), ("pitch_deg", 0.0), ("yaw_deg", 0.0)))
                why = why_not(p, rpy)  # the pose's own orientation
                if why:
                    add(path + ("with", "pose"), f"target {_at(p)} is {why}")
            elif joints is not None:
                hook = getattr(classes.get(arm), "joints_problem", None)
                why = hook(arm_opts, [math.radians(v) for v in joints]) if hook and arm_opts is not None else None
                if why:
                    add(path + ("with", "joints_deg"), f"joint target for arm {arm!r}: {why}", list(joints))
            return
        if node.skill in _SLOT_SKILLS:
            # every slot must be reachable (at the lowest tray's top and the tallest's approach height); without
            # `station:` the part may go to any case station (routing by product)
            named = getattr(params, "station", None)
            targets = [named] if named else [n for n, s in cfg.stations.items() if s.pattern is not None]
            for sname in targets:
                st = cfg.stations.get(sname or "")
                if st is None or st.pattern is None or (sname, arm) in reach_checked:
                    continue
                reach_checked.add((sname, arm))
                n = st.pattern.rows * st.pattern.cols
                for k, x, y in slots(st):
                    for z in (st.frame.z + h_lo, st.frame.z + h_hi + approach):
                        why = why_not((x, y, z))
                        if why:
                            add(("stations", sname, "frame"),
                                f"case slot {k + 1} of {n} ({st.pattern.rows} x {st.pattern.cols} pattern) at "
                                f"{_at((x, y, z))} is {why}")
                            break
                    else:
                        continue
                    break
            return
        belt = node.devices.get("conveyor") or cfg.line.conveyor
        if belt not in {d.name for d in cfg.devices}:
            return
        bopts = _validated_options(cfg, belt, classes)
        y = getattr(bopts, "y", None)
        window = getattr(params, "window", None)
        if y is None or window is None:
            return
        x0, x1 = getattr(bopts, "x_start", None), getattr(bopts, "x_end", None)
        if x0 is not None and x1 is not None and not (x0 <= window[0] and window[1] <= x1):
            add(path + ("with", "window"), f"the pick window lies off belt {belt!r} (it runs from x={x0:g} "
                f"to x={x1:g} m)", list(window))
            return
        bz = getattr(params, "belt_z", None)
        if bz is None:  # the skill's default: the line conveyor's surface
            if geo is None:
                from .runtime import line_geometry

                geo = line_geometry(cfg)
            bz = geo.get("z", 0.0)
        bz = float(bz)
        # refused when no point of the window can be reached (the skill intercepts a part where it can: a
        # window reaching a little past the arm only loses the parts it cannot plan for)
        lo, hi = float(window[0]), float(window[1])
        first = None
        for j in range(9):
            x = lo + (hi - lo) * j / 8
            why = None
            for z in (bz + h_lo, bz + h_hi + approach):
                p = (x, float(y), z)
                why = why_not(p)
                if why:
                    first = first or (p, why)
                    break
            if why is None:
                return
        p, why = first
        add(path + ("with", "window"), f"no point of the pick window can be reached: pick point on belt {belt!r} "
            f"at {_at(p)} is {why}", list(window))

    for node, path in _skill_nodes(cfg.process, ("process",)):
        visit(node, path)
    # the "case full?" condition must count the slots of the case being filled: more, and places fail on a full
    # case (trays missed); fewer, and half-filled cases are sealed
    for path, n_slots, named in fill_checks:
        sname = named if isinstance(named, str) else (next(iter(case_stations)) if len(case_stations) == 1 else None)
        st = cfg.stations.get(sname) if sname is not None else None
        if st is not None and st.pattern is not None and n_slots != st.pattern.rows * st.pattern.cols:
            n = st.pattern.rows * st.pattern.cols
            add(path + ("with", "slots"), f"the case holds {st.pattern.rows} x {st.pattern.cols} = {n} parts "
                f"(stations.{sname}.pattern), not {n_slots} (leave slots out to count the pattern)", n_slots)
    return problems


def parse_cell(text: str, file: str = "<cell>", *, base_dir: Path | None = None) -> CellConfig:
    """Validate cell-file text; raise :class:`CellFileError` with every problem found.

    ``base_dir``: the cell file's folder, when known; then product model files must exist.
    """
    try:
        data, lines = yamlsafe.load(text)
    except yamlsafe.YamlError as e:
        raise CellFileError(file, [Problem(line=e.line, path=e.path, message=e.message)]) from None
    if not isinstance(data, dict):
        raise CellFileError(file, [Problem(line=1, path="(top)", message="a cell file must be a mapping of sections",
                                           value=type(data).__name__)])
    non_finite = _non_finite_problems(data, lines)
    dev_problems, classes, unknown = _check_devices(data, lines)
    problems = non_finite + dev_problems
    try:
        cfg = CellConfig.model_validate(data)
    except ValidationError as e:
        problems = _problems_from(e, data, lines) + problems
        raise CellFileError(file, _sorted(_drop_echoes(problems, non_finite))) from None
    problems += _check_semantics(cfg, data, lines, classes, unknown)
    problems += _check_products(data, lines, cfg)
    if base_dir is not None:
        for name, spec in cfg.products.items():
            if spec.model and not (base_dir / spec.model).is_file():
                where = ("products", name, "model")
                problems.append(Problem(line=yamlsafe.line_for(lines, where), path=".".join(where), value=spec.model,
                                        message="no such model file (paths are relative to the cell file)"))
            elif spec.model and not problems:
                problems += _check_model_file(cfg, name, base_dir / spec.model, lines)
    if problems:
        raise CellFileError(file, _sorted(_drop_echoes(problems, non_finite)))
    return cfg


def _check_model_file(cfg: CellConfig, name: str, path: Path, lines: dict) -> list[Problem]:
    """A product's fitted model must load, and (in a simulated cell) fit the crops its camera will give it.

    Otherwise the cell failed when it started (a file that is not a model) or every inspection failed
    while it ran (a model fitted on images of another size).
    """
    from skills.vision import InspectionError, Inspector

    where = ("products", name, "model")
    line = yamlsafe.line_for(lines, where)
    try:
        ins = Inspector.load(path)
    except InspectionError as e:
        msg = str(e).removeprefix(f"{path}: ")
        return [Problem(line=line, path=".".join(where), value=cfg.products[name].model, message=msg)]
    except Exception as e:  # noqa: BLE001 - anything else a damaged file raises
        return [Problem(line=line, path=".".join(where), value=cfg.products[name].model,
                        message=f"cannot load the model ({e.__class__.__name__}: {e})")]
    try:
        from .vision_models import expected_crop_size

        want = expected_crop_size(cfg)
    except Exception:  # noqa: BLE001 - the camera's own problems are reported elsewhere
        want = None
    have = tuple(ins.meta.get("image_size") or ())
    if want is not None and have and tuple(have) != tuple(want):
        return [Problem(line=line, path=".".join(where), value=cfg.products[name].model,
                        message=f"the model was fitted on {have[0]}x{have[1]} images, but this cell's camera "
                                f"crops are {want[0]}x{want[1]} (fit it on crops from this camera)")]
    return []


def _drop_echoes(problems: list[Problem], non_finite: list[Problem]) -> list[Problem]:
    """Drop a model's own complaint about a NaN/inf (at the number or the field holding it): said once."""
    if not non_finite:
        return problems
    nf = {p.path for p in non_finite}
    parents = {p.path.rsplit(".", 1)[0] for p in non_finite}
    return [p for p in problems if p in non_finite or (p.path not in nf and p.path not in parents)]


def _names(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _sorted(problems: list[Problem]) -> list[Problem]:
    uniq: dict[tuple[int, str, str], Problem] = {}
    for p in problems:
        uniq.setdefault((p.line, p.path, p.message), p)
    return sorted(uniq.values(), key=lambda p: (p.line, p.path))


def load_cell(path: str | Path) -> CellConfig:
    """Read and validate a cell file. Raises CellFileError (also for unreadable files)."""
    p = Path(path)
    try:
        text = yamlsafe.read(path if not str(path) else p)
    except yamlsafe.YamlError as e:
        raise CellFileError(str(path), [Problem(line=e.line, path=e.path, message=e.message)]) from None
    cfg = parse_cell(text, str(path), base_dir=p.resolve().parent)
    cfg.source = p.resolve()
    return cfg


def in_process_twins(cfg: CellConfig) -> CellConfig:
    """A copy of ``cfg`` whose simulated OPC UA machines (``opcua.machine`` with ``simulate: true``)
    are in-process ``sim.machine`` twins: the same behaviour without a protocol server (benchmarks,
    tests of other paths)."""
    cfg = cfg.model_copy(deep=True)
    for d in cfg.devices:
        if d.kind == "opcua.machine" and d.options.get("simulate"):
            d.kind, d.options = "sim.machine", dict(d.options.get("sim") or {})
    return cfg


def json_schema() -> dict[str, Any]:
    return CellConfig.model_json_schema(by_alias=True)
