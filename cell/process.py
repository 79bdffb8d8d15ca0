"""The cell's process: the cell file's behaviour tree, executed by py_trees.

Each skill leaf is a :class:`SkillBehaviour`: ``initialise`` starts the async
skill as an asyncio task, ``update`` polls it (never blocks), and
``terminate`` cancels it when the tree pre-empts it.  The :class:`TreeRunner`
ticks the tree only when something changed (a skill finished, a timeout
expired), so simulated time is never held up by tick polling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import py_trees
from py_trees.common import ParallelPolicy, Status as PTStatus

from drivers.base import Device
from drivers.clock import Clock
from skills import get as get_skill
from skills.base import Skill, SkillContext, SkillResult, Status
from skills.facts import CellFacts

from .config import (
    CellConfig, FallbackNode, ParallelNode, RepeatNode, RetryNode, SequenceNode, SkillNode, TimeoutNode,
)

log = logging.getLogger("axcell.process")


class TreeContext:
    """What the tree's leaves share: devices, clock, facts, event sink, change notification."""

    def __init__(self, devices: dict[str, Device], clock: Clock, facts: CellFacts,
                 emit: Callable[[str, dict[str, Any]], None], lookups: dict[str, Any]) -> None:
        self.devices = devices
        self.clock = clock
        self.facts = facts
        self.emit = emit
        self.lookups = lookups
        self.changed = asyncio.Event()
        self.running: dict[str, str] = {}  # behaviour name → phase
        self.results: list[tuple[str, SkillResult]] = []

    def poke(self) -> None:
        self.changed.set()


class SkillBehaviour(py_trees.behaviour.Behaviour):
    """A py_trees leaf that runs one skill as an asyncio task."""

    def __init__(self, name: str, skill: Skill, params: Any, roles: dict[str, str], tctx: TreeContext,
                 timeout_s: float | None) -> None:
        super().__init__(name)
        self.skill = skill
        self.params = params
        self.roles = roles
        self.tctx = tctx
        self.timeout_s = timeout_s
        self.task: asyncio.Task[SkillResult] | None = None
        self.last: SkillResult | None = None

    def _ctx(self) -> SkillContext:
        t = self.tctx

        def feedback(progress: float, phase: str) -> None:
            t.running[self.name] = phase

        return SkillContext(devices={r: t.devices[d] for r, d in self.roles.items()}, clock=t.clock,
                            facts=t.facts, feedback=feedback, emit=t.emit, config=t.lookups)

    def initialise(self) -> None:
        self.last = None
        self.tctx.running[self.name] = "start"
        self.task = asyncio.get_running_loop().create_task(
            self.skill.run(self._ctx(), self.params, timeout=self.timeout_s), name=f"skill:{self.name}")
        self.task.add_done_callback(lambda _t: self.tctx.poke())

    def update(self) -> PTStatus:
        task = self.task
        if task is None or not task.done():
            return PTStatus.RUNNING
        if task.cancelled():
            self.last = SkillResult(Status.CANCELED, "cancelled")
        elif task.exception() is not None:
            exc = task.exception()
            log.error("skill %s crashed: %r", self.name, exc)
            self.last = SkillResult.failure(f"skill crashed: {exc!r}", alarm=f"{self.name}: internal error {exc!r}")
        else:
            self.last = task.result()
        self.tctx.running.pop(self.name, None)
        self.tctx.results.append((self.name, self.last))
        self.tctx.emit("skill_result", {"node": self.name, "skill": self.skill.name, "result": self.last})
        self.feedback_message = f"{self.last.status.value}: {self.last.message}"
        self.tctx.poke()  # a finished leaf may let its parents move on at once
        return PTStatus.SUCCESS if self.last.ok else PTStatus.FAILURE

    def terminate(self, new_status: PTStatus) -> None:
        if new_status == PTStatus.INVALID and self.task is not None and not self.task.done():
            self.task.cancel()
            self.tctx.running.pop(self.name, None)


