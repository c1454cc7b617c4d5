"""Manifests: built from metadata, reused, updated incrementally, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import teamvla_data.manifest as manifest_mod
from data_testlib import SPECS, write_episode
from teamvla_data.manifest import load_manifest, manifest_path, update_manifest
from teamvla_schema.atomic import is_temporary


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every episode file whose metadata is read."""
    seen: list[str] = []
    real = manifest_mod.read_episode_meta

    def spy(path: os.PathLike[str]) -> object:
        seen.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(manifest_mod, "read_episode_meta", spy)
    return seen


def test_build_lists_every_episode_with_metadata(episode_root: Path) -> None:
    records, update = update_manifest(episode_root)
    assert update.written and len(update.added) == len(SPECS)
    assert [r.path for r in records] == sorted(f"{t}/{e}.npz" for t, e, _, _ in SPECS)
    rec = next(r for r in records if r.path == "lift/ep1.npz")
    assert (rec.task, rec.episode_id, rec.num_steps, rec.success) == ("lift", "ep1", 3, True)
    st = (episode_root / "lift/ep1.npz").stat()
    assert (rec.size, rec.mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert rec.fields["rgb_a"].dtype == "uint8" and rec.fields["rgb_a"].shape == (16, 16, 3)
    assert rec.fields["q_a"].shape == (7,)
    doc = json.loads(manifest_path(episode_root).read_text())
    assert doc["format"] == "teamvla-manifest" and len(doc["episodes"]) == len(SPECS)
    assert len(doc["layouts"]) == 1  # identical layouts are stored once
    assert str(episode_root) not in manifest_path(episode_root).read_text()  # paths are relative


def test_unchanged_root_reads_no_episode_file(episode_root: Path, count_reads: list[str]) -> None:
    update_manifest(episode_root)
    count_reads.clear()
    before = manifest_path(episode_root).stat().st_mtime_ns
    records, update = update_manifest(episode_root)
    assert count_reads == []
    assert update.reused == len(SPECS) and not update.dirty and not update.written
    assert manifest_path(episode_root).stat().st_mtime_ns == before  # not rewritten
    assert records == load_manifest(episode_root)


def test_incremental_add_change_remove(episode_root: Path, count_reads: list[str]) -> None:
    update_manifest(episode_root)
    count_reads.clear()
    write_episode(episode_root, "lift", "new", seed=9, steps=2)
    write_episode(
        episode_root, "lift", "ep0", seed=1, steps=7, overwrite=True
    )  # changed: 5 -> 7 steps
    (episode_root / "drawer" / "b.npz").unlink()
    records, update = update_manifest(episode_root)
    assert update.added == ["lift/new.npz"]
    assert update.changed == ["lift/ep0.npz"]
    assert update.removed == ["drawer/b.npz"]
    assert update.reused == len(SPECS) - 2
    assert sorted(count_reads) == ["ep0.npz", "new.npz"]  # only the new and the changed file
    by_path = {r.path: r for r in records}
    assert by_path["lift/ep0.npz"].num_steps == 7
    assert "drawer/b.npz" not in by_path
    assert load_manifest(episode_root) == records


def test_same_size_new_mtime_is_reread(episode_root: Path, count_reads: list[str]) -> None:
    update_manifest(episode_root)
    count_reads.clear()
    path = episode_root / "lift" / "ep1.npz"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    _, update = update_manifest(episode_root)
    assert update.changed == ["lift/ep1.npz"] and count_reads == ["ep1.npz"]


def test_unreadable_files_are_error_records(episode_root: Path, count_reads: list[str]) -> None:
    (episode_root / "lift" / "junk.npz").write_bytes(b"not a zip at all")
    records, _ = update_manifest(episode_root)
    bad = [r for r in records if r.error]
    assert [r.path for r in bad] == ["lift/junk.npz"]
    assert "junk.npz" in bad[0].error and "not an npz" in bad[0].error
    count_reads.clear()
    again, _ = update_manifest(episode_root)  # remembered: not re-read while unchanged
    assert count_reads == [] and [r.path for r in again if r.error] == ["lift/junk.npz"]


def test_hidden_and_temporary_files_are_ignored(episode_root: Path) -> None:
    (episode_root / "lift" / ".ep9.npz.123-abcd.tmp").write_bytes(b"partial")
    (episode_root / ".hidden").mkdir()
    write_episode(episode_root / ".hidden", "lift", "zz")
    records, _ = update_manifest(episode_root)
    assert all(not is_temporary(r.path) and not r.path.startswith(".") for r in records)
    assert len(records) == len(SPECS)


def test_failed_write_leaves_old_manifest_and_no_temp_file(
    episode_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    update_manifest(episode_root)
    old_text = manifest_path(episode_root).read_text()
    write_episode(episode_root, "lift", "extra")

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    records, update = update_manifest(episode_root)  # a write failure is not fatal
    assert not update.written and len(records) == len(SPECS) + 1
    monkeypatch.undo()
    assert manifest_path(episode_root).read_text() == old_text
    assert [p.name for p in manifest_path(episode_root).parent.iterdir()] == ["manifest.json"]


def test_corrupt_manifest_is_rebuilt(episode_root: Path) -> None:
    update_manifest(episode_root)
    manifest_path(episode_root).write_text("{ truncated")
    assert load_manifest(episode_root) is None
    records, update = update_manifest(episode_root)
    assert len(records) == len(SPECS) and update.written
    assert load_manifest(episode_root) == records


def test_read_only_root_still_opens(episode_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: object, text: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(manifest_mod, "atomic_write_text", refuse)  # as on read-only media
    records, update = update_manifest(episode_root)
    assert len(records) == len(SPECS) and update.dirty and not update.written
    assert not manifest_path(episode_root).exists()


def test_index_command_summarises(episode_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from teamvla_schema.cli import main

    assert main(["index", str(episode_root)]) == 0
    out = capsys.readouterr().out
    assert f"{len(SPECS)} added" in out and "manifest written" in out
    assert "lift" in out and "handoff" in out and "drawer" in out
    assert f"{len(SPECS)} episode(s), 0 unreadable" in out
    assert manifest_path(episode_root).exists()
    assert main(["index", str(episode_root)]) == 0
    assert "manifest unchanged" in capsys.readouterr().out


def test_manifest_table_maps_the_manifest_and_follows_it(
    episode_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from teamvla_data.manifest_table import ManifestTable, table_path

    records, _ = update_manifest(episode_root)
    table = ManifestTable.open(episode_root)  # made from the JSON, written next to it
    path = table_path(episode_root)
    assert path.is_file() and len(table) == len(records)
    assert table.records(range(len(table))) == records
    written = path.stat().st_mtime_ns
    again = ManifestTable.open(episode_root)  # mapped: the file is not rewritten
    assert path.stat().st_mtime_ns == written and again.records([0]) == records[:1]
    lift = again.select(["lift"])
    assert {again.record(int(r)).task for r in lift} == {"lift"} and len(lift) == 4
    # A new episode rewrites the manifest: the table follows it.
    write_episode(episode_root, "lift", "new", seed=50)
    records, _ = update_manifest(episode_root)
    assert ManifestTable.open(episode_root).records(range(len(records))) == records
    # A damaged table is rebuilt with a warning.
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        fixed = ManifestTable.open(episode_root)
    assert "unusable" in caplog.text and fixed.records(range(len(records))) == records
