"""The byte-bounded decode cache (cache_max_bytes): LRU, bounds, sharing, failures, statistics keys."""

from __future__ import annotations

import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import teamvla_data.image_chunks as image_chunks
from data_testlib import write_episode, write_many
from teamvla_data import DatasetConfig, MultiTaskDataset
from teamvla_data import batch as B
from teamvla_data import stats as stats_home
from teamvla_data.decode_cache import SharedChunkCache
from teamvla_schema import SchemaError

PAGE = 4096


def _everything(ds: MultiTaskDataset) -> dict[str, Any]:
    return ds.__getitems__(list(range(len(ds))))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    out = tmp_path / "eps"
    write_many(
        out,
        [
            (t, f"{t}{i}", 10 * k + i, 6 + 3 * i)
            for k, t in enumerate(["lift", "drawer"])
            for i in range(4)
        ],
    )
    return out


# --------------------------------------------------------------------------- the shared LRU


def _fill_with(value: int) -> Any:
    def decode(chunk: int, dest: np.ndarray) -> None:
        dest[:] = (value + chunk) % 256

    return decode


def test_lru_evicts_the_least_recently_used_and_stays_within_its_bytes() -> None:
    sizes = np.array([3 * PAGE, 2 * PAGE, 3 * PAGE, PAGE, 3 * PAGE])
    cache = SharedChunkCache(sizes, budget=6 * PAGE)
    rng = np.random.default_rng(0)
    for step in range(200):
        want = rng.choice(5, size=rng.integers(1, 3), replace=False).tolist()
        got = cache.fetch(want, _fill_with(7))
        for chunk in want:
            data = got.private.get(chunk)
            if data is None:
                slot, _ = got.slots[chunk]
                data = cache.data[slot]
            assert (data[: sizes[chunk]] == (7 + chunk) % 256).all(), (step, chunk)
        assert cache.held_bytes <= 6 * PAGE
    assert cache.peak_bytes <= 6 * PAGE
    cache.clear()
    # Use 0 (3 pages), 1 (2 pages), 3 (1 page), then 0 again: the budget is full. Chunk 2
    # (3 pages) must evict the least recently used, 1, then 3, and keep 0.
    for chunk in (0, 1, 3, 0):
        cache.fetch([chunk], _fill_with(0))
    assert cache.resident().tolist() == [0, 1, 3]
    cache.fetch([2], _fill_with(0))
    assert cache.resident().tolist() == [0, 2]
    counters = cache.counters()
    assert counters.evictions >= 2 and counters.private == 0


def test_evicted_memory_goes_back_to_the_kernel() -> None:
    budget = 8 * PAGE
    cache = SharedChunkCache(np.full(40, 2 * PAGE), budget=budget)
    for chunk in range(40):
        cache.fetch([chunk], _fill_with(1))
    allocated = os.fstat(cache._fd).st_blocks * 512
    table = cache._off_data  # header and table pages
    assert allocated <= budget + table, (allocated, budget, table)
    assert cache.held_bytes == budget and cache.counters().evictions == 36


def test_a_new_chunk_is_written_into_the_pages_of_the_chunk_evicted_for_it() -> None:
    sizes = np.array([4 * PAGE, PAGE, 2 * PAGE] * 8)
    cache = SharedChunkCache(sizes, budget=8 * PAGE)
    table = cache._off_data
    slot_of: dict[int, int] = {}

    def decode(chunk: int, dest: np.ndarray) -> None:  # writes the chunk's bytes only, as ours do
        dest[: sizes[chunk]] = (5 + chunk) % 256

    for chunk in range(len(sizes)):
        before = set(cache.resident().tolist())
        got = cache.fetch([chunk], decode)
        slot, _ = got.slots[chunk]
        slot_of[chunk] = slot
        assert (cache.data[slot][: sizes[chunk]] == (5 + chunk) % 256).all()
        evicted = before - set(cache.resident().tolist())
        if evicted:  # the slot of one of the chunks evicted for it, not a fresh one
            assert slot in {slot_of[c] for c in evicted}, (chunk, evicted)
        # Pages past what the chunks hold went back to the kernel (a big chunk's slot
        # reused by a small one keeps only the small one's pages).
        allocated = os.fstat(cache._fd).st_blocks * 512
        assert allocated <= cache.held_bytes + table, (chunk, allocated, cache.held_bytes)
    assert cache.counters().evictions > 0


