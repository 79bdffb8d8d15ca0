"""Bad command-line input and damaged files for ``run``, ``report``, ``replay`` and ``calibrate``.

Every case must end in one clear ``axcell: ...`` line (exit 2, or argparse's usage error), never in
``axcell: error: SomeException`` (the catch-all for the unexpected) or a traceback, and must never
overwrite what a run recorded (the cell file, the store, run.json).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

import pytest

from cell.cli import main
from cell.store import Store

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "launch" / "packaging_cell.yaml"
pytestmark = pytest.mark.timeout(60)


def _user_error(capsys: pytest.CaptureFixture[str], argv: list[str], words: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err and "axcell: error:" not in err, err
    assert words in err, err
    return err


# --------------------------------------------------------------------------- axcell run: arguments
@pytest.mark.parametrize("args, words", [
    (["--seed", "-1"], "argument --seed: expected an integer from 0"),
    (["--seed", str(2 ** 70)], "argument --seed: expected an integer from 0"),
    (["--seed", "1.5"], "argument --seed: expected an integer"),
    (["--hmi-port", "70000"], "argument --hmi-port: expected a port number"),
    (["--hmi-port", "-1"], "argument --hmi-port: expected a port number"),
    (["--opcua-port", "65536"], "argument --opcua-port: expected a port number"),
])
def test_run_arguments_out_of_range_are_usage_errors(args: list[str], words: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]):
    # a negative seed used to start the run and crash its infeed (a traceback, then a run with no trays);
    # a huge one ran and then failed storing it (OverflowError); a bad port failed at bind() (exit 1)
    with pytest.raises(SystemExit) as ei:
        main(["run", str(DEMO), "--duration", "1", "--transport", "local", "--run-dir", str(tmp_path / "r"), *args])
    assert ei.value.code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_run_outputs_are_checked_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    base = ["run", str(DEMO), "--duration", "1", "--speed", "max", "--transport", "local", "--quiet"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    _user_error(capsys, base + ["--run-dir", str(afile)], f"{afile}: --run-dir must be a folder, and this is a file")
    _user_error(capsys, base + ["--run-dir", str(afile / "sub")], f"{afile / 'sub'}: cannot create --run-dir")
    _user_error(capsys, base + ["--run-dir", str(tmp_path / "r"), "--report", str(tmp_path)],
                "the --report JSON is a folder")
    _user_error(capsys, base + ["--run-dir", str(tmp_path / "r"), "--report", str(afile / "r.json")],
                f"is a file")
    _user_error(capsys, base + ["--run-dir", str(tmp_path / "r"), "--record", str(tmp_path)],
                "the --record MCAP file is a folder")
    assert not (tmp_path / "r" / "report.json").exists()  # nothing ran


def test_run_never_overwrites_the_cell_file_or_the_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    cell = tmp_path / "cell.yaml"
    cell.write_text(DEMO.read_text())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "cell.sqlite").write_bytes(b"recorded parts")
    base = ["run", str(cell), "--duration", "1", "--speed", "max", "--transport", "local", "--quiet",
            "--run-dir", str(run_dir)]
    _user_error(capsys, base + ["--report", str(cell)], "--report would overwrite the cell file")
    _user_error(capsys, base + ["--report", str(run_dir / "cell.sqlite")],
                "--report would overwrite the traceability store")
    _user_error(capsys, base + ["--record", str(run_dir / "run.json")], "--record would overwrite run.json")
    assert cell.read_text() == DEMO.read_text()
    assert (run_dir / "cell.sqlite").read_bytes() == b"recorded parts"


def test_an_unwritable_store_path_is_refused_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    # store.path naming a folder or an impossible place failed only once the cell was built (exit 1:
    # "axcell: error: OperationalError: unable to open database file")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for store, words in ((tmp_path, f"{tmp_path}: the traceability store (store.path in the cell file) is a folder"),
                         (afile / "cell.sqlite", f"{afile / 'cell.sqlite'}: cannot write the traceability store")):
        cell = tmp_path / "cell.yaml"
        cell.write_text(DEMO.read_text().replace("opcua:\n", f"store: {{path: '{store}'}}\nopcua:\n", 1))
        _user_error(capsys, ["run", str(cell), "--duration", "1", "--transport", "local", "--quiet",
                             "--run-dir", str(tmp_path / "run")], words)


# --------------------------------------------------------------------------- axcell report: damaged run dirs
@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    store = Store(d / "cell.sqlite", cell="packaging_cell", seed=1, meta={"design_speed_ppm": 16})
    store.flush()
    store.close()
    (d / "run.json").write_text(json.dumps({"cell": "packaging_cell", "run_id": store.run_id,
                                            "store": str((d / "cell.sqlite").resolve())}))
    return d


def _drop(table: str):  # noqa: ANN202
    def f(d: Path) -> None:
        c = sqlite3.connect(d / "cell.sqlite")
        c.execute(f"DROP TABLE {table}")
        c.commit()
        c.close()
    return f


def _write(name: str, data: bytes):  # noqa: ANN202
    return lambda d: (d / name).write_bytes(data)


def _bad_meta(d: Path) -> None:
    c = sqlite3.connect(d / "cell.sqlite")
    c.execute("UPDATE runs SET meta = '{not json'")
    c.commit()
    c.close()


@pytest.mark.parametrize("damage, words", [
    (_write("run.json", b"{not json"), "run.json: cannot read run.json (JSONDecodeError"),
    (_write("run.json", b"[1, 2]"), "run.json: run.json is not a JSON object (list)"),
    (_write("run.json", b'{"store": 5}'), "run.json: store: expected a file path, got 5"),
    (_write("run.json", b"\xff\xfe\x00\x00junk"), "run.json: cannot read run.json (UnicodeDecodeError"),
    (_write("cell.sqlite", b"not a database at all" * 300), "unreadable traceability store (DatabaseError"),
    (_write("cell.sqlite", b""), "unreadable traceability store (OperationalError: no such table: runs)"),
    (_drop("parts"), "unreadable traceability store (OperationalError: no such table: parts)"),
    (_drop("counters"), "no such table: counters"),
    (_bad_meta, "damaged traceability store (JSONDecodeError"),
])
def test_report_of_a_damaged_run_dir_is_one_clear_line(run_dir: Path, damage, words: str,  # noqa: ANN001
                                                       capsys: pytest.CaptureFixture[str]):
    assert main(["report", str(run_dir)]) == 0  # the undamaged run dir reports
    capsys.readouterr()
    damage(run_dir)
    err = _user_error(capsys, ["report", str(run_dir)], words)
    assert len(err.strip().splitlines()) == 1


def test_report_output_is_checked_and_never_replaces_the_records(run_dir: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]):
    db = (run_dir / "cell.sqlite").read_bytes()
    _user_error(capsys, ["report", str(run_dir), "-o", str(tmp_path)], "is a folder; give a file name")
    _user_error(capsys, ["report", str(run_dir), "-o", str(run_dir / "cell.sqlite")],
                "would overwrite the run's records")
    _user_error(capsys, ["report", str(run_dir), "-o", str(run_dir / "run.json")], "would overwrite the run's records")
    afile = tmp_path / "afile"
    afile.write_text("x")
    _user_error(capsys, ["report", str(run_dir), "-o", str(afile / "r.html")], "cannot write the report")
    _user_error(capsys, ["report", str(tmp_path / "nope")], "no such run directory")
    _user_error(capsys, ["report", str(afile)], "not a run directory")
    assert (run_dir / "cell.sqlite").read_bytes() == db
    assert json.loads((run_dir / "run.json").read_text())["cell"] == "packaging_cell"


# --------------------------------------------------------------------------- axcell replay: not MCAP / cut short
@pytest.mark.parametrize("content", [b"", b"hello\n", os.urandom(3000), b"\x89MCAP0\r\n" + b"\xff" * 64])
def test_replay_of_a_file_that_is_not_mcap_is_one_clear_line(tmp_path: Path, content: bytes,
                                                             capsys: pytest.CaptureFixture[str]):
    f = tmp_path / "run.mcap"
    f.write_bytes(content)
    err = _user_error(capsys, ["replay", str(f)], f"{f}: not a readable MCAP recording")
    assert len(err.strip().splitlines()) == 1
    _user_error(capsys, ["replay", str(tmp_path)], "not a file")


def test_replay_of_a_recording_cut_short_shows_what_was_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from mcap_ros2.writer import Writer

    schema = "string part_id\nstring verdict\n"
    f = tmp_path / "full.mcap"
    with open(f, "wb") as fh:
        w = Writer(fh)
        s = w.register_msgdef("axcell_test/msg/Ev", schema)
        for i in range(200):
            w.write_message("/cell/events", s, {"part_id": f"P{i:06d}", "verdict": "good"}, log_time=i * 10 ** 9)
        w.finish()
    data = f.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) * 2 // 3])  # the run was killed: no summary, the last chunk torn
    rc = main(["replay", str(cut)])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in err and "axcell: error:" not in err, err
    assert f"axcell: warning: {cut}: the recording ends early after" in err
    assert "no cell status recorded" in out


# --------------------------------------------------------------------------- axcell calibrate: arguments
@pytest.mark.parametrize("args, words", [
    (["--centre", "nan", "0", "0.3"], "argument --centre: expected a finite number"),
    (["--centre", "1e308", "0", "0.3"], "argument --centre: expected a number in [-50, 50]"),
    (["--standoff", "nan"], "argument --standoff: expected a finite number"),
    (["--standoff", "0"], "argument --standoff: expected a number in (0.05, 5]"),
    (["--noise-mm", "1e308"], "argument --noise-mm: expected a number in [0, 100]"),
    (["--noise-deg", "1e308"], "argument --noise-deg: expected a number in [0, 45]"),
    (["--seed", "-1"], "argument --seed: expected an integer from 0"),
    (["--poses", "5"], "--poses must be between 6 and 200"),
])
def test_calibrate_arguments_are_checked_before_the_arm_moves(args: list[str], words: str,
                                                              capsys: pytest.CaptureFixture[str]):
    # these used to run (NaN centre: 20 refused poses, exit 1; huge noise: ValueError; --poses 5: a solver
    # that needs 6 views could never succeed)
    with pytest.raises(SystemExit) as ei:
        main(["calibrate", str(DEMO), *args])
    assert ei.value.code == 2
    assert words in capsys.readouterr().err


def test_calibrate_output_is_checked_before_the_arm_moves(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    _user_error(capsys, ["calibrate", str(DEMO), "--out", str(tmp_path)], "the calibration JSON is a folder")
    cell = tmp_path / "cell.yaml"
    cell.write_text(DEMO.read_text())
    _user_error(capsys, ["calibrate", str(cell), "--out", str(cell)], "--out would overwrite the cell file")
    assert cell.read_text() == DEMO.read_text()


@pytest.mark.parametrize("centre, words", [
    (["5", "5", "5"], "outside workspace"),             # the arm's workspace box
    (["1.2", "0.9", "0.9"], "out of reach"),            # inside the box, beyond the arm's IK reach
])
def test_calibrate_centre_out_of_reach_is_a_usage_error_before_the_arm_moves(
        centre: list[str], words: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    # used to run the skill: every sampled view was refused, "only 0 usable views", exit 1
    from sim.arm import SimArm

    async def no_motion(self, *a, **k):  # noqa: ANN001, ANN002, ANN003
        raise AssertionError("the arm was asked to move")

    monkeypatch.setattr(SimArm, "move_pose", no_motion)
    monkeypatch.setattr(SimArm, "move_joints", no_motion)
    err = _user_error(capsys, ["calibrate", str(DEMO), "--centre", *centre], f"--centre {' '.join(centre)}: ")
    assert "arm 'robot' cannot reach it" in err and words in err, err


# --------------------------------------------------------------------------- skills: NaN targets
@pytest.mark.parametrize("params", [
    {"pose": {"x": math.nan, "y": 0.0, "z": 0.3}},
    {"pose": {"x": 0.5, "y": math.inf, "z": 0.3}},
    {"joints_deg": [0, -90, math.nan, 0, 0, 0]},
    {"pose": {"x": 0.5, "y": 0.0, "z": 0.3, "yaw_deg": -math.inf}},
    {"pose": {"x": 0.5, "y": 0.0, "z": 0.3}, "speed": math.nan},
])
def test_non_finite_skill_parameters_are_refused_by_the_params_model(params: dict):
    # an unbounded float (a pose coordinate) accepted NaN/inf: only the arm's own check stopped the motion;
    # every skill's parameters now refuse NaN/inf before the skill runs (said as such, not as a bound)
    from pydantic import ValidationError

    from skills.motion import Move

    with pytest.raises(ValidationError, match="finite number"):
        Move.Params.model_validate(params)
