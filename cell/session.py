"""One ``axcell run``: prepare, start the transports asked for, run, report, clean up.

* **Batch** (``--duration``): Reset, Start, produce, Stop, report (cell/batch.py).
* **Interactive** (no ``--duration``, with ``--hmi-port``): nothing is started
  automatically.  The HMI/API is served and the cell waits for operator
  commands while the simulated clock runs at ``--speed`` (default 1 × real
  time) until Ctrl-C / SIGTERM, which stops the cell cleanly.

Both write into the run directory (``--run-dir``, default
``runs/<cell>-<time>``): the traceability store (``cell.sqlite`` unless the
cell file's ``store.path`` says otherwise), part images, ``run.json`` and
``report.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import CellConfig

if TYPE_CHECKING:
    from .runtime import Cell
    from .store import Store

log = logging.getLogger("axcell.session")


@dataclass
class RunOptions:
    duration: float | None = None
    seed: int | None = None
    speed: float | None = None
    report: Path | None = None
    transport: str = "local"
    hmi_port: int | None = None
    opcua_port: int | None = None
    record: Path | None = None
    quiet: bool = False
    run_dir: Path | None = None
    processes: bool = False
    inspection_worker: bool = True
    """Judge trays in a worker process beside the cell (skills.vision.worker); False: in the cell's thread."""
    store: bool = True
    """Keep the durable traceability store (SQLite) in the run directory."""
    store_ack_log: Path | None = None
    """Append each acknowledged (committed) part record to this file (crash tests)."""
    on_ready: Any = None
    """Called with the :class:`Operations` once the cell (and the HMI, if any) is up."""
    interrupt: "Interrupt | None" = None
    """Set by :func:`run_interruptibly`: the session marks when it has begun closing."""


def default_run_dir(cfg: CellConfig) -> Path:
    return Path("runs") / f"{cfg.cell.name}-{time.strftime('%Y%m%d-%H%M%S')}"


class Operations:
    """What the HMI, the API and the report need beside the cell: store, token, OEE with AccCount totals."""

    def __init__(self, cell: "Cell", store: "Store | None", run_dir: Path, *, interactive: bool,
                 token: str | None = None) -> None:
        from .packml import State, Transition

        self.cell = cell
        self.store = store
        self.run_dir = run_dir
        self.interactive = interactive
        self.token = token
        self.api: Any = None
        if store is not None:
            store.attach(cell)

        def on_transition(tr: Transition) -> None:
            if tr.target == State.EXECUTE:
                cell.alarms.rearm_first_out()  # the next stop event gets its own first-out
            if interactive and tr.target in (State.EXECUTE, State.IDLE):
                cell.alarms.clear_acked()  # acknowledged and the operator restarted: the alarm is dealt with

        cell.fsm.subscribe(on_transition)
        cell.operations = self  # type: ignore[attr-defined]  # the API finds everything from the cell

    def oee(self) -> dict[str, Any]:
        """The cell's OEE (its one tracker) with the store's AccCount totals."""
        acc = self.store.acc_counts() if self.store is not None else {}
        return self.cell.oee(acc=acc).to_dict()

    def audit(self, action: str, ok: bool, *, actor: str = "", detail: str = "") -> None:
        if self.store is not None:
            self.store.audit(action, ok, actor=actor, detail=detail, t=self.cell.clock.now())


def resolve_token(cfg: CellConfig) -> tuple[str, bool]:
    """(token, generated): ``AXCELL_API_TOKEN``, else ``api.token``, else a fresh random one."""
    tok = os.environ.get("AXCELL_API_TOKEN") or cfg.api.token
    if tok:
        return tok, False
    return secrets.token_urlsafe(18), True