def test_a_chunk_that_cannot_fit_is_decoded_privately() -> None:
    cache = SharedChunkCache([PAGE, 4 * PAGE], budget=2 * PAGE)
    got = cache.fetch([0, 1], _fill_with(3))
    assert set(got.slots) == {0} and set(got.private) == {1}
    assert (got.private[1][: 4 * PAGE] == 4).all()
    assert cache.counters().private == 1 and cache.held_bytes == PAGE
    empty = SharedChunkCache([PAGE], budget=0)
    assert set(empty.fetch([0], _fill_with(0)).private) == {0}


def test_a_failed_decode_frees_its_slot() -> None:
    cache = SharedChunkCache([PAGE, PAGE], budget=2 * PAGE)

    def boom(chunk: int, dest: np.ndarray) -> None:
        raise SchemaError("corrupt", path="x.npz")

    with pytest.raises(SchemaError, match="corrupt"):
        cache.fetch([0], boom)
    assert cache.held_bytes == 0 and cache.resident().tolist() == []
    cache.fetch([0, 1], _fill_with(0))
    assert cache.resident().tolist() == [0, 1]


def test_another_process_attaches_to_the_same_memory() -> None:
    cache = SharedChunkCache([PAGE, PAGE], budget=2 * PAGE)
    cache.fetch([1], _fill_with(50))
    # What a spawned worker receives (pickled through its start-up pipe): it attaches by /proc.
    other = pickle.loads(pickle.dumps(cache))
    got = other.fetch([1], _fill_with(99))  # a hit: not decoded again
    assert not got.private and (other.data[got.slots[1][0]][:PAGE] == 51).all()
    assert cache.counters().hits == 1 and cache.counters().decodes == 1
    other.fetch([0], _fill_with(10))  # decoded there, found here
    got = cache.fetch([0], _fill_with(0))
    assert (cache.data[got.slots[0][0]][:PAGE] == 10).all() and cache.counters().decodes == 2


def test_a_dead_writer_is_taken_over() -> None:
    cache = SharedChunkCache([PAGE, PAGE], budget=2 * PAGE)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child claims chunk 0 and dies while "decoding" it

        def die(chunk: int, dest: np.ndarray) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        cache.fetch([0], die)
        os._exit(0)
    os.waitpid(pid, 0)
    t0 = time.monotonic()
    got = cache.fetch([0], _fill_with(5))
    assert time.monotonic() - t0 < 5 and 0 in got.slots
    assert cache.counters().reclaimed == 1


# --------------------------------------------------------------------------- the dataset


