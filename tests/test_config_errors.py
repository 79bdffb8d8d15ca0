"""Bad cell files get located, one-line errors (FILE:LINE: path: message (value)) and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
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
