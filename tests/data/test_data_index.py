"""Episode selection: deterministic order, duplicates, filters, caps and the episode split."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from data_testlib import SPECS, write_episode, write_many
from teamvla_data import MultiTaskDataset
from teamvla_data.index import EpisodeIndex, select_episodes, split_episodes
from teamvla_schema import SchemaError


def _keys(records: list) -> list[tuple[str, str]]:
    return [(r.task, r.episode_id) for r in records]


def test_order_is_independent_of_roots_and_write_order(tmp_path: Path) -> None:
    one = tmp_path / "one"
    write_many(one, SPECS)
    shuffled = SPECS[:]
    random.Random(3).shuffle(shuffled)
    a, b = tmp_path / "a", tmp_path / "b"
    write_many(a, shuffled[:3])
    write_many(b, shuffled[3:])
    expected = sorted((t, e) for t, e, _, _ in SPECS)
    ds_one = MultiTaskDataset(one, obs_history=1, action_horizon=2)
    for roots in ([a, b], [b, a]):
        assert _keys(EpisodeIndex.open(roots).records) == expected
        ds = MultiTaskDataset(roots, obs_history=1, action_horizon=2)
        assert len(ds) == len(ds_one)
        idx = list(range(len(ds)))
        got, want = ds.__getitems__(idx), ds_one.__getitems__(idx)
        for key in want:
            if isinstance(want[key], list):
                assert got[key] == want[key]
            else:
                assert (got[key] == want[key]).all(), key
    assert [(e.task, e.episode_id) for e in ds_one.episodes] == expected


def test_duplicate_episode_id_across_roots_names_both_files(tmp_path: Path) -> None:
    write_episode(tmp_path / "r1", "lift", "same", seed=1)
    write_episode(tmp_path / "r2", "lift", "same", seed=2)
    write_episode(tmp_path / "r2", "drawer", "same", seed=3)  # same id, other task: fine
    with pytest.raises(SchemaError) as info:
        EpisodeIndex.open([tmp_path / "r1", tmp_path / "r2"])
    msg = str(info.value)
    assert (
        str(tmp_path / "r1" / "lift" / "same.npz") in msg
        and str(tmp_path / "r2" / "lift" / "same.npz") in msg
    )


def test_same_root_given_twice_is_opened_once(episode_root: Path) -> None:
    index = EpisodeIndex.open([episode_root, episode_root / ".." / episode_root.name])
    assert len(index.roots) == 1 and len(index.records) == len(SPECS)


def test_task_filter_and_unknown_task(episode_root: Path) -> None:
    index = EpisodeIndex.open(episode_root)
    chosen, _ = select_episodes(index, tasks=["handoff", "drawer"])
    assert _keys(chosen) == [
        ("drawer", "a"),
        ("drawer", "b"),
        ("handoff", "ep0"),
        ("handoff", "ep1"),
    ]
    with pytest.raises(
        SchemaError, match=r"\['lfit'\].*tasks found: \['drawer', 'handoff', 'lift'\]"
    ):
        select_episodes(index, tasks=["lfit"])


def test_success_only(tmp_path: Path) -> None:
    write_episode(tmp_path, "lift", "good", seed=1, success=True)
    write_episode(tmp_path, "lift", "bad", seed=2, success=False)
    chosen, _ = select_episodes(EpisodeIndex.open(tmp_path), success_only=True)
    assert _keys(chosen) == [("lift", "good")]


def test_cap_per_task_is_deterministic_and_seeded(tmp_path: Path) -> None:
    write_many(
        tmp_path, [("lift", f"e{i:02d}", i, 2) for i in range(12)] + [("drawer", "d0", 50, 2)]
    )
    index = EpisodeIndex.open(tmp_path)
    first, _ = select_episodes(index, max_episodes_per_task=4, split_seed=0)
    again, _ = select_episodes(EpisodeIndex.open(tmp_path), max_episodes_per_task=4, split_seed=0)
    assert _keys(first) == _keys(again)
    assert sum(r.task == "lift" for r in first) == 4 and sum(r.task == "drawer" for r in first) == 1
    assert _keys(first) == sorted(_keys(first))
    # Another seed picks another subset.
    subsets = {
        tuple(_keys(select_episodes(index, max_episodes_per_task=4, split_seed=s)[0]))
        for s in range(6)
    }
    assert len(subsets) > 1


def test_split_is_by_episode_without_leakage(tmp_path: Path) -> None:
    specs = [
        (task, f"{task}{i}", 10 * k + i, 3)
        for k, task in enumerate(["lift", "drawer"])
        for i in range(10)
    ]
    write_many(tmp_path, specs)
    train = MultiTaskDataset(tmp_path, split="train", val_fraction=0.3, split_seed=1)
    val = MultiTaskDataset(tmp_path, split="val", val_fraction=0.3, split_seed=1)
    full = MultiTaskDataset(tmp_path, split="all", val_fraction=0.3, split_seed=1)
    t_eps = {(e.task, e.episode_id) for e in train.episodes}
    v_eps = {(e.task, e.episode_id) for e in val.episodes}
    assert not t_eps & v_eps
    assert t_eps | v_eps == {(e.task, e.episode_id) for e in full.episodes}
    assert (
        sum(1 for t, _ in v_eps if t == "lift") == 3
        and sum(1 for t, _ in v_eps if t == "drawer") == 3
    )
    assert len(train) + len(val) == len(full)
    # Every step of an episode is on the same side: samples of val episodes never appear in train.
    t_samples = {
        (train.episodes[e].episode_id, f)
        for e, f in zip(*train.locate(range(len(train))), strict=True)
    }
    v_samples = {
        (val.episodes[e].episode_id, f) for e, f in zip(*val.locate(range(len(val))), strict=True)
    }
    assert not t_samples & v_samples and len(v_samples) == 6 * 3
    # Deterministic, and another seed gives another split.
    assert {
        (e.task, e.episode_id)
        for e in MultiTaskDataset(tmp_path, split="val", val_fraction=0.3, split_seed=1).episodes
    } == v_eps
    other = MultiTaskDataset(tmp_path, split="val", val_fraction=0.3, split_seed=2)
    assert {(e.task, e.episode_id) for e in other.episodes} != v_eps


def test_split_small_task_keeps_one_val_episode(episode_root: Path) -> None:
    train, val = split_episodes(
        select_episodes(EpisodeIndex.open(episode_root))[0], val_fraction=0.1, split_seed=0
    )
    assert sorted({r.task for r in val}) == ["drawer", "handoff", "lift"]  # one each
    assert len(val) == 3 and len(train) == len(SPECS) - 3
    train0, val0 = split_episodes(train + val, val_fraction=0.0, split_seed=0)
    assert val0 == [] and len(train0) == len(SPECS)


def test_adding_episodes_moves_few_across_the_split(tmp_path: Path) -> None:
    write_many(tmp_path, [("lift", f"e{i:03d}", i, 2) for i in range(40)])
    before = {
        r.episode_id
        for r in split_episodes(
            EpisodeIndex.open(tmp_path).records, val_fraction=0.25, split_seed=0
        )[1]
    }
    write_many(tmp_path, [("lift", f"e{i:03d}", i, 2) for i in range(40, 44)])
    after = {
        r.episode_id
        for r in split_episodes(
            EpisodeIndex.open(tmp_path).records, val_fraction=0.25, split_seed=0
        )[1]
    }
    assert len(before) == 10 and len(after) == 11
    assert len(before - after) <= 4


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    write_episode(tmp_path, "lift", "only")
    with pytest.raises(SchemaError, match="'val' split is empty"):
        MultiTaskDataset(tmp_path, split="val", val_fraction=0.5)
