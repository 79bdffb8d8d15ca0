"""The composition root and the supervisor: build a cell from its file and run it.

:class:`Cell` builds the world (when simulated), the devices in dependency
order, the inspection models, the process tree, the ledger, alarms and the
PackML state machine.  :meth:`Cell.command` is the single door through which
every command (CLI, HTTP, OPC UA, ROS 2) reaches the state machine.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import ChainMap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.base import Device, DeviceContext
from drivers.clock import Clock, WallClock
from drivers.conveyor import Conveyor
from drivers.errors import DeviceError
from drivers.gripper import Gripper
from drivers.machine import Machine
from skills.facts import CellFacts

from . import oee as oee_mod
from .alarms import AlarmList
from .config import CellConfig
from .ledger import Ledger
from .packml import Command, PackMLStateMachine, State, Transition, TransitionError
from .plugins import load_kind
from .process import TreeContext, TreeRunner, build_tree

log = logging.getLogger("axcell.cell")

EventListener = Callable[[str, dict[str, Any]], None]


def build_order(cfg: CellConfig) -> list[tuple[Any, type[Device], Any]]:
    """(spec, class, validated options) in dependency order (dependencies first)."""
    items = {}
    for spec in cfg.devices:
        cls = load_kind(spec.kind)
        items[spec.name] = (spec, cls, cls.Config.model_validate(spec.options))
    order: list[str] = []
    visiting: set[str] = set()

    def visit(n: str, chain: tuple[str, ...]) -> None:
        if n in order:
            return
        if n in visiting:
            raise ValueError(f"device dependency cycle: {' -> '.join(chain + (n,))}")
        visiting.add(n)
        spec, cls, opts = items[n]
        for dep in cls.requires(opts):
            visit(dep, chain + (n,))
        visiting.discard(n)
        order.append(n)

    for spec in cfg.devices:
        visit(spec.name, ())
    return [items[n] for n in order]


class Cell:
    """A running cell: devices, process, supervisor, records."""

    def __init__(self, cfg: CellConfig, *, seed: int | None = None, run_dir: Path | None = None,
                 inspectors: dict[str, Any] | None = None, inspection_worker: bool = False) -> None:
        self.cfg = cfg
        self.name = cfg.cell.name
        self.run_dir = run_dir
        self.world = None
        if cfg.sim is not None:
            from sim.world import World

            self.world = World(cfg.sim, self._variants(), seed=seed)
        self.seed = self.world.seed if self.world is not None else seed
        self.clock: Clock = self.world.clock if self.world is not None else WallClock()
        self.devices: dict[str, Device] = {}
        resources = {"world": self.world} if self.world is not None else {}
        # -- OPC UA hook (issue 4) ---------------------------------------------------------------
        # "device_events": drivers that notice on their own that a device became unreachable (an
        # OPC UA session lost, a hung server) report it here; see _device_event.
        # "sim_servers": simulated protocol servers (the sim profile, e.g. opcua.machine with
        # simulate: true) are started by the driver's connect() through this factory, bound to
        # the world, so drivers never import sim.
        resources["device_events"] = self._device_event
        if self.world is not None:
            from sim.sim_servers import server_factory

            resources["sim_servers"] = server_factory(self.world)
        # -- end OPC UA hook ----------------------------------------------------------------------
        for spec, cls, opts in build_order(cfg):
            deps = {d: self.devices[d] for d in cls.requires(opts)}
            ctx = DeviceContext(clock=self.clock, devices=deps, resources=resources, cell=self.name)
            self.devices[spec.name] = cls(spec.name, opts, ctx)
        if self.world is not None:
            self._place_case_station()
        self.facts = CellFacts(case_stations=[n for n, st in cfg.stations.items() if st.pattern is not None])
        # real devices: a verdict is applied when it comes (a paced simulation sets this too, cell.session)
        self.facts.eager_verdicts = self.world is None
        self.ledger = Ledger(self.clock.now)
        for n, st in cfg.stations.items():  # every case station is counted, also one that completed none
            if st.pattern is not None:
                self.ledger.cases_by_station.setdefault(n, 0)
        self.alarms = AlarmList(self.clock.now)
        self.fsm = PackMLStateMachine(self.clock.now)
        self.fsm.subscribe(self._on_transition)
        # the one OEE tracker: report, API, HMI and status all read it through oee()
        self.oee_tracker = oee_mod.OeeTracker(self.clock.now, cfg.line.design_speed_ppm,
                                              stop_reason=self.alarms.stop_reason_info, initial=self.fsm.state)
        self.fsm.subscribe(self.oee_tracker.on_transition)
        self.listeners: list[EventListener] = [lambda k, d: self.ledger.on_event(k, d)]
        self.alarms.listeners.append(lambda what, a: self.emit("alarm", {"what": what, "alarm": a}))
        self.inspectors = inspectors if inspectors is not None else {}
        lookups = {
            "inspectors": self.inspectors,
            "stations": {n: s.model_dump() | {"frame": self._frame(s)} for n, s in cfg.stations.items()},
            "line": cfg.line.model_dump(),
            "line_geometry": line_geometry(cfg),
            "inspects": uses_skill(cfg, "inspect"),
            "products": {n: {"height_m": p.size_mm[2] / 1000.0, "length_m": p.size_mm[0] / 1000.0,
                             "width_m": p.size_mm[1] / 1000.0} for n, p in cfg.products.items()},
        }
        for st in lookups["stations"].values():
            if st.get("pattern"):
                st["pattern"]["pitch_m"] = [v / 1000.0 for v in st["pattern"]["pitch_mm"]]
        self.lookups = lookups
        """What a skill run on its own (the API, a ROS 2 ExecuteSkill goal) sees as ``ctx.config``;
        skills run by the process tree see the same plus ``in_process_tree`` (see skills.inspect)."""
        self.tctx = TreeContext(self.devices, self.clock, self.facts, self.emit,
                                ChainMap({"in_process_tree": True}, lookups))  # type: ignore[arg-type]
        self._want_worker = inspection_worker
        self.inspection_worker: Any = None
        self.runner: TreeRunner | None = None
        self._tree_task: asyncio.Task | None = None
        self._act_task: asyncio.Task | None = None
        self._tracker_task: asyncio.Task | None = None
        self._recover_task: asyncio.Task | None = None
        self._infeed_started = False
        self._state_waiters: list[tuple[set[State], asyncio.Future]] = []
        self.command_log: list[dict[str, Any]] = []
        self.counts_history: list[dict[str, Any]] = []

    # -- construction helpers --------------------------------------------------------------------
    def _place_case_station(self) -> None:
        from sim.world import CaseGeometry

        assert self.world is not None
        for name, st in self.cfg.stations.items():  # every case station has a case of its own
            if st.kind == "case" and st.pattern is not None:
                self.world.set_case_station(CaseGeometry(
                    x=st.frame.x, y=st.frame.y, z=st.frame.z, yaw=math.radians(st.frame.yaw_deg),
                    rows=st.pattern.rows, cols=st.pattern.cols,
                    pitch_x=st.pattern.pitch_mm[0] / 1000.0, pitch_y=st.pattern.pitch_mm[1] / 1000.0),
                    name, machine=st.machine)

    @staticmethod
    def _frame(st: Any) -> dict[str, float]:
        return {"x": st.frame.x, "y": st.frame.y, "z": st.frame.z, "yaw": math.radians(st.frame.yaw_deg)}

    def _variants(self) -> dict[str, Any]:
        from sim import render
        from sim.world import VariantSpec

        out = {}
        for name, p in self.cfg.products.items():
            out[name] = VariantSpec(name, p.size_mm[0] / 1000, p.size_mm[1] / 1000, p.size_mm[2] / 1000,
                                    appearance=product_appearance(name, p, render))
        return out

    # -- events ----------------------------------------------------------------------------------
    def emit(self, kind: str, data: dict[str, Any]) -> None:
        for cb in list(self.listeners):
            try:
                cb(kind, data)
            except Exception:  # noqa: BLE001 - a faulty listener must not stop the cell
                log.exception("event listener failed on %s", kind)
        if kind == "skill_result":
            res = data["result"]
            if res.alarm:
                self.raise_alarm(code=data["skill"], message=res.alarm, source=data["node"])

    def raise_alarm(self, code: str, message: str, source: str, severity: str = "error") -> None:
        self.alarms.raise_(code, message, source=source, severity=severity)  # type: ignore[arg-type]
        if self.cfg.supervisor.hold_on_alarm and self.fsm.state == State.EXECUTE and severity in ("error", "critical"):
            self.command("hold", source="supervisor")
            if self.cfg.supervisor.auto_recover and self.world is not None:
                self._recover_task = asyncio.get_running_loop().create_task(self._operator_recovery())

    def _device_event(self, device: str, kind: str, message: str) -> None:
        """OPC UA hook (issue 4): a driver reports ``offline``/``online`` on its own.

        Offline raises an alarm through the same path as a skill's alarm, so the supervisor
        holds the cell while the machine is unreachable.  Online only logs: unholding stays
        with the operator (or the simulated operator's recovery).
        """
        if kind == "offline":
            self.raise_alarm(code="device_offline", message=f"{device}: unreachable: {message}", source=device)
        else:
            log.warning("device %s: %s %s", device, kind, message)

    async def _operator_recovery(self) -> None:
        """The simulated operator: clears the fault after a while, resets machines, unholds."""
        assert self.world is not None
        await self.clock.sleep(self.world.config.operator.clear_jam_after_s)
        await self.wait_state({State.HELD})
        for dev in self.devices.values():
            if isinstance(dev, Machine):
                try:
                    await dev.command("reset")
                except DeviceError as e:
                    log.warning("operator could not reset %s: %s", dev.name, e)
        for a in self.alarms.active():
            self.alarms.ack(a.id, by="sim-operator")
            self.alarms.clear(a.id)
        if self.fsm.state == State.HELD:
            self.command("unhold", source="sim-operator")

    # -- commands and states ----------------------------------------------------------------------
    def command(self, command: str | Command, *, source: str = "api") -> State:
        """Apply a PackML command. Raises TransitionError (nothing changes) when it is illegal."""
        cmd = Command.parse(command) if isinstance(command, str) else command
        before = self.fsm.state
        try:
            state = self.fsm.command(cmd)
        except TransitionError:
            self.command_log.append({"t": self.clock.now(), "command": cmd.name.lower(), "source": source,
                                     "accepted": False, "state": before.label})
            raise
        self.command_log.append({"t": self.clock.now(), "command": cmd.name.lower(), "source": source,
                                 "accepted": True, "state": before.label})
        return state

    def legal_commands(self) -> list[str]:
        return [c.name.lower() for c in self.fsm.legal_commands()]

    async def wait_state(self, states: set[State], timeout: float | None = None) -> State:
        if self.fsm.state in states:
            return self.fsm.state
        fut = asyncio.get_running_loop().create_future()
        self._state_waiters.append((states, fut))
        return await self.clock.wait_for(fut, timeout)

    def _on_transition(self, tr: Transition) -> None:
        self.emit("state", {"transition": tr})
        for states, fut in list(self._state_waiters):
            if tr.target in states and not fut.done():
                fut.set_result(tr.target)
        self._state_waiters = [(s, f) for s, f in self._state_waiters if not f.done()]
        if tr.target in _ACTIONS:
            self._act_task = asyncio.get_running_loop().create_task(self._act(tr.target))
        elif tr.target == State.EXECUTE:
            self._start_process()

    async def _act(self, state: State) -> None:
        try:
            await _ACTIONS[state](self)
        except asyncio.CancelledError:
            raise
        except DeviceError as e:
            self.alarms.raise_("device", str(e), source=getattr(e, "device", None) or "cell")
            if state not in (State.ABORTING, State.STOPPING) and self.fsm.state == state:
                self.fsm.command(Command.ABORT)
                return
        except Exception as e:  # noqa: BLE001
            log.exception("acting state %s failed", state.label)
            self.alarms.raise_("internal", f"{state.label} failed: {e!r}", source="supervisor", severity="critical")
        self.fsm.state_complete(expected=state)

    # acting-state behaviour ------------------------------------------------------------------------
    async def connect_devices(self) -> None:
        """Connect every device (idempotent): Resetting does it; a caller may do it beforehand.
        With ``inspection_worker``, the inspection worker process starts here too."""
        for dev in self.devices.values():
            await dev.connect()
        await self.start_inspection_worker()

    async def start_inspection_worker(self) -> None:
        """Start the process that judges parts beside the cell (``Cell(inspection_worker=True)``; idempotent).

        Without it, or when it cannot start (logged), the inspect skill judges in the cell's thread.
        """
        if not self._want_worker or self.inspection_worker is not None or not self.inspectors:
            return
        from skills.vision.worker import InspectionWorker

        from .heap import keep_heap

        worker = InspectionWorker(self.inspectors, setup=keep_heap)
        try:
            async with self.clock.busy():  # real work outside the simulation: time waits for it
                await worker.start()
        except Exception as e:  # noqa: BLE001 - judge in this thread instead
            log.error("the inspection worker did not start (%s); inspecting in the cell's own thread", e)
            self._want_worker = False
            return
        self.inspection_worker = worker
        self.lookups["inspection_worker"] = worker

    async def _resetting(self) -> None:
        self.alarms.reset_first_out()
        await self.connect_devices()
        for dev in self.devices.values():
            if isinstance(dev, Machine):
                await dev.command("reset")

    async def _starting(self) -> None:
        await self._conveyor().start(self._recipe_speed())
        if self.world is not None and not self._infeed_started:
            self.world.start_infeed()
            self._infeed_started = True

    async def _unholding(self) -> None:
        for dev in self.devices.values():
            if isinstance(dev, Machine):
                st = await dev.status()
                if st.faulted:
                    await dev.command("reset")
        await self._conveyor().start(self._recipe_speed())

    async def _pausing(self) -> None:
        await self._stop_process()
        await self._conveyor().stop()

    async def _stopping(self) -> None:
        await self._stop_process()
        await self._safe(self._conveyor().stop())
        for dev in self.devices.values():
            stop = getattr(dev, "stop", None)
            if stop is not None and dev.contract == "arm" and dev.connected:
                await self._safe(stop())

    async def _clearing(self) -> None:
        self.alarms.clear_all()

    async def _completing(self) -> None:
        await self._stop_process()
        await self._safe(self._conveyor().stop())

    @staticmethod
    async def _safe(aw: Any) -> None:
        try:
            await aw
        except DeviceError as e:
            log.warning("ignored during stop: %s", e)

    def _conveyor(self) -> Conveyor:
        dev = self.devices[self.cfg.line.conveyor]
        assert isinstance(dev, Conveyor)
        return dev

    def _recipe_speed(self) -> float | None:
        for r in self.cfg.recipes.values():
            return r.conveyor_speed
        return None

    # -- the process ---------------------------------------------------------------------------------
    def _start_process(self) -> None:
        root = build_tree(self.cfg, self.tctx)
        self.runner = TreeRunner(root, self.tctx)
        loop = asyncio.get_running_loop()
        self._tree_task = loop.create_task(self._run_tree(self.runner))
        if self._tracker_task is None or self._tracker_task.done():
            self._tracker_task = loop.create_task(self._track())

    async def _run_tree(self, runner: TreeRunner) -> None:
        status = await runner.run()
        log.info("process tree finished: %s", status)
        if self.fsm.state == State.EXECUTE:
            self.command("complete", source="process")

    async def _stop_process(self) -> None:
        for task in (self._tree_task, self._tracker_task):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._tree_task = self._tracker_task = None
        self.tctx.running.clear()
        await self.facts.settle(self.clock)  # verdicts still being computed are the cell's, as if known
        await self._drop_held_part("cell left Execute while holding it")
        self.facts.values.pop("pending", None)

    async def _drop_held_part(self, reason: str) -> None:
        part = self.facts.values.get("holding")
        if part is None:
            return
        for dev in self.devices.values():
            if isinstance(dev, Gripper) and dev.connected:
                await self._safe(dev.release())
        self.facts.values["holding"] = None
        if self.ledger.records.get(part.id) and self.ledger.records[part.id].outcome is None:
            self.ledger.close(part.id, "missed", reason)

    async def _track(self) -> None:
        """Close parts that left the belt unpicked: defective → rejected, good → missed."""
        period = self.cfg.line.tracker_period_s
        conveyor = self._conveyor()
        while True:
            await self.clock.sleep(period)
            enc = await conveyor.position()
            if self.facts.pending_count:  # a part leaving now needs its verdict (time holds meanwhile)
                leaving = [p for p in self.facts.queue if self.facts.is_pending(p) and not p.claimed
                           and p.flow * p.x_at(enc) > p.flow * self.cfg.line.exit_x]
                if leaving:
                    await self.facts.settle(self.clock, upto=leaving[-1])
            self.tracker_pass(enc)

    def tracker_pass(self, encoder: float) -> None:
        exit_x = self.cfg.line.exit_x
        for part in list(self.facts.queue):
            # past the exit along the flow (flow is +1 or -1: the products are exact)
            if part.claimed or part.flow * part.x_at(encoder) <= part.flow * exit_x:
                continue
            self.facts.remove(part)
            rec = self.ledger.records.get(part.id)
            if rec is None or rec.outcome is not None:
                continue
            if part.verdict == "good":
                self.ledger.close(part.id, "missed", part.meta.get("pick_error", "left the pick window unpicked"))
            else:
                why = "defective: " + ", ".join(part.defects) if part.verdict == "defective" else "not inspected"
                self.ledger.close(part.id, "rejected", why)

    # -- running -------------------------------------------------------------------------------------
    def oee(self, acc: dict[str, int] | None = None) -> "oee_mod.OEE":
        """OEE now: the tracker's attributed state times and the ledger's closed parts.

        ``acc`` (the store's AccCount totals) is passed through to the result.
        """
        c = self.ledger.counts()
        processed = c["packed"] + c["rejected"] + c["missed"]
        return self.oee_tracker.oee(processed=processed, good=c["packed"], acc=acc)

    def snapshot(self) -> dict[str, Any]:
        """The cell's live status (for the HMI, OPC UA and ROS 2 status)."""
        return {
            "name": self.name,
            "state": self.fsm.state.label,
            "state_id": int(self.fsm.state),
            "mode": "Production",
            "time": self.clock.now(),
            "counts": self.ledger.counts() | {"cases_completed": self.ledger.cases_completed},
            "cases_by_station": dict(self.ledger.cases_by_station),
            "oee": self.oee().to_dict(),
            "current_skill": sorted(self.tctx.running),
            "legal_commands": self.legal_commands(),
            "alarms": [a.to_dict() for a in self.alarms.active()],
            "stop_reason": self.alarms.stop_reason.message if self.alarms.stop_reason else "",
        }

    async def close(self) -> None:
        for task in (self._tree_task, self._tracker_task, self._act_task, self._recover_task):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: BLE001
                    pass
        self.facts.drop_pending()
        if self.inspection_worker is not None:
            worker, self.inspection_worker = self.inspection_worker, None
            self.lookups.pop("inspection_worker", None)
            worker.close()  # it ends at once: its input pipe closes
        for dev in reversed(list(self.devices.values())):
            await self._safe(dev.close())


_ACTIONS: dict[State, Callable[[Cell], Any]] = {
    State.RESETTING: Cell._resetting,
    State.STARTING: Cell._starting,
    State.UNHOLDING: Cell._unholding,
    State.UNSUSPENDING: Cell._unholding,
    State.HOLDING: Cell._pausing,
    State.SUSPENDING: Cell._pausing,
    State.STOPPING: Cell._stopping,
    State.ABORTING: Cell._stopping,
    State.CLEARING: Cell._clearing,
    State.COMPLETING: Cell._completing,
}


def product_appearance(name: str, spec: Any, render: Any) -> Any:
    """The simulator look of a product: a preset name or inline parameters, sized by ``size_mm``."""
    app = spec.appearance
    if app is None:
        base = render.get_product(next(iter(render.PRODUCTS)))
    elif isinstance(app, str):
        base = render.get_product(app)
    else:
        base = render.ProductAppearance.model_validate({"name": name, **app})
    sized = base.model_copy(update={"name": name, "length_mm": spec.size_mm[0], "width_mm": spec.size_mm[1]})
    if isinstance(app, dict) and "label" in app:
        return sized  # a label the file gave explicitly is kept as given (the check says when it does not fit)
    return fit_label(sized)


def fit_label(app: Any) -> Any:
    """Shrink a preset's (or the default) label, about the tray centre, to fit inside the seal band.

    A preset look keeps its own label size; on a smaller tray that label would hang over the edge.
    Labels that fit are left exactly as they are.
    """
    lab = app.label
    half_l, half_w = app.length_mm / 2 - app.rim_mm, app.width_mm / 2 - app.rim_mm
    need_l, need_w = abs(lab.offset_mm) + lab.length_mm / 2, lab.width_mm / 2
    if need_l <= half_l and need_w <= half_w:
        return app
    s = max(0.1, min(half_l / need_l if need_l > 0 else 1.0, half_w / need_w if need_w > 0 else 1.0, 1.0))
    label = lab.model_copy(update={"length_mm": lab.length_mm * s, "width_mm": lab.width_mm * s,
                                   "offset_mm": lab.offset_mm * s})
    return app.model_copy(update={"label": label})


def uses_skill(cfg: CellConfig, skill: str) -> bool:
    """Whether the process tree runs ``skill`` anywhere."""
    def walk(n: Any) -> bool:
        if getattr(n, "skill", None) is not None:
            return n.skill == skill
        for key in ("sequence", "fallback", "parallel"):
            if any(walk(k) for k in getattr(n, key, None) or []):
                return True
        for key in ("retry", "timeout", "repeat"):
            k = getattr(n, key, None)
            if k is not None and walk(k):
                return True
        return False

    return walk(cfg.process)


def line_geometry(cfg: CellConfig) -> dict[str, Any]:
    """What the cell file says of the line's geometry, for skill parameters left out of the process tree.

    ``y``/``z``: the line conveyor's centre line and surface height; ``eyes``: photo-eye channel → beam x
    (channels of IO devices whose beam crosses the line conveyor); ``lead_m``: beam → part centre at the
    trigger along the flow (half the mean product length, upstream).  Only what a device's options state
    is given (a real conveyor's geometry is not known here): a skill falls back to its own default.
    """
    out: dict[str, Any] = {}
    conv = next((d for d in cfg.devices if d.name == cfg.line.conveyor), None)
    if conv is not None and isinstance(conv.options, dict):
        try:
            opts = load_kind(conv.kind).Config.model_validate(conv.options)
        except Exception:  # noqa: BLE001 - an unknown or invalid device: no geometry
            opts = None
        for k in ("y", "z"):
            v = getattr(opts, k, None)
            if isinstance(v, (int, float)):
                out[k] = float(v)
    eyes: dict[str, float] = {}
    for d in cfg.devices:
        chans = (d.options or {}).get("channels") if isinstance(d.options, dict) else None
        if not isinstance(chans, dict):
            continue
        for ch, c in chans.items():
            eye = c.get("photo_eye") if isinstance(c, dict) else None
            if (isinstance(eye, dict) and eye.get("conveyor") == cfg.line.conveyor
                    and isinstance(eye.get("x"), (int, float))):
                eyes[str(ch)] = float(eye["x"])
    out["eyes"] = eyes
    if cfg.products:
        out["lead_m"] = -sum(p.size_mm[0] for p in cfg.products.values()) / len(cfg.products) / 2000.0
    return out
