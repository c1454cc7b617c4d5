"""The `teamvla` command as people type it: overrides anywhere, --version, one-line user errors."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from teamvla_schema.cli import main

REPO = Path(__file__).resolve().parents[1]
TRAIN_BC = str(REPO / "configs" / "train_bc.yaml")


def _show(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["config", "show", *argv]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [TRAIN_BC, "trainer.max_steps=7", "--no-validate", "optim.lr=0.5"],
        [TRAIN_BC, "--no-validate", "trainer.max_steps=7", "optim.lr=0.5"],
        ["--no-validate", TRAIN_BC, "--trainer.max_steps=7", "--optim.lr=0.5"],
        [TRAIN_BC, "--optim.lr=0.5", "--no-validate", "trainer.max_steps=7"],
    ],
)
def test_overrides_anywhere_after_the_subcommand(capsys, argv) -> None:
    out = _show(capsys, *argv)
    assert "  max_steps: 7\n" in out
    assert "  lr: 0.5\n" in out


def test_later_overrides_win_in_the_order_typed(capsys) -> None:
    out = _show(capsys, TRAIN_BC, "trainer.max_steps=7", "--no-validate", "--trainer.max_steps=9")
    assert "  max_steps: 9\n" in out


def test_version_lists_every_installed_package(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("teamvla-data", "teamvla-schema", "teamvla-train"):
        assert f"{name} {version(name)}" in lines
    assert lines == sorted(lines)


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code  # type: ignore[assignment]
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "data"
    assert (
        main(
            [
                "synth",
                "--tasks",
                "lift",
                "--episodes-per-task",
                "1",
                "--image-size",
                "16",
                "--out",
                str(root),
                "--no-progress",
            ]
        )
        == 0
    )
    return root


def test_user_errors_are_one_line_with_exit_2(capsys, tmp_path, tiny_root) -> None:
    episode = next(tiny_root.rglob("*.npz"))
    cases = {
        ("synth", "--tasks", "lfit", "--out", str(tmp_path / "x")): "did you mean 'lift'?",
        ("synth", "--out", str(tmp_path / "x"), "--episodes-per-task", "many"): "'many'",
        ("train", "--config", str(tmp_path / "missing.yaml")): "missing.yaml",
        ("train", "--config", str(tmp_path)): str(tmp_path),
        ("train", "--config", TRAIN_BC, "trainer.max_steps=abc"): "trainer.max_steps",
        (
            "train",
            "--config",
            TRAIN_BC,
            f"dataset.roots=[{tiny_root}]",
            "dataset.tasks=[lfit]",
            "--out",
            str(tmp_path / "run"),
        ): "did you mean 'lift'",
        ("validate", str(tmp_path / "nowhere")): "nowhere",
        ("inspect", str(tmp_path / "nothing.npz")): "nothing.npz",
        ("render-episode", str(tiny_root), "-o", str(tmp_path / "a.png")): str(tiny_root),
        ("render-episode", str(episode), "-o", str(tmp_path)): str(tmp_path),
        ("demo", "--model", "msg_pasing"): "did you mean 'msg_passing'?",
        ("train", "--config", TRAIN_BC, "--bogus"): "--bogus",
    }
    for argv, expected in cases.items():
        line = _error(capsys, list(argv))
        assert expected in line, (argv, line)


def test_debug_shows_the_traceback(tmp_path) -> None:
    argv = ["-m", "teamvla_schema.cli", "validate", str(tmp_path / "nowhere")]
    plain = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
    debug = subprocess.run(
        [sys.executable, *argv, "--debug"], capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr
