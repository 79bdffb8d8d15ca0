"""The cell over ROS 2: same report as local, MCAP recording, and a plain rclpy client in another process."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed; run `make`")
pytest.importorskip("axcell_interfaces.srv", reason="axcell_interfaces not built; run `make`")

from cell.ros.env import remove_shm_files, ros_env, shm_files_of  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120, method="thread")


def _batch(cfg, inspectors, duration, *, ros: bool, record: Path | None = None):
    from cell.batch import run_batch
    from cell.runtime import Cell

    async def main():
        cell = Cell(cfg, seed=1, inspectors=inspectors)
        att = None
        if ros:
            from cell.ros.runtime import attach

            att = await attach(cell, record=record)
        try:
            rep = await run_batch(cell, duration)
        finally:
            await cell.close()
            if att is not None:
                await att.close()
        closed = sum(1 for r in cell.ledger.records.values() if r.outcome is not None)
        return rep, closed, att

    return asyncio.run(main())


def test_ros_run_gives_the_local_report_and_records_mcap(demo_config, demo_inspectors, tmp_path, capsys):
    local, _, _ = _batch(demo_config, demo_inspectors, 300.0, ros=False)
    bag = tmp_path / "run.mcap"
    ros, closed, att = _batch(demo_config, demo_inspectors, 300.0, ros=True, record=bag)
    for key in ("parts", "cases", "throughput_ppm", "alarms", "sim_truth", "inspection"):
        assert ros.get(key) == local.get(key), key
    assert ros["parts"]["packed"] > 0
    assert sum(n.calls for n in att.device_nodes) > 100  # the skills really went over the wire

    # the MCAP reads back with the mcap reader (ros2 profile, ros2msg schemas, cdr)
    from mcap.reader import make_reader

    from cell.ros.record import read_bag

    with open(bag, "rb") as f:
        reader = make_reader(f)
        assert reader.get_header().profile == "ros2"
        summ = reader.get_summary()
    topics = {ch.topic: summ.schemas[ch.schema_id] for ch in summ.channels.values()}
    ns = demo_config.cell.name
    for t in ("/clock", "/diagnostics", f"/{ns}/status", f"/{ns}/parts", f"/{ns}/top_camera/image_raw",
              f"/{ns}/robot/joint_states"):
        assert t in topics, t
    assert topics[f"/{ns}/parts"].encoding == "ros2msg"
    parts = [m for topic, _t, m in read_bag(bag, topics=[f"/{ns}/parts"])]
    assert len(parts) == closed
    assert sum(1 for p in parts if p.outcome == "packed") == ros["parts"]["packed"]
    stations = {n for n, s in demo_config.stations.items() if s.kind == "case"}
    assert {p.station for p in parts if p.outcome == "packed"} <= stations and all(
        p.station for p in parts if p.outcome == "packed")
    assert all(p.station == "" for p in parts if p.outcome != "packed")
    status = [m for topic, _t, m in read_bag(bag, topics=[f"/{ns}/status"])]
    assert status and status[-1].oee == pytest.approx(ros["oee"]["oee"], abs=1e-4)  # the report's OEE
    # joint_states at a plausible rate while the arm moves: start and end of every motion plus
    # one per 0.1 s of cell time in between (each packed tray takes 5 moves of ~0.3-1 s)
    js = [(t, m) for _topic, t, m in read_bag(bag, topics=[f"/{ns}/robot/joint_states"])]
    assert len(js) >= 10 * ros["parts"]["packed"], len(js)
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _t, m in js]
    assert stamps == sorted(stamps) and len(js[0][1].position) == len(js[0][1].name) == 6
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert sum(1 for g in gaps if 0.09 <= g <= 0.11) >= len(js) // 3  # the 10 Hz stream during motion
    img = next(m for _topic, _t, m in read_bag(bag, topics=[f"/{ns}/top_camera/image_raw"]))
    assert img.width > 0 and len(img.data) == img.step * img.height

    # axcell replay prints the part events and the final counts again
    from cell.cli import main

    capsys.readouterr()
    assert main(["replay", str(bag)]) == 0
    out = capsys.readouterr().out
    assert f"packed {ros['parts']['packed']}" in out and out.count("\n") == closed + 1


CLIENT = textwrap.dedent(
    r"""
    import json, sys, time
    import rclpy
    from rclpy.action import ActionClient
    from axcell_interfaces.action import ExecuteSkill
    from axcell_interfaces.msg import CellStatus
    from axcell_interfaces.srv import CellCommand

    ns = sys.argv[1]
    rclpy.init()
    node = rclpy.create_node("plain_client")
    out = {"status": []}
    node.create_subscription(CellStatus, f"/{ns}/status", lambda m: out["status"].append(m.state), 10)

    def spin_for(fut, t=20.0):
        rclpy.spin_until_future_complete(node, fut, timeout_sec=t)
        assert fut.done(), "timed out"
        return fut.result()

    cli = node.create_client(CellCommand, f"/{ns}/command")
    assert cli.wait_for_service(timeout_sec=20.0), "no command service"
    out["command"] = []
    for cmd in ("bogus", "reset"):
        r = spin_for(cli.call_async(CellCommand.Request(command=cmd)))
        out["command"].append([r.accepted, r.reason])
    deadline = time.time() + 20
    while time.time() < deadline and (not out["status"] or out["status"][-1] != "Idle"):
        rclpy.spin_once(node, timeout_sec=0.1)

    ac = ActionClient(node, ExecuteSkill, f"/{ns}/execute_skill")
    assert ac.wait_for_server(timeout_sec=20.0), "no action server"

    def run(goal, fb=None):
        gh = spin_for(ac.send_goal_async(goal, feedback_callback=fb))
        return gh, spin_for(gh.get_result_async())

    fb = []
    _, r = run(ExecuteSkill.Goal(skill="move", params_json=json.dumps({"joints_deg": [10, -80, 90, -100, -90, 0]})),
               lambda m: fb.append(m.feedback.phase))
    out["move"] = [r.status, r.result.status, fb]
    _, r = run(ExecuteSkill.Goal(skill="move", params_json='{"speed": 7}'))
    out["bad_params"] = [r.status, r.result.status, r.result.message]
    _, r = run(ExecuteSkill.Goal(skill="no_such_skill", params_json="{}"))
    out["unknown"] = [r.status, r.result.status]

    # a long goal (waits for a tray that never comes), a conflicting one, then cancel the first
    long = ExecuteSkill.Goal(skill="wait_for_part", params_json=json.dumps({"channel": "infeed_eye"}))
    gh = spin_for(ac.send_goal_async(long))
    time.sleep(0.2)
    _, r = run(long)
    out["conflict"] = [r.status, r.result.status, r.result.message]
    c = spin_for(gh.cancel_goal_async())
    r = spin_for(gh.get_result_async())
    out["cancel"] = [len(c.goals_canceling), r.status, r.result.status]
    rclpy.spin_once(node, timeout_sec=0.2)
    ac.destroy()
    node.destroy_node()
    rclpy.shutdown()
    print("RESULT " + json.dumps(out), flush=True)
    """
)


def test_plain_rclpy_client_drives_the_cell_node(demo_config, tmp_path, domain_id):
    from action_msgs.msg import GoalStatus

    from cell.ros.runtime import attach
    from cell.runtime import Cell

    script = tmp_path / "client.py"
    script.write_text(CLIENT)

    async def main():
        cell = Cell(demo_config, seed=1, inspectors={})
        att = await attach(cell)
        clock_task = asyncio.ensure_future(cell.clock.run(until=None, speed=20.0))
        env = ros_env()
        env["PYTHONPATH"] = str(REPO_ROOT)
        proc = await asyncio.create_subprocess_exec(sys.executable, str(script), cell.name, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 90.0)
        except TimeoutError:
            files = shm_files_of(proc.pid)
            proc.kill()
            await proc.wait()
            remove_shm_files(files)
            pytest.fail("plain rclpy client hung")
        finally:
            cell.clock.stop()
            await asyncio.wait_for(clock_task, 10.0)
            await cell.close()
            await att.close()
        return proc.returncode, out.decode(), err.decode()

    rc, out, err = asyncio.run(main())
    assert rc == 0, err[-3000:]
    res = json.loads([ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1][7:])
    assert res["command"][0][0] is False and "bogus" in res["command"][0][1]
    assert res["command"][1] == [True, ""]
    assert "Idle" in res["status"]
    assert res["move"][:2] == [GoalStatus.STATUS_SUCCEEDED, "SUCCESS"] and "moving" in res["move"][2]
    assert res["bad_params"][:2] == [GoalStatus.STATUS_ABORTED, "REJECTED"] and "speed" in res["bad_params"][2]
    assert res["unknown"] == [GoalStatus.STATUS_ABORTED, "REJECTED"]
    assert res["conflict"][:2] == [GoalStatus.STATUS_ABORTED, "REJECTED"] and "busy" in res["conflict"][2]
    assert res["cancel"] == [1, GoalStatus.STATUS_CANCELED, "CANCELED"]


def test_launch_files_are_valid_and_name_existing_entry_points():
    import ast
    import importlib
    import tomllib

    from cell.config import load_cell

    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert not (REPO_ROOT / "launch" / "__init__.py").exists()
    files = sorted((REPO_ROOT / "launch").glob("*.launch.py"))
    assert {f.name for f in files} >= {"packaging_cell.launch.py", "assembly_cell.launch.py", "device.launch.py"}
    for f in files:
        # a cell's launch file starts the cell file of the same name, which exists and validates
        if f.name.endswith("_cell.launch.py"):
            cell_yaml = f.with_name(f.name.replace(".launch.py", ".yaml"))
            assert f'with_name("{cell_yaml.name}")' in f.read_text(), f.name
            assert load_cell(cell_yaml).cell.name == cell_yaml.stem
        tree = ast.parse(f.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
        consts = {n.targets[0].id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                  and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
        exes = [v for k, v in consts.items() if k.endswith("_NODE")]
        assert exes, f.name
        for exe in exes:
            mod, func = scripts[exe].split(":")
            assert callable(getattr(importlib.import_module(mod), func))
