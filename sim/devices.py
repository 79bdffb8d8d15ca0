"""Simulated twins of the conveyor, photo-eyes, vacuum and finger grippers, camera and case sealer.

Importing this module registers the ``sim.*`` kinds.  Each twin is a view onto
the :class:`sim.world.World` found in ``ctx.resources["world"]`` and each one
has a :class:`sim.faults.FaultHooks` (``twin.faults.inject(...)``).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from drivers.base import DeviceConfig, DeviceContext
from drivers.camera import Camera
from drivers.conveyor import Conveyor
from drivers.errors import ConfigurationError, DeviceFaultError, DeviceTimeoutError, GraspError
from drivers.gripper import Gripper
from drivers.io import DigitalIO
from drivers.machine import COMMANDS, Machine
from drivers.types import CameraCalibration, CycleResult, Frame, MachineStatus

from . import arm as _arm  # noqa: F401  (registers sim.arm)
from .faults import FaultHooks
from .world import Belt, Eye, World

# cell-frame coordinates (m): a cell is a few metres across (the arm's base is bounded the same way); a belt
# or camera at 1e30 m passes float checks but breaks the geometry (NaN in the renderer, empty crops)
CELL_M = 50.0


def _coord(default: Any = ..., description: str | None = None) -> Any:
    return Field(default, ge=-CELL_M, le=CELL_M, description=description)


def _world(ctx: DeviceContext, name: str) -> World:
    world = ctx.resources.get("world")
    if not isinstance(world, World):
        raise ConfigurationError("sim devices need the cell file's `sim:` section (no simulated world)", device=name)
    return world


class _SimDevice:
    """Mixin: world lookup and fault hooks."""

    def _sim_init(self, name: str, ctx: DeviceContext, timeout_s: float = 1.0) -> World:
        self.world = _world(ctx, name)
        self.faults = FaultHooks(name, ctx.clock, timeout_s=timeout_s)
        return self.world


# ----------------------------------------------------------------------------------------------
class SimConveyor(Conveyor, _SimDevice, kind="sim.conveyor"):
    """A belt with an encoder; its geometry is in the cell frame (metres)."""

    class Config(DeviceConfig):
        x_start: float = _coord(-1.2, description="low-x end of the belt (m); upstream when flow is +x")
        x_end: float = _coord(1.2, description="high-x end (m); downstream when flow is +x. Parts that pass the "
                                              "downstream end fall into the reject bin")
        flow: Literal["+x", "-x"] = Field("+x", description="the way the belt carries parts along the cell x axis")
        y: float = _coord(0.6, description="belt centre line (m)")
        z: float = _coord(0.0, description="belt surface height (m)")
        width: float = Field(0.4, gt=0, le=3)
        speed: float = Field(0.2, gt=0, le=2.0, description="nominal speed (m/s)")
        max_speed: float = Field(1.0, gt=0, le=5.0)

        @model_validator(mode="after")
        def _geometry(self) -> "SimConveyor.Config":
            if self.x_end <= self.x_start:
                raise ValueError(f"x_end ({self.x_end}) must be greater than x_start ({self.x_start})")
            if self.speed > self.max_speed:
                raise ValueError(f"speed {self.speed} exceeds max_speed {self.max_speed}")
            return self

    config: Config

    def __init__(self, name: str, config: Config, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)
        world = self._sim_init(name, ctx)
        c = config
        self.belt: Belt = world.add_belt(
            name, x_start=c.x_start, x_end=c.x_end, y=c.y, z=c.z, width=c.width, nominal_speed=c.speed,
            direction=1.0 if c.flow == "+x" else -1.0,
        )

    async def position(self) -> float:
        self._require_connected()
        await self.faults.check("position")
        return self.belt.travel()

    async def velocity(self) -> float:
        self._require_connected()
        await self.faults.check("velocity")
        return self.belt.speed

    async def start(self, speed: float | None = None) -> None:
        self._require_connected()
        v = self.config.speed if speed is None else float(speed)
        if not (math.isfinite(v) and 0 < v <= self.config.max_speed):
            raise ValueError(f"{self.name}: speed {v} m/s outside (0, {self.config.max_speed}]")
        await self.faults.check("start")
        self.belt.set_speed(v)

    async def stop(self) -> None:
        self._require_connected()
        await self.faults.check("stop")
        self.belt.set_speed(0.0)

    def health(self) -> dict[str, Any]:
        return {**super().health(), "speed": self.belt.speed}


# ----------------------------------------------------------------------------------------------
class ChannelConfig(DeviceConfig):
    direction: Literal["in", "out"] = "in"
    photo_eye: "EyeConfig | None" = None


class EyeConfig(DeviceConfig):
    conveyor: str = Field(description="sim.conveyor device the beam crosses")
    x: float = _coord(description="cell-frame x of the beam (m)")


ChannelConfig.model_rebuild()


class SimIO(DigitalIO, _SimDevice, kind="sim.io"):
    """Digital channels; inputs may be photo-eyes across a simulated belt."""

    class Config(DeviceConfig):
        channels: dict[str, ChannelConfig] = Field(min_length=1)

        @model_validator(mode="after")
        def _eyes_are_inputs(self) -> "SimIO.Config":
            for n, ch in self.channels.items():
                if ch.photo_eye is not None and ch.direction != "in":
                    raise ValueError(f"channel {n!r}: a photo_eye must be an input")
            return self

    config: Config

    @classmethod
    def requires(cls, config: Config) -> list[str]:  # type: ignore[override]
        return sorted({ch.photo_eye.conveyor for ch in config.channels.values() if ch.photo_eye})

    def __init__(self, name: str, config: Config, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)
        world = self._sim_init(name, ctx)
        self._out: dict[str, bool] = {}
        self._eyes: dict[str, Eye] = {}
        self._waiters: dict[str, list[tuple[bool, asyncio.Future]]] = {}
        for ch_name, ch in config.channels.items():
            if ch.photo_eye is not None:
                conv = ctx.devices.get(ch.photo_eye.conveyor)
                if not isinstance(conv, SimConveyor):
                    raise ConfigurationError(
                        f"channel {ch_name!r}: {ch.photo_eye.conveyor!r} is not a sim.conveyor", device=name
                    )
                eye = world.add_eye(conv.belt.name, ch.photo_eye.x)
                eye.listeners.append(lambda state, t, n=ch_name: self._edge(n, state, t))
                self._eyes[ch_name] = eye
            elif ch.direction == "out":
                self._out[ch_name] = False

    @property
    def channels(self) -> dict[str, str]:
        return {n: c.direction for n, c in self.config.channels.items()}

    def _channel(self, channel: str) -> ChannelConfig:
        try:
            return self.config.channels[channel]
        except KeyError:
            raise KeyError(f"{self.name}: unknown channel {channel!r} (have {sorted(self.config.channels)})") from None

    def _edge(self, channel: str, state: bool, t: float) -> None:
        waiters = self._waiters.get(channel)
        if not waiters:
            return
        keep = []
        for rising, fut in waiters:
            if fut.done():
                continue
            if rising == state:
                fut.set_result(t)
            else:
                keep.append((rising, fut))
        self._waiters[channel] = keep

    async def read(self, channel: str) -> bool:
        self._require_connected()
        self._channel(channel)
        await self.faults.check("read")
        eye = self._eyes.get(channel)
        return eye.state if eye is not None else self._out.get(channel, False)

    async def write(self, channel: str, value: bool) -> None:
        self._require_connected()
        if self._channel(channel).direction != "out":
            raise PermissionError(f"{self.name}: channel {channel!r} is an input")
        await self.faults.check("write")
        self._out[channel] = bool(value)

    async def wait_edge(self, channel: str, *, rising: bool = True, timeout: float | None = None) -> float:
        self._require_connected()
        self._channel(channel)
        await self.faults.check("wait_edge")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append((rising, fut))
        try:
            return await self.clock.wait_for(fut, timeout)
        except TimeoutError:
            raise DeviceTimeoutError(f"no {'rising' if rising else 'falling'} edge on {channel} within {timeout} s",
                                     device=self.name) from None


# ----------------------------------------------------------------------------------------------
class SimVacuum(Gripper, _SimDevice, kind="sim.vacuum"):
    """A vacuum cup on an arm's tool: grips the tray under it within tolerance."""

    class Config(DeviceConfig):
        arm: str = Field(description="the arm this cup is mounted on")
        tolerance_xy_m: float = Field(0.015, gt=0, le=0.2)
        tolerance_z_m: float = Field(0.012, gt=0, le=0.2)
        vacuum_time_s: float = Field(0.08, ge=0, le=5)
        release_time_s: float = Field(0.05, ge=0, le=5)

    config: Config

    @classmethod
    def requires(cls, config: Config) -> list[str]:  # type: ignore[override]
        return [config.arm]

    def __init__(self, name: str, config: Config, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)
        self._sim_init(name, ctx)
        self.arm = ctx.devices[config.arm]

    async def grip(self, *, timeout: float | None = None) -> None:
        self._require_connected()
        await self.faults.check("grip")
        if self.name in self.world.held_parts:
            return
        tcp = await self.arm.pose()
        c = self.config
        part = self.world.find_part_at(tcp.x, tcp.y, tcp.z, tol_xy=c.tolerance_xy_m, tol_z=c.tolerance_z_m)
        why = self._refusal(part, tcp)
        if why is not None:
            await self.clock.sleep(self._grip_time())
            raise GraspError(why, device=self.name)
        self.world.attach(self.name, part)  # the tool tracks the belt while it takes hold
        await self.clock.sleep(self._grip_time())

    # -- what differs between tools (the parallel gripper below overrides these)
    def _refusal(self, part: Any, tcp: Any) -> str | None:
        """Why the tool cannot take ``part`` (None: no part there) at ``tcp``, or None."""
        if part is None:
            return f"no tray under the cup at ({tcp.x:.3f}, {tcp.y:.3f}, {tcp.z:.3f})"
        return None

    def _grip_time(self) -> float:
        return self.config.vacuum_time_s

    def _release_time(self) -> float:
        return self.config.release_time_s

    async def release(self, *, timeout: float | None = None) -> None:
        self._require_connected()
        await self.faults.check("release")
        if self.name not in self.world.held_parts:
            return
        tcp = await self.arm.pose()
        await self.clock.sleep(self._release_time())
        self.world.release(self.name, tcp.x, tcp.y, tcp.z)

    async def is_holding(self) -> bool:
        self._require_connected()
        return self.name in self.world.held_parts

    def held_part(self) -> int | None:
        return self.world.held_parts.get(self.name)


class SimParallelGripper(SimVacuum, kind="sim.gripper"):
    """A two-finger parallel gripper on an arm's tool: closes across the part under it.

    It grips when the part's centre is within ``tolerance_xy_m`` of the TCP, its top within
    ``tolerance_z_m``, the fingers are square to the part's long axis (``tolerance_yaw_deg``, either
    way round) and the part's width fits the open stroke.
    """

    class Config(DeviceConfig):
        arm: str = Field(description="the arm this gripper is mounted on")
        stroke_mm: float = Field(150.0, gt=0, le=1000, description="finger opening (mm): parts wider than this do not fit")
        tolerance_xy_m: float = Field(0.012, gt=0, le=0.2)
        tolerance_z_m: float = Field(0.015, gt=0, le=0.2)
        tolerance_yaw_deg: float = Field(10.0, gt=0, le=90)
        close_time_s: float = Field(0.25, ge=0, le=5)
        open_time_s: float = Field(0.2, ge=0, le=5)

    config: Config  # type: ignore[assignment]

    def _refusal(self, part: Any, tcp: Any) -> str | None:
        c = self.config
        if part is None:
            return f"no part between the fingers at ({tcp.x:.3f}, {tcp.y:.3f}, {tcp.z:.3f})"
        if part.variant.width_m * 1000.0 > c.stroke_mm:
            return f"part {part.id} ({part.variant.width_m * 1000:.0f} mm wide) does not fit the {c.stroke_mm:g} mm stroke"
        off = math.remainder(tcp.yaw - part.yaw, math.pi)  # fingers are symmetric: a half turn is the same
        if abs(off) > math.radians(c.tolerance_yaw_deg):
            return f"fingers {math.degrees(off):.1f}° off the part's axis"
        return None

    def _grip_time(self) -> float:
        return self.config.close_time_s

    def _release_time(self) -> float:
        return self.config.open_time_s


