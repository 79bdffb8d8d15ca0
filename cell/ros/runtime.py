"""``--transport ros``: put a built cell on the wire, in one process or one process per device.

:func:`attach` takes a :class:`cell.runtime.Cell` built as usual (world, twins, skills) and

1. starts one :class:`~cell.ros.bridge.RosBridge` (``executor="loop"``: rclpy spun by the asyncio
   loop's own thread, see :data:`EXECUTOR`; OpenBLAS capped at one thread beside it);
2. serves every device of the cell as a device node (``cell.ros.devices.DeviceNode``);
3. swaps ``cell.devices[name]`` for the matching ``ros2.*`` proxy driver, so every skill call
   goes proxy -> DDS -> device node -> twin and back;
4. starts the cell node (lifecycle: configure + activate), ``/clock`` and ``/diagnostics``;
5. optionally records every topic to MCAP (``cell.ros.record``).

The world stays in this process (the twins share it, and the cell's supervisor starts the
infeed and plays the operator on it), and so does the simulated clock: the clock handoff of
``drivers.ros2.transport`` then keeps simulated time still while any request or reply is on
the wire, so a run over ROS 2 gives the same report as the local run for the same seed.

With ``processes=True`` (``axcell run --transport ros --processes``) every device node runs in a
process of its own (:func:`attach_processes`): each holds a replica of the simulated world
(``cell.ros.replica``) and the clocks of all processes move in lock-step, this process leading
(``cell.ros.lockstep``). The cell node, the supervisor, the process tree and the report stay here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from .env import ensure_ros_isolation

log = logging.getLogger("axcell.ros.runtime")

CLOCK_PERIOD_S = 0.1
DIAG_PERIOD_S = 1.0
#: Executor of the one-process bridge (``cell.ros.bridge.RosBridge``): ``"loop"`` spins rclpy on
#: the asyncio loop's thread (no spin thread, no hop per message); ``"single"`` is the classic
#: SingleThreadedExecutor in a thread of its own. ``AXCELL_ROS_EXECUTOR`` overrides it.
EXECUTOR = os.environ.get("AXCELL_ROS_EXECUTOR", "loop")


class RosAttachment:
    def __init__(self) -> None:
        self.bridge: Any = None
        self.cell: Any = None
        self.twins: dict[str, Any] = {}
        self.device_nodes: list[Any] = []
        self.cell_node: Any = None
        self.pubs: Any = None
        self.recorder: Any = None
        self.transport: Any = None
        self.leader: Any = None  # --processes, simulated: the lock-step leader (cell.ros.lockstep)
        self.processes: Any = None  # --processes: the device processes

    async def close(self) -> None:
        if self.leader is not None and getattr(self.cell.clock, "sync", None) is self.leader:
            self.cell.clock.sync = None
        if self.pubs is not None:
            await self.pubs.stop()
        if self.processes is not None:
            if self.leader is not None:
                self.leader.bye()
            await asyncio.to_thread(self.processes.stop)
        if self.recorder is not None:
            self.recorder.stop()
        for dev in reversed(list(self.twins.values())):
            try:
                await dev.close()
            except Exception as e:  # noqa: BLE001
                log.warning("closing %s: %s", dev.name, e)
        if self.bridge is not None:
            await self.bridge.aclose()
        if self.processes is not None:
            self.processes.cleanup_shm()
        if self.recorder is not None:
            self.recorder.close()
        from drivers.ros2.transport import set_default_transport

        from .cell_node import unfreeze_heap

        set_default_transport(None)
        unfreeze_heap()
        h = getattr(self.transport, "handoff", None)
        hooks = getattr(getattr(self.cell, "clock", None), "advance_hooks", None)
        if hooks is not None and h is not None and getattr(h, "passing", None) in hooks:
            hooks.remove(h.passing)


def make_proxy(dev: Any, transport: Any, clock: Any) -> Any:
    from drivers.base import DeviceContext
    from drivers.ros2.proxies import PROXY_KINDS

    cls = PROXY_KINDS[dev.contract]
    ctx = DeviceContext(clock=clock, devices={}, resources={"ros": transport}, cell=transport.namespace)
    return cls(dev.name, cls.Config(), ctx)


def serve_devices(bridge: Any, devices: dict[str, Any], clock: Any, namespace: str, *,
                  simulated: bool = True) -> tuple[Any, dict[str, Any], list[Any]]:
    """Device nodes for ``devices`` and their proxies on ``bridge`` -> (transport, proxies, nodes)."""
    from drivers.ros2.transport import Handoff, RosTransport

    from .devices import DeviceNode, sim_time_params

    handoff = Handoff(clock) if simulated else None
    hooks = getattr(clock, "advance_hooks", None)
    if handoff is not None and hooks is not None:
        hooks.append(handoff.passing)  # joint_states while moving: sampled as time passes, no clock events
    pnode = bridge.create_node("device_proxies", namespace=f"/{namespace}",
                               parameter_overrides=sim_time_params(simulated), lean=True)
    transport = RosTransport(bridge, pnode, namespace, handoff)
    nodes = [DeviceNode(bridge, dev, namespace, handoff=handoff, simulated=simulated) for dev in devices.values()]
    proxies = {name: make_proxy(dev, transport, clock) for name, dev in devices.items()}
    return transport, proxies, nodes


async def attach(cell: Any, *, record: Path | str | None = None, clock_period_s: float = CLOCK_PERIOD_S,
                 diag_period_s: float = DIAG_PERIOD_S, bridge_name: str | None = None,
                 processes: bool = False, ready_timeout_s: float = 180.0) -> RosAttachment:
    """Serve ``cell``'s devices as nodes, swap in proxies, start the cell node (see the module doc).

    ``processes=True``: every device node in a process of its own (see :func:`attach_processes`).
    """
    if processes:
        return await attach_processes(cell, record=record, clock_period_s=clock_period_s,
                                      diag_period_s=diag_period_s, bridge_name=bridge_name,
                                      ready_timeout_s=ready_timeout_s)
    from drivers.ros2.transport import set_default_transport

    from .bridge import RosBridge
    from .env import limit_blas_threads

    ensure_ros_isolation()
    if EXECUTOR == "loop":
        limit_blas_threads(1)  # everything runs on the loop's thread: no BLAS workers spinning beside it
    att = RosAttachment()
    att.cell = cell
    simulated = cell.world is not None
    ns = cell.name
    att.bridge = bridge = RosBridge(name=bridge_name or f"axcell-{ns}", executor=EXECUTOR)
    try:
        att.twins = dict(cell.devices)
        att.transport, proxies, att.device_nodes = serve_devices(bridge, att.twins, cell.clock, ns,
                                                                 simulated=simulated)
        set_default_transport(att.transport)
        cell.devices.update(proxies)  # the same dict the process tree holds: skills now use the proxies
        await _start_cell_side(att, cell, record, clock_period_s, diag_period_s, simulated, diag_devices=att.twins)
    except BaseException:
        await att.close()
        raise
    cell.ros_attachment = att  # type: ignore[attr-defined]  # tools and tests find the transport from the cell
    return att


async def _start_cell_side(att: RosAttachment, cell: Any, record: Path | str | None, clock_period_s: float,
                           diag_period_s: float, simulated: bool, *, diag_devices: dict[str, Any]) -> None:
    """The cell node, ``/clock`` and ``/diagnostics``, and the recorder (this process's part)."""
    from .cell_node import CellNode
    from .devices import SimPublishers

    ns = cell.name
    att.cell_node = CellNode(att.bridge, cell=cell, namespace=ns, simulated=simulated)
    att.cell_node.configure_and_activate()
    att.pubs = SimPublishers(att.bridge, cell.clock, diag_devices, namespace=ns, clock_period_s=clock_period_s,
                             diag_period_s=diag_period_s, simulated=simulated,
                             extra=att.cell_node.publish_status)
    if record is not None:
        from .record import Recorder

        att.recorder = Recorder(att.bridge, Path(record), clock=cell.clock, namespace=ns)
        await att.recorder.start(expected=expected_topics(cell, att.twins))
    if simulated:
        att.pubs.share_sim_time()
    att.pubs.start()
    att.pubs.publish_diagnostics()
    att.cell_node.publish_status()


async def attach_processes(cell: Any, *, record: Path | str | None = None, clock_period_s: float = CLOCK_PERIOD_S,
                           diag_period_s: float = DIAG_PERIOD_S, bridge_name: str | None = None,
                           ready_timeout_s: float = 180.0) -> RosAttachment:
    """``--processes``: one process per device node; this process keeps the cell node.

    A simulated cell: every device process builds the same cell from the same file and seed
    and serves its own device; the world replicas and the clocks are kept in step by
    ``cell.ros.lockstep`` (this process leads). A real cell: ``axcell-device-node FILE --device
    NAME`` per device, on the wall clock. Either way this process's ``cell.devices`` become
    ``ros2.*`` proxies of the device nodes, exactly as in one process.
    """
    import tempfile

    from drivers.ros2.transport import RosTransport, set_default_transport

    from .bridge import RosBridge
    from .devices import sim_time_params
    from .lockstep import DeviceProcesses, Leader

    file = getattr(cell.cfg, "source", None)
    if not file:
        raise RuntimeError("--processes needs a cell file: every device process loads it")
    ensure_ros_isolation()
    att = RosAttachment()
    att.cell = cell
    simulated = cell.world is not None
    ns = cell.name
    att.twins = dict(cell.devices)
    names = list(att.twins)
    replication = None
    if simulated:
        from .replica import Replication

        replication = Replication(cell)  # before anything runs: the infeed start is an event
    att.bridge = bridge = RosBridge(name=bridge_name or f"axcell-{ns}")
    try:
        log_dir = str(Path(cell.run_dir) / "device-processes") if cell.run_dir else \
            tempfile.mkdtemp(prefix=f"axcell-{ns}-")
        att.processes = procs = DeviceProcesses(str(file), names, seed=cell.seed if simulated else None,
                                                log_dir=log_dir, follower=simulated)
        leader = None
        if simulated:
            att.leader = leader = Leader(bridge, cell, replication, names)
        procs.start()
        loop = asyncio.get_running_loop()
        if leader is not None:
            procs.watch(loop, leader.fail)
            await leader.wait_ready(ready_timeout_s, alive=procs.check)
            procs.note_shm()
        else:
            procs.watch(loop, lambda e: log.error("%s", e))
        pnode = bridge.create_node("device_proxies", namespace=f"/{ns}",
                                   parameter_overrides=sim_time_params(simulated), lean=True)
        proxies = {}
        ids = None
        for name, dev in att.twins.items():
            t = RosTransport(bridge, pnode, ns, leader.handoff(name) if leader is not None else None)
            if ids is None:
                ids = t._ids
            t._ids = ids  # one sequence of call ids for the whole process
            t.__dict__["_clients"] = att.__dict__.setdefault("_clients", {})
            proxies[name] = make_proxy(dev, t, cell.clock)
            att.transport = att.transport or t
        set_default_transport(att.transport)
        cell.devices.update(proxies)
        if leader is not None:
            cell.clock.sync = leader
        await _start_cell_side(att, cell, record, clock_period_s, diag_period_s, simulated, diag_devices=proxies)
    except BaseException:
        await att.close()
        raise
    cell.ros_attachment = att  # type: ignore[attr-defined]
    return att


def expected_topics(cell: Any, twins: dict[str, Any]) -> list[tuple[str, str]]:
    """(topic, type) of everything this process publishes (the recorder subscribes to them)."""
    from drivers.arm import Arm
    from drivers.camera import Camera
    from drivers.conveyor import Conveyor

    from .devices import _belt_of

    ns = cell.name
    out = [("/clock", "rosgraph_msgs/msg/Clock"), ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray"),
           (f"/{ns}/status", "axcell_interfaces/msg/CellStatus"), (f"/{ns}/parts", "axcell_interfaces/msg/PartEvent"),
           (f"/{ns}/cases", "diagnostic_msgs/msg/DiagnosticStatus"),
           (f"/{ns}/cell/transition_event", "lifecycle_msgs/msg/TransitionEvent")]
    for name, dev in twins.items():
        if isinstance(dev, Arm):
            out.append((f"/{ns}/{name}/joint_states", "sensor_msgs/msg/JointState"))
        if isinstance(dev, Camera):
            out.append((f"/{ns}/{name}/image_raw", "sensor_msgs/msg/Image"))
        if isinstance(dev, Conveyor) and _belt_of(dev) is not None:
            out.append((f"/{ns}/{name}/belt_state", "std_msgs/msg/Float64MultiArray"))
    return out


def serve_forever(file: str, *, seed: int | None = None, speed: float | None = 1.0,
                  record: str | None = None, processes: bool = False) -> int:
    """``axcell-cell-node FILE``: serve the cell over ROS 2 until SIGINT/SIGTERM."""
    import signal

    from ..config import load_cell
    from ..runtime import Cell
    from ..vision_models import prepare_inspectors

    cfg = load_cell(file)

    async def main() -> None:
        cell = Cell(cfg, seed=seed, inspectors=prepare_inspectors(cfg))
        att = await attach(cell, record=record, processes=processes)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        run = getattr(cell.clock, "run", None)
        clock_task = loop.create_task(run(until=None, speed=speed if speed is not None else 1.0)) if run else None
        try:
            await stop.wait()
        finally:
            if clock_task is not None:
                cell.clock.stop()
                try:
                    await asyncio.wait_for(clock_task, 5.0)
                except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                    pass
            await cell.close()
            await att.close()

    asyncio.run(main())
    return 0
