"""SAC and AWAC under torchrun (two gloo processes on CPU): one set of networks, per-rank worlds,
replay and random streams, per-rank state beside the checkpoints, resume, world-size checks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from teamvla_schema import SchemaError, load_checkpoint  # noqa: E402
from teamvla_schema.config import load_config  # noqa: E402
from teamvla_train.algos.actor_critic_ranks import (  # noqa: E402
    RankFiles,
    average_gradients,
    checkpoint_due,
    network_digest,
    rank_generator,
)
from teamvla_train.engine.checkpointing import resolve_checkpoint  # noqa: E402
from teamvla_train.engine.distributed import DistInfo  # noqa: E402
from train_testlib import REPO, TINY_STATE_SAC, torchrun  # noqa: E402

N = 40  # transitions (all ranks) of the half run: 10 engine steps of 2 ranks x 2 worlds
SAC_RUNS = {
    "full": [f"sac.env_steps={2 * N}", "trainer.ckpt_every=4"],
    "part": [f"sac.env_steps={N}", "trainer.ckpt_every=4"],
    "resumed": [f"sac.env_steps={2 * N}", "trainer.ckpt_every=4", "trainer.resume_force=true"],
}
TINY_AWAC = [
    "env.tasks=[lift]", "env.num_envs=2", "awac.demos_per_task=1", "awac.batch_size=32",
    "awac.hidden_dims=[32,32]", "awac.eval_episodes_per_task=1", "awac.eval_every_updates=0",
    "eval.every_env_steps=0", "awac.replay_capacity=500", "awac.n_step=1", "trainer.ckpt_every=0",
]  # fmt: skip
AWAC_RUNS = {
    "full": ["awac.offline_steps=8", "awac.online_env_steps=16"],
    "part": ["awac.offline_steps=4", "awac.online_env_steps=0"],
    "resumed": ["awac.offline_steps=8", "awac.online_env_steps=16", "trainer.resume_force=true"],
}

# Every rank runs the six trainings in turn in one process group (train() joins it).
SCRIPT = """
import sys
from pathlib import Path
import torch.distributed as dist
from teamvla_schema.config import load_config
from teamvla_train.engine import train

out, repo = Path(sys.argv[1]), Path(sys.argv[2])
dist.init_process_group("gloo")
for algo, common, runs in (("sac", {sac}, {sac_runs}), ("awac", {awac}, {awac_runs})):
    for name, extra in runs.items():
        run_dir = out / algo / ("part" if name == "resumed" else name)
        cfg = load_config(repo / "configs" / f"train_{{algo}}.yaml", [*common, *extra])
        train(cfg, run_dir=run_dir, progress=False, device="cpu",
              resume="auto" if name == "resumed" else None)
