"""Hostile and unlucky manifests, column caches and dataset roots (the reliability sweep).

Every case ends in a correct rebuild or a clear ``SchemaError`` naming the
file or directory, in bounded time, never in silently wrong batches. Cases
already covered elsewhere (incremental add/change/remove, corrupt manifest
JSON, truncated cache column, failed manifest write, read-only roots,
concurrent cache builders) live in tests/data/test_data_manifest.py and
test_data_dataset.py.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import teamvla_data.columns as columns_mod
from data_testlib import SPECS, write_episode, write_many
from teamvla_data import MultiTaskDataset
from teamvla_data import batch as B
from teamvla_data.index import EpisodeIndex
from teamvla_data.manifest import (
    EPISODE_COLUMNS,
    load_manifest,
    manifest_path,
    update_manifest,
)
from teamvla_schema import SchemaError
from teamvla_schema.cli import main as cli_main

pytestmark = pytest.mark.timeout(30)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Uncompressed episodes, so that a rewrite with other values keeps the exact file size."""
    out = tmp_path / "episodes"
    write_many(out, SPECS[:6], compress=False)
    return out


def everything(ds: MultiTaskDataset) -> dict[str, Any]:
    return ds.__getitems__(list(range(len(ds))))


def same_batches(x: dict[str, Any], y: dict[str, Any]) -> bool:
    return all(np.array_equal(np.asarray(x[k]), np.asarray(y[k])) for k in x)


def summary(records: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (r.path, r.task, r.episode_id, r.num_steps, r.success, r.error, sorted(r.fields.items()))
        for r in records
    ]


def keep_times(path: Path, st: os.stat_result) -> None:
    """Put the access and modification times back, as a careless copy tool or a hostile user would."""
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# --------------------------------------------------------------------------- edited manifests


def _edit(doc: dict[str, Any], how: str) -> str | bytes:
    rows = doc["episodes"]  # one row per file: see teamvla_data.manifest.EPISODE_COLUMNS
    col = {name: i for i, name in enumerate(EPISODE_COLUMNS)}
    if how == "size-wrong-type":
        rows[0][col["size"]] = "big"
    elif how == "steps-edited":
        rows[0][col["num_steps"]] += 1  # well-typed, plausible, wrong
    elif how == "layout-swapped":
        bogus = json.loads(json.dumps(doc["layouts"][0]))
        bogus["rgb_a"]["shape"] = [32, 32, 3]
        doc["layouts"].append(bogus)
        rows[1][col["layout"]] = len(doc["layouts"]) - 1
    elif how == "layout-negative":
        doc["layouts"].append(doc["layouts"][0])
        rows[1][col["layout"]] = -5
    elif how == "path-traversal":
        rows[0][col["path"]] = "../../outside.npz"
    elif how == "episodes-not-a-list":
        doc["episodes"] = {"a": 1}
    elif how == "bool-for-int":
        rows[0][col["num_steps"]] = True
    else:
        raise AssertionError(how)
    return json.dumps(doc)


EDITS = [
    "size-wrong-type",
    "steps-edited",
    "layout-swapped",
    "layout-negative",
    "path-traversal",
    "episodes-not-a-list",
    "bool-for-int",
]
DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "deep-nesting": lambda text: "[" * 200_000,
    "not-utf8": lambda text: b"\xff\xfe\x00garbage",
    "not-an-object": lambda text: "[1, 2, 3]",
    "null": lambda text: "null",
}


