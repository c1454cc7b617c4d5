"""The cache-aware sampler and episode shards: coverage, resident chunks, resume, shuffle: uniform, ranks' files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import teamvla_schema.episode as episode_io
from data_testlib import write_many
from teamvla_data import DatasetConfig, MultiTaskDataset
from teamvla_data import batch as B
from teamvla_data.cache_order import assign_episodes, batch_mixing, lane_order, spare_slots
from teamvla_data.sampler import EpochBatchSampler

FRAME = 16 * 16 * 3 * 2  # both cameras of one step in data_testlib's episodes


def _flat(sampler: EpochBatchSampler) -> list[int]:
    return [i for b in sampler for i in b]


def _open_chunks(order: np.ndarray, chunks: np.ndarray) -> int:
    """The most chunks in use at once (a chunk is in use from its first to its last sample)."""
    seq = chunks[order]
    first = {c: i for i, c in reversed(list(enumerate(seq.tolist())))}
    last = {c: i for i, c in enumerate(seq.tolist())}
    events = np.zeros(len(seq) + 1, np.int64)
    for c in first:
        events[first[c]] += 1
        events[last[c] + 1] -= 1
    return int(np.cumsum(events).max())


def _layout(lengths: list[int], steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(episode, chunk) of every sample for episodes of ``lengths`` cut into blocks of ``steps``."""
    lens = np.array(lengths)
    episode = np.repeat(np.arange(len(lens)), lens)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    first = np.concatenate([[0], np.cumsum(-(-lens // steps))])
    return episode, first[episode] + (np.arange(lens.sum()) - offsets[episode]) // steps


def test_lane_order_covers_everything_with_few_chunks_open() -> None:
    _, chunks = _layout([30, 17, 25, 40, 8, 33, 21, 29, 12, 35] * 3, 10)
    members = np.arange(len(chunks))
    rng = np.random.default_rng(3)
    for lanes in (1, 3, 8):
        order = lane_order(members, chunks, lanes, rng)
        assert sorted(order.tolist()) == members.tolist()  # every sample exactly once
        assert _open_chunks(order, chunks) <= lanes + 1  # +1: a lane's hand-over point
    uniform = rng.permutation(members)
    assert _open_chunks(uniform, chunks) > 3 * 8


def test_a_lane_entering_a_new_chunk_sits_out_the_next_batches() -> None:
    from teamvla_data.cache_order import SETTLE_BATCHES

    _, chunks = _layout([100] * 64, 50)
    batch = 64
    for seed in range(3):
        order = lane_order(np.arange(6400), chunks, 17, np.random.default_rng(seed), batch)
        assert sorted(order.tolist()) == list(range(6400))
        assert _open_chunks(order, chunks) <= 17 + 1
        batch_of = np.arange(6400) // batch
        first = {}
        for i, c in enumerate(chunks[order].tolist()):
            first.setdefault(c, batch_of[i])
        starters = {c for c, b in first.items() if b == 0}
        late = 0
        for c, b in first.items():
            used = set(batch_of[chunks[order] == c].tolist())
            if c in starters or b + SETTLE_BATCHES >= batch_of[-1]:
                continue
            # Not read by the batches built alongside the one that decodes it.
            late += bool(used & set(range(b + 1, b + 1 + SETTLE_BATCHES)))
        assert late <= 2, late  # only where too few lanes were left to draw from
    # Without a batch size: the plain shuffled interleaving (new chunks read at once).
    plain = lane_order(np.arange(6400), chunks, 17, np.random.default_rng(0))
    assert sorted(plain.tolist()) == list(range(6400))


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_sample_once_per_epoch_in_both_modes(world: int, drop_last: bool) -> None:
    lengths = [12, 7, 9, 15, 11, 8, 10, 13, 6, 9]
    _, chunks = _layout(lengths, 5)
    n = sum(lengths)
    for resident in (None, 4):
        for epoch in (0, 1):
            shards = []
            for rank in range(world):
                s = EpochBatchSampler(
                    n, 4, seed=2, rank=rank, world_size=world, drop_last=drop_last,
                    episode_lengths=lengths, sample_chunks=chunks, resident_chunks=resident,
                )  # fmt: skip
                s.set_epoch(epoch)
                shards.append(_flat(s))
            assert len({len(x) for x in shards}) == 1  # every rank runs as many batches
            seen = [i for x in shards for i in x]
            if world == 1 and not drop_last:
                assert sorted(seen) == list(range(n))
            elif drop_last:
                assert len(seen) == len(set(seen))  # disjoint, nothing twice
            else:
                assert set(seen) == set(range(n))  # the union is the epoch (shorter shards repeat)


def test_ranks_read_only_their_episodes() -> None:
    lengths = [5] * 12
    episode, _ = _layout(lengths, 5)
    tasks = np.repeat([0, 1, 2], 20)  # four episodes per task
    owner = assign_episodes(tasks[::5], 3, seed=0)
    assert sorted(Counter(owner.tolist()).values()) == [4, 4, 4]
    for t in range(3):  # every task on every rank
        assert set(owner[tasks[::5] == t].tolist()) == {0, 1, 2}
    for rank in range(3):
        s = EpochBatchSampler(
            60, 4, seed=0, rank=rank, world_size=3, episode_lengths=lengths, sample_tasks=tasks
        )
        eps = set(episode[_flat(s)].tolist())
        assert eps == set(np.flatnonzero(owner == rank).tolist())


def test_weighted_tasks_keep_their_proportions_with_resident_chunks() -> None:
    lengths = [10] * 30
    episode, chunks = _layout(lengths, 5)
    task_of_episode = np.array([0] * 20 + [1] * 8 + [2] * 2)
    tasks = task_of_episode[episode]
    s = EpochBatchSampler(
        300, 10, seed=0, sample_tasks=tasks, task_names=["a", "b", "c"], weighting="uniform",
        samples_per_epoch=3000, episode_lengths=lengths, sample_chunks=chunks, resident_chunks=6,
    )  # fmt: skip
    picks = np.array(_flat(s))
    share = np.bincount(tasks[picks], minlength=3) / len(picks)
    assert np.all(np.abs(share - 1 / 3) < 0.04)
    rare = Counter(picks[tasks[picks] == 2].tolist())  # within a task: passes over its samples
    assert len(rare) == 20 and max(rare.values()) - min(rare.values()) <= 1


def test_resume_mid_epoch_with_resident_chunks() -> None:
    lengths = [9, 14, 6, 11, 13, 7, 10]
    _, chunks = _layout(lengths, 4)
    make = lambda resident: EpochBatchSampler(  # noqa: E731
        70, 6, seed=5, episode_lengths=lengths, sample_chunks=chunks, resident_chunks=resident
    )
    s = make(3)
    s.set_epoch(2)
    full = [list(b) for b in s]
    s.position = 4
    state = json.loads(json.dumps(s.state_dict()))
    assert all(isinstance(v, int) for v in state.values()) and state["resident_chunks"] == 3
    fresh = make(3)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)
    assert [list(b) for b in fresh] == full[4:]
    with pytest.raises(ValueError, match="resident_chunks"):
        make(5).load_state_dict(state)
    fresh.load_state_dict({"epoch": 2, "position": 1})  # what the trainer passes
    assert [list(b) for b in fresh] == full[1:]


def test_spare_slots_are_bounded() -> None:
    assert spare_slots(2, 100, 64) == 1
    assert 1 <= spare_slots(30, 50, 64) <= 15
    assert spare_slots(300, 100, 64) < 150


def test_mixing_figures_of_a_uniform_and_a_resident_order() -> None:
    episode, chunks = _layout([100] * 64, 50)
    rng = np.random.default_rng(0)
    uniform = batch_mixing(rng.permutation(6400), 64, episode)
    resident = batch_mixing(lane_order(np.arange(6400), chunks, 8, rng), 64, episode)
    assert uniform["distinct"] > 35 and resident["distinct"] <= 10  # 8 lanes, + hand-overs
    assert resident["same_pair"] > 5 * uniform["same_pair"]


# --------------------------------------------------------------------------- through make_dataloader


@pytest.fixture
def root(tmp_path: Path) -> Path:
    out = tmp_path / "eps"
    write_many(
        out,
        [
            (t, f"{t}{i}", 10 * k + i, 20)
            for k, t in enumerate(["lift", "drawer"])
            for i in range(6)
        ],
    )
    return out


def _cfg(root: Path, **kw: Any) -> DatasetConfig:
    base: dict[str, Any] = {
        "roots": [str(root)], "batch_size": 8, "obs_history": 1, "val_fraction": 0.0,
        "drop_last": False, "seed": 3,
    }  # fmt: skip
    return DatasetConfig(**{**base, **kw})


def _ids(batches: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [
        (int(e), int(f))
        for b in batches
        for e, f in zip(b[B.EPISODE_INDEX], b[B.FRAME_INDEX], strict=True)
    ]


def test_cache_aware_by_default_and_uniform_on_request(root: Path) -> None:
    pytest.importorskip("torch")
    from teamvla_data import make_dataloader

    budget = 5 * 20 * FRAME  # a third of the decoded images
    plain = _ids(list(make_dataloader(_cfg(root))))
    aware = make_dataloader(_cfg(root, cache_max_bytes=budget))
    assert aware.epoch_sampler.resident_chunks > 0
    got = _ids(list(aware))
    assert sorted(got) == sorted(plain) and got != plain
    images = aware.multitask.images
    assert images is not None
    # Each chunk decoded about once per epoch (a few re-decodes where a lane's chunk was evicted).
    assert images.cache.counters().decodes <= 1.5 * images.num_chunks
    uniform = make_dataloader(_cfg(root, cache_max_bytes=budget, shuffle="uniform"))
    assert uniform.epoch_sampler.resident_chunks == 0
    assert _ids(list(uniform)) == plain  # exactly the order (and batches) without the cache
    everything = make_dataloader(_cfg(root, cache_max_bytes=10**8))
    assert everything.epoch_sampler.resident_chunks == 0 and _ids(list(everything)) == plain


def test_a_rank_opens_only_its_own_files(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from teamvla_data import make_dataloader

    cfg = _cfg(root, cache_max_bytes=1 << 20)
    MultiTaskDataset.from_config(cfg)  # the small-field columns and statistics exist (any rank)
    opened: list[str] = []

    def counting(real: Any) -> Any:
        def read(path: Any, *args: Any, **kwargs: Any) -> Any:
            opened.append(Path(path).name)
            return real(path, *args, **kwargs)

        return read

    for name in ("read_episode", "read_frames", "read_episode_meta"):  # whatever opens a file
        if hasattr(episode_io, name):
            monkeypatch.setattr(episode_io, name, counting(getattr(episode_io, name)))
    shards = []
    for rank in range(2):
        opened.clear()
        loader = make_dataloader(cfg, rank=rank, world_size=2)
        ids = _ids(list(loader))
        mine = {loader.multitask.episodes[e].path.name for e, _ in ids}
        assert opened and set(opened) <= mine, (rank, set(opened) - mine)
        shards.append(set(ids))
    assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 12 * 20


def test_a_loader_resumes_mid_epoch_with_resident_chunks(root: Path) -> None:
    pytest.importorskip("torch")
    from teamvla_data import make_dataloader

    cfg = _cfg(root, cache_max_bytes=5 * 20 * FRAME, seed=8)
    full = make_dataloader(cfg)
    full.set_epoch(1)
    want = _ids(list(full))
    interrupted = make_dataloader(cfg)
    interrupted.set_epoch(1)
    seen = []
    for i, batch in enumerate(interrupted):
        seen.append(batch)
        if i == 3:
            state = json.loads(json.dumps(interrupted.state_dict()))
            break
    assert state["resident_chunks"] > 0
    resumed = make_dataloader(cfg)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert _ids(seen) + _ids(list(resumed)) == want
