"""The trainer under hostile conditions: a lost or corrupt ``latest`` pointer, corrupt or
deleted checkpoints, a config changed between runs, a process killed mid-write, a full disk.

The promise under test: ``--resume auto`` never starts over on top of a run's checkpoints
(and never prunes them), keep-last-K deletes only names of the run's own history, a failed
or killed checkpoint write leaves the previous checkpoint and pointer intact, and every
refusal says what it found and what to do.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

sys.path.append(str(Path(__file__).resolve().parents[1] / "train"))

import teamvla_schema.checkpoint as schema_checkpoint
from teamvla_schema import SchemaError
from teamvla_schema.atomic import is_temporary
from teamvla_schema.config import dump_yaml
from teamvla_train.config import resolve_train_config
from teamvla_train.engine import checkpointing as ckpt_io
from teamvla_train.engine import train
from teamvla_train.engine.checkpointing import (
    CheckpointWriteError,
    checkpoint_step,
    load_resumable,
    publish_checkpoint,
    read_latest,
)
from teamvla_train.engine.metrics import read_metrics
from teamvla_train.engine.optim import lr_multiplier
from train_testlib import REPO, tiny_config, write_tiny_dataset

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A finished 6-step run with checkpoints at steps 2, 4 and 6 (keep_last 3)."""
    base = tmp_path_factory.mktemp("hostile_train")
    root = write_tiny_dataset(base / "episodes")
    cfg = tiny_config(
        root,
        trainer={"max_steps": 6, "ckpt_every": 2, "keep_last": 3, "val_every": 0, "log_every": 2},
    )
    train(cfg, run_dir=base / "run", progress=False)
    return base / "run", cfg