def test_bounded_caches_give_the_batches_of_the_column_cache(root: Path) -> None:
    ref = MultiTaskDataset(root, obs_history=2, action_horizon=3)
    want = _everything(ref)
    perm = np.random.default_rng(1).permutation(len(ref))
    frame = 16 * 16 * 3 * 2
    for budget in (10**8, len(ref) * frame, len(ref) * frame // 5, 3 * PAGE, 0):
        ds = MultiTaskDataset(root, obs_history=2, action_horizon=3, cache_max_bytes=budget)
        assert ds.images is not None and ds.store.names == (
            "q_a",
            "q_b",
            "action_a",
            "action_b",
            "grip_a",
            "grip_b",
        )
        assert _same(_everything(ds), want), budget
        for part in np.array_split(perm, 7):  # small batches: chunks come and go
            assert _same(ds.__getitems__(part), ref.__getitems__(part)), budget
        assert ds.images.cache.peak_bytes <= budget
    assert ds.field_shape(B.RGB_A) == (16, 16, 3)


def test_chunks_of_image_streams_start_at_keyframes(tmp_path: Path, monkeypatch) -> None:
    # Streams decode from the keyframe at or before a chunk's first frame: with chunks of whole
    # GOPs (30 frames) shifted by the history, every chunk starts on a keyframe.
    pytest.importorskip("av")
    root = tmp_path / "lossless"
    lengths = [95 + 9 * (i % 3) for i in range(6)]
    write_many(
        root, [("lift", f"l{i}", i, n) for i, n in enumerate(lengths)], image_codec="lossless"
    )
    ref = MultiTaskDataset(root, obs_history=1, action_horizon=3)
    frame = 16 * 16 * 3 * 2
    budget = image_chunks.TARGET_CHUNKS * 36 * frame  # chunks of up to 35 steps + 1 of history
    ranges: list[tuple[int, int]] = []
    read = image_chunks.read_frame_range

    def logged(rec: Any, fields: Any, start: int, stop: int, into: Any = None) -> Any:
        ranges.append((start, stop))
        return read(rec, fields, start, stop, into)

    monkeypatch.setattr(image_chunks, "read_frame_range", logged)
    ds = MultiTaskDataset(root, obs_history=1, action_horizon=3, cache_max_bytes=budget)
    assert ds.images is not None and ds.images.shift == 1 and set(ds.images.block) == {30}
    assert _same(_everything(ds), _everything(ref))  # lossless: bit-exact through any chunking
    assert ranges and all(start % 30 == 0 for start, _ in ranges), ranges
    # The sampler's lanes fit however unequal the chunks are: its largest chunks together fit.
    lanes = ds.images.resident_chunks(batch_size=8)
    largest = np.sort(ds.images.cache.charge)[::-1]
    assert lanes > 0 and largest[:lanes].sum() <= ds.images.cache.usable_bytes
    # Every step of every episode is in exactly one chunk, and its history frame in that chunk.
    assert ds.images.num_chunks == sum(-(-(n - 1) // 30) for n in lengths)
    for e, n in enumerate(lengths):
        steps = np.arange(n)
        chunks = ds.images.chunk_of(np.full(n, e), steps)
        start = ds.images._start[chunks]
        assert np.all(start <= np.maximum(steps - 1, 0)) and np.all(steps < ds.images._stop[chunks])


def test_no_image_copy_is_written(root: Path, tmp_path: Path) -> None:
    ds = MultiTaskDataset(root, cache_dir=tmp_path / "c", cache_max_bytes=1 << 20)
    assert ds.store.path is not None
    assert sorted(p.name for p in ds.store.path.glob("*.npy")) == sorted(
        f"{c}.npy" for c in (*ds.store.names, "instruction_id")
    )
    full = MultiTaskDataset(root, cache_dir=tmp_path / "c")  # the other layout: a separate cache
    assert full.store.path != ds.store.path and ds.store.path.exists()
    assert "images decoded on demand" in ds.summary()


def test_a_corrupt_image_member_is_an_error_naming_the_file(root: Path) -> None:
    bad = write_episode(root, "lift", "zz", seed=40, steps=5)
    data = bytearray(bad.read_bytes())
    at = data.find(b"rgb_a.npy")  # the local file header of the member; its data follows
    for i in range(at + 200, at + 260):
        data[i] ^= 0x5A
    bad.write_bytes(bytes(data))
    ds = MultiTaskDataset(root, cache_max_bytes=1 << 20)  # small fields still read fine
    ep = next(e for e in ds.episodes if e.episode_id == "zz")
    with pytest.raises(SchemaError) as info:
        ds.__getitems__([ep.first_sample])
    assert str(bad) in str(info.value)


def test_a_file_changed_after_opening_is_refused(root: Path) -> None:
    ds = MultiTaskDataset(root, cache_max_bytes=1 << 20)
    path = write_episode(root, "lift", "lift0", seed=99, steps=6, overwrite=True)
    ep = next(e for e in ds.episodes if e.episode_id == "lift0")
    with pytest.raises(SchemaError, match="changed after the manifest") as info:
        ds.__getitems__([ep.first_sample])
    assert str(path) in str(info.value)


def _decodes_by_pid(monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
    real = image_chunks.read_frame_range

    def counting(rec: Any, fields: Any, start: int, stop: int, into: Any = None) -> Any:
        with open(log, "a") as fh:  # O_APPEND: lines of several processes do not mix
            fh.write(f"{os.getpid()} {rec.path} {start}\n")
        return real(rec, fields, start, stop, into)

    monkeypatch.setattr(image_chunks, "read_frame_range", counting)


@pytest.mark.timeout(120)
def test_two_workers_share_what_either_decoded(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    from teamvla_data import make_dataloader

    log = tmp_path / "decodes.log"
    _decodes_by_pid(monkeypatch, log)
    cfg = dict(roots=[str(root)], batch_size=4, obs_history=1, val_fraction=0.0, drop_last=False)
    ref = list(make_dataloader(DatasetConfig(**cfg)))
    loader = make_dataloader(DatasetConfig(**cfg, num_workers=2, cache_max_bytes=10**8))
    images = loader.multitask.images
    assert images is not None and images.holds_everything
    for _ in range(2):  # two epochs, each worker gets batches needing every episode
        got = list(loader)
    loader.set_epoch(0)
    got = list(loader)
    assert len(got) == len(ref)
    for b, rb in zip(got, ref, strict=True):  # the same order and batches as the column cache
        assert torch.equal(b[B.RGB_A], rb[B.RGB_A]) and torch.equal(b[B.RGB_B], rb[B.RGB_B])
        assert torch.equal(b[B.Q_A], rb[B.Q_A])
    lines = [ln.split() for ln in log.read_text().splitlines()]
    decoded = [(path, start) for _, path, start in lines]
    assert len(decoded) == len(set(decoded)) == images.num_chunks  # each chunk decoded once
    pids = {pid for pid, _, _ in lines} - {str(os.getpid())}
    assert len(pids) == 2  # both workers decoded some, and found the other's
    counters = images.cache.counters()
    assert counters.decodes == images.num_chunks and counters.hits > images.num_chunks


def _kill_in_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    main = os.getpid()
    real = image_chunks.read_frame_range

    def dying(rec: Any, fields: Any, start: int, stop: int, into: Any = None) -> Any:
        if os.getpid() != main:
            os.kill(os.getpid(), signal.SIGKILL)  # killed while holding a slot it is writing
        return real(rec, fields, start, stop, into)

    monkeypatch.setattr(image_chunks, "read_frame_range", dying)


@pytest.mark.timeout(120)
def test_a_killed_worker_is_an_error_in_bounded_time(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from teamvla_data import make_dataloader

    cfg = DatasetConfig(
        roots=[str(root)],
        batch_size=4,
        val_fraction=0.0,
        num_workers=2,
        cache_max_bytes=4 * 16 * 16 * 3 * 2 * 8,
    )
    loader = make_dataloader(cfg)
    assert loader.timeout > 0  # a worker stuck for good (not dead) is an error too
    _kill_in_worker(monkeypatch)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?i)worker"):
        for _ in loader:
            pass
    assert time.monotonic() - t0 < 60


# --------------------------------------------------------------------------- statistics


def test_stats_are_keyed_by_the_data_and_reused_from_their_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = DatasetConfig(roots=[str(root)], val_fraction=0.25, cache_max_bytes=1 << 20)
    first = MultiTaskDataset.from_config(cfg)
    assert first.stats is not None
    path = first.stats_path(cfg.stats_fields)
    assert path.is_file()

    def no_compute(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("statistics recomputed although their file matches")

    monkeypatch.setattr(stats_home, "compute_from_columns", no_compute)
    again = MultiTaskDataset.from_config(cfg)  # same data: the file is used
    assert again.stats is not None and again.stats.to_dict() == first.stats.to_dict()
    # The full column cache has the same statistics key: it describes the data, not the layout.
    assert (
        MultiTaskDataset(root, split="train", val_fraction=0.25).stats_key(cfg.stats_fields)
        == first.stats.key
    )
    monkeypatch.undo()
    train = first.train_records[0]
    write_episode(
        root, train.task, train.episode_id, seed=77, steps=train.num_steps, overwrite=True
    )
    changed = MultiTaskDataset.from_config(cfg)
    assert changed.stats is not None and changed.stats.key != first.stats.key
    assert changed.stats_path(cfg.stats_fields) != path
