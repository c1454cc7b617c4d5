"""MultiTaskDataset: windows and pad masks, batch contract, cache, bad files."""

from __future__ import annotations

import json
import multiprocessing as mp
import zipfile
from pathlib import Path

import numpy as np
import pytest
from data_testlib import SPECS, step_values, write_episode
from teamvla_data import MultiTaskDataset
from teamvla_data import batch as B
from teamvla_data.manifest import STATE_DIR
from teamvla_schema import EpisodeMeta, SchemaError, write_episode_arrays


def _seed_of(ds: MultiTaskDataset, episode_index: int) -> int:
    info = ds.episodes[episode_index]
    return next(s for t, e, s, _ in SPECS if (t, e) == (info.task, info.episode_id))


def test_every_sample_matches_its_episode_with_windows(episode_root: Path) -> None:
    k, h = 2, 3
    ds = MultiTaskDataset(episode_root, obs_history=k, action_horizon=h)
    assert len(ds) == sum(s for *_, s in SPECS)
    batch = ds.__getitems__(list(range(len(ds))))
    for i in range(len(ds)):
        e, t = int(batch[B.EPISODE_INDEX][i]), int(batch[B.FRAME_INDEX][i])
        seed, n = _seed_of(ds, e), ds.episodes[e].num_steps
        for j, dt in enumerate(range(-k, 1)):
            want = step_values(seed, max(t + dt, 0))
            assert batch[B.OBS_IS_PAD][i, j] == (t + dt < 0)
            assert (batch[B.RGB_A][i, j] == want["rgb_a"]).all() and (
                batch[B.RGB_B][i, j] == want["rgb_b"]
            ).all()
            assert (batch[B.Q_A][i, j] == want["q_a"]).all() and (
                batch[B.Q_B][i, j] == want["q_b"]
            ).all()
        for j in range(h):
            want = step_values(seed, min(t + j, n - 1))
            assert batch[B.ACTION_IS_PAD][i, j] == (t + j >= n)
            assert (batch[B.ACTION_A][i, j] == want["action_a"]).all()
            assert (batch[B.ACTION_B][i, j] == want["action_b"]).all()
            assert (
                batch[B.GRIP_A][i, j] == want["grip_a"] and batch[B.GRIP_B][i, j] == want["grip_b"]
            )
        info = ds.episodes[e]
        assert batch[B.TASK][i] == info.task
        assert batch[B.INSTRUCTION][i] == f"do {info.task} {info.episode_id}"
    # Sample order is (task, episode_id, step).
    order = [
        (ds.episodes[e].task, ds.episodes[e].episode_id, int(f))
        for e, f in zip(*ds.locate(range(len(ds))), strict=True)
    ]
    assert order == sorted(order)


def test_pad_masks_at_both_episode_ends(tmp_path: Path) -> None:
    write_episode(tmp_path, "lift", "e", seed=1, steps=4)
    ds = MultiTaskDataset(tmp_path, obs_history=2, action_horizon=3)
    b = ds.__getitems__([0, 1, 3])
    assert b[B.OBS_IS_PAD].tolist() == [
        [True, True, False],
        [True, False, False],
        [False, False, False],
    ]
    assert b[B.ACTION_IS_PAD].tolist() == [
        [False, False, False],
        [False, False, False],
        [False, True, True],
    ]
    q = b[B.Q_A][:, :, 0] - 1000
    assert q.tolist() == [[0, 0, 0], [0, 0, 1], [1, 2, 3]]  # clamped to step 0
    a = b[B.ACTION_A][:, :, 0] - 1000.5
    assert a.tolist() == [[0, 1, 2], [1, 2, 3], [3, 3, 3]]  # clamped to the last step


def test_batch_contract_dtypes_and_shapes(episode_root: Path) -> None:
    ds = MultiTaskDataset(episode_root, obs_history=1, action_horizon=4)
    b = ds.__getitems__([3, 0, 9, 9])
    assert set(b) == set(B.ALL_KEYS)
    expect = {
        B.RGB_A: (np.uint8, (4, 2, 16, 16, 3)),
        B.RGB_B: (np.uint8, (4, 2, 16, 16, 3)),
        B.Q_A: (np.float32, (4, 2, 7)),
        B.Q_B: (np.float32, (4, 2, 7)),
        B.OBS_IS_PAD: (np.bool_, (4, 2)),
        B.ACTION_A: (np.float32, (4, 4, 7)),
        B.ACTION_B: (np.float32, (4, 4, 7)),
        B.GRIP_A: (np.float32, (4, 4)),
        B.GRIP_B: (np.float32, (4, 4)),
        B.ACTION_IS_PAD: (np.bool_, (4, 4)),
        B.EPISODE_INDEX: (np.int64, (4,)),
        B.FRAME_INDEX: (np.int64, (4,)),
    }
    for key, (dtype, shape) in expect.items():
        assert b[key].dtype == dtype and b[key].shape == shape, key
    assert all(isinstance(s, str) for s in b[B.INSTRUCTION]) and len(b[B.TASK]) == 4
    one = ds[9]
    assert one[B.RGB_A].shape == (2, 16, 16, 3) and isinstance(one[B.TASK], str)
    assert (b[B.Q_A][2] == one[B.Q_A]).all() and (b[B.Q_A][3] == one[B.Q_A]).all()
    with pytest.raises(IndexError, match="out of range"):
        ds.__getitems__([len(ds)])


