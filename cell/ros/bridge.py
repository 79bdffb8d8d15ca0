"""The one asyncio <-> rclpy bridge.

``RosBridge`` owns a fresh ``rclpy.Context`` (never the global default), an executor
(``SingleThreadedExecutor`` by default) spun by ``executor.spin()`` in its own thread, and the
nodes created on it. The asyncio side never blocks and never polls the executor:

- asyncio -> rclpy: ``await bridge.await_future(rclpy_future)`` hooks the rclpy future with
  ``add_done_callback`` and hops back into the event loop with ``loop.call_soon_threadsafe``.
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
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import rclpy
from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.action.client import ClientGoalHandle
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.context import Context
from rclpy.executors import (
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    SingleThreadedExecutor,
)
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy_impl
from rclpy.task import Future as RclpyFuture

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
    cfut: concurrent.futures.Future | None
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
      (``MultiThreadedExecutor``; avoid across processes on 2 cores) or ``"events"``
      (``rclpy.experimental.EventsExecutor``; experimental, see the platform notes).
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
            if not self._thread.is_alive() and self._thread.ident is None:
                self._thread.start()

    # ------------------------------------------------------------------ lifecycle

    def _make_executor(self, kind: str, num_threads: int | None):
        if kind == "single":
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
        raise ValueError(f"executor must be 'single', 'multi' or 'events', not {kind!r}")

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
            if threading.current_thread() is self._thread:
                threading.Thread(target=self.close, args=(timeout, drain_timeout), daemon=True).start()
                return
            self._closed = True
        _OPEN_BRIDGES.discard(self)
        try:
            self._drain(drain_timeout)
        except Exception:
            log.exception("bridge %s: draining goals failed", self.name)
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

    def create_node(self, name: str, *, namespace: str | None = None, **kwargs: Any) -> Node:
        """A ``rclpy.node.Node`` on this bridge's context, added to its executor."""
        node = Node(name, namespace=namespace, context=self.context, **kwargs)
        self.add_node(node)
        return node

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
            try:
                loop.call_soon_threadsafe(transfer)
            except RuntimeError:  # loop closed
                pass

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
        return ActionClient(node, action_type, name, **kwargs)

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
                    loop.call_soon_threadsafe(deliver, msg.feedback)
                except RuntimeError:
                    pass

        rfut = client.send_goal_async(goal, feedback_callback=fb_cb, goal_uuid=goal_uuid)

        def abandon(f):
            try:
                client._remove_pending_goal_request(f)
            except Exception:
                pass

        gh: ClientGoalHandle = await self.await_future(rfut, timeout, on_abandon=abandon)
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
        cfut = asyncio.run_coroutine_threadsafe(coro, self.loop)
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

        def callback(request, response):  # spin thread
            d = _DeferredReply(response, on_error)
            try:
                cfut = asyncio.run_coroutine_threadsafe(handler(request, response), bridge.loop)
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

            sg.finish = finish
            with bridge._lock:
                bridge._server_goals[ctx.goal_id] = sg

            async def runner():
                ctx._task = asyncio.current_task()
                if ctx._cancel_requested:  # cancel arrived before we started
                    ctx._on_cancel(cancel_mode == "task")
                return await handler(goal_handle.request, ctx)

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
                sg.cfut = asyncio.run_coroutine_threadsafe(coro, loop)
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
        server = ActionServer(
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
            sg.ctx._loop.call_soon_threadsafe(sg.ctx._on_cancel, cancel_task)
        except RuntimeError:  # loop closed: the handler will never finish; finish the goal
            if sg.finish is not None:
                sg.finish(("cancelled", None))


class _DeferredReply:
    """A service reply produced later on the event loop (see ``RosBridge.create_service``)."""

    __slots__ = ("response", "on_error", "lock", "send", "header", "ready")

    def __init__(self, response: Any, on_error: Callable[[BaseException, Any], Any] | None) -> None:
        self.response = response
        self.on_error = on_error
        self.lock = threading.Lock()
        self.send = self.header = None
        self.ready = False

    def attach(self, send: Callable[[Any, Any], None], header: Any) -> None:  # spin thread
        with self.lock:
            self.send, self.header = send, header
            go = self.ready
        if go:
            self._send()

    def fail(self, exc: BaseException) -> None:
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
        if cf.cancelled():
            return self.fail(asyncio.CancelledError())
        exc = cf.exception()
        if exc is not None:
            return self.fail(exc)
        r = cf.result()
        if r is not None:
            self.response = r
        self._ready()

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
