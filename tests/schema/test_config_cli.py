"""``teamvla config show FILE [overrides...]``."""

from __future__ import annotations

import subprocess
import sys

import pytest
from teamvla_schema.cli import main
from teamvla_schema.config import parse_yaml


@pytest.fixture
def cfgdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "common.yaml").write_text("run:\n  seed: 0\n  device: cpu\n")
    (tmp_path / "exp.yaml").write_text(
        "extends: [common.yaml]\nrun:\n  seed: 5\n  output_dir: out\n"
    )
    return tmp_path


def show(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["config", "show", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_show_prints_the_validated_config_with_defaults(cfgdir, capsys):
    code, out, err = show(capsys, "exp.yaml", "run.device=cuda:1")
    assert code == 0, err
    assert parse_yaml(out) == {
        "run": {"seed": 5, "log_level": "INFO", "device": "cuda:1", "output_dir": "out"}
    }
    assert out.startswith("run:\n  seed: 5\n")


def test_show_sources_annotates_every_value(cfgdir, capsys):
    code, out, _ = show(capsys, "--sources", "exp.yaml", "run.device=cuda:1")
    assert code == 0
    assert out.splitlines() == [
        "# files: common.yaml, exp.yaml + overrides",
        "run:",
        "  seed: 5  # exp.yaml",
        "  log_level: INFO  # default",
        "  device: cuda:1  # override",
        "  output_dir: out  # exp.yaml",
    ]
    assert parse_yaml(out)["run"]["device"] == "cuda:1"


def test_options_may_follow_the_overrides(cfgdir, capsys):
    code, out, _ = show(capsys, "exp.yaml", "run.seed=2", "--sources")
    assert code == 0 and "  seed: 2  # override" in out


def test_invalid_config_exits_2_with_the_message(cfgdir, capsys):
    code, out, err = show(capsys, "exp.yaml", "run.sed=1")
    assert code == 2
    assert out == ""
    assert err.strip() == "error: override: run.sed: unknown key; did you mean 'run.seed'?"


def test_invalid_file_value_exits_2_naming_the_file(cfgdir, capsys):
    (cfgdir / "common.yaml").write_text("run:\n  device: gpu\n")
    code, _, err = show(capsys, "exp.yaml")
    assert code == 2
    assert err.startswith(
        "error: common.yaml: run.device: expected a device 'cpu', 'cuda' or 'cuda:N'"
    )
    assert "received 'gpu'" in err


def test_no_validate_prints_the_merged_config_as_is(cfgdir, capsys):
    code, out, _ = show(
        capsys, "--no-validate", "--sources", "exp.yaml", "run.sed=1", "extra.key=[a, b]"
    )
    assert code == 0
    assert "  sed: 1  # override" in out
    assert "log_level" not in out  # no defaults filled in
    assert parse_yaml(out) == {
        "run": {"seed": 5, "device": "cpu", "output_dir": "out", "sed": 1},
        "extra": {"key": ["a", "b"]},
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["missing.yaml"],
            "error: missing.yaml: cannot read config file: No such file or directory",
        ),
        (
            ["exp.yaml", "run.seed"],
            "error: override: bad override syntax: expected dotted.key=value",
        ),
    ],
)
def test_load_errors_exit_2(cfgdir, capsys, argv, message):
    code, _, err = show(capsys, *argv)
    assert code == 2
    assert err.startswith(message)


def test_real_process_exit_code(cfgdir):
    proc = subprocess.run(
        [sys.executable, "-m", "teamvla_schema.cli", "config", "show", "exp.yaml", "run.seed=-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "override: run.seed: expected a value >= 0, received -1" in proc.stderr