# ----------------------------------------------------------------------------------------------
def top_down_calibration(x: float, y: float, plane_z: float, height_m: float, width: int, height: int,
                         mm_per_px: float) -> CameraCalibration:
    """A pinhole camera ``height_m`` above the plane at (x, y), looking straight down.

    Image +u runs along cell +x and image +v along cell −y.
    """
    f = height_m / (mm_per_px / 1000.0)
    k = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
    t = np.eye(4)
    t[:3, :3] = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    t[:3, 3] = [x, y, plane_z + height_m]
    return CameraCalibration(K=k, dist=np.zeros(5), T_cell_cam=t, width=width, height=height)


class SimCamera(Camera, _SimDevice, kind="sim.camera"):
    """A top-down camera that renders the trays under it."""

    class Config(DeviceConfig):
        x: float = _coord(description="optical axis position on the belt plane (m)")
        y: float = _coord()
        plane_z: float = _coord(0.0, description="height of the imaged plane (belt surface)")
        height_m: float = Field(0.8, gt=0.05, le=5)
        width: int = Field(512, ge=64, le=4096)
        height: int = Field(410, ge=64, le=4096)
        mm_per_px: float = Field(0.9, gt=0.01, le=20)
        color: bool = True
        exposure_s: float = Field(0.004, ge=0, le=1)

    config: Config

    def __init__(self, name: str, config: Config, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)
        self._sim_init(name, ctx)
        c = config
        self._calib = top_down_calibration(c.x, c.y, c.plane_z, c.height_m, c.width, c.height, c.mm_per_px)
        self._count = 0
        self.last_frame: Frame | None = None

    @property
    def calibration(self) -> CameraCalibration:
        return self._calib

    def parts_in_view(self, margin_m: float = 0.2) -> list:
        c = self.config
        half_w = c.width * c.mm_per_px / 2000 + margin_m
        half_h = c.height * c.mm_per_px / 2000 + margin_m
        out = []
        for p in self.world.parts_on_belt():
            px, py = self.world.part_xy(p)
            if abs(px - c.x) <= half_w and abs(py - c.y) <= half_h:
                out.append((p, px, py))
        return out

    async def capture(self, *, timeout: float | None = None) -> Frame:
        self._require_connected()
        await self.faults.check("capture")
        await self.clock.sleep(self.config.exposure_s)
        from . import render  # local: rendering pulls OpenCV

        visible = self.parts_in_view()
        self._count += 1
        rng = self.world.rng(f"camera:{self.name}")
        specs = [render.PartSpec(appearance=p.variant.appearance, x=x, y=y, yaw=p.yaw, defects=p.defects,
                                 seed=p.seed, z=p.z) for p, x, y in visible]
        strength = self.world.config.lighting.strength
        lighting = render.Lighting.random(rng, strength) if strength > 0 else None
        image = render.render_scene(specs, self._calib, lighting=lighting, rng=rng, mono=not self.config.color)
        # -- hand-eye calibration hook (sim/charuco.py): draw a ChArUco board carried by the arm --
        board = getattr(self.world, "calibration_board", None)
        if board is not None:
            image = board.draw(image, self._calib, self.clock.now())
        # -- end hand-eye hook --
        frame = Frame(
            image=image, stamp=self.clock.now(), camera=self.name, calibration=self._calib,
            meta={"frame": self._count, "sim_parts": [p.id for p, _, _ in visible]},
        )
        self.last_frame = frame
        return frame


