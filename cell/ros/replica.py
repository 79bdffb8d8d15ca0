"""Active replication of the simulated world for ``--processes`` (see ``cell.ros.lockstep``).

Every process of a ``--processes`` run builds the same cell from the same file and seed, so it
holds the same world replica: belts, parts, photo-eyes, the case station, every twin. Things
that happen *inside* the world (trays spawning, eyes switching, trays falling off the belt end)
follow from the belts' speed history and the world's named random streams, so every replica
computes them by itself. What a device *does* to the world happens in one process only, the
one serving that device, and is sent to every other replica as an event:

- conveyor start / stop: ``["speed", belt, v]``, applied as ``belt.set_speed(v)``;
- arm, a move planned: ``["arm", name, rest, plan, t0]`` with the planner's exact inputs, planned
  again in the replica (ruckig is deterministic) and started at the same ``t0``;
- arm, frozen (stop, cancel, timeout, close): ``["arm", name, rest, None, t0]``;
- vacuum cup grip / release: ``["attach", cup, part]`` / ``["release", cup, x, y, z]``;
- case sealer seal / index: ``["seal", station]`` / ``["index", station]``;
- an IO output written: ``["io", device, channel, value]``;
- the cell starting production: ``["infeed"]`` (``world.start_infeed``).

Floats travel as JSON (Python's shortest round-trip repr), so a replica applies the exact
values. Random streams stay in step because a stream is drawn only where its owner runs
(``camera:<name>`` in the camera's process, ``jam:``/``telemetry:<sealer>`` in the sealer's,
``infeed``/``defects`` by the world itself in every replica at the same belt travel).

:class:`Replication` wraps the mutating entry points of one cell's world and twins on the
instance (the twins stay unaware) and keeps the originals to apply remote events with, so an
applied event is never sent on again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger("axcell.ros.replica")

Emit = Callable[[list[Any]], None]


def _floats(v: Any) -> list[float]:
    return [float(x) for x in np.asarray(v, dtype=float).ravel()]


class _ArmHooks:
    """Watches one arm twin: a new trajectory or a freeze becomes an ``arm`` event."""

    KEEP = 8

    def __init__(self, rep: "Replication", arm: Any) -> None:
        self.rep, self.arm = rep, arm
        self.orig_plan = arm._plan
        self.orig_freeze = arm._freeze
        self._plans: dict[int, tuple[Any, list[Any]]] = {}
        self._last: tuple[Any, float, tuple[float, ...]] | None = (arm._traj, float(arm._t0), tuple(_floats(arm._rest)))
        self._scheduled = False
        arm._plan = self._plan
        arm._freeze = self._freeze

    def _plan(self, q0: Any, qd: Any, qdd: Any, q1: Any, speed: float) -> Any:
        tr = self.orig_plan(q0, qd, qdd, q1, speed)
        self._plans[id(tr)] = (tr, [_floats(q0), _floats(qd), _floats(qdd), _floats(q1), float(speed)])
        while len(self._plans) > self.KEEP:
            self._plans.pop(next(iter(self._plans)))
        self._schedule()
        return tr

    def _freeze(self, t: float) -> None:
        self.orig_freeze(t)
        self._schedule()

    def _schedule(self) -> None:
        # SimArm sets ``_traj``/``_t0`` right after planning, in the same synchronous stretch:
        # look at the outcome once that stretch is over (still the same instant; before settling)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        a = self.arm
        traj, t0, rest = a._traj, float(a._t0), tuple(_floats(a._rest))
        last = self._last
        if last is not None and traj is last[0] and (t0 == last[1] if traj is not None else rest == last[2]):
            return
        self._last = (traj, t0, rest)
        plan = None
        if traj is not None:
            entry = self._plans.get(id(traj))
            if entry is None or entry[0] is not traj:  # pragma: no cover - every trajectory comes from _plan
                log.error("arm %s: trajectory of unknown origin; replicas get its end state", a.name)
                self.rep.emit(["arm", a.name, _floats(traj.q1), None, t0])
                return
            plan = entry[1]
        self.rep.emit(["arm", a.name, list(rest), plan, t0])

    def apply(self, rest: list[float], plan: list[Any] | None, t0: float) -> None:
        a = self.arm
        a._rest = np.array(rest, dtype=float)
        if plan is None:
            a._traj = None
        else:
            q0, qd, qdd, q1, speed = plan
            a._traj = self.orig_plan(np.array(q0, dtype=float), np.array(qd, dtype=float),
                                     np.array(qdd, dtype=float), tuple(q1), speed)
            a._t0 = t0
        self._last = (a._traj, float(a._t0), tuple(_floats(a._rest)))


class Replication:
    """The replication hooks of one process's cell (owner side: emit; replica side: apply)."""

    def __init__(self, cell: Any, emit: Emit | None = None) -> None:
        from drivers.arm import Arm
        from drivers.io import DigitalIO

        self.cell = cell
        self.world = w = cell.world
        if w is None:
            raise ValueError("replication needs a simulated world")
        self._emit = emit
        self.emitted = 0
        self.applied = 0
        self._orig: dict[str, Any] = {}
        for name in ("attach", "release", "seal_case", "index_new_case", "start_infeed"):
            fn = getattr(w, name)
            self._orig[name] = fn
            setattr(w, name, self._world_hook(name, fn))
        self._belts: dict[str, Callable[[float], None]] = {}
        for bname, belt in w.belts.items():
            self._belts[bname] = belt.set_speed
            belt.set_speed = self._belt_hook(bname, belt.set_speed)
        self._arms: dict[str, _ArmHooks] = {}
        self._ios: dict[str, Any] = {}
        for dname, dev in cell.devices.items():
            if isinstance(dev, Arm) and hasattr(dev, "_plan") and hasattr(dev, "_freeze"):
                self._arms[dname] = _ArmHooks(self, dev)
            elif isinstance(dev, DigitalIO) and isinstance(getattr(dev, "_out", None), dict):
                self._ios[dname] = dev
                dev.write = self._io_hook(dname, dev, dev.write)

    def set_emit(self, emit: Emit) -> None:
        self._emit = emit

    def emit(self, ev: list[Any]) -> None:
        self.emitted += 1
        if self._emit is None:
            raise RuntimeError(f"replication event {ev[0]!r} before the replication link is up")
        self._emit(ev)

    # ---- owner side
    def _world_hook(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(*a: Any) -> Any:
            r = fn(*a)
            if name == "attach":
                gripper, part = a
                self.emit(["attach", gripper, int(part.id)])
            elif name == "release":
                gripper, x, y, z = a
                self.emit(["release", gripper, float(x), float(y), float(z)])
            elif name == "seal_case":  # the case station (none: the first)
                self.emit(["seal", *a])
            elif name == "index_new_case":
                self.emit(["index", *a])
            else:
                self.emit(["infeed"])
            return r

        return hooked

    def _belt_hook(self, bname: str, fn: Callable[[float], None]) -> Callable[[float], None]:
        def set_speed(v: float) -> None:
            fn(v)
            self.emit(["speed", bname, float(v)])

        return set_speed

    def _io_hook(self, dname: str, dev: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def write(channel: str, value: bool) -> None:
            await fn(channel, value)
            self.emit(["io", dname, channel, bool(value)])

        return write

    # ---- replica side
    def apply(self, ev: list[Any]) -> None:
        """Apply an event sent by another replica (through the originals: never sent on)."""
        kind = ev[0]
        w = self.world
        if kind == "speed":
            self._belts[ev[1]](ev[2])
        elif kind == "arm":
            self._arms[ev[1]].apply(ev[2], ev[3], ev[4])
        elif kind == "attach":
            self._orig["attach"](ev[1], w.parts[ev[2]])
        elif kind == "release":
            self._orig["release"](ev[1], ev[2], ev[3], ev[4])
        elif kind == "seal":
            self._orig["seal_case"](*ev[1:])
        elif kind == "index":
            self._orig["index_new_case"](*ev[1:])
        elif kind == "infeed":
            self._orig["start_infeed"]()
        elif kind == "io":
            self._ios[ev[1]]._out[ev[2]] = bool(ev[3])
        else:
            raise ValueError(f"unknown replication event {kind!r}")
        self.applied += 1