def test_memory_and_cache_storage_agree(episode_root: Path) -> None:
    cached = MultiTaskDataset(episode_root, obs_history=1, action_horizon=2)
    memory = MultiTaskDataset(episode_root, obs_history=1, action_horizon=2, use_cache=False)
    assert cached.store.path is not None and memory.store.path is None
    idx = list(range(len(cached)))[::-1]
    x, y = cached.__getitems__(idx), memory.__getitems__(idx)
    for key in x:
        assert (np.asarray(x[key]) == np.asarray(y[key])).all(), key


def test_cache_layout_is_uncompressed_npy_and_reused(episode_root: Path) -> None:
    ds = MultiTaskDataset(episode_root)
    path = ds.store.path
    assert path is not None and path.parent == episode_root / STATE_DIR / "cache"
    rgb = np.load(path / "rgb_a.npy", mmap_mode="r")
    assert rgb.shape == (len(ds), 16, 16, 3) and rgb.dtype == np.uint8
    meta = json.loads((path / "meta.json").read_text())
    assert meta["num_rows"] == len(ds) and len(meta["episodes"]) == len(SPECS)
    mtime = (path / "rgb_a.npy").stat().st_mtime_ns
    again = MultiTaskDataset(episode_root)
    assert again.store.path == path and not again.store.built
    assert (path / "rgb_a.npy").stat().st_mtime_ns == mtime


def test_cache_is_invalidated_when_an_episode_changes(episode_root: Path) -> None:
    first = MultiTaskDataset(episode_root)
    old_path = first.store.path
    write_episode(episode_root, "lift", "ep1", seed=42, steps=3, overwrite=True)
    second = MultiTaskDataset(episode_root)
    assert second.store.path != old_path and second.store.built
    assert not old_path.exists()  # the stale cache was removed
    e = next(i.index for i in second.episodes if i.episode_id == "ep1" and i.task == "lift")
    sample = second[second.episodes[e].first_sample]
    assert sample[B.Q_A][0, 0] == 42000
    # Adding an episode supersedes the cache of the same selection too.
    write_episode(episode_root, "lift", "ep9", seed=9, steps=2)
    third = MultiTaskDataset(episode_root)
    assert third.store.path != second.store.path and not second.store.path.exists()
    assert len(third) == len(second) + 2


def test_caches_of_other_selections_are_kept(episode_root: Path) -> None:
    lift = MultiTaskDataset(episode_root, tasks=["lift"])
    full = MultiTaskDataset(episode_root)
    assert lift.store.path != full.store.path
    assert lift.store.path.exists() and full.store.path.exists()
    assert not list((episode_root / STATE_DIR / "cache").glob(".tmp-*"))


def _open_in_child(root: str, barrier: mp.synchronize.Barrier, queue: mp.Queue) -> None:
    barrier.wait()
    ds = MultiTaskDataset(root, obs_history=1)
    queue.put((str(ds.store.path), ds.store.built, ds.__getitems__([0, 5])[B.Q_A].tolist()))