dist.destroy_process_group()
"""


def test_rank_generator_keeps_rank_0_and_separates_ranks() -> None:
    # rank 0 draws what one process always drew; other ranks draw something else
    assert np.array_equal(rank_generator(3, 0).random(4), np.random.default_rng([3, 5417]).random(4))  # fmt: skip
    assert not np.array_equal(rank_generator(3, 0).random(4), rank_generator(3, 1).random(4))


def test_checkpoint_due_follows_the_engines_cadence() -> None:
    assert [s for s in range(1, 13) if checkpoint_due(s, total=12, ckpt_every=5)] == [5, 10, 12]
    assert [s for s in range(1, 13) if checkpoint_due(s, total=12, ckpt_every=0)] == [12]


def test_gradient_averaging_is_the_identity_in_one_process() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    average_gradients([p], DistInfo())
    assert torch.equal(p.grad, torch.tensor([1.0, 2.0, 3.0]))


def test_batch_size_must_divide_over_the_ranks(tmp_path: Path) -> None:
    from teamvla_train.algos.base import Context
    from teamvla_train.algos.sac import SoftActorCritic
    from teamvla_train.config import resolve_train_config

    cfg = resolve_train_config(load_config(REPO / "configs" / "train_sac.yaml", TINY_STATE_SAC))
    ctx = Context(cfg=cfg, run_dir=tmp_path, device=torch.device("cpu"),
                  dist_info=DistInfo(rank=0, world_size=3), amp_dtype=None)  # fmt: skip
    with pytest.raises(SchemaError, match=r"sac.batch_size \(32\) must be divisible by the number of processes \(3\)"):  # fmt: skip
        SoftActorCritic(ctx)


def test_compile_is_refused_rather_than_ignored(tmp_path: Path) -> None:
    from teamvla_train.algos.base import Context
    from teamvla_train.algos.sac import SoftActorCritic
    from teamvla_train.config import resolve_train_config

    overrides = [*TINY_STATE_SAC, "trainer.compile=true"]
    cfg = resolve_train_config(load_config(REPO / "configs" / "train_sac.yaml", overrides))
    ctx = Context(cfg=cfg, run_dir=tmp_path, device=torch.device("cpu"),
                  dist_info=DistInfo(rank=0, world_size=1), amp_dtype=None)  # fmt: skip
    with pytest.raises(SchemaError, match=r"trainer.compile true is not supported by trainer.algo sac"):  # fmt: skip
        SoftActorCritic(ctx)


def test_network_digest_sees_one_bit() -> None:
    a = {"actor": {"w": np.zeros(3, np.float32)}}
    b = {"actor": {"w": np.array([0.0, 0.0, np.nextafter(np.float32(0), np.float32(1))], np.float32)}}  # fmt: skip
    assert network_digest(a) == network_digest({"actor": {"w": torch.zeros(3)}})
    assert network_digest(a) != network_digest(b)


def test_rank_files_prune_only_files_of_deleted_checkpoints(tmp_path: Path) -> None:
    files = RankFiles(tmp_path, DistInfo(rank=1, world_size=2), "sac")
    for step in (5, 10, 15, 20):
        files.write(step, {"step": step})
    (tmp_path / "epoch_0001_step_00000015.ckpt").write_bytes(b"")  # the checkpoints kept
    (tmp_path / "epoch_0001_step_00000020.ckpt").write_bytes(b"")
    (tmp_path / "ranks" / ".rank_001_step_00000025.state.999999999-0a0b0c0d.tmp").write_bytes(b"")
    files.write(25, {"step": 25})  # its checkpoint is not written yet: kept
    files.prune(keep=25)
    left = sorted(p.name for p in (tmp_path / "ranks").iterdir())
    assert left == [f"rank_001_step_{s:08d}.state" for s in (15, 20, 25)]
    assert files.read(tmp_path / "epoch_0001_step_00000020.ckpt", 20)["step"] == 20
    with pytest.raises(SchemaError, match=r"rank 1: its state file rank_001_step_00000005\.state"):
        files.read(tmp_path / "epoch_0001_step_00000020.ckpt", 5)


@pytest.mark.slow  # seconds in a fresh process (the first torch optimiser imports torch._dynamo)
def test_pixel_encoders_run_under_the_autocast_and_hand_fp32_features(tmp_path: Path) -> None:
    """trainer.precision bf16 (or auto on CUDA): the update's encoder passes under the autocast,
    the heads get fp32 features, and the critic loss still reaches the encoder."""
    from teamvla_train.algos.base import Context
    from teamvla_train.algos.sac import SoftActorCritic
    from teamvla_train.config import resolve_train_config
    from train_testlib import tiny_pixel_config

    cfg = resolve_train_config(tiny_pixel_config("sac", "sac.demos_per_task=0", "sac.n_step=1"))
    ctx = Context(cfg=cfg, run_dir=tmp_path, device=torch.device("cpu"), dist_info=DistInfo(),
                  amp_dtype=torch.bfloat16)  # fmt: skip
    algo = SoftActorCritic(ctx)
    try:
        algo.collect(random=True)
        batch = algo.update_batch(0.0)
        for key in ("obs", "next_obs", "actor_obs", "actor_next_obs"):
            assert batch[key].dtype == torch.float32, key
        batch["obs"].sum().backward()
        assert all(p.grad is not None for p in algo.critic.encoder.cameras.parameters())
    finally:
        algo.close()


def _ckpt(run: Path) -> dict:
    return load_checkpoint(resolve_checkpoint(run))


def _side(run: Path, step: int, algo: str) -> dict:
    path = RankFiles.path(run / "checkpoints" / "lift", 1, step)
    return load_checkpoint(path)["training_state"][algo]


def _digest_of(ckpt: dict, algo: str) -> str:
    mine = ckpt["training_state"][algo]
    return network_digest({"actor": ckpt["model"], "critic": mine["critic"],
                           "target_critic": mine["target_critic"],
                           "log_alpha": {"log_alpha": mine["log_alpha"]}})  # fmt: skip


@pytest.mark.slow
def test_two_ranks_sac_and_awac_stay_one_network_and_resume_like_uninterrupted(
    tmp_path: Path,
) -> None:
    script = tmp_path / "runs.py"
    script.write_text(textwrap.dedent(SCRIPT).format(
        sac=repr(TINY_STATE_SAC), sac_runs=repr(SAC_RUNS), awac=repr(TINY_AWAC), awac_runs=repr(AWAC_RUNS)
    ))  # fmt: skip
    out = tmp_path / "out"
    done = torchrun([str(script), str(out), str(REPO)], timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    # ---- SAC: env_steps count both ranks' transitions; 4 per engine step
    full, part = out / "sac" / "full", out / "sac" / "part"
    a, b = _ckpt(full), _ckpt(part)
    sa, sb = a["training_state"]["sac"], b["training_state"]["sac"]
    assert sa["world_size"] == 2 and int(a["training_state"]["step"]) == 2 * N // 4
    assert sa["env_steps"] == sb["env_steps"] == 2 * N
    # utd 1: one update per transition of either rank, from the step that ends the warm-up (40)
    assert sa["updates"] == sb["updates"] == 4 * ((2 * N - 40) // 4 + 1)
    step = int(a["training_state"]["step"])
    r1a, r1b = _side(full, step, "sac"), _side(part, step, "sac")
    # every rank keeps its own replay: half the transitions each, different worlds
    for mine in (sa, sb, r1a, r1b):
        assert int(mine["replay"]["size"]) == N
    assert not np.array_equal(sa["replay"]["obs"][:2], r1a["replay"]["obs"][:2])
    # rank 1's networks equal rank 0's (its digest in its side file) after all those updates
    assert r1a["updates"] == sa["updates"] and r1a["networks_sha256"] == _digest_of(a, "sac")
    assert r1b["networks_sha256"] == _digest_of(b, "sac")
    # resumed halfway: both ranks' replays hold the same first half (restored, not re-collected)
    half = N // 2
    for x, y in ((sa, sb), (r1a, r1b)):
        for key in ("obs", "action", "reward", "next_obs"):
            assert np.array_equal(x["replay"][key][:half], y["replay"][key][:half]), key
    # only rank 0 logs: one start record (world_size 2), each evaluation once
    records = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in records if r.get("event") == "start"] == [2]
    assert [r["env_steps"] for r in records if r.get("event") == "sac_eval"] == [40, 80]
    assert {r["env_steps"] % 4 for r in records if r.get("split") == "train"} == {0}
    # side files follow keep-last-K (3): those of steps 12, 16 and 20 remain, step 4's went (step
    # 8's checkpoint is deleted after rank 1's last pruning: its side file goes on resume)
    sides = {p.name for p in (full / "checkpoints" / "lift" / "ranks").iterdir()}
    assert {f"rank_001_step_{s:08d}.state" for s in (12, 16, 20)} <= sides
    assert "rank_001_step_00000004.state" not in sides and len(sides) <= 4

    # ---- AWAC: resumed in its offline phase, the whole run equals the uninterrupted one exactly
    fa, pa = _ckpt(out / "awac" / "full"), _ckpt(out / "awac" / "part")
    for key in fa["model"]:
        assert np.array_equal(fa["model"][key], pa["model"][key]), key
    wa, wb = fa["training_state"]["awac"], pa["training_state"]["awac"]
    assert wa["offline_updates"] == wb["offline_updates"] == 8 and wa["env_steps"] == 16
    for key in ("obs", "action"):
        assert np.array_equal(wa["replay"][key], wb["replay"][key]), key
    last = int(fa["training_state"]["step"])
    assert _side(out / "awac" / "full", last, "awac")["networks_sha256"] == _digest_of(fa, "awac")
    assert np.array_equal(_side(out / "awac" / "full", last, "awac")["replay"]["obs"],
                          _side(out / "awac" / "part", last, "awac")["replay"]["obs"])  # fmt: skip

    # ---- one process cannot continue a two-process run
    from teamvla_train.engine import train

    cfg = load_config(REPO / "configs" / "train_sac.yaml", [*TINY_STATE_SAC, *SAC_RUNS["full"]])
    with pytest.raises(
        SchemaError, match=r"resume with 1 process.*trained by 2.*--nproc_per_node 2"
    ):
        train(cfg, run_dir=full, resume="auto", progress=False, device="cpu")
