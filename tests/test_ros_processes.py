"""``axcell run --transport ros --processes``: one process per device node, the same report as local.

    .venv/bin/python -m pytest tests/test_ros_processes.py -x -q

Each test claims a ROS domain of its own (``cell.ros.env.claim_domain_id``) and removes the
Fast DDS shared-memory files its processes leave behind.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed; run `make`")
pytest.importorskip("axcell_interfaces.srv", reason="axcell_interfaces not built; run `make`")

from cell.ros.env import (  # noqa: E402
    DISCOVERY_RANGE_VAR,
    DOMAIN_VAR,
    claim_domain_id,
    fastdds_shm_files,
    remove_shm_files,
    xdist_domain_id,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "launch" / "packaging_cell.yaml"
DURATION = 120.0
pytestmark = pytest.mark.timeout(240, method="thread")


@pytest.fixture
def ros_domain(monkeypatch):
    """This test's own ROS_DOMAIN_ID (claimed, so no concurrent session shares it), LOCALHOST discovery."""
    claim = claim_domain_id(xdist_domain_id())
    monkeypatch.setenv(DOMAIN_VAR, str(claim.domain_id))
    monkeypatch.setenv(DISCOVERY_RANGE_VAR, "LOCALHOST")
    before = fastdds_shm_files()
    try:
        yield claim.domain_id
    finally:
        gc.collect()  # rclpy objects in reference cycles keep their Fast DDS segments mapped until collected
        remove_shm_files(fastdds_shm_files() - before)  # keeps files still in use
        claim.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _session(cfg, tmp_path: Path, name: str, *, processes: bool, on_ready=None, duration: float = DURATION,
             record: Path | None = None):
    from cell.session import RunOptions, run_session

    opts = RunOptions(duration=duration, seed=1, speed=None, transport="ros" if processes else "local",
                      processes=processes, quiet=True, run_dir=tmp_path / name, on_ready=on_ready, record=record)
    return asyncio.run(run_session(cfg, opts))


def test_processes_run_gives_the_local_report(demo_config, demo_inspectors, tmp_path, ros_domain):
    local = _session(demo_config, tmp_path, "local", processes=False)
    seen: dict = {}

    def on_ready(ops):
        att = ops.cell.ros_attachment
        seen["pids"] = dict(att.processes.pids)
        seen["alive"] = {d: _alive(p) for d, p in seen["pids"].items()}
        node = att.bridge.nodes[0]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # discovery is asynchronous
            seen["graph"] = {(ns, n) for n, ns in node.get_node_names_and_namespaces()}
            if all(("/packaging_cell", d) in seen["graph"] for d in seen["pids"]):
                break
            time.sleep(0.1)
        seen["mine"] = {(n.get_namespace(), n.get_name()) for n in att.bridge.nodes}

    bag = tmp_path / "run.mcap"
    rep = _session(demo_config, tmp_path, "processes", processes=True, on_ready=on_ready, record=bag)

    # one process per device node, none of them this one, each a node on the ROS graph
    devices = [d.name for d in demo_config.devices]
    assert sorted(seen["pids"]) == sorted(devices)
    assert os.getpid() not in seen["pids"].values() and len(set(seen["pids"].values())) == len(devices)
    assert all(seen["alive"].values()), seen["alive"]
    for d in devices:
        assert ("/packaging_cell", d) in seen["graph"], (d, sorted(seen["graph"]))
        assert ("/packaging_cell", d) not in seen["mine"], f"{d} is served in the main process"
    assert ("/packaging_cell", "cell") in seen["mine"]
    # ... and all gone with the run
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in seen["pids"].values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [d for d, p in seen["pids"].items() if _alive(p)], "device processes outlived the run"

    # the same report as the local run: counts, cases, inspection against the truth, states, OEE
    for key in ("parts", "cases", "throughput_ppm", "cycle_time_s", "alarms", "sim_truth", "inspection", "states",
                "telemetry"):
        assert rep.get(key) == local.get(key), key
    assert {k: v for k, v in rep["oee"].items() if k != "acc"} == {k: v for k, v in local["oee"].items() if k != "acc"}
    assert rep["parts"]["packed"] > 0 and rep["cases"]["completed"] >= 1

    # recorded across processes: the cell's part events and the device nodes' streams
    from cell.ros.record import read_bag, summary

    summ = summary(bag)
    ns = demo_config.cell.name
    for t in ("/clock", f"/{ns}/parts", f"/{ns}/robot/joint_states", f"/{ns}/top_camera/image_raw"):
        assert summ.get(t, {}).get("count", 0) > 0, (t, summ.get(t))
    parts = [m for _topic, _t, m in read_bag(bag, topics=[f"/{ns}/parts"])]
    assert sum(1 for p in parts if p.outcome == "packed") == rep["parts"]["packed"]
    assert summ[f"/{ns}/robot/joint_states"]["count"] >= 10 * rep["parts"]["packed"]


