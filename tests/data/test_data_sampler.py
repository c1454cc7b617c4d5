"""EpochBatchSampler (numpy only): seeded order, shards, weighting, resumption."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from teamvla_data.sampler import EpochBatchSampler, IndexBatch


def _flat(sampler: EpochBatchSampler) -> list[int]:
    return [i for b in sampler for i in b]


def test_shuffled_epochs_are_permutations_seeded_by_seed_and_epoch() -> None:
    s = EpochBatchSampler(23, 5, seed=7)
    e0 = _flat(s)
    assert sorted(e0) == list(range(23)) and e0 != list(range(23)) and len(s) == 5
    assert _flat(EpochBatchSampler(23, 5, seed=7)) == e0
    s.set_epoch(1)
    e1 = _flat(s)
    assert sorted(e1) == list(range(23)) and e1 != e0
    assert _flat(EpochBatchSampler(23, 5, seed=8)) != e0
    batches = list(EpochBatchSampler(23, 5, seed=7))
    assert all(isinstance(b, IndexBatch) and b.epoch == 0 for b in batches)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]


def test_sequential_and_drop_last() -> None:
    s = EpochBatchSampler(11, 4, shuffle=False, drop_last=True)
    assert [list(b) for b in s] == [[0, 1, 2, 3], [4, 5, 6, 7]] and len(s) == 2


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_are_disjoint_and_cover_the_epoch(world: int, drop_last: bool) -> None:
    n, bs = 29, 4
    shards = [
        EpochBatchSampler(n, bs, seed=1, rank=r, world_size=world, drop_last=drop_last)
        for r in range(world)
    ]
    for s in shards:
        s.set_epoch(3)
    lens = {len(s) for s in shards}
    assert len(lens) == 1  # every rank runs the same number of steps (DDP would hang otherwise)
    flats = [_flat(s) for s in shards]
    order = shards[0].epoch_order(3).tolist()
    if not drop_last:
        assert set().union(*flats) == set(range(n))
        assert sum(len(f) for f in flats) == -(-n // world) * world  # at most world-1 repeats
    else:
        per_rank = (n // world) // bs * bs
        assert all(len(f) == per_rank for f in flats)
        seen = [i for f in flats for i in f]
        assert len(seen) == len(set(seen))  # disjoint
        assert set(seen) <= set(order[: n - n % world])
    if not drop_last:
        for a in range(world):
            for b in range(a + 1, world):
                pad = -(-n // world) * world - n
                assert len(set(flats[a]) & set(flats[b])) <= pad


def test_resume_mid_epoch_yields_exactly_the_rest() -> None:
    s = EpochBatchSampler(50, 6, seed=3)
    s.set_epoch(2)
    full = [list(b) for b in s]
    s.position = 4  # as the loader advances it after handing out 4 batches
    state = json.loads(json.dumps(s.state_dict()))
    assert all(isinstance(v, int) for v in state.values())
    fresh = EpochBatchSampler(50, 6, seed=3)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)  # a trainer calling set_epoch for the resumed epoch keeps the position
    assert [list(b) for b in fresh] == full[4:]
    fresh.set_epoch(3)
    assert fresh.position == 0
    with pytest.raises(ValueError, match="batch_size"):
        EpochBatchSampler(50, 7, seed=3).load_state_dict(state)
    with pytest.raises(ValueError, match="num_samples"):
        EpochBatchSampler(51, 6, seed=3).load_state_dict(state)


def _task_counts(
    weighting: str, weights: dict[str, float] | None = None, epoch_len: int | None = None
) -> Counter:
    tasks = np.array([0] * 80 + [1] * 15 + [2] * 5)
    s = EpochBatchSampler(
        100,
        10,
        seed=0,
        sample_tasks=tasks,
        task_names=["a", "b", "c"],
        weighting=weighting,
        task_weights=weights,
        samples_per_epoch=epoch_len,
    )
    picks = np.array(_flat(s))
    assert len(picks) == (epoch_len or 100)
    if weighting == "uniform":
        # Within a task, samples are drawn without replacement until the task is exhausted.
        c_picks = picks[tasks[picks] == 2]
        counts = Counter(c_picks.tolist())
        assert max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 5
    return Counter(tasks[picks].tolist())


def test_task_weighting() -> None:
    uniform = _task_counts("uniform", epoch_len=3000)
    assert all(abs(uniform[t] / 3000 - 1 / 3) < 0.04 for t in range(3))
    explicit = _task_counts("explicit", {"a": 1.0, "b": 0.0, "c": 3.0}, epoch_len=2000)
    assert explicit[1] == 0 and abs(explicit[2] / 2000 - 0.75) < 0.04
    proportional = _task_counts("proportional")
    assert proportional == Counter({0: 80, 1: 15, 2: 5})
    with pytest.raises(ValueError, match="no weight for task"):
        _task_counts("explicit", {"a": 1.0})
    with pytest.raises(ValueError, match="not in the dataset"):
        _task_counts("explicit", {"a": 1.0, "b": 1.0, "c": 1.0, "zz": 1.0})


def test_weighted_order_is_seeded() -> None:
    tasks = np.array([0] * 10 + [1] * 3)
    make = lambda seed: EpochBatchSampler(  # noqa: E731
        13, 4, seed=seed, sample_tasks=tasks, task_names=["a", "b"], weighting="uniform"
    )
    assert _flat(make(1)) == _flat(make(1)) and _flat(make(1)) != _flat(make(2))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank"):
        EpochBatchSampler(10, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="shuffle"):
        EpochBatchSampler(
            10, 2, shuffle=False, weighting="uniform", sample_tasks=np.zeros(10), task_names=["a"]
        )