def test_concurrent_builders_share_one_cache(episode_root: Path) -> None:
    ctx = mp.get_context("fork")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [
        ctx.Process(target=_open_in_child, args=(str(episode_root), barrier, queue))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len({r[0] for r in results}) == 1  # one cache
    assert sum(r[1] for r in results) == 1  # built once; the others waited and reused it
    assert all(r[2] == results[0][2] for r in results)
    cache_root = episode_root / STATE_DIR / "cache"
    assert [p.name for p in cache_root.iterdir() if not p.name.startswith(".build")] == [
        Path(results[0][0]).name
    ]


# --------------------------------------------------------------------------- bad files


def _corrupt_member(path: Path, member: str) -> None:
    """Flip bytes in the middle of one zip member's data (metadata stays readable)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{member}.npy")
    raw = bytearray(path.read_bytes())
    # Local header: 30 bytes + name + extra; read their lengths from it.
    off = info.header_offset
    name_len = int.from_bytes(raw[off + 26 : off + 28], "little")
    extra_len = int.from_bytes(raw[off + 28 : off + 30], "little")
    start = off + 30 + name_len + extra_len
    mid = start + info.compress_size // 2
    raw[mid : mid + 16] = bytes(b ^ 0xFF for b in raw[mid : mid + 16])
    path.write_bytes(bytes(raw))


def test_unreadable_file_raises_naming_it_or_is_skipped(episode_root: Path) -> None:
    bad = episode_root / "lift" / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(SchemaError) as info:
        MultiTaskDataset(episode_root)
    assert str(bad) in str(info.value) and "on_error='skip'" in str(info.value)
    ds = MultiTaskDataset(episode_root, on_error="skip")
    assert [s.path for s in ds.skipped] == [str(bad)]
    assert "corrupt" in ds.skipped[0].reason
    assert len(ds.episodes) == len(SPECS)


def test_corrupt_array_data_found_at_cache_build(
    episode_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = episode_root / "handoff" / "ep0.npz"
    _corrupt_member(target, "rgb_a")
    with pytest.raises(SchemaError) as info:
        MultiTaskDataset(episode_root)
    assert str(target) in str(info.value) and info.value.field == "rgb_a"
    assert not list(
        (episode_root / STATE_DIR / "cache").glob("*columns-*")
    )  # nothing half-built left
    ds = MultiTaskDataset(episode_root, on_error="skip")
    assert [s.path for s in ds.skipped] == [str(target)]
    assert ("handoff", "ep0") not in {(e.task, e.episode_id) for e in ds.episodes}
    assert any(str(target) in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    # Reopening reuses the cache and still reports the skipped file.
    again = MultiTaskDataset(episode_root, on_error="skip")
    assert not again.store.built and [s.path for s in again.skipped] == [str(target)]
    assert len(again) == len(ds)


def test_non_finite_values_are_rejected_naming_field_and_step(tmp_path: Path) -> None:
    write_episode(tmp_path, "lift", "ok", seed=1, steps=3)
    arrays = {k: np.stack([step_values(2, t)[k] for t in range(3)]) for k in step_values(2, 0)}
    arrays["q_b"][1, 2] = np.nan
    arrays["instruction"] = np.array(["x"] * 3)
    arrays["task"] = np.array(["lift"] * 3)
    arrays["success"] = np.zeros(3, bool)
    bad = write_episode_arrays(
        tmp_path / "lift" / "nan.npz", EpisodeMeta("lift", "nan", False, 3), arrays
    )
    with pytest.raises(SchemaError) as info:
        MultiTaskDataset(tmp_path)
    assert str(bad) in str(info.value) and info.value.field == "q_b" and info.value.step == 1


def test_incompatible_layout_names_both_files(tmp_path: Path) -> None:
    first = write_episode(tmp_path, "lift", "a", seed=1, size=16)
    odd = write_episode(tmp_path, "lift", "b", seed=2, size=8)
    with pytest.raises(SchemaError) as info:
        MultiTaskDataset(tmp_path)
    assert str(odd) in str(info.value) and str(first) in str(info.value)
    ds = MultiTaskDataset(tmp_path, on_error="skip")
    assert [s.path for s in ds.skipped] == [str(odd)]


def test_summary_and_repr(episode_root: Path) -> None:
    ds = MultiTaskDataset(episode_root, val_fraction=0.25, split="train")
    text = ds.summary()
    assert "split 'train'" in text and "lift" in text and "cache" in text
    assert "MultiTaskDataset(" in repr(ds)


def test_unusable_cache_dir_is_a_clear_error(episode_root: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(SchemaError, match="use_cache=False") as info:
        MultiTaskDataset(episode_root, cache_dir=blocker / "cache")
    assert str(blocker / "cache") in str(info.value)
    assert len(MultiTaskDataset(episode_root, cache_dir=blocker / "cache", use_cache=False)) > 0


def test_damaged_cache_is_rebuilt(episode_root: Path) -> None:
    first = MultiTaskDataset(episode_root, obs_history=1)
    want = first.__getitems__(list(range(len(first))))
    path = first.store.path
    column = path / "rgb_b.npy"
    column.write_bytes(column.read_bytes()[:-100])  # e.g. a disk filled up behind our back
    again = MultiTaskDataset(episode_root, obs_history=1)
    assert again.store.built and again.store.path == path
    got = again.__getitems__(list(range(len(again))))
    assert (got[B.RGB_B] == want[B.RGB_B]).all()