def test_a_killed_device_process_stops_the_run_with_a_clear_error(demo_config, demo_inspectors, tmp_path,
                                                                   ros_domain):
    from cell.ros.lockstep import DeviceProcessError

    seen: dict = {}

    def on_ready(ops):
        seen["pids"] = dict(ops.cell.ros_attachment.processes.pids)
        os.kill(seen["pids"]["top_camera"], signal.SIGKILL)

    t0 = time.monotonic()
    with pytest.raises(DeviceProcessError, match=r"device process 'top_camera' \(pid \d+\) exited with signal SIGKILL"):
        _session(demo_config, tmp_path, "killed", processes=True, on_ready=on_ready, duration=3600.0)
    assert time.monotonic() - t0 < 120, "the run hung instead of failing"
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in seen["pids"].values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [d for d, p in seen["pids"].items() if _alive(p)], "device processes outlived the failed run"


def test_ctrl_c_on_the_cli_takes_the_device_processes_down(tmp_path, ros_domain):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = tmp_path / "out.log"        # a file, not a pipe: nobody reads a pipe until the end, and a full one blocks
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cell.cli", "run", str(DEMO), "--duration", "3600", "--seed",
                                 "1", "--transport", "ros", "--processes", "--quiet", "--run-dir", str(tmp_path / "run")],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    children: list[int] = []

    def comm(p: int) -> str:
        try:
            return Path(f"/proc/{p}/comm").read_text().strip()
        except OSError:
            return ""

    try:
        deadline = time.monotonic() + 90
        # six device processes (named after their device, 15 bytes) and the inspection worker
        want = {"axcell-robot", "axcell-top_came", "axcell-inspect"}
        comms: set[str] = set()
        while time.monotonic() < deadline and not (len(children) == 7 and want <= comms):
            out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
            children = [int(p) for p in out.split()]
            comms = {comm(p) for p in children if _alive(p)}
            time.sleep(0.5)
        assert len(children) == 7 and want <= comms, f"expected 6 device processes and a worker, saw {comms}"
        time.sleep(5)  # let it start and run a little
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            raise AssertionError("no exit 60 s after Ctrl-C; output:\n" + log.read_text(errors="replace")[-3000:]) from None
        assert proc.returncode == 130, log.read_text(errors="replace")[-2000:]
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in children if _alive(p)], "device processes or the inspection worker outlived Ctrl-C"
    finally:
        for p in [proc.pid, *children]:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        proc.wait(10)


def test_jams_holds_and_recovery_over_processes_give_the_local_report(demo_inspectors, tmp_path, ros_domain):
    """Jams put the cell in Held: calls in flight are abandoned (counted notices), the simulated
    operator recovers, the sealer's jam draws happen in its own process; still the local report."""
    from cell.config import load_cell

    text = DEMO.read_text()
    assert "jam_probability: 0.01" in text
    f = tmp_path / "jammy_cell.yaml"
    f.write_text(text.replace("jam_probability: 0.01", "jam_probability: 0.5"))
    cfg = load_cell(f)

    def run(name: str, processes: bool):
        from cell.session import RunOptions, run_session

        opts = RunOptions(duration=200.0, seed=2, transport="ros" if processes else "local", processes=processes,
                          quiet=True, run_dir=tmp_path / name)
        return asyncio.run(run_session(cfg, opts))

    local = run("local", False)
    assert local["states"].get("Held", 0) > 0 and any("jam" in a["message"] for a in local["alarms"])
    rep = run("processes", True)
    for key in ("parts", "cases", "alarms", "sim_truth", "inspection", "states", "telemetry"):
        assert rep.get(key) == local.get(key), key
