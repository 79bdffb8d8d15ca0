"""The process tree: py_trees composites over async skills, ticked on change, in simulated time."""

from __future__ import annotations

import asyncio

import py_trees
import pytest
from pydantic import Field

from cell.config import SkillNode
from cell.process import TreeContext, TreeRunner, build_tree
from sim.clock import SimClock
from skills.base import Skill, SkillParams, SkillResult
from skills.facts import CellFacts
from tests.conftest import run_sim

LOG: list[tuple[float, str]] = []


class _Sleep(Skill, name="test_sleep"):
    """Sleep, then succeed or fail (test helper)."""

    class Params(SkillParams):
        seconds: float = Field(1.0, ge=0)
        ok: bool = True
        tag: str = ""

    async def execute(self, ctx, params):
        await ctx.clock.sleep(params.seconds)
        LOG.append((ctx.clock.now(), params.tag))
        return SkillResult.success() if params.ok else SkillResult.failure(f"{params.tag} failed")

    async def on_cancel(self, ctx):
        LOG.append((ctx.clock.now(), f"cancel:{ctx.facts.values.get('who', '')}"))


class _FailTimes(Skill, name="test_fail_times"):
    """Fail the first N runs (test helper)."""

    class Params(SkillParams):
        n: int = 2

    async def execute(self, ctx, params):
        k = ctx.facts.values.get("tries", 0) + 1
        ctx.facts.values["tries"] = k
        await ctx.clock.sleep(0.1)
        return SkillResult.success() if k > params.n else SkillResult.failure(f"try {k}")


class _Cfg:
    def __init__(self, process):
        self.process = process


def run_tree(process_yaml: dict, until: float = 100.0):
    from pydantic import TypeAdapter

    from cell.config import ProcessNode

    node = TypeAdapter(ProcessNode).validate_python(process_yaml)
    clock = SimClock()
    facts = CellFacts()
    LOG.clear()

    async def main():
        tctx = TreeContext({}, clock, facts, lambda k, d: None, {})
        runner = TreeRunner(build_tree(_Cfg(node), tctx), tctx)
        status = await runner.run()
        return status, clock.now(), runner

    return run_sim(clock, main(), until=until), facts


def s(tag, seconds=1.0, ok=True):
    return {"skill": "test_sleep", "with": {"seconds": seconds, "ok": ok, "tag": tag}}


def test_sequence_runs_children_in_order_in_sim_time():
    (status, t, _), _ = run_tree({"sequence": [s("a", 1), s("b", 2), s("c", 0.5)]})
    assert status == py_trees.common.Status.SUCCESS
    assert LOG == [(1.0, "a"), (3.0, "b"), (3.5, "c")] and t == 3.5


def test_fallback_stops_at_first_success():
    (status, _, _), _ = run_tree({"fallback": [s("x", 1, ok=False), s("y", 1), s("z", 1)]})
    assert status == py_trees.common.Status.SUCCESS and [tag for _, tag in LOG] == ["x", "y"]


def test_parallel_runs_children_concurrently():
    (status, t, _), _ = run_tree({"parallel": [s("a", 2), s("b", 3)], "policy": "all"})
    assert status == py_trees.common.Status.SUCCESS and t == 3.0


def test_retry_reruns_a_failing_child():
    (status, _, _), facts = run_tree({"retry": {"skill": "test_fail_times", "with": {"n": 2}}, "times": 3})
    assert status == py_trees.common.Status.SUCCESS and facts.values["tries"] == 3
    (status, _, _), facts = run_tree({"retry": {"skill": "test_fail_times", "with": {"n": 5}}, "times": 2})
    assert status == py_trees.common.Status.FAILURE and facts.values["tries"] == 2


def test_timeout_cancels_a_slow_skill_at_the_simulated_deadline():
    (status, t, _), _ = run_tree({"timeout": s("slow", 50), "seconds": 5})
    assert status == py_trees.common.Status.FAILURE and t == pytest.approx(5.0)
    assert LOG and LOG[-1][1].startswith("cancel") and LOG[-1][0] == pytest.approx(5.0)


def test_repeat_with_count_and_ignored_failures():
    (status, t, _), _ = run_tree({"repeat": s("r", 1, ok=False), "times": 3, "ignore_failure": True})
    assert status == py_trees.common.Status.SUCCESS and len(LOG) == 3 and t == 3.0


def test_instant_failures_do_not_spin_at_one_instant():
    # A child that fails immediately forever: the runner must let simulated time advance.
    (status, t, runner), _ = run_tree({"parallel": [{"repeat": {"skill": "case_not_full", "with": {"slots": 1}},
                                                      "times": -1}, s("end", 3)], "policy": "one"}, until=50)
    assert status == py_trees.common.Status.SUCCESS and t == pytest.approx(3.0)


def test_config_rejects_a_node_without_a_kind():
    from pydantic import TypeAdapter, ValidationError

    from cell.config import ProcessNode

    with pytest.raises(ValidationError) as ei:
        TypeAdapter(ProcessNode).validate_python({"seqeunce": []})
    assert "a process node needs one of the keys" in str(ei.value)