@pytest.mark.parametrize("how", EDITS + list(DAMAGE))
def test_edited_or_damaged_manifest_is_rebuilt_correctly(
    root: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    fresh, _ = update_manifest(root)
    want = everything(MultiTaskDataset(root, use_cache=False))
    path = manifest_path(root)
    if how in DAMAGE:
        new = DAMAGE[how](path.read_text())
    else:
        new = _edit(json.loads(path.read_text()), how)
    path.write_bytes(new if isinstance(new, bytes) else new.encode())
    caplog.set_level(logging.WARNING)
    records, update = update_manifest(root)
    assert summary(records) == summary(fresh)
    assert update.written and load_manifest(root) == records
    assert any(str(path) in r.getMessage() for r in caplog.records), caplog.text
    assert same_batches(everything(MultiTaskDataset(root)), want)


def test_manifest_of_a_newer_version_is_not_overwritten(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fresh, _ = update_manifest(root)
    path = manifest_path(root)
    doc = json.loads(path.read_text())
    doc["version"] = 99
    newer = json.dumps(doc)
    path.write_text(newer)
    caplog.set_level(logging.WARNING)
    records, update = update_manifest(root)
    assert summary(records) == summary(fresh) and not update.written
    assert path.read_text() == newer  # a newer teamvla-data's manifest stays as it was
    assert "newer" in caplog.text and str(path) in caplog.text


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_manifest_path_taken_by_something_else(root: Path, kind: str) -> None:
    fresh, _ = update_manifest(root)
    path = manifest_path(root)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block forever
    else:
        path.mkdir()
    t0 = time.perf_counter()
    records, _ = update_manifest(root)
    assert time.perf_counter() - t0 < 5
    assert summary(records) == summary(fresh)


# --------------------------------------------------------------------------- stale identity


def _rewrite_same_size(root: Path, task: str, eid: str, seed: int, *, in_place: bool) -> None:
    """Give ``task/eid`` other values, keeping its size and modification time."""
    target = root / task / f"{eid}.npz"
    st = target.stat()
    scratch = root.parent / "scratch"
    other = write_episode(scratch, task, eid, seed=seed, steps=5, compress=False)
    assert other.stat().st_size == st.st_size, "the rewrite must keep the size"
    if in_place:
        with open(target, "r+b") as fh:
            fh.write(other.read_bytes())
    else:
        os.replace(other, target)  # a new inode
    keep_times(target, st)
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "renamed-over"])
def test_content_change_without_size_or_mtime_change_is_detected(
    root: Path, in_place: bool
) -> None:
    first = MultiTaskDataset(root)
    e = next(i for i in first.episodes if (i.task, i.episode_id) == ("lift", "ep0"))
    assert first[e.first_sample][B.Q_A][0, 0] == 1000  # seed 1
    _rewrite_same_size(root, "lift", "ep0", 9, in_place=in_place)
    _, update = update_manifest(root)
    assert update.changed == ["lift/ep0.npz"]
    again = MultiTaskDataset(root)
    assert again.store.built and again.store.path != first.store.path
    e = next(i for i in again.episodes if (i.task, i.episode_id) == ("lift", "ep0"))
    assert again[e.first_sample][B.Q_A][0, 0] == 9000  # the new values, not the cached ones
    assert not first.store.path.exists()  # the stale cache was pruned
    assert same_batches(everything(again), everything(MultiTaskDataset(root, use_cache=False)))


def test_saved_statistics_follow_a_same_size_rewrite(root: Path) -> None:
    before = MultiTaskDataset(root).load_or_compute_stats()
    _rewrite_same_size(root, "lift", "ep0", 9, in_place=True)
    ds = MultiTaskDataset(root)
    after = ds.load_or_compute_stats()
    assert not np.allclose(after.fields["q_a"].mean, before.fields["q_a"].mean)
    assert np.allclose(after.fields["q_a"].mean, ds.compute_stats().fields["q_a"].mean)


# --------------------------------------------------------------------------- damaged caches


def _flip(path: Path, at: int, n: int = 64) -> None:
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(at)
        data = bytearray(fh.read(n))
        fh.seek(at)
        fh.write(bytes(b ^ 0xFF for b in data))
    keep_times(path, st)


def _edit_meta(path: Path, change: Any) -> None:
    st = path.stat()
    text = path.read_text()
    path.write_text(change(text))
    keep_times(path, st)


def _swap_starts(text: str) -> str:
    """Swap where two episodes' rows start: a plausible, well-formed, wrong edit."""
    doc = json.loads(text)
    eps = doc["episodes"]
    eps[0][9], eps[1][9] = eps[1][9], eps[0][9]  # "start": see teamvla_data.columns.EPISODE_ENTRY
    return json.dumps(doc, separators=(",", ":"))