async def run_session(cfg: CellConfig, opts: RunOptions) -> dict[str, Any] | None:
    from .batch import progress_bar, run_batch
    from .runtime import Cell
    from .store import Store, resolve_store_path
    from .vision_models import prepare_inspectors

    say = (lambda msg: None) if opts.quiet else (lambda msg: print(msg, file=sys.stderr))
    interactive = opts.duration is None and (opts.hmi_port is not None or opts.opcua_port is not None)
    run_dir = opts.run_dir if opts.run_dir is not None else default_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if interactive and cfg.supervisor.auto_recover:
        # a person operates this run: the simulated operator must not acknowledge and unhold for them
        cfg = cfg.model_copy(update={"supervisor": cfg.supervisor.model_copy(update={"auto_recover": False})})
    inspectors = prepare_inspectors(cfg, log=say)
    cell = Cell(cfg, seed=opts.seed, run_dir=run_dir, inspectors=inspectors, inspection_worker=opts.inspection_worker)
    if opts.speed is not None or interactive:
        cell.facts.eager_verdicts = True  # someone watches in real time: show each judgement when it is made
    store = None
    if opts.store:
        store_path = resolve_store_path(cfg, run_dir)
        store = Store(store_path, cell=cfg.cell.name, seed=cell.seed, images_dir=store_path.parent / "images",
                      sample_good_images=cfg.store.sample_good_images, ack_log=opts.store_ack_log,
                      meta={"cell_file": str(cfg.source) if cfg.source else None, "run_dir": str(run_dir),
                            "interactive": interactive, "design_speed_ppm": cfg.line.design_speed_ppm,
                            "case_stations": [n for n, st in cfg.stations.items() if st.pattern is not None]})
        (run_dir / "run.json").write_text(json.dumps({
            "cell": cfg.cell.name, "run_id": store.run_id, "store": str(store_path.resolve()),
            "images": str((store_path.parent / "images").resolve()), "seed": cell.seed,
            "design_speed_ppm": cfg.line.design_speed_ppm, "interactive": interactive,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=2))
    token = None
    if opts.hmi_port is not None:
        token, generated = resolve_token(cfg)
        if generated:
            say(f"API token (no AXCELL_API_TOKEN or api.token set): {token}")
    ops = Operations(cell, store, run_dir, interactive=interactive, token=token)
    api = None
    northbound = None  # OPC UA northbound hook (issue 4)
    report: dict[str, Any] | None = None
    wall0 = time.perf_counter()
    ros = None  # ROS 2 transport hook (issue 3)
    try:
        # -- ROS 2 transport hook (issue 3): devices and the cell as ROS 2 nodes (cell/ros/runtime.py) --
        if opts.transport == "ros":
            from .ros.runtime import attach  # rclpy is imported only when asked for

            ros = await attach(cell, record=opts.record, processes=opts.processes)
        # -- end ROS 2 hook --
        if opts.hmi_port is not None:
            from .api.server import ApiServer  # transports are imported only when asked for

            api = ApiServer(cell, host=cfg.api.host, port=opts.hmi_port, token=token, open_reads=cfg.api.open_reads)
            await api.start()
            ops.api = api
            say(f"HMI: http://{api.host}:{api.port}/")
        # -- OPC UA northbound hook (issue 4): the cell as a PackML unit for the line PLC / MES --
        opcua_port = opts.opcua_port if opts.opcua_port is not None else cfg.opcua.port
        if opcua_port is not None:
            from .opcua import serve_northbound  # asyncua is imported only when asked for

            northbound = await serve_northbound(cell, cfg.opcua, opcua_port)
            say(f"OPC UA PackML unit: {northbound.endpoint}")
        if interactive:
            if opts.on_ready is not None:
                opts.on_ready(ops)
            await _run_interactive(cell, speed=opts.speed if opts.speed is not None else 1.0, say=say)
            from .report import build_report

            report = build_report(cell, wall_seconds=time.perf_counter() - wall0, sim_seconds=cell.clock.now())
        else:
            duration = opts.duration if opts.duration is not None else 8 * 3600.0
            on_started = (lambda c: opts.on_ready(ops)) if opts.on_ready is not None else None
            report = await run_batch(cell, duration, speed=opts.speed, on_started=on_started,
                                     progress=None if opts.quiet else progress_bar())
    finally:
        if opts.interrupt is not None:
            opts.interrupt.closing = True  # from here on a Ctrl-C no longer cancels: the store must close
        # every step is bounded: a device that no longer answers (or a clock that no longer runs)
        # must not keep the process, its device processes or the store open after Ctrl-C
        if api is not None:
            await _bounded(api.stop(), "stopping the HMI/API server")
        if northbound is not None:  # OPC UA northbound hook (issue 4)
            await _bounded(northbound.stop(), "stopping the OPC UA northbound server")
        await _bounded(cell.close(), "closing the cell's devices")
        if ros is not None:  # ROS 2 transport hook (issue 3)
            await _bounded(ros.close(), "closing the ROS 2 nodes and device processes")
        if store is not None:
            store.flush()
            if report is not None:
                report["store"] = {"path": str(store.path), "run_id": store.run_id,
                                   "counts": store.counts(), "acc_counts": store.acc_counts(),
                                   "committed_items": store.committed_items}
                report["oee"]["acc"] = dict(report["store"]["acc_counts"])  # AccCount once all is committed
                by = report["cases"].get("by_station") or {}
                if len(by) > 1:  # several case stations: the store's per-station figures, to check the report's
                    sc = store.station_counts()
                    report["store"]["cases_by_station"] = {n: sc["cases"].get(n, 0) for n in by}
                    report["store"]["packed_by_station"] = {n: sc["packed"].get(n, 0) for n in by}
                    for key in ("cases_by_station", "packed_by_station"):
                        ours = report["cases"]["by_station" if key == "cases_by_station" else key]
                        if report["store"][key] != ours:
                            log.error("store and report disagree on %s: %s vs %s", key, report["store"][key], ours)
            store.close()
    if report is not None:
        report["run_dir"] = str(run_dir)
        text = json.dumps(report, indent=2, default=str)
        (run_dir / "report.json").write_text(text)
        if opts.report is not None:
            opts.report.parent.mkdir(parents=True, exist_ok=True)
            opts.report.write_text(text)
    return report


CLOSE_TIMEOUT_S = 20.0


@dataclass
class Interrupt:
    requested: bool = False
    closing: bool = False


def run_interruptibly(cfg: CellConfig, opts: RunOptions) -> dict[str, Any] | None:
    """``asyncio.run(run_session(...))`` where Ctrl-C cancels the session and keeps cancelling it,
    every 0.5 s, until it has begun closing; then raises KeyboardInterrupt.

    One cancellation is not enough on Python 3.11: ``asyncio.wait_for`` swallows a cancellation that
    lands just as its inner future completes, and the clocks' and lock-step loops call it all the
    time, so a single Ctrl-C could leave a batch run going. Once the session closes (its ``finally``),
    Ctrl-C is ignored: the store is flushed and closed, each closing step bounded in time.
    """
    flag = Interrupt()
    opts.interrupt = flag

    async def main() -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(run_session(cfg, opts))

        def cancel() -> None:
            if flag.closing or task.done():
                return
            task.cancel()
            loop.call_later(0.5, cancel)

        def on_sigint() -> None:
            flag.requested = True
            cancel()

        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / no signals here
            pass
        try:
            return await task
        except asyncio.CancelledError:
            if flag.requested:
                raise KeyboardInterrupt from None
            raise
        finally:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(main())


async def _bounded(aw: Any, what: str, timeout: float | None = None) -> None:
    """Await one shutdown step for at most ``timeout`` wall seconds (default :data:`CLOSE_TIMEOUT_S`);
    log instead of hanging or raising."""
    timeout = CLOSE_TIMEOUT_S if timeout is None else timeout
    try:
        await asyncio.wait_for(aw, timeout)
    except (TimeoutError, asyncio.TimeoutError):
        log.error("%s took longer than %.0f s; going on without it", what, timeout)
    except Exception as e:  # noqa: BLE001 - the next step (and the store) must still be closed
        log.error("%s failed: %s: %s", what, type(e).__name__, e)


async def _run_interactive(cell: "Cell", *, speed: float, say: Any) -> None:
    """Serve operators until SIGINT/SIGTERM; then stop the cell cleanly."""
    from .packml import STOPPABLE, State

    loop = asyncio.get_running_loop()
    stop_ev = asyncio.Event()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop_ev.set)
            installed.append(sig)
    cell.request_shutdown = stop_ev.set  # type: ignore[attr-defined]
    clock = cell.clock
    run = getattr(clock, "run", None)
    clock_task = loop.create_task(run(until=None, speed=speed)) if run is not None else None
    say(f"cell {cell.name} is {cell.fsm.state.label}; waiting for operator commands (Ctrl-C to quit)")
    try:
        waiters = [loop.create_task(stop_ev.wait())]
        if clock_task is not None:
            waiters.append(clock_task)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if clock_task is not None and clock_task.done() and clock_task.exception() is not None:
            raise clock_task.exception()  # type: ignore[misc]
        say("shutting down: stopping the cell")
        if cell.fsm.state in STOPPABLE:
            with contextlib.suppress(Exception):
                cell.command("stop", source="shutdown")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(cell.wait_state({State.STOPPED, State.ABORTED}), timeout=10.0)
    finally:
        for t in waiters:
            if t is not clock_task:
                t.cancel()
        if clock_task is not None:
            stop = getattr(clock, "stop", None)
            if stop is not None:
                stop()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(clock_task, timeout=5.0)
        for sig in installed:
            loop.remove_signal_handler(sig)
