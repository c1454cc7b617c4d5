"""make_dataloader (needs torch): batch contract, worker-independent order, resume, distributed shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from data_testlib import write_many

torch = pytest.importorskip("torch")

from teamvla_data import DatasetConfig, make_dataloader  # noqa: E402
from teamvla_data import batch as B  # noqa: E402
from teamvla_data.config import AugmentConfig  # noqa: E402


def _cfg(root: Path, **kw: Any) -> DatasetConfig:
    base: dict[str, Any] = {
        "roots": [str(root)],
        "batch_size": 4,
        "obs_history": 1,
        "action_horizon": 3,
        "val_fraction": 0.0,
        "drop_last": False,
    }
    base.update(kw)
    return DatasetConfig(**base)


def _ids(batches: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [
        (int(e), int(f))
        for b in batches
        for e, f in zip(b[B.EPISODE_INDEX], b[B.FRAME_INDEX], strict=True)
    ]


@pytest.fixture
def big_root(tmp_path: Path) -> Path:
    root = tmp_path / "eps"
    write_many(
        root,
        [
            (task, f"{task}{i}", 10 * k + i, 4 + i % 3)
            for k, task in enumerate(["lift", "drawer"])
            for i in range(5)
        ],
    )
    return root


def test_batches_follow_the_contract(big_root: Path) -> None:
    section = {
        "roots": [str(big_root)],
        "batch_size": 4,
        "obs_history": 1,
        "action_horizon": 3,
        "val_fraction": 0.0,
        "drop_last": True,
    }
    loader = make_dataloader(section)  # the mapping of a config's dataset section
    assert isinstance(loader, torch.utils.data.DataLoader)
    batch = next(iter(loader))
    expect = {
        B.RGB_A: (torch.uint8, (4, 2, 16, 16, 3)),
        B.RGB_B: (torch.uint8, (4, 2, 16, 16, 3)),
        B.Q_A: (torch.float32, (4, 2, 7)),
        B.Q_B: (torch.float32, (4, 2, 7)),
        B.OBS_IS_PAD: (torch.bool, (4, 2)),
        B.ACTION_A: (torch.float32, (4, 3, 7)),
        B.ACTION_B: (torch.float32, (4, 3, 7)),
        B.GRIP_A: (torch.float32, (4, 3)),
        B.GRIP_B: (torch.float32, (4, 3)),
        B.ACTION_IS_PAD: (torch.bool, (4, 3)),
        B.EPISODE_INDEX: (torch.int64, (4,)),
        B.FRAME_INDEX: (torch.int64, (4,)),
    }
    assert set(batch) == set(B.ALL_KEYS)
    for key, (dtype, shape) in expect.items():
        assert batch[key].dtype == dtype and tuple(batch[key].shape) == shape, key
    assert isinstance(batch[B.INSTRUCTION], list) and all(
        isinstance(s, str) for s in batch[B.INSTRUCTION]
    )
    assert isinstance(batch[B.TASK], list) and len(batch[B.TASK]) == 4
    assert loader.stats is not None and set(loader.stats.fields) == set(B.NORMALIZED_KEYS)
    assert abs(float(torch.cat([b[B.Q_A] for b in loader]).mean())) < 0.5  # normalised
    assert len(loader) == len(loader.dataset) // 4


def test_order_and_augmentation_do_not_depend_on_workers(big_root: Path) -> None:
    aug = AugmentConfig(enabled=True, shift_pixels=2, color_jitter=0.3)
    runs = {}
    for workers, persistent in ((0, False), (2, False), (2, True)):
        loader = make_dataloader(
            _cfg(big_root, num_workers=workers, persistent_workers=persistent, augment=aug, seed=5)
        )
        epochs = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            epochs.append(list(loader))
        runs[(workers, persistent)] = epochs
    ref = runs[(0, False)]
    assert _ids(ref[0]) != _ids(ref[1])  # reshuffled per epoch
    assert sorted(_ids(ref[0])) == sorted(_ids(ref[1]))
    for key, epochs in runs.items():
        for e in range(2):
            assert _ids(epochs[e]) == _ids(ref[e]), key
            for b, rb in zip(epochs[e], ref[e], strict=True):
                assert torch.equal(b[B.RGB_A], rb[B.RGB_A]) and b[B.RGB_A].dtype == torch.uint8, key
                assert torch.equal(b[B.Q_A], rb[B.Q_A])


def test_resume_mid_epoch_sees_exactly_the_remaining_batches(big_root: Path) -> None:
    cfg = _cfg(big_root, num_workers=2, seed=11)
    loader = make_dataloader(cfg)
    loader.set_epoch(1)
    full = list(loader)
    assert loader.epoch == 1 and loader.state_dict()["position"] == len(loader)

    interrupted = make_dataloader(cfg)
    interrupted.set_epoch(1)
    seen = []
    for i, batch in enumerate(interrupted):
        seen.append(batch)
        if i == 2:
            state = json.loads(
                json.dumps(interrupted.state_dict())
            )  # saved while processing batch 2
            break
    assert state["epoch"] == 1 and state["position"] == 3

    resumed = make_dataloader(cfg)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # what a trainer's epoch loop does on resume
    rest = list(resumed)
    assert _ids(seen + rest) == _ids(full)
    # The next pass is the next epoch, same as an uninterrupted run.
    loader.set_epoch(2)
    assert _ids(list(resumed)) == _ids(list(loader))


def test_epoch_advances_by_itself_without_set_epoch(big_root: Path) -> None:
    loader = make_dataloader(_cfg(big_root, seed=2))
    first, second = list(loader), list(loader)
    assert loader.epoch == 1 and _ids(first) != _ids(second)
    assert sorted(_ids(first)) == sorted(_ids(second))


def test_val_loader_is_sequential_and_complete(big_root: Path) -> None:
    cfg = _cfg(
        big_root,
        val_fraction=0.4,
        drop_last=True,
        task_weighting="uniform",
        augment=AugmentConfig(enabled=True, color_jitter=0.5),
    )
    val = make_dataloader(cfg, "val")
    ids = _ids(list(val))
    assert ids == sorted(ids) and len(ids) == len(val.dataset)
    train = make_dataloader(cfg, "train")
    val_eps = {(e.task, e.episode_id) for e in val.dataset.episodes}
    assert not val_eps & {(e.task, e.episode_id) for e in train.dataset.episodes}


def test_explicit_ranks_split_every_epoch(big_root: Path) -> None:
    cfg = _cfg(big_root, seed=4)
    for epoch in (0, 1):
        parts = []
        for rank in range(2):
            loader = make_dataloader(cfg, rank=rank, world_size=2)
            loader.set_epoch(epoch)
            parts.append(_ids(list(loader)))
        n = len(loader.dataset)
        assert len(parts[0]) == len(parts[1]) == -(-n // 2)
        union = set(parts[0]) | set(parts[1])
        assert len(union) == n  # the whole epoch
        assert len(set(parts[0]) & set(parts[1])) <= 1  # only the padding sample repeats (n is odd)


def _dist_worker(rank: int, world: int, init_file: str, root: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loader = make_dataloader(
            _cfg(Path(root), seed=9)
        )  # rank and world size come from torch.distributed
        loader.set_epoch(3)
        ids = _ids(list(loader))
        Path(out_dir, f"rank{rank}.json").write_text(
            json.dumps({"ids": ids, "n": len(loader.dataset)})
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes each import torch: ~10 s
def test_two_gloo_processes_get_disjoint_shards(big_root: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as tmp

    # Build the cache first so the two processes only open it.
    make_dataloader(_cfg(big_root, seed=9))
    init_file = tmp_path / "dist_init"
    tmp.spawn(
        _dist_worker, args=(2, str(init_file), str(big_root), str(tmp_path)), nprocs=2, join=True
    )
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    a, b = ({tuple(x) for x in r["ids"]} for r in results)
    n = results[0]["n"]
    assert len(a | b) == n and len(results[0]["ids"]) == len(results[1]["ids"])
    assert len(a & b) == (1 if n % 2 else 0)
    # The same shards as explicit rank/world_size in this process.
    local = make_dataloader(_cfg(big_root, seed=9), rank=1, world_size=2)
    local.set_epoch(3)
    assert [tuple(x) for x in results[1]["ids"]] == _ids(list(local))


def test_numpy_arrays_reach_torch_without_copy() -> None:
    from teamvla_data.loader import to_torch

    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = to_torch({"x": arr, "s": ["a", "b"]})
    assert out["x"].data_ptr() == arr.ctypes.data and out["s"] == ["a", "b"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("persistent", [False, True])
def test_abandoned_passes_free_their_shared_slots(big_root: Path, persistent: bool) -> None:
    from teamvla_data import MultiTaskDataset

    cfg = _cfg(big_root, batch_size=3, num_workers=2, persistent_workers=persistent, seed=6)
    ref = list(make_dataloader(_cfg(big_root, batch_size=3, seed=6)))
    loader = make_dataloader(cfg)
    assert isinstance(loader.dataset, MultiTaskDataset)
    for _ in range(4):  # more abandoned passes than a worker has slots
        for i, _batch in enumerate(loader):
            if i == 1:
                break
        loader.load_state_dict({"epoch": 0, "position": 0})
    got = list(loader)
    assert _ids(got) == _ids(ref)
    for b, rb in zip(got, ref, strict=True):
        assert torch.equal(b[B.RGB_B], rb[B.RGB_B]) and torch.equal(b[B.ACTION_A], rb[B.ACTION_A])


@pytest.mark.timeout(120)
def test_a_pass_started_while_another_is_open_gets_its_own_slots(big_root: Path) -> None:
    ref = list(make_dataloader(_cfg(big_root, batch_size=3, seed=8)))
    loader = make_dataloader(_cfg(big_root, batch_size=3, num_workers=2, seed=8))
    first = iter(loader)
    assert _ids([next(first)]) == _ids(ref[:1])
    old_slots = loader.dataset.slots
    rest = list(loader)  # a new pass while `first` (and its workers) still exist
    assert loader.dataset.slots is not old_slots
    assert _ids(rest) == _ids(ref[1:])
    for b, rb in zip(rest, ref[1:], strict=True):
        assert torch.equal(b[B.RGB_A], rb[B.RGB_A])
    first.close()


def test_pin_memory_without_cuda_is_a_plain_loader(big_root: Path) -> None:
    ref = _ids(list(make_dataloader(_cfg(big_root, seed=3))))
    for workers in (0, 2):
        loader = make_dataloader(_cfg(big_root, seed=3, pin_memory=True, num_workers=workers))
        assert loader.pin_batches == torch.cuda.is_available()
        assert _ids(list(loader)) == ref