CACHE_DAMAGE = {
    "column-bytes-flipped": lambda d: _flip(d / "rgb_a.npy", 200),
    "small-column-flipped": lambda d: _flip(d / "q_a.npy", 130, 8),
    "column-swapped": lambda d: (
        shutil.copyfile(d / "rgb_b.npy", d / "x.npy"),
        keep_times(d / "x.npy", (d / "rgb_a.npy").stat()),
        os.replace(d / "x.npy", d / "rgb_a.npy"),
    ),
    "meta-starts-swapped": lambda d: _edit_meta(d / "meta.json", _swap_starts),
    "meta-instructions-edited": lambda d: _edit_meta(
        d / "meta.json", lambda t: t.replace('"do lift ep0"', '"do lift ep9"')
    ),
    "meta-truncated": lambda d: _edit_meta(d / "meta.json", lambda t: t[: len(t) // 2]),
    "meta-deep-nesting": lambda d: (d / "meta.json").write_text("[" * 200_000),
    "meta-not-utf8": lambda d: (d / "meta.json").write_bytes(b"\xff\xfe garbage"),
    "meta-fifo": lambda d: ((d / "meta.json").unlink(), os.mkfifo(d / "meta.json")),
    "column-missing": lambda d: (d / "grip_b.npy").unlink(),
}


@pytest.mark.parametrize("how", list(CACHE_DAMAGE))
def test_damaged_cache_is_rebuilt_never_served(root: Path, how: str) -> None:
    first = MultiTaskDataset(root, obs_history=1, action_horizon=2)
    want = everything(first)
    assert first.store.path is not None
    CACHE_DAMAGE[how](first.store.path)
    t0 = time.perf_counter()
    again = MultiTaskDataset(root, obs_history=1, action_horizon=2)
    assert time.perf_counter() - t0 < 10
    assert again.store.built, "a damaged cache was used as it was"
    assert same_batches(everything(again), want)


def test_cache_changed_after_opening_is_refused_when_first_read(root: Path) -> None:
    """A column rewritten between opening the dataset and its first read (e.g. in a new worker)."""
    ds = MultiTaskDataset(root)
    fresh = MultiTaskDataset(root)  # opened, columns not read yet
    assert fresh.store._arrays is None
    path = ds.store.path
    assert path is not None
    shutil.copyfile(path / "rgb_b.npy", path / "x.npy")
    os.replace(path / "x.npy", path / "rgb_a.npy")
    with pytest.raises(SchemaError, match="changed") as info:
        everything(fresh)
    assert info.value.path is not None and "rgb_a.npy" in info.value.path


# --------------------------------------------------------------------------- odd roots


def _index_exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = cli_main(["index", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("kind", ["missing", "file", "fifo", "dev-zero"])
def test_bad_root_paths_are_clear_errors(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "root"
    if kind == "file":
        path.write_text("not a directory")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path = Path("/dev/zero")
        if not path.exists():
            pytest.skip("needs /dev/zero")
    for open_it in (MultiTaskDataset, EpisodeIndex.open):
        with pytest.raises(SchemaError) as info:
            open_it(path)
        assert info.value.path == str(path) or str(path) in str(info.value)
    code, text = _index_exit([str(path)], capsys)
    assert code == 2 and str(path) in text, text


def test_symlink_loops_and_aliases_inside_a_root(root: Path) -> None:
    (root / "lift" / "loop").symlink_to(root / "lift")
    (root / "alias").symlink_to(root / "lift")
    (root / "self").symlink_to(root)
    t0 = time.perf_counter()
    ds = MultiTaskDataset(root)
    assert time.perf_counter() - t0 < 10
    paths = sorted(str(e.record.path) for e in ds.episodes)
    assert paths == sorted(f"{t}/{e}.npz" for t, e, _, _ in SPECS[:6])  # each once, real names


def test_symlinked_directory_outside_the_root_is_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "store"
    write_episode(elsewhere, "drawer", "far", seed=5)
    farm = tmp_path / "farm"
    write_episode(farm, "lift", "near", seed=4)
    (farm / "drawer").symlink_to(elsewhere / "drawer")
    ds = MultiTaskDataset(farm)
    assert sorted((e.task, e.episode_id) for e in ds.episodes) == [
        ("drawer", "far"),
        ("lift", "near"),
    ]


@pytest.mark.parametrize("kind", ["dangling", "loop", "fifo", "directory"])
def test_odd_entries_inside_a_root_are_reported_not_fatal(
    root: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = root / "lift" / "odd.npz"
    if kind == "dangling":
        odd.symlink_to(root / "gone.npz")
        reason = "No such file"
    elif kind == "loop":
        odd.symlink_to(root / "lift" / "odd2.npz")
        (root / "lift" / "odd2.npz").symlink_to(odd)
        reason = "symbolic links"
    elif kind == "fifo":
        os.mkfifo(odd)
        reason = "not a regular file (a FIFO)"
    else:
        odd.mkdir()
        ds = MultiTaskDataset(root)  # a directory is walked, not an episode
        assert len(ds.episodes) == 6
        return
    with pytest.raises(SchemaError) as info:
        MultiTaskDataset(root)
    assert str(odd) in str(info.value) and reason in str(info.value)
    ds = MultiTaskDataset(root, on_error="skip")
    assert str(odd) in [s.path for s in ds.skipped] and len(ds.episodes) == 6
    code, text = _index_exit([str(root)], capsys)
    assert code == 1 and f"BAD  {odd}" in text and reason in text, text


def _deny(monkeypatch: pytest.MonkeyPatch, *denied: Path) -> None:
    """Simulate unreadable directories (as root, chmod does not stop reads)."""
    real = os.scandir
    names = {str(p) for p in denied}

    def scandir(path: Any = ".") -> Any:
        if os.fspath(path) in names:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


@pytest.mark.parametrize("which", ["subdirectory", "root"])
def test_unreadable_directory_is_a_clear_error(
    root: Path, which: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    MultiTaskDataset(root)  # a manifest exists: a hidden directory must not be read from it
    denied = root / "handoff" if which == "subdirectory" else root
    _deny(monkeypatch, denied)
    for open_it in (MultiTaskDataset, EpisodeIndex.open):
        with pytest.raises(SchemaError, match="Permission denied") as info:
            open_it(root)
        assert info.value.path == str(denied)
    code, text = _index_exit([str(root)], capsys)
    assert code == 2 and str(denied) in text and "permission denied" in text.lower(), text


# --------------------------------------------------------------------------- bombs and full disks


def test_episode_declaring_a_billion_steps_is_refused_at_index_time(root: Path) -> None:
    """read_episode_meta refuses it, so the dataset never sizes a column by it."""
    from schema_testlib import meta_doc, meta_npy, rewrite_episode

    liar = root / "lift" / "liar.npz"
    good = root / "lift" / "ep0.npz"
    doc = meta_doc(good)
    doc["num_steps"], doc["episode_id"] = 10**9, "liar"
    rewrite_episode(good, liar, __meta__=meta_npy(doc))
    with pytest.raises(SchemaError, match="1000000000 steps") as info:
        MultiTaskDataset(root)
    assert str(liar) in str(info.value)
    ds = MultiTaskDataset(root, on_error="skip")
    assert [s.path for s in ds.skipped] == [str(liar)]
    assert ds.store.path is not None and ds.store.nbytes < 1 << 20


def test_disk_full_while_building_the_cache(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    keep = MultiTaskDataset(root, tasks=["lift"], cache_dir=cache)
    keep_bytes = everything(keep)

    def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(columns_mod, "_preallocate", full)
    with pytest.raises(SchemaError, match="No space left on device") as info:
        MultiTaskDataset(root, cache_dir=cache)
    assert info.value.path == str(cache)
    monkeypatch.undo()
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp")]
    again = MultiTaskDataset(root, tasks=["lift"], cache_dir=cache)  # the other cache survived
    assert not again.store.built and same_batches(everything(again), keep_bytes)


_FSIZE_BUILDER = textwrap.dedent(
    """
    import json, resource, signal, sys
    from teamvla_data import MultiTaskDataset
    from teamvla_schema import SchemaError
    root, cache = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))
    try:
        MultiTaskDataset(root, cache_dir=cache)
    except SchemaError as exc:
        print(json.dumps({"error": str(exc), "path": exc.path}))
    else:
        print(json.dumps({"error": None}))
    """
)


def test_file_size_limit_while_building_the_cache(root: Path, tmp_path: Path) -> None:
    update_manifest(root)
    manifest = manifest_path(root).read_bytes()
    cache = tmp_path / "cache"
    out = subprocess.run(
        [sys.executable, "-c", _FSIZE_BUILDER, str(root), str(cache)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr  # no SIGBUS, no traceback
    result = json.loads(out.stdout)
    assert result["error"] and "cannot build the column cache" in result["error"], result
    assert result["path"] == str(cache)
    assert not list(cache.glob("*columns-*")) and manifest_path(root).read_bytes() == manifest
    assert len(MultiTaskDataset(root, cache_dir=cache)) > 0  # fine once there is room again


def test_cache_with_a_valid_checksum_but_another_row_layout_is_rebuilt(root: Path) -> None:
    # What a cache written by another build of the same format version looks like: intact,
    # checksummed JSON whose episode rows are shorter than this build expects.
    from teamvla_data.manifest import CHECKSUM_KEY, with_checksum

    first = MultiTaskDataset(root, obs_history=1, action_horizon=2)
    want = everything(first)
    assert first.store.path is not None
    meta = first.store.path / "meta.json"
    st = meta.stat()
    doc = json.loads(meta.read_text())
    doc.pop(CHECKSUM_KEY, None)
    doc["episodes"] = [row[:6] for row in doc["episodes"]]
    meta.write_text(with_checksum(json.dumps(doc, separators=(",", ":"))))
    keep_times(meta, st)
    again = MultiTaskDataset(root, obs_history=1, action_horizon=2)
    assert again.store.built, "a cache this build cannot read was used"
    assert same_batches(everything(again), want)