class ClockTimeout(py_trees.decorators.Decorator):
    """Fail the child if it runs longer than ``seconds`` of *cell clock* time."""

    def __init__(self, name: str, child: py_trees.behaviour.Behaviour, seconds: float, tctx: TreeContext) -> None:
        super().__init__(name=name, child=child)
        self.seconds = seconds
        self.tctx = tctx
        self.deadline = 0.0
        self._timer: asyncio.Task | None = None

    def initialise(self) -> None:
        self.deadline = self.tctx.clock.now() + self.seconds

        async def wake() -> None:
            await self.tctx.clock.sleep_until(self.deadline)
            self.tctx.poke()

        self._timer = asyncio.get_running_loop().create_task(wake())

    def update(self) -> PTStatus:
        if self.decorated.status in (PTStatus.SUCCESS, PTStatus.FAILURE):
            return self.decorated.status
        if self.tctx.clock.now() >= self.deadline:
            self.feedback_message = f"timed out after {self.seconds:g} s"
            return PTStatus.FAILURE
        return self.decorated.status

    def terminate(self, new_status: PTStatus) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def build_tree(cfg: CellConfig, tctx: TreeContext) -> py_trees.behaviour.Behaviour:
    """Turn the validated process node into a py_trees tree."""
    counter = {"n": 0}
    by_contract: dict[str, list[str]] = {}
    for name, dev in tctx.devices.items():
        by_contract.setdefault(dev.contract, []).append(name)

    def uniq(base: str) -> str:
        counter["n"] += 1
        return f"{base}#{counter['n']}"

    def build(node: Any) -> py_trees.behaviour.Behaviour:
        if isinstance(node, SkillNode):
            cls = get_skill(node.skill)
            skill = cls()
            roles = {}
            for role, contract in cls.roles.items():
                roles[role] = node.devices.get(role) or by_contract[contract.contract][0]
            return SkillBehaviour(node.name or uniq(node.skill), skill, skill.parse(node.with_), roles, tctx,
                                  node.timeout_s)
        if isinstance(node, SequenceNode):
            return py_trees.composites.Sequence(node.name or uniq("sequence"), memory=True,
                                                children=[build(c) for c in node.sequence])
        if isinstance(node, FallbackNode):
            return py_trees.composites.Selector(node.name or uniq("fallback"), memory=True,
                                                children=[build(c) for c in node.fallback])
        if isinstance(node, ParallelNode):
            policy = ParallelPolicy.SuccessOnAll() if node.policy == "all" else ParallelPolicy.SuccessOnOne()
            return py_trees.composites.Parallel(node.name or uniq("parallel"), policy=policy,
                                                children=[build(c) for c in node.parallel])
        if isinstance(node, RetryNode):
            return py_trees.decorators.Retry(node.name or uniq("retry"), build(node.retry), node.times)
        if isinstance(node, TimeoutNode):
            return ClockTimeout(node.name or uniq("timeout"), build(node.timeout), node.seconds, tctx)
        if isinstance(node, RepeatNode):
            child = build(node.repeat)
            if node.ignore_failure:
                child = py_trees.decorators.FailureIsSuccess(uniq("ignore_failure"), child)
            return py_trees.decorators.Repeat(node.name or uniq("repeat"), child, node.times)
        raise TypeError(f"unknown process node {node!r}")

    return build(cfg.process)


class TreeRunner:
    """Ticks a tree whenever something changed, until it finishes or is cancelled.

    A tree that keeps failing instantly (e.g. a precondition that never holds)
    would otherwise spin at one simulated instant; after ``spin_limit`` ticks
    without the clock advancing, the runner waits ``backoff_s`` of clock time.
    """

    def __init__(self, root: py_trees.behaviour.Behaviour, tctx: TreeContext, *, spin_limit: int = 50,
                 backoff_s: float = 0.1) -> None:
        self.root = root
        self.tctx = tctx
        self.tree = py_trees.trees.BehaviourTree(root)
        self.spin_limit = spin_limit
        self.backoff_s = backoff_s
        self.ticks = 0

    async def run(self) -> PTStatus:
        clock = self.tctx.clock
        last_t, same = clock.now(), 0
        try:
            while True:
                self.tctx.changed.clear()
                self.tree.tick()
                self.ticks += 1
                status = self.root.status
                if status != PTStatus.RUNNING:
                    return status
                now = clock.now()
                same = same + 1 if now == last_t else 0
                last_t = now
                if same >= self.spin_limit:
                    same = 0
                    await clock.sleep(self.backoff_s)
                    continue
                await self.tctx.changed.wait()
        finally:
            self.stop()

    def stop(self) -> None:
        """Halt every running behaviour (cancels their skill tasks)."""
        if self.root.status == PTStatus.RUNNING:
            self.root.stop(PTStatus.INVALID)

    def snapshot(self) -> dict[str, Any]:
        """The tree as nested dicts with each node's status, for the HMI."""

        def node(b: py_trees.behaviour.Behaviour) -> dict[str, Any]:
            return {"name": b.name, "type": type(b).__name__, "status": b.status.value,
                    "children": [node(c) for c in b.children]}

        return node(self.root)
