"""Bad cell files get located, one-line errors (FILE:LINE: path: message (value)) and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cell.cli import main
from cell.config import CellFileError, load_cell, parse_cell

BAD = Path(__file__).parent / "cells" / "bad"
REPO = Path(__file__).resolve().parents[1]

# file → (line, field path, words the message must contain)
EXPECTED = {
    "yaml_syntax.yaml": (12, "(syntax)", "expected ','"),
    "python_tag.yaml": (7, "cell.description", "python/object/apply:os.system' is not allowed"),
    "custom_tag.yaml": (25, "devices.1.options", "'!include' is not allowed"),
    "unknown_top_key.yaml": (52, "lines_typo", "unknown key"),
    "unknown_option.yaml": (25, "devices.1.options.suction_kpa", "unknown key"),
    "wrong_type.yaml": (37, "devices.4.options.width", "valid integer"),
    "unknown_kind.yaml": (24, "devices.1.kind", "unknown device kind (did you mean 'sim.vacuum'? known:"),
    "unknown_skill.yaml": (70, "process.parallel.0.repeat.sequence.2.skill", "unknown skill"),
    "duplicate_device.yaml": (23, "devices.1.name", "duplicate device name"),
    "missing_device_ref.yaml": (25, "devices.1.options", "refers to device 'robot2', which does not exist"),
    "negative_rate.yaml": (88, "sim.infeed.rate_ppm", "greater than 0"),
    "speed_too_high.yaml": (28, "devices.2.options.speed", "less than or equal to 2"),
    "joint_limits.yaml": (22, "devices.0.options.joint_limits_deg", "hard limits"),
    "unknown_robot.yaml": (21, "devices.0.options.model", "ur99x"),
    "duplicate_key.yaml": (25, "devices.1.options.arm", "duplicate key 'arm'"),
    "role_wrong_contract.yaml": (82, "process.parallel.1.repeat.sequence.2.fallback.1.devices.machine",
                                 "device is a conveyor, role needs a machine"),
    "bad_skill_param.yaml": (75, "process.parallel.1.repeat.sequence.0.with", "x_min < x_max"),
    "missing_station.yaml": (77, "process.parallel.1.repeat.sequence.1.with.station", "no such station"),
    "mix_unknown_product.yaml": (91, "sim.infeed.mix.kimchee_tray", "no such product"),
    "missing_section.yaml": (5, "line", "required field is missing"),
    "defect_rate_sum.yaml": (92, "sim.defect_rates", "sum to 1.050 > 1"),
    "bad_name.yaml": (6, "cell.name", "should match pattern"),
    "empty.yaml": (1, "(top)", "must be a mapping"),
    "not_a_mapping.yaml": (1, "(top)", "must be a mapping"),
    "case_outside_workspace.yaml": (50, "stations.case_out.frame",
                                    "case slot 3 of 6 (2 x 3 pattern) at (1.450, -0.125, 0.045) m is outside the "
                                    "workspace of arm 'robot'"),
    "tray_too_small.yaml": (11, "products.bulgogi_tray.size_mm", "tray too small for its look (beef_bulgogi: label_box"),
    "pattern_overlap.yaml": (51, "stations.case_out.pattern.pitch_mm", "trays would overlap"),
    "bool_for_number.yaml": (28, "devices.2.options.speed", "expected a number, got a boolean"),
    # physically impossible layouts, refused before the run (they used to run with every part missed)
    "unreachable_pick.yaml": (50, "stations.case_out.frame", "is out of the reach of arm 'robot' (0.566 m from its "
                                                              "base, reach 0.500 m)"),
    "pattern_out_of_reach.yaml": (50, "stations.case_out.frame", "case slot 1 of 18 (2 x 9 pattern)"),
    "camera_blind.yaml": (37, "devices.4.options", "it would not be in view"),
    "eye_off_belt.yaml": (33, "devices.3.options.channels.infeed_eye.photo_eye.x", "the photo-eye is off the belt "
                                                                                    "(belt 'infeed'"),
    "exit_upstream.yaml": (57, "line.exit_x", "upstream of the pick window [0.15, 0.85]"),
    "label_too_big.yaml": (16, "products.kimchi_tray.appearance.label", "does not fit on the 190 x 140 mm product"),
}


def test_every_bad_file_has_an_expectation():
    assert len(EXPECTED) >= 15
    assert sorted(p.name for p in BAD.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_cell_file_is_located(name: str, capsys: pytest.CaptureFixture[str]):
    line, path, words = EXPECTED[name]
    file = str(BAD / name)
    assert main(["check", file]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    first = err.splitlines()[0]
    assert first.startswith(f"{file}:{line}: {path}: "), first
    assert words in first, first


def test_check_accepts_the_demo_and_exits_zero(capsys):
    assert main(["check", str(REPO / "launch" / "packaging_cell.yaml")]) == 0
    assert "ok" in capsys.readouterr().out


def test_python_tag_is_never_constructed(tmp_path: Path):
    marker = tmp_path / "pwned"
    text = (REPO / "launch" / "packaging_cell.yaml").read_text().replace(
        "  description: Sealed", f"  description: !!python/object/apply:os.system ['touch {marker}']\n  x: Sealed")
    with pytest.raises(CellFileError):
        parse_cell(text, "x.yaml")
    assert not marker.exists()


def test_unreadable_file_is_a_clear_error(capsys):
    assert main(["check", "/nonexistent/cell.yaml"]) == 2
    assert "/nonexistent/cell.yaml:0: (file): cannot read" in capsys.readouterr().err


def test_cli_subprocess_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "cell.cli", "check", str(BAD / "unknown_kind.yaml")],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown_kind.yaml:24: devices.1.kind:" in proc.stderr


def test_schema_is_valid_json_with_the_sections(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    for key in ("cell", "devices", "process", "sim", "line", "products"):
        assert key in schema["properties"]


def test_loader_keeps_every_problem_in_one_pass():
    text = (REPO / "launch" / "packaging_cell.yaml").read_text()
    text = text.replace("kind: sim.vacuum", "kind: sim.vacum").replace("rate_ppm: 15", "rate_ppm: -3")
    with pytest.raises(CellFileError) as ei:
        parse_cell(text, "two.yaml")
    paths = {p.path for p in ei.value.problems}
    assert {"devices.1.kind", "sim.infeed.rate_ppm"} <= paths


def test_good_file_round_trips_through_load(demo_config):
    assert demo_config.cell.name == "packaging_cell"
    assert load_cell(REPO / "launch" / "packaging_cell.yaml").source is not None


# --------------------------------------------------------------------------- adversarial cell files
# Each is the demo with one mutation; every one must give located problems (exit 2), fast, with no traceback.
DEMO_TEXT = (REPO / "launch" / "packaging_cell.yaml").read_text()


def _mutate(old: str, new: str) -> str:
    assert old in DEMO_TEXT, old
    return DEMO_TEXT.replace(old, new, 1)


def _laughs(levels: int, key: str = "  x") -> str:
    out = f"{key}0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, levels):
        out += f"{key}{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n"
    return out


MUTANTS = {  # name → (text, line, field path, words)
    "billion_laughs": (_mutate("  description: Sealed", _laughs(9) + "  description: Sealed"), 10, "cell.x4.",
                       "aliases expand to more than 100000 values"),
    "recursive_alias": (_mutate("{arm: robot}", "&r {arm: robot, self: *r}"), 24, "devices.1.options.self",
                        "recursive alias"),
    "deep_nesting": (_mutate("  description: Sealed", "  deep: " + "[" * 3000 + "]" * 3000 + "\n  description: Sealed"),
                     6, "(syntax)", "nested more than 64 levels deep"),
    "deep_block_nesting": (_mutate("  description: Sealed", "  deep:\n" + "".join(
        "  " * (i + 2) + "k:\n" for i in range(80)) + "  description: Sealed"), 69, "cell.deep.k.k.",
        "nested more than"),
    "huge_integer": (_mutate("rate_ppm: 15", "rate_ppm: " + "9" * 5000), 91, "sim.infeed.rate_ppm",
                     "too many digits"),
    "control_char": (_mutate("Sealed food", "Sealed\x07food"), 6, "(syntax)", "#x0007"),
    "nan_exit": (_mutate("exit_x: 1.2", "exit_x: .nan"), 56, "line.exit_x", "must be a finite number (nan)"),
    "inf_float": (_mutate("exit_x: 1.2", "exit_x: 1.0e+400"), 56, "line.exit_x", "must be a finite number (inf)"),
    "nan_driver_option": (_mutate("cycle_time_s: 1.5", "cycle_time_s: .nan"), 41,
                          "devices.5.options.sim.cycle_time_s", "must be a finite number"),
    "nan_skill_param": (_mutate("eye_x: -0.405", "eye_x: .nan"), 69,
                        "process.parallel.0.repeat.sequence.0.with.eye_x", "must be a finite number"),
    "inf_timeout": (_mutate("          - skill: reject_decision\n",
                            "          - {skill: reject_decision, timeout_s: .inf}\n"), 72,
                    "process.parallel.0.repeat.sequence.2.timeout_s", "must be a finite number (inf)"),
    "negative_speed": (_mutate("speed: 0.2}", "speed: -0.2}"), 27, "devices.2.options.speed", "greater than 0"),
    "skill_devices_list": (_mutate("devices: {machine: sealer}", "devices: [sealer]"), 81,
                           "process.parallel.1.repeat.sequence.0.fallback.1.devices", "valid dictionary"),
    "timeout_field": (_mutate("          - skill: reject_decision\n",
                              "          - {timeout: {skill: reject_decision}, seconds: 0}\n"), 72,
                      "process.parallel.0.repeat.sequence.2.seconds", "greater than 0"),
    "options_null": (_mutate("{arm: robot}", "null"), 24, "devices.1.options", "valid dictionary"),
    "pitch_pair": (_mutate("pitch_mm: [200, 150]", "pitch_mm: [200]"), 50, "stations.case_out.pattern.pitch_mm",
                   "too few values"),
    "int_key": (_mutate("products:\n  bulgogi_tray:", "products:\n  1:"), 9, "products.1", "bad key"),
    "bad_appearance": (_mutate("appearance: kimchi", "appearance: kimchee"), 14, "products.kimchi_tray.appearance",
                       "unknown appearance"),
    "bad_appearance_dict": (_mutate("appearance: kimchi", "appearance: {colour: red}"), 14,
                            "products.kimchi_tray.appearance.colour", "unknown key"),
    "bad_rules": (_mutate("appearance: kimchi", "appearance: kimchi\n    rules: {fill_range: [0.9, 0.1]}"), 15,
                  "products.kimchi_tray.rules.fill_range", "min < max"),
    "top_list": ("- cell\n- devices\n", 1, "(top)", "must be a mapping"),
    "pick_window_off_belt": (_mutate("window: [0.15, 0.85]", "window: [0.15, 1.6]"), 83,
                             "process.parallel.1.repeat.sequence.1.with.window",
                             "the pick window lies off belt 'infeed' (it runs from x=-1.2 to x=1.2 m)"),
    "pick_outside_workspace": (_mutate("max: [1.3, 1.0, 1.0]", "max: [1.3, 0.5, 1.0]"), 83,
                               "process.parallel.1.repeat.sequence.1.with.window",
                               "no point of the pick window can be reached: pick point on belt 'infeed' at "
                               "(0.150, 0.600, 0.045) m is outside the workspace"),
    "camera_off_belt": (_mutate("{x: -0.5, y: 0.6, height_m: 0.8,", "{x: -0.5, y: 1.6, height_m: 0.8,"), 36,
                        "devices.4.options", "camera 'top_camera' sees x -0.730..-0.270, y 1.416..1.784 m, which misses"),
    "camera_far_away": (_mutate("{x: -0.5, y: 0.6, height_m: 0.8,", "{x: 1.0e+30, y: 0.6, height_m: 0.8,"), 36,
                        "devices.4.options.x", "less than or equal to 50"),
    "eye_off_belt": (_mutate("photo_eye: {conveyor: infeed, x: -0.405}", "photo_eye: {conveyor: infeed, x: -2.5}"), 32,
                     "devices.3.options.channels.infeed_eye.photo_eye.x", "the photo-eye is off the belt"),
    "spawn_off_belt": (_mutate("spawn_x: -1.1", "spawn_x: -3"), 93, "sim.infeed.spawn_x",
                       "trays would appear off the belt (belt 'infeed' runs from x=-1.2 to x=1.2 m) (-3.0)"),
    "pick_beyond_reach": (_mutate("model: ur10e", "model: ur5e"), 49, "stations.case_out.frame",
                          "is out of the reach of arm 'robot' (0.959 m from its base, reach 0.850 m)"),
    "workspace_below_trays": (_mutate("max: [1.3, 1.0, 1.0]", "max: [1.3, 1.0, 0.0]"), 49, "stations.case_out.frame",
                              "(z 0.045 not in [-0.05, 0])"),
    "tiny_tray": (_mutate("size_mm: [190, 140, 45]", "size_mm: [1, 2, 3]"), 10, "products.bulgogi_tray.size_mm",
                  "length_mm: Input should be greater than 10"),
    "huge_sim_seed": (_mutate("  seed: 1\n", "  seed: 99999999999999999999\n"), 88, "sim.seed",
                      "less than or equal to 9223372036854775807"),
    "sim_server_option": (_mutate("cycle_time_s: 1.5", "cycle_time_s: fast"), 41,
                          "devices.5.options.sim.cycle_time_s", "valid number"),
    "sim_server_unknown_option": (_mutate("jam_probability: 0.01}", "jam_probability: 0.01, jam_rate: 2}"), 41,
                                  "devices.5.options.sim.jam_rate", "unknown key"),
    "recipe_too_fast": (_mutate("conveyor_speed: 0.2}", "conveyor_speed: 4.9}"), 60, "recipes.default.conveyor_speed",
                        "faster than belt 'infeed' can run (max_speed 1 m/s) (4.9)"),
    "station_machine_is_a_belt": (_mutate("    machine: sealer", "    machine: infeed"), 51, "stations.case_out.machine",
                                  "device is a conveyor, not a machine ('infeed')"),
    "exit_off_belt": (_mutate("exit_x: 1.2", "exit_x: -5"), 56, "line.exit_x", "the exit must lie on the belt"),
    "camera_too_narrow": (_mutate("mm_per_px: 0.9}", "mm_per_px: 0.02}"), 36, "devices.4.options",
                          "camera 'top_camera' sees 10 x 8 mm (width, height x mm_per_px): too small for the largest"),
    "skill_timeout_huge": (_mutate("          - skill: reject_decision\n",
                                   "          - {skill: reject_decision, timeout_s: 1.0e+300}\n"), 72,
                           "process.parallel.0.repeat.sequence.2.timeout_s", "less than or equal to 86400"),
    "case_on_the_robot_base": (_mutate("    frame: {x: 0.75, y: -0.05, z: 0.0, yaw_deg: 0}",
                                       "    frame: {x: 0.0, y: -0.05, z: 0.0, yaw_deg: 0}"), 49,
                               "stations.case_out.frame", "is unreachable for arm 'robot' (TCP target"),
    "move_outside_workspace": (_mutate("          - skill: reject_decision\n", "          - skill: reject_decision\n"
                                       "          - {skill: move, with: {pose: {x: 5, y: 0, z: 0.3}}}\n"), 73,
                               "process.parallel.0.repeat.sequence.3.with.pose",
                               "target (5.000, 0.000, 0.300) m is outside the workspace of arm 'robot'"),
    "move_joints_beyond_limits": (_mutate("          - skill: reject_decision\n", "          - skill: reject_decision\n"
                                          "          - {skill: move, with: {joints_deg: [720, -90, 90, 0, 0, 0]}}\n"),
                                  73, "process.parallel.0.repeat.sequence.3.with.joints_deg",
                                  "shoulder_pan_joint = 720° is outside [-360°, 360°]"),
    "move_joints_count": (_mutate("          - skill: reject_decision\n", "          - skill: reject_decision\n"
                                  "          - {skill: move, with: {joints_deg: [0, -90, 90, 0, 0]}}\n"),
                          73, "process.parallel.0.repeat.sequence.3.with.joints_deg", "expected 6 joint values"),
    "case_slots_mismatch": (_mutate("pattern: {rows: 2, cols: 3,", "pattern: {rows: 1, cols: 3,"), 79,
                            "process.parallel.1.repeat.sequence.0.fallback.0.with.slots",
                            "the case holds 1 x 3 = 3 parts (stations.case_out.pattern), not 6 (leave slots out"),
    "tab_indent": (_mutate("  name: packaging_cell", "\tname: packaging_cell"), 5, "(syntax)", "'\\t'"),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_adversarial_cell_file_is_located(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    text, line, path, words = MUTANTS[name]
    f = tmp_path / f"{name}.yaml"
    f.write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    assert main(["check", str(f)]) == 2
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert "Traceback" not in err and "axcell: error" not in err, err
    first = err.splitlines()[0]
    assert first.startswith(f"{f}:{line}: {path}"), first
    assert words in first, first


def test_unknown_kind_does_not_cascade_into_role_errors(tmp_path: Path):
    # the unknown device's contract is unknown: "role 'gripper' needs a gripper device" would only mislead
    with pytest.raises(CellFileError) as ei:
        parse_cell(_mutate("kind: sim.vacuum", "kind: acme.teleporter"), "x.yaml")
    assert [p.path for p in ei.value.problems] == ["devices.1.kind"]
    # options that are not a mapping: said once, not again by the driver's model ("required field is missing")
    for options in ("null", "[arm, robot]"):
        with pytest.raises(CellFileError) as ei:
            parse_cell(_mutate("{arm: robot}", options), "x.yaml")
        assert [(p.path, p.message) for p in ei.value.problems] == [("devices.1.options",
                                                                      "Input should be a valid dictionary")]


def test_file_level_problems_name_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    f = tmp_path / "latin1.yaml"
    f.write_bytes(_mutate("Sealed food", "Scell\xe9 food").encode("latin-1"))
    assert main(["check", str(f)]) == 2
    assert f"{f}:6: (file): not UTF-8 text: byte 0xe9 at column 21" in capsys.readouterr().err
    f = tmp_path / "big.yaml"
    f.write_text(DEMO_TEXT + ("# " + "x" * 98 + "\n") * 100_000)      # 10 MB
    t0 = time.perf_counter()
    assert main(["check", str(f)]) == 2
    assert time.perf_counter() - t0 < 5 and "larger than 512 KiB" in capsys.readouterr().err
    assert main(["check", str(tmp_path)]) == 2
    assert f"{tmp_path}:0: (file): cannot read: is a directory" in capsys.readouterr().err


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_bom_marked_files_are_read(tmp_path: Path, encoding: str):
    f = tmp_path / "bom.yaml"
    f.write_bytes(DEMO_TEXT.encode(encoding))
    assert load_cell(f).cell.name == "packaging_cell"


def test_missing_model_file_is_found_by_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    f = tmp_path / "cell.yaml"
    f.write_text(_mutate("appearance: kimchi", "appearance: kimchi\n    model: models/kimchi.npz"))
    assert main(["check", str(f)]) == 2
    assert f"{f}:15: products.kimchi_tray.model: no such model file" in capsys.readouterr().err
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "kimchi.npz").write_bytes(b"PK")
    assert main(["check", str(f)]) == 2  # the file is there now, but it is no model: said by check, not at run
    assert f"{f}:15: products.kimchi_tray.model: not an inspector model" in capsys.readouterr().err


def test_a_flood_of_problems_is_capped(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    devices = "".join(f"  - {{name: v{i}, kind: sim.vacuum, options: {{arm: nobody}}}}\n" for i in range(300))
    f = tmp_path / "many.yaml"
    f.write_text(_mutate("devices:\n", "devices:\n" + devices))
    assert main(["check", str(f)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 101 and err[-1].endswith("302 problem(s), the first 100 shown"), err[-1]


def test_merge_keys_may_be_overridden_but_keys_not_repeated():
    # `<<: *defaults` then a key of its own is the point of merge keys; it used to be a "duplicate key" error
    text = _mutate("  inspection: {kind: inspection, frame: {x: -0.5, y: 0.6}}\n"
                   "  pick: {kind: pick, frame: {x: 0.45, y: 0.6}}",
                   "  inspection: &st {kind: inspection, frame: {x: -0.5, y: 0.6}}\n"
                   "  pick: {<<: *st, kind: pick, frame: {x: 0.45, y: 0.6}}")
    cfg = parse_cell(text, "merge.yaml")
    assert cfg.stations["pick"].kind == "pick" and cfg.stations["pick"].frame.x == 0.45
    with pytest.raises(CellFileError) as ei:
        parse_cell(text.replace("kind: pick, frame", "kind: pick, kind: pick, frame"), "merge.yaml")
    assert "duplicate key 'kind'" in ei.value.problems[0].message


@pytest.mark.timeout(30)
def test_pipes_devices_and_empty_names_are_refused_without_blocking(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    # a named pipe used to block `axcell check` forever (open + read waits for a writer)
    fifo = tmp_path / "cell.yaml"
    os.mkfifo(fifo)
    assert main(["check", str(fifo)]) == 2
    assert f"{fifo}:0: (file): cannot read: not a regular file" in capsys.readouterr().err
    assert main(["check", os.devnull]) == 2
    assert "not a regular file" in capsys.readouterr().err
    assert main(["check", ""]) == 2
    assert ":0: (file): no file name given" in capsys.readouterr().err
    # the vision model too (np.load on a pipe blocks the same way)
    from cell import cli_vision

    img = tmp_path / "a.png"
    img.write_bytes(b"\x89PNG")
    assert cli_vision.main(["inspect", "--model", str(fifo), str(img), "--json", str(tmp_path / "o.json")]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_unreachable_pick_window_is_named_too():
    # the same file's pick window (line 84) is reported beside the case pattern
    with pytest.raises(CellFileError) as ei:
        load_cell(BAD / "unreachable_pick.yaml")
    assert any(p.path == "process.parallel.1.repeat.sequence.1.with.window"
               and "no point of the pick window can be reached" in p.message and "out of the reach" in p.message
               for p in ei.value.problems)


def test_spawn_off_the_belt_and_eye_upstream_of_spawn_are_refused():
    with pytest.raises(CellFileError) as ei:
        parse_cell(_mutate("spawn_x: -1.1", "spawn_x: -1.5"), "x.yaml")
    assert [p.path for p in ei.value.problems] == ["sim.infeed.spawn_x"]
    with pytest.raises(CellFileError) as ei:
        parse_cell(_mutate("spawn_x: -1.1", "spawn_x: -0.3"), "x.yaml")
    assert [p.path for p in ei.value.problems] == ["process.parallel.0.repeat.sequence.0.with.channel"]
    assert "upstream of where parts appear" in ei.value.problems[0].message


def test_move_target_out_of_reach_is_refused():
    text = _mutate("            with: {station: case_out}\n",
                   "            with: {station: case_out}\n"
                   "          - skill: move\n            with: {pose: {x: 1.25, y: 0.95, z: 0.95}}\n")
    with pytest.raises(CellFileError) as ei:
        parse_cell(text, "x.yaml")
    [p] = ei.value.problems
    assert p.path == "process.parallel.1.repeat.sequence.3.with.pose" and "out of the reach of arm 'robot'" in p.message
    # a reachable one is fine
    parse_cell(text.replace("x: 1.25, y: 0.95, z: 0.95", "x: 0.4, y: 0.6, z: 0.4"), "x.yaml")
    # outside the workspace box: said so
    with pytest.raises(CellFileError) as ei:
        parse_cell(text.replace("z: 0.95", "z: 1.5"), "x.yaml")
    assert "outside the workspace of arm 'robot'" in ei.value.problems[0].message


# --------------------------------------------------------------------------- booleans vs numbers
DEMO = REPO / "launch" / "packaging_cell.yaml"


@pytest.mark.parametrize("old, new, path, words, value", [
    # YAML 1.1 reads yes/no/on/off/true/false as booleans; pydantic used to take True as 1 and False as 0
    ("speed: 0.2}", "speed: true}", "devices.2.options.speed", "expected a number, got a boolean", "(True)"),
    ("jam_probability: 0.01", "jam_probability: on", "devices.5.options.sim.jam_probability",
     "expected a number, got a boolean", "(True)"),
    ("size_mm: [190, 140, 45]", "size_mm: [190, yes, 45]", "products.bulgogi_tray.size_mm.1",
     "expected a number, got a boolean", "(True)"),
    ("workspace: {min: [-0.4, -0.8, -0.05]", "workspace: {min: [-0.4, no, -0.05]",
     "devices.0.options.workspace.min.1", "expected a number, got a boolean", "(False)"),
    ("yaw_deg: 0", "yaw_deg: off", "stations.case_out.frame.yaw_deg", "expected a number, got a boolean", "(False)"),
    ("with: {plane_z: 0.045}", "with: {plane_z: no}", "process.parallel.0.repeat.sequence.1.with.plane_z",
     "expected a number, got a boolean", "(False)"),
    ("seed: 1", "seed: true", "sim.seed", "expected a number, got a boolean", "(True)"),
    # and a boolean field takes a boolean only, not 1/0 or a quoted word
    ("simulate: true", "simulate: 1", "devices.5.options.simulate", "expected a boolean: true or false", "(1)"),
    ("allow_anonymous_read: true", "allow_anonymous_read: 'yes'", "opcua.allow_anonymous_read",
     "expected a boolean: true or false", "('yes')"),
])
def test_a_boolean_is_never_read_as_a_number(old: str, new: str, path: str, words: str, value: str):
    text = DEMO.read_text()
    assert old in text
    with pytest.raises(CellFileError) as ei:
        parse_cell(text.replace(old, new, 1), "c.yaml")
    first = str(ei.value).splitlines()[0]
    assert first.startswith("c.yaml:") and f": {path}: {words}" in first and first.endswith(value), first


def test_booleans_and_numbers_still_read_as_written():
    text = DEMO.read_text()
    cfg = parse_cell(text.replace("allow_anonymous_read: true", "allow_anonymous_read: off")
                     .replace("speed: 0.2}", "speed: 1}"), "c.yaml")
    assert cfg.opcua.allow_anonymous_read is False
    assert cfg.devices[2].options["speed"] == 1


def test_config_model_checks_inside_unions_mappings_and_plain_models():
    from typing import Optional

    from pydantic import BaseModel, ValidationError

    from drivers.configmodel import ConfigModel

    class Plain(BaseModel):
        gain: float = 1.0

    class M(ConfigModel):
        a: Optional[float] = None
        b: dict[str, tuple[float, ...]] = {}
        c: Plain = Plain()
        d: bool | None = None
        e: float | str = 0.0
        f: int | bool = 0

    assert M(a=None, b={"k": (1, 2.5)}, c={"gain": 2}, d=True, e="x", f=True).f is True
    for kw, where in [({"a": True}, "a"), ({"b": {"k": [1.0, False]}}, "at k.1:"), ({"c": {"gain": True}}, "at gain:"),
                      ({"d": 0}, "true or false"), ({"e": True}, "got a boolean")]:
        with pytest.raises(ValidationError) as ei:
            M(**kw)
        assert "bool_number_mixup" in str(ei.value.errors()[0]["type"]) and where in str(ei.value), (kw, str(ei.value))


@pytest.mark.parametrize("old, new, path, words", [
    # YAML 1.1 reads 1:30 as 90 (base 60) and 017 as 15 (octal): refused, not silently converted
    ("seed: 1", "seed: 1:30", "sim.seed", "base-60 number"),
    ("speed: 0.2}", "speed: 1:12}", "devices.2.options.speed", "base-60 number"),
    ("rate_ppm: 15", "rate_ppm: 015", "sim.infeed.rate_ppm", "octal number"),
])
def test_yaml_11_number_spellings_are_refused(old: str, new: str, path: str, words: str):
    text = DEMO.read_text()
    assert old in text
    with pytest.raises(CellFileError) as ei:
        parse_cell(text.replace(old, new, 1), "c.yaml")
    first = str(ei.value).splitlines()[0]
    assert first.startswith("c.yaml:") and f": {path}: " in first and words in first, first


def test_zero_padded_floats_and_quoted_times_still_read():
    text = DEMO.read_text()
    cfg = parse_cell(text.replace("speed: 0.2}", "speed: 00.2}").replace("seed: 1\n", "seed: 0\n", 1), "c.yaml")
    assert cfg.devices[2].options["speed"] == 0.2 and cfg.sim.seed == 0
