"""The one deterministic simulated world.

The world owns simulated time (:class:`sim.clock.SimClock`), the random
streams, every tray with its ground truth, the belts and the case station.
Sim device twins are views onto it: a conveyor twin sets a belt's speed, a
photo-eye reads a belt, the camera renders the trays under it, the gripper
attaches a tray to the arm's tool, the sealer closes the case.

Parts move analytically: a tray on a belt is at ``x0 + direction * (travel - s_on)``
where ``travel`` is the belt's encoder and ``direction`` (+1 or -1) the way the belt
runs along x, so no physics stepping is needed and an hour of production is a few
tens of thousands of events.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, field_validator, model_validator

from drivers.configmodel import ConfigModel

from .clock import SimClock, TimerHandle
from .faults import FaultSpec

DEFECT_KINDS = ("missing_label", "skewed_label", "seal_contamination", "torn_film", "foreign_body", "underfill")


class _Model(ConfigModel):
    model_config = ConfigDict(extra="forbid")


class InfeedConfig(_Model):
    """How trays arrive on the infeed conveyor."""

    conveyor: str = Field(description="name of the sim.conveyor device trays are put on")
    rate_ppm: float = Field(30.0, gt=0, le=600, description="mean trays per minute at nominal belt speed")
    jitter: float = Field(0.35, ge=0, lt=1, description="random gap variation, fraction of the mean pitch")
    spawn_x: float = Field(-1.0, description="cell-frame x (m) where trays appear")
    lateral_jitter_m: float = Field(0.02, ge=0, le=0.2)
    yaw_jitter_deg: float = Field(8.0, ge=0, le=180)
    flip_probability: float = Field(0.5, ge=0, le=1, description="chance a tray arrives rotated 180°")
    mix: dict[str, float] = Field(description="product variant → relative weight")

    @model_validator(mode="after")
    def _weights(self) -> "InfeedConfig":
        if not self.mix:
            raise ValueError("mix must name at least one variant")
        for k, w in self.mix.items():
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"weight of {k!r} must be a finite number >= 0 (got {w})")
        if sum(self.mix.values()) <= 0:
            raise ValueError("mix weights sum to 0")
        return self


class LightingConfig(_Model):
    strength: float = Field(1.0, ge=0, le=3, description="0: constant lighting; 1: typical drift, gradient and noise")


class OperatorConfig(_Model):
    """The simulated operator who clears jams during batch runs."""

    clear_jam_after_s: float = Field(20.0, ge=0, le=3600)


class WorldConfig(_Model):
    """The cell file's ``sim:`` section."""

    seed: int = Field(1, ge=0, le=2**63 - 1, description="random seed (stored as a 64-bit integer)")
    infeed: InfeedConfig
    defect_rates: dict[Literal[DEFECT_KINDS], float] = Field(default_factory=dict)  # type: ignore[valid-type]
    lighting: LightingConfig = Field(default_factory=LightingConfig)
    operator: OperatorConfig = Field(default_factory=OperatorConfig)
    faults: list[FaultSpec] = Field(default_factory=list)

    @field_validator("defect_rates")
    @classmethod
    def _rates(cls, v: dict[str, float]) -> dict[str, float]:
        for k, r in v.items():
            if not (0.0 <= r <= 1.0):
                raise ValueError(f"defect rate {k} must be within [0, 1] (got {r})")
        if sum(v.values()) > 1.0:
            raise ValueError(f"defect rates sum to {sum(v.values()):.3f} > 1")
        return v


@dataclass(frozen=True)
class VariantSpec:
    """What the world needs to know of a product variant."""

    name: str
    length_m: float  # along the tray's long axis
    width_m: float
    height_m: float
    appearance: Any = None  # sim.render.ProductAppearance (opaque here)


PartState = Literal["belt", "gripped", "case", "bin", "dropped"]