# ----------------------------------------------------------------------------------------------
class SimMachine(Machine, _SimDevice, kind="sim.machine"):
    """A case sealer: seals the full case at the case station and indexes an empty one.

    Internal states follow PackML names: Stopped → (reset) → Idle → cycle:
    Execute → Idle.  A jam puts it in Held with ``fault="jam"``; ``reset`` or
    ``unhold`` (after the operator cleared it) returns it to Idle.
    """

    class Config(DeviceConfig):
        cycle_time_s: float = Field(3.0, gt=0, le=600)
        index_time_s: float = Field(1.0, ge=0, le=600)
        jam_probability: float = Field(0.0, ge=0, le=1)
        seal_temperature_c: float = Field(180.0, ge=20, le=400)
        motor_current_a: float = Field(2.0, gt=0, le=100)
        tape_length_m: float = Field(500.0, gt=0)
        tape_per_case_m: float = Field(1.2, gt=0)
        auto_reset: bool = Field(True, description="start in Idle instead of Stopped")

    config: Config

    def __init__(self, name: str, config: Config, ctx: DeviceContext) -> None:
        super().__init__(name, config, ctx)
        self._sim_init(name, ctx, timeout_s=2.0)
        self._state = "Idle" if config.auto_reset else "Stopped"
        self._fault = ""
        self._cycles = 0
        self._tape = config.tape_length_m
        self._current = 0.3
        self._jams = 0

    def _telemetry(self) -> dict[str, float]:
        rng = self.world.rng(f"telemetry:{self.name}")
        c = self.config
        return {
            "seal_temperature": float(c.seal_temperature_c + rng.normal(0, 0.8)),
            "motor_current": float(self._current + rng.normal(0, 0.03)),
            "tape_remaining": float(self._tape),
            "jam": 1.0 if self._fault == "jam" else 0.0,
        }

    async def status(self) -> MachineStatus:
        self._require_connected()
        await self.faults.check("status")
        return MachineStatus(self._state, bool(self._fault), self._fault, self._cycles, self._telemetry())

    async def command(self, command: str, *, timeout: float | None = None) -> None:
        self._require_connected()
        cmd = command.lower()
        if cmd not in COMMANDS:
            raise ValueError(f"{self.name}: unknown command {command!r} (known: {', '.join(COMMANDS)})")
        await self.faults.check("command")
        if cmd in ("reset", "unhold", "clear"):
            if self._state in ("Stopped", "Held", "Aborted", "Idle"):
                self._state, self._fault, self._current = "Idle", "", 0.3
        elif cmd in ("stop",):
            self._state = "Stopped"
        elif cmd == "abort":
            self._state = "Aborted"
        elif cmd == "hold" and self._state in ("Idle", "Execute"):
            self._state = "Held"

    async def cycle(self, *, timeout: float | None = None, params: dict[str, Any] | None = None) -> CycleResult:
        self._require_connected()
        await self.faults.check("cycle")
        if self._state != "Idle":
            raise DeviceFaultError(f"not ready for a cycle (state {self._state}{', ' + self._fault if self._fault else ''})",
                                   device=self.name)
        c = self.config
        start = self.clock.now()
        self._state, self._current = "Execute", c.motor_current_a
        rng = self.world.rng(f"jam:{self.name}")
        if rng.uniform() < c.jam_probability:
            await self.clock.sleep(c.cycle_time_s * rng.uniform(0.2, 0.8))
            self._state, self._fault, self._current = "Held", "jam", c.motor_current_a * 3.0
            self._jams += 1
            raise DeviceFaultError("jam in the sealing head", device=self.name)
        await self.clock.sleep(c.cycle_time_s)
        station = self.world.machine_station(self.name)
        case = self.world.seal_case(station)
        self._tape = max(0.0, self._tape - c.tape_per_case_m)
        self._cycles += 1
        tele = self._telemetry()
        await self.clock.sleep(c.index_time_s)
        self.world.index_new_case(station)
        self._state, self._current = "Idle", 0.3
        return CycleResult(True, start, self.clock.now(), f"sealed case {case.id if case else '-'}", tele)
