"""The cell as a ROS 2 lifecycle node (``/<cell>/cell``).

Lifecycle:

- **configure**: build the cell from its file (``axcell-cell-node FILE``), or bind the cell an
  ``axcell run`` already built; create the interfaces below.
- **activate**: connect every device (scheduled on the cell's event loop: a lifecycle callback
  runs on the executor thread and must not wait for device I/O that needs that same thread).
- **deactivate**: cancel the running ExecuteSkill goals and stop the cell's process (PackML
  ``stop`` when the state allows it).

Interfaces (namespace ``/<cell>``):

- action ``execute_skill`` (``axcell_interfaces/ExecuteSkill``): ``params_json`` is validated
  against the skill's ``Params`` schema; feedback carries the skill's progress and phase;
  cancel stops the skill (its ``on_cancel`` runs, e.g. the arm stops). Devices are bound to the
  skill's roles by contract (the first device of the role's contract in the cell file). One goal
  per device at a time, and none while the cell runs its own process (PackML Execute).
  **Reject reasons.** The action protocol has no field for why a goal was rejected, so goals are
  accepted and then ended at once as ABORTED with ``result.status = "REJECTED"`` and the reason
  in ``result.message`` (also logged). Clients thus always learn why; a goal that really ran
  never has status REJECTED.
- service ``command`` (``axcell_interfaces/CellCommand``): a PackML command into ``Cell.command``
  (the single door); rejected commands return ``accepted=false`` and the reason.
- topic ``status`` (``axcell_interfaces/CellStatus``): on every state change and every
  diagnostics period; topic ``parts`` (``axcell_interfaces/PartEvent``): each part's record when
  its outcome is known.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger("axcell.ros.cell_node")

REJECTED = "REJECTED"


def _lifecycle_node_class():
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

    class CellLifecycleNode(LifecycleNode):
        def __init__(self, owner: "CellNode", name: str, **kw: Any) -> None:
            self.owner = owner
            super().__init__(name, **kw)

        def on_configure(self, state):
            try:
                self.owner._configure()
            except Exception:  # noqa: BLE001
                log.exception("cell node: configure failed")
                return TransitionCallbackReturn.FAILURE
            return TransitionCallbackReturn.SUCCESS

        def on_activate(self, state):
            self.owner._activate()
            return super().on_activate(state)

        def on_deactivate(self, state):
            self.owner._deactivate()
            return super().on_deactivate(state)

        def on_cleanup(self, state):
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state):
            self.owner._deactivate()
            return TransitionCallbackReturn.SUCCESS

    return CellLifecycleNode


class CellNode:
    """The lifecycle node serving a :class:`cell.runtime.Cell` (``cell`` or ``build()`` at configure)."""

    def __init__(self, bridge: Any, *, cell: Any = None, build: Any = None, namespace: str | None = None,
                 simulated: bool = True) -> None:
        from .devices import sim_time_params

        if cell is None and build is None:
            raise ValueError("CellNode needs a cell or a build() callable")
        self.bridge, self.cell, self._build = bridge, cell, build
        ns = namespace or (cell.name if cell is not None else "axcell")
        self.ns = ns.strip("/")
        cls = _lifecycle_node_class()
        self.node = cls(self, "cell", namespace=f"/{self.ns}", context=bridge.context,
                        parameter_overrides=sim_time_params(simulated))
        bridge.add_node(self.node)
        self.active = False
        self.busy: dict[str, str] = {}  # device name -> skill of the goal holding it
        self.goals: set[asyncio.Task] = set()
        self._configured = False
        self.status_pub = self.parts_pub = self.cases_pub = None
        self.dispatched = 0
        self.connected: Any = None  # concurrent.futures.Future of the activation's connect_all

    # ------------------------------------------------------------------ lifecycle (spin thread)
    def _configure(self) -> None:
        if self._configured:
            return
        from axcell_interfaces.action import ExecuteSkill
        from axcell_interfaces.msg import CellStatus, PartEvent
        from axcell_interfaces.srv import CellCommand

        if self.cell is None:
            self.cell = self._build()
        n = self.node
        self.status_pub = n.create_publisher(CellStatus, "status", 10)
        self.parts_pub = n.create_publisher(PartEvent, "parts", 100)
        # completed cases per case station (CellStatus carries the total): a DiagnosticStatus named "cases"
        # whose values are station → count, plus "total"; published when a case completes and on state changes
        from diagnostic_msgs.msg import DiagnosticStatus

        self.cases_pub = n.create_publisher(DiagnosticStatus, "cases", 10)
        self.bridge.create_service(n, CellCommand, "command", self._on_command, on_error=self._command_failed)
        self.bridge.create_action_server(n, ExecuteSkill, "execute_skill", self._execute,
                                         on_cancel_result=lambda g: ExecuteSkill.Result(
                                             status="CANCELED", message="cancelled by request"))
        trim = getattr(self.bridge, "trim", None)
        if trim is not None:
            trim(n)  # the publishers' QoS event handlers (they only log) out of the executor's wait set
        cell = self.cell
        cell.listeners.append(self._on_event)
        cell.ledger.listeners.append(self._on_part)
        self._configured = True

    def _activate(self) -> None:
        self.active = True

        async def connect_all() -> None:
            for dev in list(self.cell.devices.values()):
                try:
                    await dev.connect()
                except Exception as e:  # noqa: BLE001
                    log.warning("cell node: connecting %s failed: %s", dev.name, e)
            freeze_heap()

        try:
            self.connected = self.bridge.submit(connect_all())
        except RuntimeError:  # no loop bound yet
            pass

    async def wait_connected(self, timeout: float | None = 30.0) -> None:
        """Until activation has connected every device (and frozen the heap, see :func:`freeze_heap`)."""
        if self.connected is not None:
            await asyncio.wait_for(asyncio.wrap_future(self.connected), timeout)

    def _deactivate(self) -> None:
        self.active = False

        def stop() -> None:
            for t in list(self.goals):
                t.cancel()
            from ..packml import STOPPABLE

            if self.cell is not None and self.cell.fsm.state in STOPPABLE:
                try:
                    self.cell.command("stop", source="ros-lifecycle")
                except Exception as e:  # noqa: BLE001
                    log.warning("cell node: stop on deactivate failed: %s", e)

        try:
            self.bridge.loop.call_soon_threadsafe(stop)
        except RuntimeError:
            pass

    # driving the lifecycle from the asyncio side (axcell run)
    def configure_and_activate(self) -> None:
        self.node.trigger_configure()
        self.node.trigger_activate()

    # ------------------------------------------------------------------ status and parts
    def publish_status(self) -> None:
        if self.status_pub is None or not self.status_pub.get_subscription_count():
            return  # built and serialised only for a listener (the topic is volatile: nobody misses it)
        from axcell_interfaces.msg import CellStatus

        from .devices import stamp

        c = self.cell
        counts = c.ledger.counts()
        msg = CellStatus()
        msg.header.stamp = stamp(c.clock.now())
        msg.header.frame_id = self.ns
        msg.state = c.fsm.state.label
        msg.state_id = int(c.fsm.state)
        msg.mode = "PRODUCTION"
        for k in ("arrived", "inspected", "good", "rejected", "packed", "missed"):
            setattr(msg, k, int(counts.get(k, 0)))
        msg.cases_completed = int(c.ledger.cases_completed)
        msg.current_skill = ",".join(sorted(c.tctx.running))
        msg.alarms = [a.message for a in c.alarms.active()]
        msg.oee = float(c.oee().oee)
        self.status_pub.publish(msg)

    def publish_cases(self) -> None:
        if self.cases_pub is None or not self.cases_pub.get_subscription_count():
            return
        from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

        led = self.cell.ledger
        msg = DiagnosticStatus()
        msg.name, msg.hardware_id = "cases", self.ns
        msg.message = "completed cases per case station"
        msg.values = [KeyValue(key=k, value=str(int(v))) for k, v in led.cases_by_station.items()]
        msg.values.append(KeyValue(key="total", value=str(int(led.cases_completed))))
        self.cases_pub.publish(msg)

    def _on_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "state":
            self.publish_status()
            self.publish_cases()
        elif kind == "case_completed":
            self.publish_cases()

    def _on_part(self, what: str, rec: Any) -> None:
        if what != "closed" or self.parts_pub is None:
            return
        if not self.parts_pub.get_subscription_count():
            self.publish_status()
            return
        from axcell_interfaces.msg import PartEvent

        from .devices import stamp

        d = rec.to_dict()
        msg = PartEvent()
        msg.header.stamp = stamp(self.cell.clock.now())
        msg.part_id = str(d.get("id", ""))
        msg.variant = str(d.get("variant") or "")
        msg.arrival = float(d.get("arrived") or d.get("arrival") or 0.0)
        msg.verdict = str(d.get("verdict") or "none")
        msg.defects = [str(x) for x in (d.get("defects") or [])]
        msg.outcome = str(d.get("outcome") or "")
        msg.case_id = int(d["case_id"]) if d.get("case_id") is not None else -1
        msg.slot = int(d["slot"]) if d.get("slot") is not None else -1
        msg.pick_time = float(d.get("picked") or d.get("pick_time") or 0.0)
        msg.place_time = float(d.get("placed") or d.get("place_time") or 0.0)
        msg.score = float(d.get("score") or 0.0)
        msg.station = str(d.get("station") or "")
        self.parts_pub.publish(msg)
        self.publish_status()

    # ------------------------------------------------------------------ CellCommand
    async def _on_command(self, req, resp):  # on the event loop; the reply leaves from there
        resp.accepted, resp.reason, resp.state = await self._command(req.command)
        return resp

    @staticmethod
    def _command_failed(e: BaseException, resp):
        resp.accepted, resp.reason, resp.state = False, f"cell did not answer: {e!r}", ""
        return resp

    async def _command(self, command: str) -> tuple[bool, str, str]:
        cell = self.cell
        if cell is None:
            return False, "cell node is not configured", ""
        try:
            cell.command(command, source="ros")
        except Exception as e:  # noqa: BLE001 - TransitionError, unknown command
            return False, str(e), cell.fsm.state.label
        return True, "", cell.fsm.state.label

    # ------------------------------------------------------------------ ExecuteSkill
    def _reject(self, gctx: Any, reason: str, status: str = REJECTED):
        from axcell_interfaces.action import ExecuteSkill

        log.warning("execute_skill rejected: %s", reason)
        gctx.terminal = "aborted"
        return ExecuteSkill.Result(status=status, message=reason, data_json="{}")

    def bind_roles(self, skill_cls: Any) -> dict[str, Any]:
        devices = self.cell.devices
        roles = {}
        for role, contract in skill_cls.roles.items():
            dev = devices.get(role) if isinstance(devices.get(role), contract) else None
            if dev is None:
                dev = next((d for d in devices.values() if isinstance(d, contract)), None)
            if dev is None:
                raise LookupError(f"no {contract.contract} device for role {role!r}")
            roles[role] = dev
        return roles

    async def _execute(self, goal: Any, gctx: Any):  # on the event loop
        from axcell_interfaces.action import ExecuteSkill
        from pydantic import ValidationError

        from skills import get as get_skill
        from skills.base import SkillContext

        from ..packml import State

        self.dispatched += 1
        if not self.active or self.cell is None:
            return self._reject(gctx, "cell node is not active")
        try:
            cls = get_skill(goal.skill)
        except KeyError as e:
            return self._reject(gctx, str(e.args[0]))
        try:
            raw = json.loads(goal.params_json) if goal.params_json.strip() else {}
            params = cls.Params.model_validate(raw)
        except (ValueError, ValidationError) as e:
            return self._reject(gctx, f"invalid params_json for {goal.skill}: {e}".splitlines()[0]
                                if not isinstance(e, ValidationError) else
                                f"invalid params_json for {goal.skill}: {_first(e)}")
        cell = self.cell
        if cell.fsm.state in (State.EXECUTE, State.STARTING, State.UNHOLDING, State.UNSUSPENDING):
            return self._reject(gctx, f"cell is running its process (state {cell.fsm.state.label}); "
                                      "stop or hold it before commanding skills")
        try:
            roles = self.bind_roles(cls)
        except LookupError as e:
            return self._reject(gctx, str(e))
        taken = {d.name: self.busy[d.name] for d in roles.values() if d.name in self.busy}
        if taken:
            return self._reject(gctx, "device(s) busy: " + ", ".join(f"{n} (goal {s})" for n, s in taken.items()))
        for d in roles.values():
            self.busy[d.name] = goal.skill
        task = asyncio.current_task()
        self.goals.add(task)

        def feedback(progress: float, phase: str) -> None:
            gctx.publish_feedback(ExecuteSkill.Feedback(progress=float(progress), phase=str(phase)))

        try:
            for d in roles.values():
                if not d.connected:
                    await d.connect()
            ctx = SkillContext(devices=roles, clock=cell.clock, facts=cell.facts, feedback=feedback,
                               emit=cell.emit, config=cell.lookups)
            res = await cls().run(ctx, params)
        finally:
            self.goals.discard(task)
            for d in roles.values():
                self.busy.pop(d.name, None)
        if not res.ok:
            gctx.terminal = "aborted"
        return ExecuteSkill.Result(status=res.status.value, message=res.message,
                                   data_json=json.dumps(res.data, default=str))


def freeze_heap() -> None:
    """Move everything alive now to the collector's permanent generation (``gc.freeze()``).

    Once the cell is built and its devices are connected, its heap is large and long-lived
    (world, inspection models, a simulated OPC UA server's address space: ~500k objects).
    Every full (generation 2) collection walks all of it: 100-400 ms with the GIL held, which
    stalled whichever ExecuteSkill goal, device call or DDS callback was in flight (the p99
    of the dispatch round trip). Frozen objects are skipped by the collector; garbage made
    from then on is still collected as usual. One full collection first, so no garbage is frozen.
    """
    import atexit
    import gc

    global _UNFREEZE_AT_EXIT
    gc.collect()
    gc.freeze()
    if not _UNFREEZE_AT_EXIT:  # let the interpreter's final collections free them (extension
        atexit.register(unfreeze_heap)  # modules report instances still alive at exit as leaks)
        _UNFREEZE_AT_EXIT = True


def unfreeze_heap() -> None:
    """Undo :func:`freeze_heap` (when the cell node goes away)."""
    import gc

    gc.unfreeze()


_UNFREEZE_AT_EXIT = False


def _first(e: Any) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(root)"
    return f"{loc}: {err['msg']}"


# --------------------------------------------------------------------------- console entry point

def main(argv: list[str] | None = None) -> int:
    """``axcell-cell-node FILE``: the cell node with its device nodes (in one process, or one each).

    Same nodes and parameters as ``axcell run FILE --transport ros``; the cell waits for
    CellCommand/ExecuteSkill (simulated time runs at ``--speed`` × real time).
    """
    import argparse

    from ..cliargs import speed_arg as _speed

    ap = argparse.ArgumentParser(prog="axcell-cell-node", description=main.__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--speed", type=_speed, default=1.0)
    ap.add_argument("--duration", type=float, default=None, help="batch: reset, start, run, stop, report")
    ap.add_argument("--record", default=None)
    ap.add_argument("--processes", action="store_true", help="one process per device node (as axcell run --processes)")
    ap.add_argument("--ros-args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # ros2 launch adds it
    args = ap.parse_args(argv)
    from ..cli import main as cli_main

    if args.duration is not None:
        cmd = ["run", args.file, "--transport", "ros", "--quiet", "--duration", str(args.duration)]
        if args.seed is not None:
            cmd += ["--seed", str(args.seed)]
        if args.speed is not None:
            cmd += ["--speed", str(args.speed)]
        if args.record:
            cmd += ["--record", args.record]
        if args.processes:
            cmd += ["--processes"]
        return cli_main(cmd)
    from .runtime import serve_forever

    return serve_forever(args.file, seed=args.seed, speed=args.speed, record=args.record, processes=args.processes)


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