@pytest.fixture
def run(base_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A private copy of :func:`base_run` to damage."""
    src, cfg = base_run
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst, copy.deepcopy(cfg)


def ckpt_dir_of(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "multi"


def by_step(ckpt_dir: Path) -> dict[int, Path]:
    """Checkpoint files that load their header, by step."""
    out = {}
    for p in ckpt_dir.glob("*.ckpt"):
        with contextlib.suppress(SchemaError):
            out[checkpoint_step(p)] = p
    return out


def digests(directory: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``directory`` (hidden files included)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def with_trainer(cfg: dict[str, Any], **trainer: Any) -> dict[str, Any]:
    out = copy.deepcopy(cfg)
    out["trainer"].update(trainer)
    return out


def last_start_event(run_dir: Path) -> dict[str, Any]:
    events = [
        json.loads(line)
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if '"event"' in line
    ]
    return [e for e in events if e["event"] in ("start", "resume")][-1]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


# ----------------------------------------------------------------------------- 1. lost pointer


def _pointer_missing(d: Path, run_dir: Path) -> None:
    (d / "latest").unlink()


def _pointer_garbage(d: Path, run_dir: Path) -> None:
    (d / "latest").write_bytes(b"\x00\xff not json at all")


def _pointer_truncated(d: Path, run_dir: Path) -> None:
    text = (d / "latest").read_text()
    (d / "latest").write_text(text[: len(text) // 2])


def _pointer_wrong_types(d: Path, run_dir: Path) -> None:
    (d / "latest").write_text(json.dumps({"checkpoint": 6, "step": "six", "history": "abc"}))


def _pointer_traversal(d: Path, run_dir: Path) -> None:
    # A pointer whose history reaches outside the checkpoint directory.
    pointer = json.loads((d / "latest").read_text())
    pointer["history"] = ["../../../victim.txt", *pointer["history"]]
    (d / "latest").write_text(json.dumps(pointer))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "damage",
    [
        _pointer_missing,
        _pointer_garbage,
        _pointer_truncated,
        _pointer_wrong_types,
        _pointer_traversal,
    ],
    ids=["missing", "garbage", "truncated", "wrong-types", "path-traversal"],
)
def test_auto_resume_without_a_usable_pointer_continues_from_the_newest_checkpoint(
    run: tuple[Path, dict[str, Any]], damage: Any
) -> None:
    run_dir, cfg = run
    d = ckpt_dir_of(run_dir)
    victim = run_dir.parent / "victim.txt"
    victim.write_text("not a checkpoint")
    before = {step: hashlib.sha256(p.read_bytes()).hexdigest() for step, p in by_step(d).items()}
    assert sorted(before) == [2, 4, 6]
    damage(d, run_dir)

    result = train(with_trainer(cfg, max_steps=8), run_dir=run_dir, resume="auto", progress=False)

    assert last_start_event(run_dir)["event"] == "resume"
    assert last_start_event(run_dir)["step"] == 6
    assert result.steps == 8
    files = by_step(d)
    # Nothing of the earlier run was overwritten or pruned: the pointer that listed the
    # run's history was unusable, so no older file is known to belong to it.
    assert sorted(files) == [2, 4, 6, 8]
    for step, digest in before.items():
        assert hashlib.sha256(files[step].read_bytes()).hexdigest() == digest
    assert victim.read_text() == "not a checkpoint"
    pointer = read_latest(d)
    assert pointer is not None and pointer["step"] == 8
    assert pointer["history"] == [files[6].name, files[8].name]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", ["deleted", "truncated", "garbage"])
def test_auto_resume_when_latest_names_a_bad_checkpoint(
    run: tuple[Path, dict[str, Any]], damage: str
) -> None:
    run_dir, cfg = run
    d = ckpt_dir_of(run_dir)
    files = by_step(d)
    newest = files[6]
    kept_4 = files[4].read_bytes()
    if damage == "deleted":
        newest.unlink()
    elif damage == "truncated":
        truncate(newest)
    else:
        newest.write_bytes(os.urandom(4096))

    train(with_trainer(cfg, max_steps=8), run_dir=run_dir, resume="auto", progress=False)

    assert last_start_event(run_dir)["step"] == 4  # the newest checkpoint that loads
    after = by_step(d)
    # Steps 6 and 8 were trained again; keep_last 3 pruned step 2, a name of the run's own history.
    assert sorted(after) == [4, 6, 8]
    assert after[4].read_bytes() == kept_4
    load_resumable(after[6])  # the damaged file was replaced by a good one
    pointer = read_latest(d)
    assert pointer is not None and pointer["step"] == 8


@pytest.mark.timeout(120)
@pytest.mark.parametrize("files", ["all-corrupt", "none"])
def test_auto_resume_refuses_when_no_checkpoint_loads_and_changes_nothing(
    run: tuple[Path, dict[str, Any]], files: str
) -> None:
    run_dir, cfg = run
    d = ckpt_dir_of(run_dir)
    (d / "latest").write_text("{not json")
    for p in d.glob("*.ckpt"):
        if files == "none":
            p.unlink()
        else:
            truncate(p)
    before = digests(run_dir)

    with pytest.raises(SchemaError) as info:
        train(with_trainer(cfg, max_steps=8), run_dir=run_dir, resume="auto", progress=False)

    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(d))
    assert "cannot resume" in message and "'latest'" in message
    if files == "none":
        assert "there are no checkpoint files" in message
    else:
        assert "none of the 3 checkpoint file(s) loads" in message
        assert "truncated" in message
    assert "nothing was changed" in message and "--resume PATH" in message and "--out" in message
    assert digests(run_dir) == before


@pytest.mark.timeout(120)
def test_a_fresh_run_refuses_to_overwrite_an_earlier_runs_checkpoints(
    run: tuple[Path, dict[str, Any]],
) -> None:
    run_dir, cfg = run
    before = digests(run_dir)
    with pytest.raises(
        SchemaError, match="already holds the checkpoints of an earlier run"
    ) as info:
        train(cfg, run_dir=run_dir, progress=False)
    assert "--resume auto" in str(info.value) and "--out" in str(info.value)
    assert digests(run_dir) == before


def test_publish_prunes_only_its_own_history(tmp_path: Path) -> None:
    d = tmp_path / "ckpts"
    d.mkdir()
    names = [ckpt_io.checkpoint_name(epoch=1, step=s) for s in (1, 2, 3, 4, 5)]
    for n in names[:3]:
        (d / n).write_text("earlier run")
    (d / "latest").write_text(
        json.dumps({"checkpoint": names[2], "step": 3, "epoch": 0, "history": names[:3]})
    )
    # A run that did not continue from the pointer's checkpoint starts its own history.
    (d / names[3]).write_text("new run")
    assert publish_checkpoint(d, names[3], step=4, epoch=0, keep_last=1, parent=None) == []
    assert all((d / n).exists() for n in names[:4])
    # Its next checkpoint prunes its own previous one, and only that.
    (d / names[4]).write_text("new run")
    assert publish_checkpoint(d, names[4], step=5, epoch=0, keep_last=1, parent=names[3]) == [
        names[3]
    ]
    assert sorted(p.name for p in d.glob("*.ckpt")) == [*names[:3], names[4]]
    # A history entry outside the directory makes the pointer corrupt: nothing is deleted.
    victim = tmp_path / "victim.txt"
    victim.write_text("x")
    (d / "latest").write_text(
        json.dumps(
            {"checkpoint": names[4], "step": 5, "epoch": 0, "history": ["../victim.txt", names[0]]}
        )
    )
    with pytest.raises(SchemaError, match="corrupt checkpoint pointer: 'history'"):
        read_latest(d)
    extra = ckpt_io.checkpoint_name(epoch=2, step=6)
    (d / extra).write_text("new run")
    assert publish_checkpoint(d, extra, step=6, epoch=1, keep_last=1, parent=names[4]) == []
    assert victim.exists() and (d / names[0]).exists()


# ----------------------------------------------------------------------------- 2. config change


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("section", "change", "expected"),
    [
        ("model", {"hidden_dim": 32}, "model.hidden_dim 64 -> 32"),
        ("model", {"name": "msg_passing"}, 'model.name "single_brain" -> "msg_passing"'),
    ],
    ids=["hidden_dim", "name"],
)
def test_auto_resume_after_a_config_change_names_the_keys_and_the_ways_out(
    run: tuple[Path, dict[str, Any]], section: str, change: dict[str, Any], expected: str
) -> None:
    run_dir, cfg = run
    # max_steps, log_every, num_threads and device may change on resume: not listed.
    changed = with_trainer(cfg, max_steps=8, log_every=1, num_threads=1)
    changed[section].update(change)
    before = digests(run_dir)
    with pytest.raises(SchemaError) as info:
        train(changed, run_dir=run_dir, resume="auto", progress=False, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert f"cannot resume: 1 config key(s) differ from the checkpoint's: {expected}." in message
    assert "--out DIR" in message and "delete this one" in message
    assert "trainer.resume_force=true" in message
    assert digests(run_dir) == before

    # Forcing a change of the weights' shapes is refused too, naming the tensors.
    forced = with_trainer(changed, resume_force=True)
    with pytest.raises(SchemaError, match=r"not even with trainer\.resume_force") as info:
        train(forced, run_dir=run_dir, resume="auto", progress=False)
    assert "tensor(s)" in str(info.value) and expected in str(info.value)
    assert digests(run_dir) == before


@pytest.mark.timeout(120)
def test_resume_force_continues_with_the_new_values_when_shapes_fit(
    run: tuple[Path, dict[str, Any]],
) -> None:
    run_dir, cfg = run
    changed = with_trainer(cfg, max_steps=8, resume_force=True)
    changed["optim"]["lr"] = 1e-4
    changed["model"]["dropout"] = 0.2
    result = train(changed, run_dir=run_dir, resume="auto", progress=False)
    assert result.steps == 8 and last_start_event(run_dir)["step"] == 6
    # The logged lr follows the new peak lr and schedule, not the checkpoint's.
    sched = resolve_train_config(changed).scheduler
    lrs = {r["step"]: r["lr"] for r in read_metrics(run_dir / "metrics.jsonl")}
    assert lrs[8] == pytest.approx(1e-4 * lr_multiplier(8, cfg=sched, total_steps=8))
    saved = load_resumable(by_step(ckpt_dir_of(run_dir))[8])["config"]
    assert saved["optim"]["lr"] == 1e-4 and saved["model"]["dropout"] == 0.2


# ----------------------------------------------------------------------------- 3. disk full, kill


def _fail_on_call(n: int, exc: OSError) -> Any:
    """A replacement for ``atomic_write`` whose ``n``-th use writes a little, then raises ``exc``."""
    real = schema_checkpoint.atomic_write
    calls = {"n": 0}

    class _Full:
        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def write(self, data: Any) -> int:
            self.fh.write(bytes(memoryview(data))[:100])
            raise exc

    @contextlib.contextmanager
    def atomic_write(path: Any, **kwargs: Any) -> Iterator[Any]:
        calls["n"] += 1
        with real(path, **kwargs) as fh:
            yield _Full(fh) if calls["n"] == n else fh

    return atomic_write


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["checkpoint", "pointer"])
def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    root = write_tiny_dataset(tmp_path / "episodes", episodes_per_task=2)
    cfg = tiny_config(
        root, trainer={"max_steps": 4, "ckpt_every": 2, "val_every": 0, "log_every": 2}
    )
    run_dir = tmp_path / "run"
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if where == "checkpoint":
        monkeypatch.setattr(schema_checkpoint, "atomic_write", _fail_on_call(2, enospc))
    else:
        real_text = ckpt_io.atomic_write_text
        calls = {"n": 0}

        def atomic_write_text(path: Any, text: str, **kwargs: Any) -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise enospc
            real_text(path, text, **kwargs)

        monkeypatch.setattr(ckpt_io, "atomic_write_text", atomic_write_text)

    with pytest.raises(CheckpointWriteError) as info:
        train(cfg, run_dir=run_dir, progress=False)

    d = ckpt_dir_of(run_dir)
    first = by_step(d)[2].name
    message = str(info.value)
    assert "No space left on device [ENOSPC]" in message
    assert f"the previous checkpoint {first} and the 'latest' pointer are unchanged" in message
    assert "free disk space" in message and "--resume auto" in message
    if where == "checkpoint":
        assert re.match(re.escape(str(d)) + r"/epoch_\d{4}_step_00000004\.ckpt: ", message)
        assert "no partial file was left" in message
        assert sorted(p.name for p in d.iterdir()) == [first, "latest"]  # no temporary file
    else:
        assert "could not update the 'latest' pointer" in message
        assert not [p for p in d.iterdir() if is_temporary(p)]
    pointer = read_latest(d)
    assert pointer is not None and pointer["checkpoint"] == first
    load_resumable(d / first)

    monkeypatch.undo()
    result = train(cfg, run_dir=run_dir, resume="auto", progress=False)
    assert last_start_event(run_dir)["step"] == 2 and result.steps == 4
    pointer = read_latest(d)
    assert pointer is not None and pointer["step"] == 4


_CHILD_STALLS_MID_WRITE = """
import contextlib, json, os, sys, time
import teamvla_schema.checkpoint as sc
from teamvla_train.engine import train
from teamvla_train.engine.optim import lr_multiplier

cfg, run_dir, marker = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
real = sc.atomic_write
calls = {"n": 0}

class Stall:
    # Writes the header and part of the first tensor, says so, and waits to be killed.
    def __init__(self, fh):
        self.fh = fh
        self.calls = 0
    def write(self, data):
        self.calls += 1
        if self.calls < 3:
            return self.fh.write(data)
        self.fh.write(bytes(memoryview(data))[: max(1, len(memoryview(data).cast("B")) // 2)])
        self.fh.flush()
        os.fsync(self.fh.fileno())
        with open(marker, "w") as m:
            m.write("mid-write")
        time.sleep(600)

@contextlib.contextmanager
def stalling(path, **kwargs):
    calls["n"] += 1
    with real(path, **kwargs) as fh:
        yield Stall(fh) if calls["n"] == 2 else fh

sc.atomic_write = stalling
train(cfg, run_dir=run_dir, progress=False)
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_mid_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "episodes", episodes_per_task=2)
    cfg = tiny_config(
        root, trainer={"max_steps": 4, "ckpt_every": 2, "val_every": 0, "log_every": 2}
    )
    run_dir = tmp_path / "run"
    marker = tmp_path / "mid-write"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_STALLS_MID_WRITE, json.dumps(cfg), str(run_dir), str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), child.stderr.read().decode() if child.poll() is not None else ""
        d = ckpt_dir_of(run_dir)
        partial = [p for p in d.iterdir() if is_temporary(p)]
        assert len(partial) == 1 and partial[0].stat().st_size > 1000  # really mid-write
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        assert child.stderr is not None
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    first = by_step(d)[2].name
    visible = sorted(p.name for p in d.iterdir() if not p.name.startswith("."))
    assert visible == [first, "latest"]  # no half checkpoint under a real name
    pointer = read_latest(d)
    assert pointer is not None and pointer["checkpoint"] == first and pointer["step"] == 2
    load_resumable(d / first)

    result = train(cfg, run_dir=run_dir, resume="auto", progress=False)
    assert last_start_event(run_dir)["step"] == 2 and result.steps == 4
    assert sorted(by_step(d)) == [2, 4]
    # The killed writer's temporary file was cleaned up by the resumed run.
    assert not [p for p in d.iterdir() if is_temporary(p)]


_CHILD_WITH_FILE_SIZE_LIMIT = """
import resource, runpy, signal, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
sys.argv = ["teamvla", *sys.argv[2:]]
runpy.run_module("teamvla_schema.cli", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE / SIGXFSZ")
def test_file_size_limit_while_checkpointing_fails_clearly_and_resumes(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "episodes", episodes_per_task=2)
    cfg = tiny_config(
        root, trainer={"max_steps": 2, "ckpt_every": 2, "val_every": 0, "log_every": 2}
    )
    run_dir = tmp_path / "run"
    train(cfg, run_dir=run_dir, progress=False)
    d = ckpt_dir_of(run_dir)
    first = by_step(d)[2]
    before = digests(d)

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_yaml(cfg))
    limit = first.stat().st_size // 2  # the next checkpoint cannot be written; logs can
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD_WITH_FILE_SIZE_LIMIT,
            str(limit),
            "train",
            "--config",
            str(cfg_path),
            "--out",
            str(run_dir),
            "--resume",
            "auto",
            "--no-progress",
            "trainer.max_steps=4",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=200,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert "could not write the checkpoint of step 4 (File too large [EFBIG])" in errors[0]
    assert f"previous checkpoint {first.name} and the 'latest' pointer are unchanged" in errors[0]
    assert "--resume auto" in errors[0]
    assert digests(d) == before  # same checkpoint, same pointer, no temporary file

    result = train(with_trainer(cfg, max_steps=4), run_dir=run_dir, resume="auto", progress=False)
    assert last_start_event(run_dir)["step"] == 2 and result.steps == 4


# ----------------------------------------------------------------------------- 4. progress lines


@pytest.mark.timeout(120)
@pytest.mark.parametrize("progress", [False, True], ids=["no-progress", "not-a-tty"])
def test_without_a_progress_bar_a_plain_line_every_log_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], progress: bool
) -> None:
    root = write_tiny_dataset(tmp_path / "episodes", episodes_per_task=2)
    cfg = tiny_config(
        root, trainer={"max_steps": 4, "ckpt_every": 0, "val_every": 0, "log_every": 2}
    )
    train(cfg, run_dir=tmp_path / "run", progress=progress)  # capsys: stderr is not a TTY
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    pattern = r"step {}/4 \({}%\)  epoch \d+  loss \d+\.\d{{4}}  \d+\.\d\d steps/s  eta \d+s"
    assert re.fullmatch(pattern.format(2, 50), lines[0]), lines
    assert re.fullmatch(pattern.format(4, 100), lines[1]), lines
    assert re.fullmatch(r"step 4/4  val_loss \d+\.\d{4}", lines[2]), lines
    assert len(lines) == 3
    assert "\r" not in err and "it/s" not in err  # no progress bar drawn
