"""Tests of the asyncio <-> rclpy bridge (cell.ros.bridge) and the isolation helpers (cell.ros.env).

Real rclpy over Fast DDS; each test makes and closes its own bridge(s). Hard time limits use
pytest-timeout's thread method (a hung rclpy process ignores SIGTERM).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from cell.ros import env as ros_env_mod
from cell.ros.env import remove_shm_files, ros_env, shm_files_of

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed; run `make` (python -m cell.ros.setup_ros)")
pytest.importorskip("axcell_interfaces", reason="axcell_interfaces not built; run `make`")

from action_msgs.msg import GoalStatus  # noqa: E402
from axcell_interfaces.action import ExecuteSkill  # noqa: E402
from axcell_interfaces.srv import CellCommand  # noqa: E402
from rclpy.action import GoalResponse  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from cell.ros.bridge import GoalRejected, RosBridge  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60, method="thread")


def spin_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("rclpy-spin-", "rclpy-loopwake-")) and t.is_alive()]


def run(coro):
    return asyncio.run(coro)


async def skill_handler(goal, ctx):
    """A fake skill: a few phases with feedback; 'slow' runs until cancelled."""
    steps = 1000 if goal.skill == "slow" else 3
    try:
        for i in range(steps):
            ctx.publish_feedback(ExecuteSkill.Feedback(progress=i / steps, phase=f"step{i}"))
            await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        return ExecuteSkill.Result(status="CANCELED", message="cancelled by request")
    return ExecuteSkill.Result(status="SUCCESS", message=goal.skill, data_json=goal.params_json)


def reject_forbidden(goal):
    return GoalResponse.REJECT if goal.skill == "forbidden" else GoalResponse.ACCEPT


def serve_cell(bridge: RosBridge, ns: str = "axcell_test"):
    """A node that serves ExecuteSkill and CellCommand like the cell node will."""
    node = bridge.create_node("cell", namespace=ns)
    bridge.create_action_server(node, ExecuteSkill, "execute_skill", skill_handler, goal_callback=reject_forbidden)

    def command(req, resp):
        resp.accepted = req.command in ("reset", "start", "stop")
        resp.reason = "" if resp.accepted else f"unknown command {req.command!r}"
        resp.state = "IDLE"
        return resp

    node.create_service(CellCommand, "command", command)
    return node


# ---------------------------------------------------------------- env helpers (no rclpy needed)


def test_cell_ros_does_not_import_rclpy():
    code = "import sys, cell.ros, cell.ros.env; assert 'rclpy' not in sys.modules, 'rclpy imported'"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_ros_env_sets_only_missing_values():
    e = ros_env(base={})
    assert e["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 1 <= int(e["ROS_DOMAIN_ID"]) <= 101
    e = ros_env(base={"ROS_DOMAIN_ID": "42", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert e["ROS_DOMAIN_ID"] == "42" and e["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
    assert ros_env(7, base={"ROS_DOMAIN_ID": "42"})["ROS_DOMAIN_ID"] == "7"
    e = ros_env(base={}, shm_profile=True)
    assert Path(e["FASTDDS_DEFAULT_PROFILES_FILE"]).is_file()
    environ: dict[str, str] = {}
    out = ros_env_mod.ensure_ros_isolation(environ=environ)
    assert environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and out["ROS_DOMAIN_ID"] == environ["ROS_DOMAIN_ID"]


def test_xdist_domains_distinct_per_worker():
    ids = {ros_env_mod.xdist_domain_id({"PYTEST_XDIST_WORKER": f"gw{i}", "PYTEST_XDIST_TESTRUNUID": "abc"})
           for i in range(8)}
    assert len(ids) == 8 and all(1 <= i <= 101 for i in ids)
    assert all(1 <= ros_env_mod.pick_domain_id(p) <= 101 for p in range(1000))


def test_claim_domain_id_is_exclusive(tmp_path):
    with ros_env_mod.claim_domain_id(5, lock_dir=tmp_path) as a, \
            ros_env_mod.claim_domain_id(5, lock_dir=tmp_path) as b:
        assert a.domain_id == 5 and b.domain_id == 6
    with ros_env_mod.claim_domain_id(5, lock_dir=tmp_path) as c:
        assert c.domain_id == 5  # released


def test_session_isolation_is_set(domain_id):
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.environ["ROS_DOMAIN_ID"] == str(domain_id)


# ---------------------------------------------------------------- bridge, same process


@pytest.mark.parametrize("executor", ["single", "loop"])
def test_service_call_and_timeout(executor):
    async def main():
        async with RosBridge(name="svc", executor=executor) as b:
            node = b.create_node("svc")

            def trig(req, resp):
                resp.success, resp.message = True, "pong"
                return resp

            node.create_service(Trigger, "ping", trig)
            cli = node.create_client(Trigger, "ping")
            assert await b.wait_for_service(cli, 5.0)
            resp = await b.call(cli, Trigger.Request(), timeout=5.0)
            assert resp.success and resp.message == "pong"

            nobody = node.create_client(Trigger, "nobody_serves_this")
            t = time.monotonic()
            with pytest.raises(TimeoutError):
                await b.call(nobody, Trigger.Request(), timeout=0.2)
            assert time.monotonic() - t < 1.0
            assert not nobody._pending_requests  # abandoned request was dropped

    run(main())
    assert not spin_threads()


@pytest.mark.parametrize("executor", ["single", "loop"])
def test_action_round_trip_feedback_reject_and_cancel(executor):
    async def main():
        async with RosBridge(name="act", executor=executor) as b:
            serve_cell(b)
            cnode = b.create_node("client")
            ac = b.create_action_client(cnode, ExecuteSkill, "/axcell_test/execute_skill")
            assert await b.wait_for_action_server(ac, 5.0)

            # round trip with feedback
            fb = []
            res = await b.execute(ac, ExecuteSkill.Goal(skill="pick", params_json='{"x": 1}'),
                                  feedback=fb.append, timeout=10.0)
            assert res.succeeded and res.status == GoalStatus.STATUS_SUCCEEDED
            assert res.result.status == "SUCCESS" and res.result.data_json == '{"x": 1}'
            assert [f.phase for f in fb] == ["step0", "step1", "step2"]
            assert 0.0 <= fb[-1].progress < 1.0

            # rejection
            with pytest.raises(GoalRejected):
                await b.execute(ac, ExecuteSkill.Goal(skill="forbidden"), timeout=5.0)

            # cancel: wait for the first feedback, then cancel and await the result
            first = asyncio.get_running_loop().create_future()

            def on_fb(f):
                if not first.done():
                    first.set_result(f)

            gh = await b.send_goal(ac, ExecuteSkill.Goal(skill="slow"), feedback=on_fb, timeout=5.0)
            assert gh.accepted
            await asyncio.wait_for(first, 5.0)
            cancel = await b.cancel_goal(gh, timeout=5.0)
            assert len(cancel.goals_canceling) == 1
            res = await b.get_result(gh, timeout=5.0)
            assert res.canceled and res.result.status == "CANCELED"
            assert not b._server_goals and not b._client_goals

            # cancelling the awaiting asyncio task cancels the goal on the server
            task = asyncio.ensure_future(b.execute(ac, ExecuteSkill.Goal(skill="slow")))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            t = time.monotonic()
            while b._server_goals and time.monotonic() - t < 5.0:
                await asyncio.sleep(0.01)
            assert not b._server_goals

    run(main())
    assert not spin_threads()


class _SlowSend:
    """An rclpy action client handle that pauses after sending a goal request, before rclpy files
    the request's future: the window in which a fast answer used to be dropped."""

    def __init__(self, real, pause_s: float) -> None:
        self._real, self._pause_s = real, pause_s

    def send_goal_request(self, request):
        seq = self._real.send_goal_request(request)
        time.sleep(self._pause_s)
        return seq

    def __enter__(self):
        return self._real.__enter__()

    def __exit__(self, *exc):
        return self._real.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_goal_answer_arriving_before_rclpy_files_the_request_is_not_lost():
    """rclpy 7.1's ActionClient sends a goal request and files its future afterwards; with the
    executor spinning in its own thread (``executor="single"``, the leader of a ``--processes``
    run) an answer taken in between was dropped ("Ignoring unexpected goal response") and the
    goal never completed: a --processes run under heavy load stalled this way. The bridge's
    action client files and matches under one lock."""
    async def main():
        async with RosBridge(name="race", executor="single") as b:
            serve_cell(b)          # goal accepted on the spin thread: the answer comes at once
            ac = b.create_action_client(b.create_node("client"), ExecuteSkill, "/axcell_test/execute_skill")
            assert await b.wait_for_action_server(ac, 5.0)
            ac._client_handle = _SlowSend(ac._client_handle, 0.05)
            for i in range(3):
                res = await b.execute(ac, ExecuteSkill.Goal(skill=f"pick{i}"), timeout=5.0)
                assert res.succeeded and res.result.message == f"pick{i}"

    run(main())
    assert not spin_threads()


@pytest.mark.parametrize("executor", ["single", "loop"])
def test_run_coroutine_from_rclpy_callback_wakes_executor(executor):
    """An rclpy coroutine callback awaits asyncio work; the reply must not wait for an unrelated wake-up."""

    async def main():
        async with RosBridge(name="hop", executor=executor) as b:
            node = b.create_node("hop")
            loop_thread = threading.get_ident()
            seen = {}

            async def work():
                seen["thread"] = threading.get_ident()
                await asyncio.sleep(0.005)
                return "from asyncio"

            async def trig(req, resp):  # runs as an rclpy Task on the spin thread
                resp.message = await b.run_coroutine(work())
                resp.success = True
                return resp

            node.create_service(Trigger, "hop", trig)
            cli = node.create_client(Trigger, "hop")
            assert await b.wait_for_service(cli, 5.0)
            times = []
            for _ in range(20):
                t = time.perf_counter()
                resp = await b.call(cli, Trigger.Request(), timeout=5.0)
                times.append(time.perf_counter() - t)
            assert resp.message == "from asyncio" and seen["thread"] == loop_thread
            times.sort()
            assert times[len(times) // 2] < 0.1, times  # without executor.wake() this stalls

    run(main())


@pytest.mark.parametrize("executor", ["single", "loop"])
def test_close_with_goals_in_flight_leaks_nothing(executor):
    async def main():
        b = RosBridge(name="inflight", executor=executor)
        serve_cell(b)
        ac = b.create_action_client(b.create_node("client"), ExecuteSkill, "/axcell_test/execute_skill")
        assert await b.wait_for_action_server(ac, 5.0)
        handles = [await b.send_goal(ac, ExecuteSkill.Goal(skill="slow"), timeout=5.0) for _ in range(3)]
        assert all(h.accepted for h in handles)
        await asyncio.sleep(0.05)
        assert len(b._server_goals) == 3
        await b.aclose()
        assert not b._server_goals and not b._client_goals
        await b.aclose()  # idempotent
        b.close()

    run(main())
    assert not spin_threads()


@pytest.mark.timeout(120, method="thread")
def test_create_close_50_times():
    """50 create/close cycles: no hang, no leaked spin thread, no /dev/shm file left by us."""
    shm_seen: set[Path] = set()
    t0 = time.monotonic()

    async def cycle(i: int):
        b = RosBridge(name=f"cycle{i}")
        try:
            node = b.create_node(f"cycle{i}")
            node.create_service(Trigger, "t", lambda req, resp: resp)
            if i % 10 == 0:  # every 10th cycle: a real action goal still running at close
                serve_cell(b, ns=f"c{i}")
                ac = b.create_action_client(node, ExecuteSkill, f"/c{i}/execute_skill")
                assert await b.wait_for_action_server(ac, 5.0)
                gh = await b.send_goal(ac, ExecuteSkill.Goal(skill="slow"), timeout=5.0)
                assert gh.accepted
            shm_seen.update(shm_files_of())
        finally:
            if i % 2:
                await b.aclose()
            else:
                b.close()  # sync close from the loop thread must not hang either
        assert b.closed and not b.spin_thread.is_alive()

    for i in range(50):
        run(cycle(i))
    elapsed = time.monotonic() - t0
    assert not spin_threads()
    assert not shm_files_of(), "this process still maps Fast DDS shared memory"
    # Every participant segment we had mapped (fastrtps_<guid>, _el) is gone. Port files
    # (fastrtps_port<N>) are shared by every participant on the host that uses that port (the
    # discovery port is common to all domains under LOCALHOST), so another process may be
    # creating or using one right now: those are only cleaned, if no one uses them.
    shared = {p for p in shm_seen if "_port" in p.name}
    leftover = {p for p in shm_seen - shared if p.exists()}
    if leftover:
        in_use = ros_env_mod._users_of(leftover, exclude_pids={os.getpid()})
        assert not (leftover - in_use), f"left in /dev/shm: {sorted(map(str, leftover - in_use))}"
    remove_shm_files(shared)
    print(f"50 bridge create/close cycles in {elapsed:.1f} s")


# ---------------------------------------------------------------- plain rclpy client, other process

CLIENT_SCRIPT = textwrap.dedent(
    r"""
    import json, sys, time
    import rclpy
    from rclpy.action import ActionClient
    from axcell_interfaces.action import ExecuteSkill
    from axcell_interfaces.srv import CellCommand

    rclpy.init()
    node = rclpy.create_node("plain_client")
    out = {}
    ac = ActionClient(node, ExecuteSkill, "/axcell_test/execute_skill")
    assert ac.wait_for_server(timeout_sec=10.0), "no action server"

    feedback = []
    fut = ac.send_goal_async(ExecuteSkill.Goal(skill="pick", params_json="{}"),
                             feedback_callback=lambda m: feedback.append(m.feedback.phase))
    rclpy.spin_until_future_complete(node, fut, timeout_sec=10.0)
    gh = fut.result()
    rfut = gh.get_result_async()
    rclpy.spin_until_future_complete(node, rfut, timeout_sec=10.0)
    out["result"] = [rfut.result().status, rfut.result().result.status, feedback]

    fut = ac.send_goal_async(ExecuteSkill.Goal(skill="slow"))
    rclpy.spin_until_future_complete(node, fut, timeout_sec=10.0)
    gh = fut.result()
    time.sleep(0.05)
    cfut = gh.cancel_goal_async()
    rclpy.spin_until_future_complete(node, cfut, timeout_sec=10.0)
    rfut = gh.get_result_async()
    rclpy.spin_until_future_complete(node, rfut, timeout_sec=10.0)
    out["cancel"] = [len(cfut.result().goals_canceling), rfut.result().status, rfut.result().result.status]

    cli = node.create_client(CellCommand, "/axcell_test/command")
    assert cli.wait_for_service(timeout_sec=10.0), "no command service"
    res = []
    for cmd in ("start", "bogus"):
        f = cli.call_async(CellCommand.Request(command=cmd))
        rclpy.spin_until_future_complete(node, f, timeout_sec=10.0)
        res.append([f.result().accepted, f.result().reason])
    out["command"] = res
    ac.destroy()
    node.destroy_node()
    rclpy.shutdown()
    print("RESULT " + json.dumps(out), flush=True)
    """
)


def test_plain_rclpy_client_in_another_process(tmp_path, domain_id):
    script = tmp_path / "plain_client.py"
    script.write_text(CLIENT_SCRIPT)

    async def main():
        async with RosBridge(name="xproc") as b:
            serve_cell(b)
            env = ros_env()  # this session's domain + LOCALHOST, passed to the child
            assert env["ROS_DOMAIN_ID"] == str(domain_id)
            env["PYTHONPATH"] = str(REPO_ROOT)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(script), env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 40.0)
            except TimeoutError:
                files = shm_files_of(proc.pid)
                proc.kill()  # a hung rclpy process ignores SIGTERM
                await proc.wait()
                remove_shm_files(files)
                pytest.fail("plain rclpy client hung")
            return proc.returncode, out.decode(), err.decode()

    rc, out, err = run(main())
    assert rc == 0, err[-3000:]
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    assert res["result"] == [GoalStatus.STATUS_SUCCEEDED, "SUCCESS", ["step0", "step1", "step2"]]
    assert res["cancel"] == [1, GoalStatus.STATUS_CANCELED, "CANCELED"]
    assert res["command"] == [[True, ""], [False, "unknown command 'bogus'"]]