@dataclass
class Part:
    """A tray and its ground truth."""

    id: int
    variant: VariantSpec
    defects: tuple[str, ...]
    seed: int
    created: float
    belt: "Belt | None"
    s_on: float
    x0: float
    y: float
    yaw: float
    state: PartState = "belt"
    z: float = 0.0
    eye_time: float | None = None
    fate_time: float | None = None
    case_id: int | None = None
    slot: int | None = None
    station: str | None = None
    """The case station whose case holds the part (state ``case``)."""
    timers: list[TimerHandle] = field(default_factory=list)

    @property
    def defective(self) -> bool:
        return bool(self.defects)


class Belt:
    """A conveyor belt: a piecewise-constant speed integrated into an encoder."""

    def __init__(
        self, world: "World", name: str, *, x_start: float, x_end: float, y: float, z: float, width: float,
        nominal_speed: float, direction: float = 1.0,
    ) -> None:
        if direction not in (1.0, -1.0):
            raise ValueError(f"belt direction must be +1 or -1 (got {direction})")
        self.world = world
        self.direction = float(direction)
        self.nominal_speed = nominal_speed
        self.name = name
        self.x_start, self.x_end, self.y, self.z, self.width = x_start, x_end, y, z, width
        self._s0 = 0.0
        self._t0 = world.clock.now()
        self._v = 0.0
        self._triggers: list[tuple[float, int, Callable[[], None], list[TimerHandle | None]]] = []
        self._tseq = 0

    @property
    def speed(self) -> float:
        return self._v

    @property
    def downstream_x(self) -> float:
        """Cell x of the end parts run off (``x_end`` for a belt running towards +x, ``x_start`` for -x)."""
        return self.x_end if self.direction > 0 else self.x_start

    def travel_to(self, x_from: float, x_to: float) -> float:
        """Belt travel that carries a part from cell x ``x_from`` to ``x_to`` (negative: it was there before)."""
        return self.direction * (x_to - x_from)

    def travel(self, t: float | None = None) -> float:
        t = self.world.clock.now() if t is None else t
        return self._s0 + self._v * (t - self._t0)

    def set_speed(self, v: float) -> None:
        now = self.world.clock.now()
        self._s0 = self.travel(now)
        self._t0 = now
        self._v = float(v)
        for trig in self._triggers:
            self._arm(trig)

    def at_travel(self, s: float, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the encoder reaches ``s``; returns a cancel function."""
        self._tseq += 1
        trig = (s, self._tseq, callback, [None])
        self._triggers.append(trig)
        self._arm(trig)

        def cancel() -> None:
            h = trig[3][0]
            if h is not None:
                h.cancel()
            if trig in self._triggers:
                self._triggers.remove(trig)

        return cancel

    def _arm(self, trig: tuple[float, int, Callable[[], None], list[TimerHandle | None]]) -> None:
        s, _, cb, holder = trig
        if holder[0] is not None:
            holder[0].cancel()
            holder[0] = None
        if self._v <= 0:
            return
        t = self._t0 + (s - self._s0) / self._v

        def fire() -> None:
            if trig in self._triggers:
                self._triggers.remove(trig)
            cb()

        holder[0] = self.world.clock.call_at(t, fire)


class Eye:
    """A through-beam photo-eye across a belt at cell-frame ``x``."""

    def __init__(self, belt: Belt, x: float) -> None:
        self.belt = belt
        self.x = x
        self.blocked_by: set[int] = set()
        self.listeners: list[Callable[[bool, float], None]] = []

    @property
    def state(self) -> bool:
        return bool(self.blocked_by)

    def _set(self, part_id: int, on: bool) -> None:
        before = self.state
        (self.blocked_by.add if on else self.blocked_by.discard)(part_id)
        if self.state != before:
            t = self.belt.world.clock.now()
            for cb in list(self.listeners):
                cb(self.state, t)


@dataclass
class CaseGeometry:
    """Where the case sits and its slot pattern (from the cell's stations)."""

    x: float
    y: float
    z: float
    yaw: float
    rows: int
    cols: int
    pitch_x: float
    pitch_y: float
    tolerance_m: float = 0.02

    def slot_xy(self, slot: int) -> tuple[float, float]:
        r, c = divmod(slot, self.cols)
        dx = (c - (self.cols - 1) / 2) * self.pitch_x
        dy = (r - (self.rows - 1) / 2) * self.pitch_y
        cy, sy = math.cos(self.yaw), math.sin(self.yaw)
        return self.x + cy * dx - sy * dy, self.y + sy * dx + cy * dy

    @property
    def slots(self) -> int:
        return self.rows * self.cols


@dataclass
class Case:
    id: int
    slots: dict[int, int] = field(default_factory=dict)  # slot → part id
    sealed_at: float | None = None
    station: str = "case"


@dataclass
class CaseStation:
    """One case station of the cell: where its case sits, the case in progress and the cases it completed.

    Case ids count per station (1, 2, … at each), as the skills' facts do.
    """

    name: str
    geometry: CaseGeometry
    machine: str | None = None
    case: Case | None = None
    done: list[Case] = field(default_factory=list)
    seq: int = 0


class World:
    """The simulated cell: time, randomness, trays, belts, eyes, cases."""

    def __init__(self, config: WorldConfig, variants: dict[str, VariantSpec], *, seed: int | None = None) -> None:
        self.config = config
        self.seed = config.seed if seed is None else seed
        self.clock = SimClock()
        self.variants = variants
        missing = [v for v in config.infeed.mix if v not in variants]
        if missing:
            raise ValueError(f"infeed.mix names unknown variants: {missing}")
        self.belts: dict[str, Belt] = {}
        self.eyes: list[Eye] = []
        self.parts: dict[int, Part] = {}
        self.case_stations: dict[str, CaseStation] = {}
        self.cases_done: list[Case] = []
        """Every completed case of every station, in the order they were sealed."""
        self._part_seq = 0
        self._rngs: dict[str, np.random.Generator] = {}
        self.listeners: list[Callable[[str, Part], None]] = []
        self._infeed_cancel: Callable[[], None] | None = None
        self.held_parts: dict[str, int] = {}  # gripper name → part id

    # -- randomness -------------------------------------------------------------
    def rng(self, stream: str) -> np.random.Generator:
        """An independent, named random stream: adding a consumer never perturbs another."""
        g = self._rngs.get(stream)
        if g is None:
            g = np.random.default_rng([self.seed, zlib.crc32(stream.encode())])
            self._rngs[stream] = g
        return g

    # -- layout -----------------------------------------------------------------
    def add_belt(self, name: str, **geometry: float) -> Belt:
        belt = Belt(self, name, **geometry)
        self.belts[name] = belt
        return belt

    def add_eye(self, belt_name: str, x: float) -> Eye:
        eye = Eye(self.belts[belt_name], x)
        self.eyes.append(eye)
        for p in self.parts.values():
            if p.belt is eye.belt and p.state == "belt":
                self._arm_eye(p, eye)
        return eye

    def set_case_station(self, geom: CaseGeometry, name: str = "case", *, machine: str | None = None) -> None:
        """Add (or replace) the case station ``name``, served by the machine device ``machine``."""
        self.case_stations[name] = CaseStation(name, geom, machine)
        self.index_new_case(name)

    def _station(self, station: str | None) -> CaseStation | None:
        if station is None:
            return next(iter(self.case_stations.values()), None)
        return self.case_stations.get(station)

    def machine_station(self, machine: str) -> str | None:
        """The case station the machine device ``machine`` serves (the only station when none names it)."""
        for st in self.case_stations.values():
            if st.machine == machine:
                return st.name
        if len(self.case_stations) == 1 and next(iter(self.case_stations.values())).machine is None:
            return next(iter(self.case_stations))
        return None

    @property
    def case_geometry(self) -> CaseGeometry | None:
        """The first case station's geometry (cells with one case station)."""
        st = self._station(None)
        return st.geometry if st is not None else None

    @property
    def case(self) -> Case | None:
        """The first case station's case in progress (cells with one case station)."""
        st = self._station(None)
        return st.case if st is not None else None

    def index_new_case(self, station: str | None = None) -> Case | None:
        """Put an empty case at ``station`` (default: the first case station)."""
        st = self._station(station)
        if st is None:
            return None
        st.seq += 1
        st.case = Case(st.seq, station=st.name)
        return st.case

    # -- parts ------------------------------------------------------------------
    def part_xy(self, p: Part) -> tuple[float, float]:
        if p.belt is not None and p.state == "belt":
            return p.x0 + p.belt.direction * (p.belt.travel() - p.s_on), p.y
        return p.x0, p.y

    def parts_on_belt(self, belt: Belt | None = None) -> list[Part]:
        return [p for p in self.parts.values() if p.state == "belt" and (belt is None or p.belt is belt)]

    def start_infeed(self) -> None:
        cfg = self.config.infeed
        belt = self.belts.get(cfg.conveyor)
        if belt is None:
            raise ValueError(f"infeed conveyor {cfg.conveyor!r} is not a sim.conveyor device")
        self._schedule_spawn(belt, belt.travel())

    def _schedule_spawn(self, belt: Belt, s_now: float) -> None:
        cfg = self.config.infeed
        rng = self.rng("infeed")
        pitch = belt.nominal_speed * 60.0 / cfg.rate_ppm  # mean belt travel between trays
        longest = max(v.length_m for v in self.variants.values())
        gap = max(pitch * (1.0 + cfg.jitter * rng.uniform(-1, 1)), longest * 1.25)
        self._infeed_cancel = belt.at_travel(s_now + gap, lambda: self._spawn(belt, s_now + gap))

    def _spawn(self, belt: Belt, s: float) -> None:
        cfg = self.config.infeed
        rng = self.rng("infeed")
        names = list(cfg.mix)
        w = np.array([cfg.mix[n] for n in names], dtype=float)
        variant = self.variants[names[int(rng.choice(len(names), p=w / w.sum()))]]
        drng = self.rng("defects")
        defects: tuple[str, ...] = ()
        u = drng.uniform()
        acc = 0.0
        for kind in DEFECT_KINDS:
            acc += self.config.defect_rates.get(kind, 0.0)
            if u < acc:
                defects = (kind,)
                break
        yaw = math.radians(rng.uniform(-cfg.yaw_jitter_deg, cfg.yaw_jitter_deg))
        if rng.uniform() < cfg.flip_probability:
            yaw += math.pi
        yaw = math.atan2(math.sin(yaw), math.cos(yaw))
        self._part_seq += 1
        part = Part(
            id=self._part_seq, variant=variant, defects=defects, seed=int(drng.integers(2**31)),
            created=self.clock.now(), belt=belt, s_on=belt.travel(), x0=cfg.spawn_x,
            y=belt.y + rng.uniform(-cfg.lateral_jitter_m, cfg.lateral_jitter_m), yaw=yaw,
            z=belt.z + variant.height_m,
        )
        self.parts[part.id] = part
        for eye in self.eyes:
            if eye.belt is belt:
                self._arm_eye(part, eye)
        # falls off the belt's downstream end into the reject bin when its centre passes it
        part.timers.append(_CancelHandle(belt.at_travel(part.s_on + belt.travel_to(part.x0, belt.downstream_x),
                                                        lambda: self._fall_off(part))))
        self._emit("spawned", part)
        self._schedule_spawn(belt, s)

    def _arm_eye(self, part: Part, eye: Eye) -> None:
        belt = eye.belt
        half = self._half_extent_x(part)
        s_in = part.s_on + belt.travel_to(part.x0, eye.x) - half
        s_out = part.s_on + belt.travel_to(part.x0, eye.x) + half
        if belt.travel() > s_out:
            return

        def on() -> None:
            if part.eye_time is None:
                part.eye_time = self.clock.now()
            eye._set(part.id, True)

        part.timers.append(_CancelHandle(belt.at_travel(max(s_in, belt.travel()), on)))
        part.timers.append(_CancelHandle(belt.at_travel(s_out, lambda: eye._set(part.id, False))))

    @staticmethod
    def _half_extent_x(part: Part) -> float:
        c, s = abs(math.cos(part.yaw)), abs(math.sin(part.yaw))
        return 0.5 * (part.variant.length_m * c + part.variant.width_m * s)

    def _detach_from_belt(self, part: Part) -> None:
        x, y = self.part_xy(part)
        part.x0, part.y = x, y
        for h in part.timers:
            h.cancel()
        part.timers.clear()
        for eye in self.eyes:
            eye._set(part.id, False)
        part.belt = None

    def _fall_off(self, part: Part) -> None:
        if part.state != "belt":
            return
        self._detach_from_belt(part)
        part.state = "bin"
        part.fate_time = self.clock.now()
        self._emit("binned", part)

    # -- gripper interaction -------------------------------------------------------
    def find_part_at(self, x: float, y: float, z: float, *, tol_xy: float, tol_z: float) -> Part | None:
        best, best_d = None, math.inf
        for p in self.parts.values():
            if p.state != "belt":
                continue
            px, py = self.part_xy(p)
            d = math.hypot(px - x, py - y)
            if d <= tol_xy and abs(p.z - z) <= tol_z and d < best_d:
                best, best_d = p, d
        return best

    def attach(self, gripper: str, part: Part) -> None:
        self._detach_from_belt(part)
        part.state = "gripped"
        self.held_parts[gripper] = part.id
        self._emit("gripped", part)

    def release(self, gripper: str, x: float, y: float, z: float) -> Part | None:
        pid = self.held_parts.pop(gripper, None)
        if pid is None:
            return None
        part = self.parts[pid]
        part.x0, part.y, part.z = x, y, z
        part.fate_time = self.clock.now()
        for st in self.case_stations.values():
            g, case = st.geometry, st.case
            if case is None or abs(z - (g.z + part.variant.height_m)) >= 0.03:
                continue
            for slot in range(g.slots):
                sx, sy = g.slot_xy(slot)
                if slot not in case.slots and math.hypot(sx - x, sy - y) <= g.tolerance_m:
                    case.slots[slot] = pid
                    part.state, part.case_id, part.slot, part.station = "case", case.id, slot, st.name
                    self._emit("cased", part)
                    return part
        part.state = "dropped"
        self._emit("dropped", part)
        return part

    def seal_case(self, station: str | None = None) -> Case | None:
        """Seal the case in progress at ``station`` (default: the first case station)."""
        st = self._station(station)
        if st is None or st.case is None:
            return None
        case = st.case
        case.sealed_at = self.clock.now()
        st.done.append(case)
        self.cases_done.append(case)
        st.case = None
        return case

    # -- events -----------------------------------------------------------------
    def _emit(self, what: str, part: Part) -> None:
        for cb in list(self.listeners):
            cb(what, part)

    def truth_summary(self) -> dict[str, int]:
        out: dict[str, int] = {"spawned": len(self.parts)}
        for p in self.parts.values():
            out[p.state] = out.get(p.state, 0) + 1
        out["defective"] = sum(1 for p in self.parts.values() if p.defective)
        return out

    def cases_by_station(self) -> dict[str, int]:
        """Completed cases per case station (ground truth)."""
        return {name: len(st.done) for name, st in self.case_stations.items()}


class _CancelHandle:
    __slots__ = ("_cancel",)

    def __init__(self, cancel: Callable[[], None]) -> None:
        self._cancel = cancel

    def cancel(self) -> None:
        self._cancel()
