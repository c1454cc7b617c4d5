"""Every snippet in README.md, docs/*.md, configs/README.md and the package READMEs runs.

Each Markdown file is a session, as a reader follows it: its ```python blocks
run in order in one namespace, and the `teamvla` lines of its ```bash blocks
run through the real command, all in a fresh temporary directory that holds a
copy of configs/, a tiny recorded dataset at data/episodes and a tiny trained
run at runs/x. A new Markdown file is picked up without registering it.

Shell lines run with tiny sizes: the rewrite in :func:`tiny_argv` caps episode
counts, training steps, model and evaluation sizes, so a line documented with
`trainer.max_steps=2000` runs two steps. Lines that need hardware this machine
lacks (`--device cuda`, `torchrun`) are parsed by the real parser but not run.
Other shell lines (pytest, nox, benchmarks) are not commands of ours and are left to CI.

A block that cannot run by design is preceded by ``<!-- snippet: skip REASON -->``;
the marker is meant to be rare, and this test lists where it is used.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SKIP_MARK = re.compile(r"<!--\s*snippet:\s*skip\b(.*?)-->")
FENCE = re.compile(r"^([ \t]*)```(\w+)[^\n]*\n(.*?)^\1```", re.M | re.S)
SHELL = {"bash", "sh", "shell", "console"}


def markdown_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "configs" / "README.md"]
    files += sorted((REPO / "docs").rglob("*.md"))
    files += sorted((REPO / "packages").glob("*/README.md"))
    return [f for f in files if f.is_file()]


@dataclass
class Snippet:
    lang: str
    code: str
    line: int
    skip: str | None


def snippets(path: Path) -> list[Snippet]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        lang = m.group(2).lower()
        if lang != "python" and lang not in SHELL:
            continue
        before = text[: m.start()].rstrip().splitlines()[-1:] or [""]
        mark = SKIP_MARK.search(before[0])
        indent = m.group(1)
        code = "\n".join(
            ln[len(indent) :] if ln.startswith(indent) else ln for ln in m.group(3).splitlines()
        )
        out.append(
            Snippet(
                lang,
                code,
                text.count("\n", 0, m.start()) + 1,
                mark.group(1).strip() if mark else None,
            )
        )
    return out


# --------------------------------------------------------------------------- shell lines

TINY_TRAIN = [
    "trainer.max_steps=3",
    "trainer.val_every=0",
    "trainer.ckpt_every=0",
    "trainer.num_threads=1",
    "dataset.batch_size=8",
    "dataset.num_workers=0",
    "model.image_size=16",
    "model.conv_channels=[8,16]",
    "model.conv_strides=[2,2]",
    "model.hidden_dim=32",
]
TINY_EVAL = [
    "eval.episodes_per_task=1",
    "eval.demo_episodes_per_task=2",
    "eval.max_steps=8",
    "eval.offline_batches=1",
]


def shell_commands(code: str) -> list[str]:
    """The shell lines of a block: continuations joined, comments and blank lines dropped."""
    joined = code.replace("\\\n", " ")
    lines = []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _set_option(argv: list[str], option: str, value: str) -> None:
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]


def tiny_argv(line: str) -> tuple[list[str] | None, bool]:
    """(argv for teamvla's main with tiny sizes, run it?) for a shell line; (None, _) if not ours."""
    words = shlex.split(re.sub(r"\[-[^\]]*\]", "", line))  # [--optional args] are optional
    if words[:2] == ["uv", "run"]:
        words = words[2:]
    if words and words[0] == "torchrun":
        return words[words.index("train") :], False  # parsed only: one machine, no second process
    if not words or words[0] != "teamvla":
        return None, False
    argv = words[1:]
    command = argv[0] if argv else ""
    runnable = not ("--device" in argv and argv[argv.index("--device") + 1].startswith("cuda"))
    if command == "synth":
        _set_option(argv, "--episodes-per-task", "1")
        _set_option(argv, "--image-size", "16")
        argv.append("--no-progress")
    elif command == "train":
        argv += [*TINY_TRAIN, "--no-progress"]
    elif command == "demo":
        if "--quick" not in argv:
            argv.append("--quick")
        argv += [*TINY_TRAIN, *TINY_EVAL, "--no-progress"]
    elif command == "eval":
        _set_option(argv, "--episodes-per-task", "1")
        argv += ["eval.max_steps=8", "eval.offline_batches=1", "--no-progress"]
    return argv, runnable


# --------------------------------------------------------------------------- workspace


@pytest.fixture(scope="session")
def doc_assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset and a tiny trained run, made once and copied into each file's workspace."""
    from teamvla_data.sim import generate_dataset
    from teamvla_schema.config import load_config

    base = tmp_path_factory.mktemp("doc-assets")
    generate_dataset(
        base / "data" / "episodes",
        episodes_per_task=3,
        seed=0,
        workers=1,
        image_size=24,
        progress=False,
    )
    pytest.importorskip("torch")
    from teamvla_train.engine import train

    roots = f"dataset.roots=[{base / 'data' / 'episodes'}]"
    cfg = load_config(REPO / "configs" / "train_bc.yaml", [roots, *TINY_TRAIN])
    train(cfg, run_dir=base / "runs" / "x", progress=False)
    return base


def _workspace(tmp_path: Path, assets: Path) -> Path:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(assets / "data", tmp_path / "data")
    shutil.copytree(assets / "runs", tmp_path / "runs")
    return tmp_path


DOCS = markdown_files()


def test_the_skip_marker_stays_rare() -> None:
    skipped = [(f.name, s.line, s.skip) for f in DOCS for s in snippets(f) if s.skip is not None]
    total = sum(len(snippets(f)) for f in DOCS)
    assert len(skipped) <= max(2, total // 10), skipped
    assert all(reason for _, _, reason in skipped), f"a skip marker without its reason: {skipped}"


@pytest.mark.parametrize("doc", DOCS, ids=[str(f.relative_to(REPO)) for f in DOCS])
def test_snippets_of(doc: Path, tmp_path: Path, doc_assets: Path, monkeypatch) -> None:
    from teamvla_schema.cli import build_parser, main, parse_args

    blocks = [s for s in snippets(doc) if s.skip is None]
    if not blocks:
        pytest.skip("no snippets")
    monkeypatch.chdir(_workspace(tmp_path, doc_assets))
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in blocks:
        where = f"{doc.relative_to(REPO)}:{block.line}"
        if block.lang == "python":
            try:
                exec(compile(block.code, where, "exec"), namespace)
            except Exception as exc:
                raise AssertionError(f"python snippet at {where} failed: {exc!r}") from exc
            continue
        for line in shell_commands(block.code):
            argv, runnable = tiny_argv(line)
            if argv is None:
                continue
            absolute = [a for a in argv if a.startswith("/")]
            assert not absolute, f"{where}: use relative paths in documented commands: {absolute}"
            if not runnable:
                parse_args(build_parser(), argv)  # the line is valid; it is not run here
                continue
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
            assert code == 0, f"shell line at {where} failed ({code}): {line}\n  ran: {argv}"
    assert os.getcwd() == str(tmp_path)
