"""The one asyncio <-> rclpy bridge.

``RosBridge`` owns a fresh ``rclpy.Context`` (never the global default), an executor
(``SingleThreadedExecutor`` by default) spun by ``executor.spin()`` in its own thread, and the
nodes created on it. With ``executor="loop"`` there is no spin thread: the asyncio loop's own
thread spins a leaner single-threaded executor whenever the loop would otherwise block
(:class:`_LoopSpinner`, :class:`_LeanExecutor`), which is what ``axcell run --transport ros``
uses in one process. The asyncio side never blocks and never polls the executor:

- asyncio -> rclpy: ``await bridge.await_future(rclpy_future)`` hooks the rclpy future with
  ``add_done_callback`` and hops back into the event loop with ``loop.call_soon_threadsafe``
  (with ``executor="loop"`` the future completes on the loop's own thread: no hop at all).
  ``await bridge.call(client, request, timeout=...)`` is a service call on top of it; the
  action helpers (``send_goal``, ``get_result``, ``cancel_goal``, ``execute``) likewise.
- rclpy -> asyncio: ``bridge.run_coroutine(coro)`` (from an rclpy callback) submits the coroutine
  to the event loop with ``asyncio.run_coroutine_threadsafe`` and returns an rclpy Future that an
  rclpy coroutine callback can ``await``; when it completes (from the loop thread) the bridge
  calls ``executor.wake()`` so the awaiting callback resumes at once.
- ``bridge.create_action_server(node, Action, name, handler)`` serves an action whose goals run as
  asyncio coroutines ``handler(goal, ctx)`` on the event loop, with ``result_timeout`` 1 s
  (finished goals piling up slow an rclpy action server down badly).

Teardown (``close()``, idempotent, also run at interpreter exit for bridges left open): cancel
our outstanding client goals and finish our server goals, then ``executor.shutdown()``,
``destroy_node`` for every node, join the spin thread, ``rclpy.shutdown(context=ctx)``. A spin
thread still running at interpreter exit aborts the process, hence the join.

Everything imported here needs rclpy; the pure-Python isolation helpers are in ``cell.ros.env``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
import functools
import logging
import os
import select
import threading
import time
import traceback
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import rclpy
from action_msgs.msg import GoalInfo, GoalStatus
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.action.client import ClientGoalHandle
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.context import Context
from rclpy.exceptions import InvalidHandle
from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    SingleThreadedExecutor,
    TimeoutException,
    await_or_execute,
    timeout_sec_to_nsec,
)
from rclpy.logging import LoggingSeverity as _LogSeverity
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy_impl
from rclpy.task import Future as RclpyFuture
from rclpy.task import Task as RclpyTask

_GoalEvent = _rclpy_impl.GoalEvent

from .env import ensure_ros_isolation

__all__ = [
    "DEFAULT_RESULT_TIMEOUT",
    "GoalContext",
    "GoalRejected",
    "GoalResult",
    "RosBridge",
]

log = logging.getLogger(__name__)

#: Seconds an action server keeps a finished goal's result (rclpy's default is 900 s; a pile of
#: finished goals makes every round trip slower). Clients must ask for the result promptly.
DEFAULT_RESULT_TIMEOUT = 1.0

_TERMINAL = (GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_ABORTED, GoalStatus.STATUS_CANCELED)
_STATUS_NAMES = {
    GoalStatus.STATUS_UNKNOWN: "UNKNOWN",
    GoalStatus.STATUS_ACCEPTED: "ACCEPTED",
    GoalStatus.STATUS_EXECUTING: "EXECUTING",
    GoalStatus.STATUS_CANCELING: "CANCELING",
    GoalStatus.STATUS_SUCCEEDED: "SUCCEEDED",
    GoalStatus.STATUS_CANCELED: "CANCELED",
    GoalStatus.STATUS_ABORTED: "ABORTED",
}

_OPEN_BRIDGES: weakref.WeakSet[RosBridge] = weakref.WeakSet()


@atexit.register
def _close_open_bridges() -> None:  # pragma: no cover - exit path
    for b in list(_OPEN_BRIDGES):
        try:
            b.close(timeout=2.0)
        except Exception:
            pass


class GoalRejected(RuntimeError):
    """The action server rejected the goal."""


@dataclasses.dataclass
class GoalResult:
    """Outcome of an action goal: ``status`` is an ``action_msgs/GoalStatus`` value."""

    status: int
    result: Any
    goal_handle: ClientGoalHandle | None = None

    @property
    def status_name(self) -> str:
        return _STATUS_NAMES.get(self.status, str(self.status))

    @property
    def succeeded(self) -> bool:
        return self.status == GoalStatus.STATUS_SUCCEEDED

    @property
    def canceled(self) -> bool:
        return self.status == GoalStatus.STATUS_CANCELED

    @property
    def aborted(self) -> bool:
        return self.status == GoalStatus.STATUS_ABORTED


class GoalContext:
    """What an asyncio action handler gets besides its goal (see ``create_action_server``).

    - ``publish_feedback(msg)``: publish an ``Action.Feedback`` (safe from the event loop).
    - ``cancel_requested`` / ``await wait_cancel()``: the client asked to cancel. In the default
      ``cancel_mode="task"`` the handler's task is also cancelled (``CancelledError`` at its
      current ``await``); catch it to clean up and return a result.
    - ``terminal``: set to ``"succeeded"``, ``"aborted"`` or ``"canceled"`` to choose the goal's
      final state; by default it is ``"canceled"`` if a cancel was requested, else
      ``"succeeded"``; a handler that raises ends ``"aborted"``.
    """

    def __init__(self, bridge: RosBridge, goal_handle: ServerGoalHandle, loop: asyncio.AbstractEventLoop | None):
        self.goal_handle = goal_handle
        self.goal_id = bytes(goal_handle.goal_id.uuid)
        self.terminal: str | None = None
        self._bridge = bridge
        self._loop = loop
        self._cancel_event = asyncio.Event()  # created and set on the loop thread only
        self._cancel_requested = False
        self._task: asyncio.Task | None = None

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    async def wait_cancel(self) -> None:
        await self._cancel_event.wait()

    def publish_feedback(self, feedback: Any) -> None:
        if self.goal_handle.is_active:
            self.goal_handle.publish_feedback(feedback)

    # called on the loop thread
    def _on_cancel(self, cancel_task: bool) -> None:
        self._cancel_requested = True
        self._cancel_event.set()
        if cancel_task and self._task is not None and not self._task.done():
            self._task.cancel()


@dataclasses.dataclass
class _ServerGoal:
    ctx: GoalContext
    cfut: Any  # concurrent.futures.Future, or an asyncio.Task on the loop's own thread
    finish: Callable[[tuple[str, Any]], None] | None
    finished: bool = False


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class RosBridge:
    """Owns an rclpy context + executor thread and connects them to an asyncio event loop.

    ``RosBridge(domain_id=None, executor="single", loop=None, isolate=True, shm_profile=False)``

    - ``domain_id``: passed to ``rclpy.init``; ``None`` = ``ROS_DOMAIN_ID`` from the environment
      (which ``isolate`` sets if unset).
    - ``executor``: ``"single"`` (default, ``SingleThreadedExecutor``), ``"multi"``
      (``MultiThreadedExecutor``; avoid across processes on 2 cores), ``"events"``
      (``rclpy.experimental.EventsExecutor``; experimental, see the platform notes) or
      ``"loop"``: a ``SingleThreadedExecutor`` spun *by the asyncio loop's own thread*, no spin
      thread at all (see :class:`_LoopSpinner`). Every rclpy callback then runs on the loop
      thread, between two turns of the loop: no thread hop, no GIL ping-pong between the loop
      and a spin thread per message (which is what a device call over DDS mostly cost), and
      nothing to wait for from the other core. Needs the running loop at construction (or
      ``loop=``) and a selector event loop; the loop must keep running while the bridge is in
      use (as it does under ``asyncio.run``). ``close()`` from another thread is fine (``aclose``
      does that); callbacks never run concurrently with the loop.
    - ``loop``: the asyncio loop to bridge to; default the running loop at construction, or the
      loop of the first ``await`` on the bridge.
    - ``autostart``: start the spin thread now (else call ``start()``; needed for ``"events"``).
    - ``isolate``: ``ensure_ros_isolation(domain_id, shm_profile=...)`` before ``rclpy.init``
      (LOCALHOST discovery and a ``ROS_DOMAIN_ID`` where the environment sets none).

    Use as ``async with RosBridge() as bridge:`` / ``with RosBridge() as bridge:`` or call
    ``close()`` / ``await aclose()``.
    """

    def __init__(
        self,
        *,
        domain_id: int | None = None,
        executor: str = "single",
        loop: asyncio.AbstractEventLoop | None = None,
        isolate: bool = True,
        shm_profile: bool = False,
        args: list[str] | None = None,
        name: str = "axcell",
        num_threads: int | None = None,
        autostart: bool = True,
    ) -> None:
        if isolate:
            ensure_ros_isolation(domain_id, shm_profile=shm_profile)
        self.name = name
        self.context = Context()
        rclpy.init(
            args=args,
            context=self.context,
            domain_id=domain_id,
            signal_handler_options=SignalHandlerOptions.NO,
        )
        try:
            self.executor = self._make_executor(executor, num_threads)
        except BaseException:
            self._shutdown_context()
            raise
        self.executor_kind = executor
        self._loop = loop or _running_loop()
        self._lock = threading.RLock()
        self._nodes: list[Node] = []
        self._client_goals: dict[bytes, ClientGoalHandle] = {}
        self._server_goals: dict[bytes, _ServerGoal] = {}
        self._server_goals_cv = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._spin, name=f"rclpy-spin-{name}", daemon=True)
        self._spinner: _LoopSpinner | None = None
        _OPEN_BRIDGES.add(self)
        if autostart:
            self.start()

    def start(self) -> None:
        """Start the spin thread (done by the constructor unless ``autostart=False``).

        With ``executor="events"`` create the nodes and their entities first and start after:
        adding nodes to a spinning EventsExecutor from another thread deadlocks (rclpy 7.1.6).
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("bridge is closed")
            if self.executor_kind == "loop":
                if self._spinner is None:
                    if self._loop is None:
                        raise RuntimeError("executor='loop' needs the asyncio loop: construct the bridge "
                                           "inside it or pass loop=")
                    self._spinner = _LoopSpinner(self, self._loop)
                return
            if not self._thread.is_alive() and self._thread.ident is None:
                self._thread.start()

    # ------------------------------------------------------------------ lifecycle

    def _make_executor(self, kind: str, num_threads: int | None):
        if kind == "loop" and _LeanExecutor.usable():
            return _LeanExecutor(context=self.context)
        if kind in ("single", "loop"):
            return SingleThreadedExecutor(context=self.context)
        if kind == "multi":
            return MultiThreadedExecutor(num_threads=num_threads, context=self.context)
        if kind == "events":
            from rclpy.experimental import EventsExecutor

            log.warning(
                "EventsExecutor is experimental: in rclpy 7.1.6 calls into rclpy from other threads "
                "(e.g. the asyncio loop) while it spins can deadlock; prefer executor='single'"
            )

            return EventsExecutor(context=self.context)
        raise ValueError(f"executor must be 'single', 'multi', 'events' or 'loop', not {kind!r}")

    def _spin(self) -> None:
        ex = self.executor
        while not self._closed:
            try:
                ex.spin()  # blocks in the wait set; returns on executor/context shutdown
                return
            except (ExternalShutdownException, ShutdownException):
                return
            except Exception:  # an rclpy callback raised: log it, keep serving
                if self._closed:
                    return
                log.exception("exception in an rclpy callback (bridge %s keeps spinning)", self.name)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def spin_thread(self) -> threading.Thread:
        return self._thread

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("RosBridge has no asyncio loop yet: pass loop= or await a bridge method first")
        return self._loop

    def attach_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Bind the bridge to ``loop`` (default: the running loop)."""
        self._loop = loop or asyncio.get_running_loop()

    def _on_loop_thread(self, loop: asyncio.AbstractEventLoop | None = None) -> bool:
        """True when the caller runs on the thread that spins this bridge *and* runs its loop
        (``executor="loop"``): then work for the loop is queued directly, without the
        thread-safe wake-up (a self-pipe write that would wake the loop watcher)."""
        sp = self._spinner
        return sp is not None and sp._thread_id == threading.get_ident() and (loop is None or loop is sp.loop)

    def _run_queued_now(self) -> None:
        """With ``executor="loop"``, on the loop's thread and outside rclpy: run the executor's
        queued tasks (e.g. the step that ends a goal after ``notify_execute``) right now instead
        of at the next turn of the loop. Anywhere else nothing happens (the executor runs them)."""
        sp = self._spinner
        if sp is not None and not sp.spinning and sp._thread_id == threading.get_ident():
            sp.run_queued()

    def _soon(self, loop: asyncio.AbstractEventLoop, cb: Callable[..., Any], *args: Any) -> None:
        """``loop.call_soon_threadsafe(cb, *args)``, or plain ``call_soon`` on the loop's thread."""
        if self._on_loop_thread(loop):
            loop.call_soon(cb, *args)
        else:
            loop.call_soon_threadsafe(cb, *args)

    def _submit(self, coro: Coroutine, loop: asyncio.AbstractEventLoop) -> Any:
        """``run_coroutine_threadsafe``; on the loop's own thread a task (same future interface:
        ``add_done_callback``, ``cancelled``, ``exception``, ``result``, ``cancel``)."""
        if self._on_loop_thread(loop):
            return loop.create_task(coro)
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop.is_closed():
            self._loop = loop
        return loop

    def close(self, timeout: float = 5.0, drain_timeout: float = 1.0) -> None:
        """Idempotent, bounded teardown (see the module docstring for the order).

        Outstanding client goals of this bridge get a cancel request and server goals are
        finished (their asyncio tasks cancelled), waiting at most ``drain_timeout`` for the
        executor to process that; then the executor is shut down, the nodes destroyed, the spin
        thread joined (at most ``timeout``) and the context shut down. Safe from any thread;
        from an rclpy callback it hands the work to a helper thread (the spin thread cannot join
        itself). From a coroutine prefer ``await aclose()``, which does not block the loop.
        """
        with self._lock:
            if self._closed:
                return
            sp = self._spinner
            if threading.current_thread() is self._thread or (
                    sp is not None and sp.in_callback and sp._thread_id == threading.get_ident()):
                threading.Thread(target=self.close, args=(timeout, drain_timeout), daemon=True).start()
                return
            self._closed = True
        _OPEN_BRIDGES.discard(self)
        try:
            self._drain(drain_timeout)
        except Exception:
            log.exception("bridge %s: draining goals failed", self.name)
        if self._spinner is not None:
            self._spinner.stop(timeout)  # the loop thread leaves rclpy alone from here on
        self.executor.shutdown(timeout_sec=timeout)
        with self._lock:
            nodes, self._nodes = self._nodes, []
        for node in nodes:
            # Node.destroy_node() leaves waitables (action servers/clients) alive, and their
            # handles keep the node and the context (DDS participant, /dev/shm) in use.
            for w in list(node.waitables):
                try:
                    w.destroy()
                except Exception:
                    log.exception("bridge %s: destroying %r failed", self.name, w)
            try:
                node.destroy_node()
            except Exception:
                log.exception("bridge %s: destroy_node(%s) failed", self.name, node.get_name())
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if self._thread.is_alive():  # should not happen; make the spin loop exit via the context
            log.error("bridge %s: spin thread did not stop in %.1f s", self.name, timeout)
        self._shutdown_context()
        if self._thread.ident is not None:
            self._thread.join(timeout)

    def _shutdown_context(self) -> None:
        if self.context.ok():
            try:
                rclpy.shutdown(context=self.context, uninstall_handlers=False)
            except Exception:  # already shut down (e.g. by another thread)
                pass
        # Release the rcl/rmw context now (DDS participant, its /dev/shm segments) instead of
        # whenever the garbage collector gets to it.
        try:
            self.context.destroy()
        except Exception:
            pass

    async def aclose(self, timeout: float = 5.0) -> None:
        """``close()`` without blocking the event loop."""
        if self._closed:
            return
        await asyncio.to_thread(self.close, timeout)

    def _drain(self, drain_timeout: float) -> None:
        deadline = time.monotonic() + drain_timeout
        # 1. cancel our client goals that are still running
        with self._lock:
            goals = list(self._client_goals.values())
            self._client_goals.clear()
        pending = []
        for gh in goals:
            if gh.status not in _TERMINAL:
                try:
                    pending.append(gh.cancel_goal_async())
                except Exception:
                    pass
        # 2. finish our server goals: cancel their asyncio tasks, complete their rclpy side
        with self._lock:
            sgoals = list(self._server_goals.values())
        for sg in sgoals:
            self._request_task_cancel(sg, cancel_task=True)
            if sg.finish is not None:
                sg.finish(("cancelled", None))
        if sgoals or pending:
            self.executor.wake()
        sp = self._spinner
        if sp is not None and not sp.spun_elsewhere():
            # nobody else spins: do it here until the goals are settled
            while time.monotonic() < deadline and (self._server_goals or any(not f.done() for f in pending)):
                sp.spin_inline(min(0.01, max(0.0, deadline - time.monotonic())))
            return
        for f in pending:
            ev = threading.Event()
            f.add_done_callback(lambda _f, ev=ev: ev.set())
            ev.wait(max(0.0, deadline - time.monotonic()))
        with self._server_goals_cv:
            while self._server_goals and time.monotonic() < deadline:
                self._server_goals_cv.wait(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> RosBridge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> RosBridge:
        self._bind_loop()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ nodes

    def create_node(self, name: str, *, namespace: str | None = None, lean: bool = False, **kwargs: Any) -> Node:
        """A ``rclpy.node.Node`` on this bridge's context, added to its executor.

        ``lean=True``: a node for plumbing (device nodes, proxies' clients, ``/clock``) without
        the six parameter services and ``~/get_type_description`` (its parameters, e.g.
        ``use_sim_time``, are still declared; they are just not remotely settable), whose
        publishers carry no QoS event handlers (call :meth:`trim` after adding publishers).
        Every entity a node has is rebuilt into the executor's wait set on *every* wait, in
        Python: seven services and two event handlers per node made a device call's round trip
        several times dearer than the DDS transfer itself.
        """
        if lean:
            from rclpy.parameter import Parameter

            kwargs.setdefault("start_parameter_services", False)
            overrides = list(kwargs.get("parameter_overrides") or [])
            if not any(p.name == "start_type_description_service" for p in overrides):
                overrides.append(Parameter("start_type_description_service", Parameter.Type.BOOL, False))
            kwargs["parameter_overrides"] = overrides
        node = Node(name, namespace=namespace, context=self.context, **kwargs)
        if lean:
            self.trim(node)
        self.add_node(node)
        return node

    @staticmethod
    def trim(node: Node) -> int:
        """Drop the QoS event handlers (incompatible QoS/type: they only log) of ``node``'s
        publishers and subscriptions from the wait set; returns how many. Idempotent."""
        n = 0
        for ent in (*node.publishers, *node.subscriptions):
            handlers = list(getattr(ent, "event_handlers", None) or ())
            for h in handlers:
                try:
                    node.remove_waitable(h)
                except ValueError:
                    pass
                h.destroy()
                n += 1
            if handlers:
                ent.event_handlers = []
        return n

    def add_node(self, node: Node) -> Node:
        """Add a node made elsewhere (e.g. a ``LifecycleNode``; it must use ``bridge.context``)."""
        if node.context is not self.context:
            raise ValueError("node was created on another context; pass context=bridge.context")
        with self._lock:
            if self._closed:
                raise RuntimeError("bridge is closed")
            self._nodes.append(node)
        self.executor.add_node(node)
        return node

    def destroy_node(self, node: Node) -> None:
        with self._lock:
            if node in self._nodes:
                self._nodes.remove(node)
        self.executor.remove_node(node)
        for w in list(node.waitables):
            w.destroy()
        node.destroy_node()

    @property
    def nodes(self) -> list[Node]:
        with self._lock:
            return list(self._nodes)

    def wake(self) -> None:
        """Wake the executor (after completing an rclpy future from another thread)."""
        self.executor.wake()

    # ------------------------------------------------------------------ asyncio <- rclpy

    async def await_future(
        self,
        rfut: RclpyFuture,
        timeout: float | None = None,
        *,
        on_abandon: Callable[[RclpyFuture], Any] | None = None,
        cancel_on_abandon: bool = True,
    ) -> Any:
        """Await an rclpy Future from the event loop without blocking it.

        On timeout (``TimeoutError``) or cancellation of the awaiting task the rclpy future is
        cancelled (unless ``cancel_on_abandon=False``) and ``on_abandon(rfut)`` is called
        (e.g. ``client.remove_pending_request``).
        """
        loop = self._bind_loop()
        afut = loop.create_future()

        def transfer() -> None:  # on the loop thread
            if afut.done():
                if rfut.done():
                    rfut.exception()  # don't let rclpy print "never retrieved"
                return
            if rfut.cancelled():
                afut.cancel()
                return
            exc = rfut.exception()
            if exc is not None:
                afut.set_exception(exc)
            else:
                afut.set_result(rfut.result())

        def done_cb(_f: RclpyFuture) -> None:  # on the spin thread (or wherever rfut completed)
            if self._on_loop_thread(loop):
                transfer()  # the loop's own thread (spinning rclpy inside its select): no hop
                return
            try:
                loop.call_soon_threadsafe(transfer)
            except RuntimeError:  # loop closed
                pass

        done_cb.axcell_inline = True  # type: ignore[attr-defined]  # see _LeanExecutor.create_task
        rfut.add_done_callback(done_cb)
        try:
            if timeout is None:
                return await afut
            return await asyncio.wait_for(afut, timeout)
        except (asyncio.CancelledError, TimeoutError):
            if not rfut.done() and not rfut.cancelled():
                if cancel_on_abandon:
                    rfut.cancel()
                if on_abandon is not None:
                    try:
                        on_abandon(rfut)
                    except Exception:
                        pass
            raise

    async def call(self, client, request, timeout: float | None = None):
        """Call a service (``rclpy`` ``Client``) and await the response."""
        rfut = client.call_async(request)
        return await self.await_future(rfut, timeout, on_abandon=client.remove_pending_request)

    async def wait_for_service(self, client, timeout: float = 5.0, poll: float = 0.01) -> bool:
        """Wait (asyncio-sleeping, not spinning) until the service is discovered."""
        deadline = time.monotonic() + timeout
        while not client.service_is_ready():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll)
        return True

    async def wait_for_action_server(self, client: ActionClient, timeout: float = 5.0, poll: float = 0.01) -> bool:
        """Wait (asyncio-sleeping) until the action server is discovered."""
        deadline = time.monotonic() + timeout
        while not client.server_is_ready():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll)
        return True

    # ------------------------------------------------------------------ action client

    def create_action_client(self, node: Node, action_type, name: str, **kwargs: Any) -> ActionClient:
        return _LockedActionClient(node, action_type, name, **kwargs)

    async def send_goal(
        self,
        client: ActionClient,
        goal,
        *,
        feedback: Callable[[Any], Any] | None = None,
        timeout: float | None = None,
        goal_uuid: Any = None,
    ) -> ClientGoalHandle:
        """Send a goal and await the server's accept/reject; returns the goal handle.

        ``feedback(fb)`` is called on the event loop with each ``Action.Feedback`` (a coroutine
        function is scheduled as a task). Check ``handle.accepted``. ``goal_uuid``
        (``unique_identifier_msgs/UUID``, default random) lets the caller choose the goal id.
        """
        loop = self._bind_loop()
        fb_cb = None
        if feedback is not None:
            is_coro = asyncio.iscoroutinefunction(feedback)

            def deliver(fb) -> None:  # loop thread
                try:
                    if is_coro:
                        loop.create_task(feedback(fb))
                    else:
                        feedback(fb)
                except Exception:
                    log.exception("feedback callback raised")

            def fb_cb(msg) -> None:  # spin thread
                try:
                    self._soon(loop, deliver, msg.feedback)
                except RuntimeError:
                    pass

        rfut = client.send_goal_async(goal, feedback_callback=fb_cb, goal_uuid=goal_uuid)

        def abandon(f):
            # keep the rclpy request, so the server's late answer is consumed quietly (removing it made
            # rclpy log "Ignoring unexpected goal response" when a run closed mid-request), and cancel
            # the goal if the server accepted it after all: nobody is waiting for it any more
            def late(fut) -> None:
                try:
                    handle = fut.result()
                except Exception:  # noqa: BLE001 - the request failed or was cancelled: nothing to undo
                    return
                if handle is not None and handle.accepted:
                    try:
                        handle.cancel_goal_async()
                    except Exception:  # noqa: BLE001 - the client may be gone by then
                        pass

            f.add_done_callback(late)

        gh: ClientGoalHandle = await self.await_future(rfut, timeout, on_abandon=abandon, cancel_on_abandon=False)
        if gh.accepted:
            with self._lock:
                if self._closed:
                    gh.cancel_goal_async()
                    self.executor.wake()
                    raise RuntimeError("bridge closed while sending a goal")
                self._client_goals[bytes(gh.goal_id.uuid)] = gh
        return gh

    async def get_result(self, goal_handle: ClientGoalHandle, timeout: float | None = None) -> GoalResult:
        """Await the goal's result (``GoalResult(status, result)``)."""
        key = bytes(goal_handle.goal_id.uuid)

        def forget(_f=None) -> None:
            with self._lock:
                self._client_goals.pop(key, None)

        rfut = goal_handle.get_result_async()
        # If the awaiting task gives up, keep the rclpy request alive (so the late response is
        # consumed quietly) and stop tracking the goal once it ends.
        resp = await self.await_future(rfut, timeout, cancel_on_abandon=False,
                                       on_abandon=lambda f: f.add_done_callback(forget))
        forget()
        return GoalResult(resp.status, resp.result, goal_handle)

    async def cancel_goal(self, goal_handle: ClientGoalHandle, timeout: float | None = None):
        """Request cancellation; returns the ``CancelGoal.Response`` (``goals_canceling``)."""
        return await self.await_future(goal_handle.cancel_goal_async(), timeout)

    async def execute(
        self,
        client: ActionClient,
        goal,
        *,
        feedback: Callable[[Any], Any] | None = None,
        timeout: float | None = None,
        accept_timeout: float | None = 10.0,
    ) -> GoalResult:
        """Send a goal, await acceptance, then the result.

        Raises ``GoalRejected`` if rejected. If ``timeout`` expires or the awaiting task is
        cancelled, a cancel request is sent for the goal (not awaited) and the error propagates.
        """
        gh = await self.send_goal(client, goal, feedback=feedback, timeout=accept_timeout)
        if not gh.accepted:
            raise GoalRejected(f"goal rejected by the {getattr(client, '_action_name', '')} action server")
        try:
            return await self.get_result(gh, timeout)
        except (asyncio.CancelledError, TimeoutError):
            try:
                gh.cancel_goal_async()
                self.executor.wake()
            except Exception:
                pass
            raise

    # ------------------------------------------------------------------ rclpy -> asyncio

    def run_coroutine(self, coro: Coroutine) -> RclpyFuture:
        """Run ``coro`` on the event loop (from an rclpy callback or any thread).

        Returns an rclpy Future that an rclpy coroutine callback can ``await``; it completes
        with the coroutine's result/exception (``CancelledError`` if the task was cancelled),
        and the executor is woken so the awaiting callback resumes immediately.
        """
        cfut = self._submit(coro, self.loop)
        return self._rclpy_future_from(cfut)

    def submit(self, coro: Coroutine) -> concurrent.futures.Future:
        """``asyncio.run_coroutine_threadsafe(coro, bridge.loop)`` (a concurrent Future)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def _rclpy_future_from(self, cfut: concurrent.futures.Future) -> RclpyFuture:
        rfut = RclpyFuture()  # no executor: its done callbacks run inline in the completing thread

        def done(cf: concurrent.futures.Future) -> None:
            if rfut.done() or rfut.cancelled():
                return
            if cf.cancelled():
                rfut.set_exception(asyncio.CancelledError())
            else:
                exc = cf.exception()
                if exc is not None:
                    rfut.set_exception(exc)
                else:
                    rfut.set_result(cf.result())
            self.executor.wake()

        cfut.add_done_callback(done)
        return rfut

    # ------------------------------------------------------------------ services

    def create_service(
        self,
        node: Node,
        srv_type,
        name: str,
        handler: Callable[[Any, Any], Awaitable[Any]],
        *,
        on_error: Callable[[BaseException, Any], Any] | None = None,
        **kwargs: Any,
    ):
        """Serve ``srv_type`` at ``name`` with an asyncio handler ``await handler(request, response)``.

        The rclpy callback (spin thread) only hands the request to the event loop and returns;
        the reply is sent from the event loop the moment the handler returns. No rclpy coroutine
        waits in between: a pending rclpy coroutine callback is resumed on every turn of the
        executor (a busy loop holding the GIL), which is what made every call cost milliseconds.
        ``on_error(exc, response)`` fills the response when the handler raises or is cancelled
        (default: the exception propagates to the log and the response is sent as is).
        """
        bridge = self

        async def serve(d: _DeferredReply, request, response):
            # the reply goes out the moment the handler returns, from its own task step (not one
            # turn of the loop later from a done callback, which stays as the fallback)
            try:
                r = await handler(request, response)
            except asyncio.CancelledError as e:
                d.fail(e)
                raise
            except Exception as e:  # noqa: BLE001 - on_error fills the response
                d.fail(e)
                raise
            d.succeed(r)
            return r

        def callback(request, response):  # spin thread
            d = _DeferredReply(response, on_error)
            try:
                cfut = bridge._submit(serve(d, request, response), bridge.loop)
            except RuntimeError as e:  # no loop / loop closed: answer now
                d.fail(e)
                return d
            cfut.add_done_callback(d.on_done)
            return d

        srv = node.create_service(srv_type, name, callback, **kwargs)
        send = srv.send_response

        def send_response(response, header) -> None:  # spin thread, right after callback()
            if isinstance(response, _DeferredReply):
                response.attach(send, header)
            else:
                send(response, header)

        srv.send_response = send_response  # the executor looks it up on the instance
        return srv

    # ------------------------------------------------------------------ action server

    def create_action_server(
        self,
        node: Node,
        action_type,
        name: str,
        handler: Callable[[Any, GoalContext], Awaitable[Any]],
        *,
        goal_callback: Callable[[Any], GoalResponse] | None = None,
        cancel_callback: Callable[[ServerGoalHandle], CancelResponse] | None = None,
        cancel_mode: str = "task",
        result_timeout: float = DEFAULT_RESULT_TIMEOUT,
        on_cancel_result: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ) -> ActionServer:
        """Serve ``action_type`` at ``name``; each accepted goal runs ``await handler(goal, ctx)``
        on the event loop and its return value (an ``Action.Result``) is the result.

        - ``goal_callback(goal) -> GoalResponse`` runs on the spin thread (accept/reject).
        - Cancel requests are accepted unless ``cancel_callback`` says otherwise; then
          ``cancel_mode="task"`` cancels the handler's asyncio task (``"flag"``: only sets
          ``ctx.cancel_requested`` and ``ctx.wait_cancel()``).
        - ``on_cancel_result(goal)`` builds the result for a handler that ended with
          ``CancelledError`` (default: an empty ``Action.Result()``).
        - A handler that raises ends the goal aborted (logged), result from ``Action.Result()``.

        How a goal runs: the accept callback (spin thread) marks the goal EXECUTING and submits
        the handler to the event loop; no rclpy coroutine waits for it (a pending rclpy
        coroutine is resumed on every executor turn, a busy loop for the whole goal). When the
        handler ends, its outcome is handed back with ``ActionServer.notify_execute`` (a task on
        the executor, thread-safe) whose execute callback sets the final state and returns the
        result at once.
        """
        if cancel_mode not in ("task", "flag"):
            raise ValueError("cancel_mode must be 'task' or 'flag'")
        bridge = self
        holder: list[ActionServer] = []

        def settle(goal_handle: ServerGoalHandle, ctx: GoalContext, outcome: tuple[str, Any]):
            # spin thread, inside ActionServer._execute_goal: choose the final state, return the result
            kind, value = outcome
            try:
                if kind == "error":
                    log.error("action %s: handler raised", name, exc_info=value)
                    if goal_handle.is_active:
                        goal_handle.abort()
                    return action_type.Result()
                cancelled = kind == "cancelled"
                result = value
                if result is None:
                    result = on_cancel_result(goal_handle.request) if (cancelled and on_cancel_result) \
                        else action_type.Result()
                terminal = ctx.terminal
                if terminal is None:
                    terminal = "canceled" if (cancelled or goal_handle.is_cancel_requested) else "succeeded"
                if not goal_handle.is_active:
                    return result
                if terminal == "canceled" and not goal_handle.is_cancel_requested:
                    terminal = "aborted"  # only a goal asked to cancel can end CANCELED
                if terminal == "succeeded":
                    goal_handle.succeed()
                elif terminal == "canceled":
                    goal_handle.canceled()
                else:
                    goal_handle.abort()
                return result
            finally:
                with bridge._server_goals_cv:
                    bridge._server_goals.pop(ctx.goal_id, None)
                    bridge._server_goals_cv.notify_all()

        def on_accepted(goal_handle: ServerGoalHandle) -> None:  # spin thread
            if not goal_handle.is_cancel_requested:
                goal_handle._update_state(_GoalEvent.EXECUTE)
            try:
                loop = bridge.loop
            except RuntimeError:
                loop = None
            ctx = GoalContext(bridge, goal_handle, loop)
            sg = _ServerGoal(ctx, None, None)

            def finish(outcome: tuple[str, Any]) -> None:  # any thread, once
                with bridge._lock:
                    if sg.finished:
                        return
                    sg.finished = True
                try:
                    holder[0].notify_execute(goal_handle, lambda gh: settle(gh, ctx, outcome))
                except Exception:  # server destroyed (bridge closing)
                    with bridge._server_goals_cv:
                        bridge._server_goals.pop(ctx.goal_id, None)
                        bridge._server_goals_cv.notify_all()
                    return
                bridge._run_queued_now()  # the loop's own thread: set the result now, not on a later turn

            sg.finish = finish
            with bridge._lock:
                bridge._server_goals[ctx.goal_id] = sg

            async def runner():
                ctx._task = asyncio.current_task()
                if ctx._cancel_requested:  # cancel arrived before we started
                    ctx._on_cancel(cancel_mode == "task")
                # the outcome is handed over from the handler's own last step (the done callback,
                # one turn of the loop later, stays as the fallback: finish() runs once)
                try:
                    r = await handler(goal_handle.request, ctx)
                except asyncio.CancelledError:
                    finish(("cancelled", None))
                    raise
                except Exception as e:
                    finish(("error", e))
                    raise
                finish(("ok", r))
                return r

            def done(cf: concurrent.futures.Future) -> None:
                if cf.cancelled():
                    finish(("cancelled", None))
                    return
                exc = cf.exception()
                if isinstance(exc, asyncio.CancelledError):
                    finish(("cancelled", None))
                elif exc is not None:
                    finish(("error", exc))
                else:
                    finish(("ok", cf.result()))

            if loop is None:
                finish(("error", RuntimeError("bridge has no event loop")))
                return
            try:
                coro = runner()
                sg.cfut = bridge._submit(coro, loop)
            except RuntimeError as e:  # loop closed
                coro.close()
                finish(("error", e))
                return
            sg.cfut.add_done_callback(done)

        def on_cancel(goal_handle: ServerGoalHandle) -> CancelResponse:  # spin thread
            resp = cancel_callback(goal_handle) if cancel_callback else CancelResponse.ACCEPT
            if resp == CancelResponse.ACCEPT:
                with bridge._lock:
                    sg = bridge._server_goals.get(bytes(goal_handle.goal_id.uuid))
                if sg is not None:
                    bridge._request_task_cancel(sg, cancel_task=(cancel_mode == "task"))
            return resp

        def unused_execute(goal_handle: ServerGoalHandle):  # goals are executed via notify_execute
            goal_handle.abort()
            return action_type.Result()

        server_kwargs = dict(kwargs)
        # Goals are long-running; with a MultiThreadedExecutor a mutually exclusive group would
        # block cancel requests behind them. Harmless for the single-threaded one.
        server_kwargs.setdefault("callback_group", ReentrantCallbackGroup())
        if goal_callback is not None:
            server_kwargs["goal_callback"] = goal_callback
        server = _QuietActionServer(
            node,
            action_type,
            name,
            unused_execute,
            cancel_callback=on_cancel,
            handle_accepted_callback=on_accepted,
            result_timeout=result_timeout,
            **server_kwargs,
        )
        holder.append(server)
        return server

    def _request_task_cancel(self, sg: _ServerGoal, cancel_task: bool) -> None:
        sg.ctx._cancel_requested = True
        try:
            if sg.ctx._loop is None:
                raise RuntimeError("no loop")
            self._soon(sg.ctx._loop, sg.ctx._on_cancel, cancel_task)
        except RuntimeError:  # loop closed: the handler will never finish; finish the goal
            if sg.finish is not None:
                sg.finish(("cancelled", None))


class _LockedActionClient(ActionClient):
    """``rclpy.action.ActionClient`` whose requests cannot lose their answers to another thread.

    rclpy 7.1 sends a goal, cancel or result request and only then files the future that its
    answer completes. When the executor spins in a thread of its own (``executor="single"``, as
    the leader of a ``--processes`` run does), an answer that arrives in between is taken in,
    found unexpected ("Ignoring unexpected goal response") and dropped, and the caller waits
    for ever: a ``--processes`` run of the demo under heavy load stopped after 120 s this way,
    each time a FollowJointTrajectory goal's response was lost. Here sending and filing happen
    under one lock, and the executor matches answers to requests under the same lock. Feedback
    callbacks run outside it (they may wait). With the executor on the caller's own thread the
    lock is never contended.
    """

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self._filing = threading.RLock()

    def send_goal_async(self, *a: Any, **k: Any):
        with self._filing:
            return super().send_goal_async(*a, **k)

    def _cancel_goal_async(self, *a: Any, **k: Any):
        with self._filing:
            return super()._cancel_goal_async(*a, **k)

    def _get_result_async(self, *a: Any, **k: Any):
        with self._filing:
            return super()._get_result_async(*a, **k)

    async def execute(self, taken_data):
        answers = {key: taken_data[key] for key in ("goal", "cancel", "result") if key in taken_data}
        if answers:
            with self._filing:  # rclpy's matching of these awaits nothing: it completes under the lock
                await super().execute(answers)
        if "feedback" in taken_data:
            await super().execute({"feedback": taken_data["feedback"]})
        if "status" in taken_data:
            with self._filing:
                await super().execute({"status": taken_data["status"]})


class _QuietActionServer(ActionServer):
    """``rclpy.action.ActionServer`` whose debug messages are only formatted when debug logging
    is on.

    rclpy formats the goal id (a numpy array, through numpy's array printer) into a debug
    message at every step of every goal, whether or not anything is logged; that cost as much
    as the rest of the server's work. These three steps do what rclpy 7.1's do (same replies,
    same status publications, same futures and callbacks) and log the same events at the
    same levels, in our own words, formatting them only if the logger is enabled for them.
    """

    def _debug(self, msg: Callable[[], str]) -> None:
        lg = self._logger
        if lg.is_enabled_for(_LogSeverity.DEBUG):
            lg.debug(msg())

    async def _execute_goal_request(self, request_header_and_message):
        header, request = request_header_and_message
        goal_id = request.goal_id
        info = GoalInfo()
        info.goal_id = goal_id
        self._debug(lambda: f"goal {goal_id.uuid}: requested")
        with self._lock:
            known = self._handle.goal_exists(info)
        accepted = False
        if not known:
            verdict = await await_or_execute(self._goal_callback, request.goal)
            if isinstance(verdict, GoalResponse):
                accepted = verdict == GoalResponse.ACCEPT
            else:
                self._logger.warning("the goal callback returned no GoalResponse: goal rejected")
        handle = None
        if accepted:
            info.stamp = self._node.get_clock().now().to_msg()
            try:
                with self._lock:
                    handle = ServerGoalHandle(self, info, request.goal)
            except RuntimeError as e:
                self._logger.error(f"goal {goal_id.uuid}: could not be accepted ({e})")
                accepted = False
            else:
                key = bytes(goal_id.uuid)
                self._goal_handles[key] = handle
                fut = self._result_futures[key] = RclpyFuture()
                self.add_future(fut)
        reply = self._action_type.Impl.SendGoalService.Response()
        reply.accepted = accepted
        reply.stamp = info.stamp
        try:
            self._handle.send_goal_response(header, reply)
        except _rclpy_impl.RCLError:
            self._logger.warn("goal response not sent (the client may be gone)")
            return
        if not accepted:
            self._debug(lambda: f"goal {goal_id.uuid}: rejected")
            return
        self._debug(lambda: f"goal {goal_id.uuid}: accepted")
        self._handle.publish_status()  # ACCEPTED, before the accepted callback runs
        await await_or_execute(self._handle_accepted_callback, handle)

    async def _execute_goal(self, execute_callback, goal_handle):
        uuid = goal_handle.goal_id.uuid
        self._debug(lambda: f"goal {uuid}: executing")
        try:
            result = await await_or_execute(execute_callback, goal_handle)
        except Exception as ex:  # noqa: BLE001 - still answer the client, as rclpy does
            result = self._action_type.Result()
            self._logger.error(f"the execute callback raised: {ex}")
            traceback.print_exc()
        if goal_handle.is_active:
            self._logger.warning(f"goal {uuid}: the execute callback set no final state; aborted")
            goal_handle.abort()
        self._debug(lambda: f"goal {uuid}: finished in state {goal_handle.status}")
        reply = self._action_type.Impl.GetResultService.Response()
        reply.status = goal_handle.status
        reply.result = result
        self._result_futures[bytes(uuid)].set_result(reply)

    async def _execute_get_result_request(self, request_header_and_message):
        header, request = request_header_and_message
        uuid = request.goal_id.uuid
        key = bytes(uuid)
        self._debug(lambda: f"goal {uuid}: result requested")
        if key not in self._goal_handles:
            self._debug(lambda: f"goal {uuid}: result requested for an unknown goal")
            reply = self._action_type.Impl.GetResultService.Response()
            reply.status = GoalStatus.STATUS_UNKNOWN
            self._handle.send_result_response(header, reply)
            return
        # answered as soon as the goal's result is set
        self._result_futures[key].add_done_callback(functools.partial(self._send_result_response, header))


def _fine_timer_slack() -> None:
    """1 ns timer slack for the calling thread (Linux; default 50 µs).

    The middleware's wait with a zero or short timeout is a timed futex wait, which the kernel
    lets sleep for the thread's timer slack: 50 µs per poll of the wait set by default, which
    is as much as a whole in-process service round trip otherwise costs.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except Exception:  # noqa: BLE001 - not Linux: nothing to tune
        pass


class _QuietGuard:
    """The executor's guard condition, silent when triggered from the thread that spins it.

    rclpy triggers the executor's guard after every handler and every ``create_task`` so that
    a wait running in *another* thread notices new work. Spun from the loop's own thread by
    :class:`_LeanExecutor`, whose wait looks at pending tasks itself before blocking, those
    triggers only cost one more empty round of the wait set each. Triggers from other threads
    (a wake-up from the loop watcher, ``close()``) go through.
    """

    __slots__ = ("real", "owner")

    def __init__(self, real: Any, owner: "_LeanExecutor") -> None:
        self.real = real
        self.owner = owner

    def trigger(self) -> None:
        if self.owner.spin_thread_id != threading.get_ident():
            self.real.trigger()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _LeanExecutor(SingleThreadedExecutor):
    """``SingleThreadedExecutor`` with a cheaper wait, for ``executor="loop"`` (one thread).

    rclpy rebuilds its wait set from scratch in Python on every wait (a context manager per
    entity, callback-group filters, one generator round per guard trigger); with every device
    call needing a few waits that cost more than DDS itself. This executor waits the same way
    (same entities, same order of handlers: waitables, then per node timers, subscriptions,
    guards, clients, services) but keeps the node's entity lists until they change, looks the
    ready entities up by handle instead of scanning them all, and does not wake itself up
    after its own handlers (see :class:`_QuietGuard`). It relies on rclpy 7.x internals, and
    :meth:`usable` falls back to the stock executor if they are not there.

    Per wait it also: knows when the entity lists change without comparing them
    (:class:`_TrackedList`), reuses one rcl wait set (cleared and refilled, as rcl intends),
    skips the per-entity callback-group checks while no group is busy, and hands out
    :class:`_InlineHandler` objects instead of an ``rclpy.task.Task`` per ready entity.
    The bridge's own done callbacks of rclpy futures run when created on the spinning thread
    (:meth:`create_task`); every other task runs as rclpy runs it, and :class:`_LoopSpinner`
    runs the tasks a wait's handlers queued before it returns to the loop.
    """

    def __init__(self, *, context: Any) -> None:
        super().__init__(context=context)
        for a in ("_tasks", "_tasks_lock", "_guard", "_sigint_gc", "_context", "_is_shutdown"):
            if not hasattr(self, a):
                raise RuntimeError(f"rclpy executor has no {a}: use executor='single'")
        self.spin_thread_id: int | None = None
        self._real_guard = self._guard
        self._guard = _QuietGuard(self._guard, self)
        self._sig: Any = None
        self._cache: Any = None
        self._quick: Any = None
        self._untaken = 0  # handlers handed out (_make_handler) that have not taken their data yet

    @staticmethod
    def usable() -> bool:
        """The rclpy internals this executor builds on are there (rclpy 7.x, Jazzy)."""
        if not all(hasattr(SingleThreadedExecutor, a) for a in (
                "_make_handler", "_take_subscription", "_take_client", "_take_service", "_take_timer",
                "_take_guard_condition", "_take_waitable", "can_execute")):
            return False
        import inspect

        from rclpy.node import Node as _N

        src = inspect.getsource(_N.__init__)
        return all(f"self.{a} " in src or f"self.{a}:" in src for a in (
            "_subscriptions", "_clients", "_services", "_timers", "_guards", "__waitables"))

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        g = self._guard
        if isinstance(g, _QuietGuard):
            self._guard = g.real
        done = super().shutdown(timeout_sec)
        c, self._cache, self._sig, self._quick = self._cache, None, None, None
        if c is not None and c.ws is not None:
            try:
                c.ws.destroy_when_not_in_use()
            except Exception:  # noqa: BLE001 - already gone with its context
                pass
            c.ws = None
        return done

    def create_task(self, callback: Any, *args: Any, **kwargs: Any) -> Any:
        """``Executor.create_task``; a callback marked ``axcell_inline`` (the bridge's own done
        callbacks of rclpy futures, which only hand a result to the asyncio loop) runs at once
        when created on the spinning thread, instead of as a task of a later turn."""
        if getattr(callback, "axcell_inline", False) and self.spin_thread_id == threading.get_ident():
            callback(*args, **kwargs)
            return _DONE
        return super().create_task(callback, *args, **kwargs)

    def _make_handler(self, entity: Any, node: Any, take_from_wait_list: Callable) -> "_InlineHandler":
        """The handler of a ready entity, run by the caller at once (see :class:`_InlineHandler`)."""
        entity._executor_event = True  # out of the wait set until taken, as with rclpy's handler
        self._untaken += 1
        return _InlineHandler(self, entity, node, take_from_wait_list)

    async def _handle_entity(self, entity: Any, take_from_wait_list: Callable) -> None:
        """What rclpy 7.1's handler task does for a ready entity: claim the callback group,
        take the data, run the callback, release the group."""
        gc = self._guard
        if self._is_shutdown or not entity.callback_group.beginning_execution(entity):
            entity._executor_event = False
            self._untaken -= 1
            gc.trigger()
            return
        with self._work_tracker:
            try:
                call = take_from_wait_list(entity)
            finally:
                entity._executor_event = False
                self._untaken -= 1
            gc.trigger()
            try:
                if call is not None:
                    await call()
            finally:
                entity.callback_group.ending_execution(entity)
                try:
                    gc.trigger()
                except InvalidHandle:  # executor shut down from the callback
                    pass

    def ready_tasks(self) -> list:
        """Tasks queued on this executor (``create_task``, done callbacks of rclpy futures) that
        can run now, in the order a wait would hand them out (newest first, as rclpy does)."""
        with self._tasks_lock:
            tasks = self._tasks
            if not tasks:
                return []
            out = [t for t, _e, _n in reversed(tasks) if not t.executing() and not t.done()]
            self._tasks = [t for t in tasks if not t[0].done() and not t[0].cancelled()]
        return out

    def _entities(self, nodes: list) -> "_EntityCache":
        # The nodes' entity lists are swapped for _TrackedList, which counts every change, so
        # the cache stays valid until the count or the set of nodes changes.
        epoch = _TrackedList.epoch
        key = tuple(nodes)
        if self._cache is not None and self._quick == (epoch, key):
            return self._cache
        for n in nodes:
            for a in _TrackedList.NODE_LISTS:
                lst = getattr(n, a)
                if type(lst) is not _TrackedList:
                    setattr(n, a, _TrackedList(lst))
        sig = tuple((n, tuple(n._subscriptions), tuple(n._timers), tuple(n._guards), tuple(n._clients),
                     tuple(n._services), tuple(n.waitables)) for n in nodes)
        if sig != self._sig:
            self._cache = _EntityCache(sig)
            self._sig = sig
        self._quick = (epoch, key)
        return self._cache

    def _pending_tasks(self) -> bool:
        with self._tasks_lock:
            return any(not t.executing() and not t.done() for t, _e, _n in self._tasks)

    def _wait_set(self, c: "_EntityCache", wts: list) -> Any:
        """A wait set big enough for every entity of ``c`` and the waitables ``wts``: rcl wait
        sets are meant to be cleared and refilled, so one is kept until it is too small."""
        ns, ng, nt, nc, nv, ne = c.counts
        fixed = c.fixed_counts
        for w, _n in wts:
            k = fixed.get(id(w))
            if k is None:
                k = w.get_num_entities()
            ns += k.num_subscriptions
            ng += k.num_guard_conditions
            nt += k.num_timers
            nc += k.num_clients
            nv += k.num_services
            ne += k.num_events
        need = (ns, ng, nt, nc, nv, ne)
        ws = c.ws
        if ws is None or any(a > b for a, b in zip(need, c.ws_size)):
            ws = c.ws = _rclpy_impl.WaitSet(ns, ng, nt, nc, nv, ne, self._context.handle)
            c.ws_size = need
        return ws

    def _wait_for_ready_callbacks(self, timeout_sec: Any = None, nodes: Any = None,
                                  condition: Callable[[], bool] = lambda: False):
        timeout_nsec = timeout_sec_to_nsec(timeout_sec)
        yielded_work = False
        deadline = None if timeout_nsec < 0 else time.monotonic() + timeout_nsec * 1e-9
        while not yielded_work and not self._is_shutdown and not condition():
            nodes_to_use = nodes if nodes is not None else self.get_nodes()
            with self._tasks_lock:
                tasks = list(self._tasks)
            if tasks:
                for task, entity, node in reversed(tasks):
                    if (not task.executing() and not task.done() and
                            (node is None or node in nodes_to_use)):
                        yielded_work = True
                        yield task, entity, node
                with self._tasks_lock:
                    self._tasks = [t for t in self._tasks if not t[0].done() and not t[0].cancelled()]
                if yielded_work:
                    # done for this call: the entities are looked at on the next one (a wait that
                    # would not block still costs a timed futex wait in the middleware)
                    return
            c = self._entities(nodes_to_use)
            # Executor.can_execute(e) for every entity, by group: an entity is out while its
            # handler is pending, or while its group says no (a mutually exclusive group while
            # one of its callbacks runs; a reentrant group never does)
            if c.all_free():
                if self._untaken <= 0:  # no handler between being handed out and taking its data
                    subs, tmrs, clis, srvs, wts = c.subs, c.tmrs, c.clis, c.srvs, c.waitables
                else:
                    subs = [e for e in c.subs if not e._executor_event]
                    tmrs = [e for e in c.tmrs if not e._executor_event]
                    clis = [e for e in c.clis if not e._executor_event]
                    srvs = [e for e in c.srvs if not e._executor_event]
                    wts = [wn for wn in c.waitables if not wn[0]._executor_event]
            else:
                can = self.can_execute
                subs = [e for e in c.subs if can(e)]
                tmrs = [e for e in c.tmrs if can(e)]
                clis = [e for e in c.clis if can(e)]
                srvs = [e for e in c.srvs if can(e)]
                wts = [wn for wn in c.waitables if can(wn[0])]
            gcs = []
            for gc in c.gcs:
                if self.can_execute(gc):
                    if gc._executor_triggered:
                        gc.trigger()
                    gcs.append(gc)
            gcs.append(self._real_guard)
            gcs.append(self._sigint_gc)
            # block only if nothing is pending: work we queued ourselves does not trigger the guard
            if self._pending_tasks():
                wait_ns = 0
            elif deadline is None:
                wait_ns = -1
            else:
                wait_ns = max(0, int((deadline - time.monotonic()) * 1e9))
            ws = self._wait_set(c, wts)
            ws.clear_entities()
            add = ws.add_subscription
            for e in subs:
                add(e.handle)
            add = ws.add_client
            for e in clis:
                add(e.handle)
            add = ws.add_service
            for e in srvs:
                add(e.handle)
            add = ws.add_timer
            for e in tmrs:
                add(e.handle)
            add = ws.add_guard_condition
            for gc in gcs:
                add(gc.handle)
            entered = []
            try:
                for w, _n in wts:
                    w.__enter__()
                    entered.append(w)
                    w.add_to_wait_set(ws)
                ws.wait(wait_ns)
                if self._is_shutdown:
                    raise ShutdownException()
                if not self._context.ok():
                    raise ExternalShutdownException()
                get = ws.get_ready_entities
                ptrs = [("t", get("timer")), ("s", get("subscription")), ("c", get("client")),
                        ("v", get("service"))]
                guards_ready = get("guard_condition")
                if guards_ready:
                    for gc in gcs:
                        if gc.handle.pointer in guards_ready:
                            gc._executor_triggered = True
                for w, n in wts:
                    if w.is_ready(ws) and w.callback_group.can_execute(w):
                        yielded_work = True
                        yield self._make_handler(w, n, self._take_waitable), w, n
            finally:
                for w in entered:
                    w.__exit__(None, None, None)
            # rclpy's order: per node, timers, subscriptions, guard conditions, clients, services
            order = c.order
            found = []
            for kind, got in ptrs:
                for ptr in got:
                    o = order.get((kind, ptr))
                    if o is not None:
                        found.append(o)
            for n_i, g_ in c.node_gcs:
                for j, gc in enumerate(g_):
                    if gc._executor_triggered:
                        found.append((n_i, 2, j, gc, c.nodes[n_i]))
            if found:
                found.sort(key=_order_key)
                takes = (self._take_timer, self._take_subscription, self._take_guard_condition,
                         self._take_client, self._take_service)
                for _ni, k, _j, e, n in found:
                    if k == 0 and not e.handle.is_timer_ready():
                        continue
                    if e.callback_group.can_execute(e):
                        yielded_work = True
                        yield self._make_handler(e, n, takes[k]), e, n
            if not yielded_work and (timeout_nsec == 0 or (deadline is not None and time.monotonic() >= deadline)):
                raise TimeoutException()
        if self._is_shutdown:
            raise ShutdownException()
        if condition():
            raise ConditionReachedException()


_DONE = RclpyFuture()
_DONE.set_result(None)


class _InlineHandler:
    """A ready entity's handler as :class:`_LeanExecutor` hands it out: calling it runs
    rclpy's handler steps (:meth:`_LeanExecutor._handle_entity`) right away. Nearly every
    callback finishes in that one step, and then no ``rclpy.task.Task`` is made for it (nor
    kept in, and pruned from, the executor's task list); a callback that awaits something
    continues as a Task of the executor, resumed by later waits exactly as rclpy's would be.
    Has the part of the Task interface executors use (call, ``done``, ``exception``, ``result``).
    """

    __slots__ = ("_ex", "_entity", "_node", "_take", "_state", "_exc", "_task")

    def __init__(self, ex: "_LeanExecutor", entity: Any, node: Any, take: Callable) -> None:
        self._ex, self._entity, self._node, self._take = ex, entity, node, take
        self._state = 0  # 0 not run, 1 finished, 2 handed to a Task
        self._exc: BaseException | None = None
        self._task: Any = None

    def __call__(self) -> None:
        if self._state == 2:
            self._task()
            return
        if self._state:
            return
        self._state = 1
        coro = self._ex._handle_entity(self._entity, self._take)
        try:
            coro.send(None)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - kept for the caller, as a Task does
            self._exc = e
            return
        ex = self._ex
        task = self._task = RclpyTask(coro, executor=ex)
        self._state = 2
        with ex._tasks_lock:
            ex._tasks.append((task, self._entity, self._node))
        ex._guard.trigger()

    def done(self) -> bool:
        return self._task.done() if self._state == 2 else self._state == 1

    def executing(self) -> bool:
        return self._task.executing() if self._state == 2 else False

    def cancelled(self) -> bool:
        return self._task.cancelled() if self._state == 2 else False

    def exception(self) -> BaseException | None:
        return self._task.exception() if self._state == 2 else self._exc

    def result(self) -> Any:
        if self._state == 2:
            return self._task.result()
        if self._exc is not None:
            raise self._exc
        return None


class _TrackedList(list):
    """A node's list of entities (subscriptions, timers, ...) that counts its changes.

    :class:`_LeanExecutor` swaps a node's lists for these (same contents, same type for every
    use rclpy makes of them) so that it can tell in O(1) whether its cached wait-set layout is
    still right; ``epoch`` grows by one at every change of any tracked list.
    """

    __slots__ = ()
    epoch = 0
    NODE_LISTS = ("_subscriptions", "_timers", "_guards", "_clients", "_services", "_Node__waitables")

    @classmethod
    def _bump(cls) -> None:
        cls.epoch += 1

    def append(self, x: Any) -> None:
        super().append(x)
        _TrackedList._bump()

    def extend(self, xs: Any) -> None:
        super().extend(xs)
        _TrackedList._bump()

    def insert(self, i: Any, x: Any) -> None:
        super().insert(i, x)
        _TrackedList._bump()

    def remove(self, x: Any) -> None:
        try:
            super().remove(x)
        finally:
            _TrackedList._bump()

    def pop(self, *a: Any) -> Any:
        try:
            return super().pop(*a)
        finally:
            _TrackedList._bump()

    def clear(self) -> None:
        super().clear()
        _TrackedList._bump()

    def sort(self, *a: Any, **k: Any) -> None:
        super().sort(*a, **k)
        _TrackedList._bump()

    def reverse(self) -> None:
        super().reverse()
        _TrackedList._bump()

    def __setitem__(self, i: Any, x: Any) -> None:
        super().__setitem__(i, x)
        _TrackedList._bump()

    def __delitem__(self, i: Any) -> None:
        super().__delitem__(i)
        _TrackedList._bump()

    def __iadd__(self, xs: Any) -> Any:
        r = super().__iadd__(xs)
        _TrackedList._bump()
        return r

    def __imul__(self, n: Any) -> Any:
        r = super().__imul__(n)
        _TrackedList._bump()
        return r


def _order_key(o: tuple) -> tuple:
    return o[0], o[1], o[2]


class _EntityCache:
    """The entities of an executor's nodes, flattened for building wait sets fast, with the
    order rclpy runs ready handlers in (per node: timers, subscriptions, guard conditions,
    clients, services) looked up by handle pointer, and a reusable wait set."""

    def __init__(self, sig: tuple) -> None:
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup as _MX
        from rclpy.callback_groups import ReentrantCallbackGroup as _RG

        self.nodes = [s[0] for s in sig]
        self.subs, self.tmrs, self.gcs, self.clis, self.srvs = [], [], [], [], []
        self.waitables: list[tuple] = []
        self.node_gcs: list[tuple] = []
        self.order: dict[tuple, tuple] = {}
        for n_i, (n, subs, tmrs, gcs, clis, srvs, wts) in enumerate(sig):
            self.subs.extend(subs)
            self.tmrs.extend(tmrs)
            self.gcs.extend(gcs)
            self.clis.extend(clis)
            self.srvs.extend(srvs)
            if gcs:
                self.node_gcs.append((n_i, gcs))
            for k, kind, ents in ((0, "t", tmrs), (1, "s", subs), (3, "c", clis), (4, "v", srvs)):
                for j, e in enumerate(ents):
                    try:
                        self.order[(kind, e.handle.pointer)] = (n_i, k, j, e, n)
                    except Exception:  # noqa: BLE001 - destroyed: rebuilt next time
                        pass
            self.waitables.extend((w, n) for w in wts)
        every = [*self.subs, *self.tmrs, *self.clis, *self.srvs, *(w for w, _n in self.waitables)]
        groups = {id(e.callback_group): e.callback_group for e in every}.values()
        # mutually exclusive groups (rclpy's default group of a node): free while none of their
        # callbacks runs; a group of any other kind is asked entity by entity
        self.mx = [g for g in groups if type(g) is _MX]
        self.other = any(type(g) not in (_RG, _MX) for g in groups)
        self.counts = (len(self.subs), len(self.gcs) + 2, len(self.tmrs), len(self.clis), len(self.srvs), 0)
        # rclpy's action servers and clients always have the same entities (their handle's)
        from rclpy.action import ActionClient as _AC, ActionServer as _AS

        self.fixed_counts = {id(w): w.get_num_entities() for w, _n in self.waitables if isinstance(w, (_AC, _AS))}
        self.ws: Any = None
        self.ws_size: tuple = ()

    def all_free(self) -> bool:
        """No callback group of these entities would refuse a callback now."""
        if self.other:
            return False
        for g in self.mx:
            if g._active_entity is not None:
                return False
        return True


class _LoopSpinner:
    """Spin a bridge's executor from the asyncio loop's own thread (``executor="loop"``).

    The loop's selector is wrapped: whenever the loop would block in ``select(timeout)`` it
    blocks in the rclpy wait set instead (same timeout) and runs the ready rclpy callbacks
    right there, then collects its own I/O events without blocking. While the loop blocks in
    rclpy, a helper thread watches the loop's epoll descriptor and wakes the executor (its
    guard condition) when a socket or the loop's self-pipe becomes ready, so I/O and
    ``call_soon_threadsafe`` from other threads still wake the loop at once. When the loop has
    callbacks ready (``select(0)``) rclpy is polled too, every ``poll_interval_s`` of wall
    time, so a busy loop cannot starve DDS traffic; each poll that finds nothing doubles the
    gap to the next, up to ``max_poll_interval_s`` (in one process nearly all traffic comes
    while the loop waits anyway: a request holds simulated time until it is served).

    rclpy callbacks thus run on the loop thread: ``run_coroutine_threadsafe`` and
    ``call_soon_threadsafe`` from them still work (the loop just picks the work up on its next
    turn). Nothing else may spin this executor.
    """

    poll_interval_s = 0.002
    max_poll_interval_s = 0.008

    def __init__(self, bridge: RosBridge, loop: asyncio.AbstractEventLoop) -> None:
        inner = getattr(loop, "_selector", None)
        if inner is None or not hasattr(inner, "select"):
            raise RuntimeError("executor='loop' needs a selector event loop")
        self.bridge, self.loop, self.inner = bridge, loop, inner
        self.executor = bridge.executor
        self._lock = threading.RLock()  # held while this thread is inside rclpy
        self._stopped = False
        self._last_poll = 0.0
        self._poll_gap = self.poll_interval_s
        self.in_callback = 0
        self.spinning = False  # this thread is inside _spin/run_queued
        self.io_ready = False
        self.stats = {"blocks": 0, "io_wakes": 0}  # blocking waits, of which ended by the loop's I/O
        self._thread_id: int | None = None
        self._armed = threading.Event()
        self._stop_r, self._stop_w = os.pipe()
        self._watcher = threading.Thread(target=self._watch, name=f"rclpy-loopwake-{bridge.name}", daemon=True)
        self._watcher.start()
        loop._selector = self  # type: ignore[attr-defined]
        self.executor.wake()

    # ---- the selector interface asyncio uses (everything but select is the inner selector's)
    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def select(self, timeout: float | None = None):
        if self._thread_id is None:
            self._thread_id = threading.get_ident()
            if isinstance(self.executor, _LeanExecutor):
                self.executor.spin_thread_id = self._thread_id
            _fine_timer_slack()
        if self._stopped:
            return self.inner.select(timeout)
        if timeout is not None and timeout <= 0:
            self._poll()
            return self.inner.select(0)
        events = self.inner.select(0)
        if events:  # the loop has I/O to handle first: rclpy gets its look at the polling rate
            self._poll()
            return events
        self._armed.set()  # the watcher wakes the executor if the loop's own fds become ready
        try:
            self._spin(timeout)
        finally:
            self._armed.clear()
            st = self.stats
            st["blocks"] += 1
            if self.io_ready:
                st["io_wakes"] += 1
        self._last_poll = time.monotonic()
        return self.inner.select(0)

    def _poll(self) -> None:
        """Spin rclpy without waiting if the polling gap has passed since the last look."""
        now = time.monotonic()
        if now - self._last_poll >= self._poll_gap:
            self._last_poll = now
            if self._spin(0.0):
                self._poll_gap = self.poll_interval_s
            else:  # nothing came: look less often, up to max_poll_interval_s
                self._poll_gap = min(self._poll_gap * 2.0, self.max_poll_interval_s)

    def register(self, *a: Any, **k: Any):
        return self.inner.register(*a, **k)

    def unregister(self, *a: Any, **k: Any):
        return self.inner.unregister(*a, **k)

    def modify(self, *a: Any, **k: Any):
        return self.inner.modify(*a, **k)

    def get_key(self, *a: Any, **k: Any):
        return self.inner.get_key(*a, **k)

    def get_map(self):
        return self.inner.get_map()

    def close(self) -> None:
        self.stop(0.0)
        self.inner.close()

    # ---- spinning
    def _spin(self, timeout: float | None) -> bool:
        """Wait at most ``timeout`` (None: forever) for rclpy work; run everything that is ready.
        True if anything ran."""
        ex = self.executor
        with self._lock:
            if self._stopped or ex._is_shutdown or self.spinning:
                return False
            self.spinning = True
            try:
                return self._spin_locked(ex, timeout)
            finally:
                self.spinning = False

    def _spin_locked(self, ex: Any, timeout: float | None) -> bool:
        self.io_ready = False
        if isinstance(ex, _LeanExecutor):
            # its generator loops until there is work, the timeout passes or _leave() says so
            ran = False
            gen = ex._wait_for_ready_callbacks(timeout, None, self._leave)
            try:
                for handler, _entity, _node in gen:
                    ran = True
                    self._run(handler)
                    if self._stopped or ex._is_shutdown:
                        break
            except (TimeoutException, ConditionReachedException, ShutdownException, ExternalShutdownException):
                pass
            except Exception:  # noqa: BLE001 - e.g. a handle destroyed while closing
                if not self.bridge._closed:
                    log.exception("bridge %s: waiting for rclpy work failed", self.bridge.name)
            finally:
                gen.close()
            if not ran:
                return False
        else:
            try:
                handler, _entity, _node = ex.wait_for_ready_callbacks(timeout, None, self._leave)
            except (TimeoutException, ConditionReachedException, ShutdownException, ExternalShutdownException):
                return False
            except Exception:  # noqa: BLE001 - e.g. a handle destroyed while closing
                if not self.bridge._closed:
                    log.exception("bridge %s: waiting for rclpy work failed", self.bridge.name)
                return False
            self._run(handler)
            # everything else that the same wait found ready, without waiting again
            it = ex._cb_iter
            while it is not None and not self._stopped and not ex._is_shutdown:
                try:
                    handler, _entity, _node = next(it)
                except (StopIteration, TimeoutException, ConditionReachedException):
                    ex._cb_iter = None
                    break
                except (ShutdownException, ExternalShutdownException):
                    ex._cb_iter = None
                    break
                self._run(handler)
        # Tasks those handlers queued (an rclpy future's done callbacks, the action server's
        # result and execute steps) run now, not one more turn of the loop and wait set later.
        self._drain_tasks()
        return True

    def _drain_tasks(self) -> None:
        """Run the executor's queued tasks, and those they queue, once each (a task that only
        yielded, awaiting something, is left to later waits, as before). Holding ``_lock``."""
        ex = self.executor
        drain = getattr(ex, "ready_tasks", None)
        if drain is None:
            return
        seen: set[int] = set()
        while len(seen) < 64 and not self._stopped and not ex._is_shutdown:
            tasks = [t for t in drain() if id(t) not in seen]
            if not tasks:
                break
            for t in tasks:
                if not t.done() and not t.executing():
                    seen.add(id(t))
                    self._run(t)

    def run_queued(self) -> None:
        """Run the executor's queued tasks now (the loop's thread, outside rclpy callbacks)."""
        with self._lock:
            if self._stopped or self.executor._is_shutdown or self.spinning:
                return
            self.spinning = True
            try:
                self._drain_tasks()
            finally:
                self.spinning = False

    def _leave(self) -> bool:
        """The wait's condition: the loop has I/O (the watcher saw it) or the spinner stops.

        (``executor.wake()`` alone only makes rclpy rebuild its wait set and wait again.)"""
        return self.io_ready or self._stopped

    def _run(self, handler: Any) -> None:
        self.in_callback += 1
        try:
            handler()
            exc = handler.exception()
            if exc is not None:
                raise exc
        except Exception:  # noqa: BLE001 - an rclpy callback raised: log it, keep serving
            log.exception("exception in an rclpy callback (bridge %s keeps spinning)", self.bridge.name)
        finally:
            self.in_callback -= 1

    def spin_inline(self, timeout: float) -> None:
        """Spin once from the calling thread (teardown on the loop thread, or with no loop running)."""
        self._spin(timeout)

    def spun_elsewhere(self) -> bool:
        """True if the running loop (another thread than the caller) is spinning the executor."""
        return (not self._stopped and self.loop.is_running() and not self.loop.is_closed()
                and self._thread_id is not None and self._thread_id != threading.get_ident())

    def _watch(self) -> None:
        ep = select.epoll()
        try:
            ep.register(self.inner.fileno(), select.EPOLLIN)
            ep.register(self._stop_r, select.EPOLLIN)
            while True:
                self._armed.wait()
                if self._stopped:
                    return
                ready = ep.poll()
                if self._stopped or any(fd == self._stop_r for fd, _ in ready):
                    return
                self._armed.clear()
                self.io_ready = True
                try:
                    self.executor.wake()
                except Exception:  # noqa: BLE001 - executor shut down
                    return
        except (OSError, ValueError):
            return
        finally:
            ep.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Hand the selector back to the loop; the loop thread never enters rclpy again."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.executor.wake()
        except Exception:  # noqa: BLE001
            pass
        # wait until the loop thread is out of rclpy (re-entrant: fine from inside a callback)
        if self._lock.acquire(timeout=timeout):
            self._lock.release()
        if getattr(self.loop, "_selector", None) is self:
            self.loop._selector = self.inner  # type: ignore[attr-defined]
        self._armed.set()
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        if self._watcher.is_alive() and threading.current_thread() is not self._watcher:
            self._watcher.join(timeout)
        for fd in (self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self._thread_id is not None and self._thread_id != threading.get_ident() and self.loop.is_running():
            try:
                self.loop.call_soon_threadsafe(lambda: None)  # the loop leaves a long select now
            except RuntimeError:
                pass


class _DeferredReply:
    """A service reply produced later on the event loop (see ``RosBridge.create_service``)."""

    __slots__ = ("response", "on_error", "lock", "send", "header", "ready", "settled")

    def __init__(self, response: Any, on_error: Callable[[BaseException, Any], Any] | None) -> None:
        self.response = response
        self.on_error = on_error
        self.lock = threading.Lock()
        self.send = self.header = None
        self.ready = False
        self.settled = False  # the outcome is known (succeed/fail/on_done: the first one counts)

    def _settle(self) -> bool:
        with self.lock:
            if self.settled:
                return False
            self.settled = True
            return True

    def succeed(self, r: Any) -> None:  # event loop thread, the handler returned r
        if not self._settle():
            return
        if r is not None:
            self.response = r
        self._ready()

    def attach(self, send: Callable[[Any, Any], None], header: Any) -> None:  # spin thread
        with self.lock:
            self.send, self.header = send, header
            go = self.ready
        if go:
            self._send()

    def fail(self, exc: BaseException) -> None:
        if not self._settle():
            return
        if self.on_error is not None:
            try:
                r = self.on_error(exc, self.response)
                if r is not None:
                    self.response = r
            except Exception:
                log.exception("service on_error raised")
        else:
            log.error("service handler failed: %r", exc)
        self._ready()

    def on_done(self, cf: concurrent.futures.Future) -> None:  # event loop thread
        if self.settled:
            if not cf.cancelled():
                cf.exception()  # retrieved: no "exception was never retrieved" noise
            return
        if cf.cancelled():
            return self.fail(asyncio.CancelledError())
        exc = cf.exception()
        if exc is not None:
            return self.fail(exc)
        self.succeed(cf.result())

    def _ready(self) -> None:
        with self.lock:
            self.ready = True
            go = self.send is not None
        if go:
            self._send()

    def _send(self) -> None:
        try:
            self.send(self.response, self.header)
        except Exception as e:  # service destroyed while the handler ran (bridge closing)
            log.debug("service reply not sent: %r", e)
