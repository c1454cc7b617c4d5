"""SAC (algos/sac.py): the update rules on hand-computed cases, the replay buffer, learning a toy
problem, and a short lift run through the engine that checkpoints and resumes."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from teamvla_schema.checkpoint import load_checkpoint  # noqa: E402
from teamvla_schema.config import load_config  # noqa: E402
from teamvla_train.algos.replay import ReplayBuffer, sample_mixed  # noqa: E402
from teamvla_train.algos.sac import (  # noqa: E402
    actor_loss,
    critic_loss,
    critic_target,
    polyak_update,
    sac_update,
    temperature_loss,
)
from teamvla_train.models.sac_nets import (  # noqa: E402
    ActionMap,
    SquashedGaussianActor,
    TwinQ,
    squashed_log_prob,
)
from train_testlib import REPO, one_torch_thread  # noqa: E402, F401

T = torch.tensor


def test_critic_target_hand_computed() -> None:
    # y = r + gamma (1 - done) (min(q1', q2') - alpha logp')
    y = critic_target(
        reward=T([1.0, 0.0]), done=T([0.0, 1.0]), next_q1=T([2.0, 3.0]), next_q2=T([1.5, 4.0]),
        next_logp=T([-1.0, 0.5]), alpha=0.5, gamma=0.9,
    )  # fmt: skip
    # 1 + 0.9 * (1.5 - 0.5 * -1) = 2.8; done: 0
    assert torch.allclose(y, T([2.8, 0.0]))
    q1, q2 = T([2.0, 0.0], requires_grad=True), T([3.0, 1.0], requires_grad=True)
    loss = critic_loss(q1=q1, q2=q2, target=y)
    # mean((2-2.8)^2, 0^2) + mean((3-2.8)^2, 1^2) = 0.32 + 0.52
    assert loss.item() == pytest.approx(0.84)


def test_actor_and_temperature_losses_hand_computed() -> None:
    logp = T([-1.0, 0.5], requires_grad=True)
    log_alpha = T(math.log(0.5), requires_grad=True)
    # mean(0.5 * -1 - min(2, 1.5), 0.5 * 0.5 - min(3, 4)) = mean(-2, -2.75)
    loss_pi = actor_loss(logp=logp, q1=T([2.0, 3.0]), q2=T([1.5, 4.0]), alpha=log_alpha.exp())
    assert loss_pi.item() == pytest.approx(-2.375)
    loss_pi.backward()
    assert log_alpha.grad is None  # alpha is a constant in the actor's loss
    assert torch.allclose(logp.grad, T([0.25, 0.25]))
    logp.grad = None
    # -log_alpha * (logp + H) with H = -2: mean(-ln0.5 * -3, -ln0.5 * -1.5)
    loss_a = temperature_loss(log_alpha=log_alpha, logp=logp, target_entropy=-2.0)
    assert loss_a.item() == pytest.approx(math.log(0.5) * 2.25)
    loss_a.backward()
    assert log_alpha.grad.item() == pytest.approx(2.25)  # entropy above the target: alpha falls
    assert logp.grad is None  # logp detached


def test_squashed_log_prob_matches_torch_transformed_distribution() -> None:
    from torch.distributions import Normal, TanhTransform, TransformedDistribution

    torch.manual_seed(0)
    mean, log_std = torch.randn(5, 3), torch.randn(5, 3) * 0.5
    u = mean + log_std.exp() * torch.randn(5, 3)
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    want = dist.log_prob(torch.tanh(u)).sum(-1)
    got = squashed_log_prob(u=u, mean=mean, log_std=log_std)
    assert torch.allclose(got, want, atol=1e-4)
    # u = 0, mean 0, std 1: the Gaussian density alone, -0.5 ln(2 pi) per dimension
    zero = torch.zeros(1, 2)
    assert squashed_log_prob(u=zero, mean=zero, log_std=zero).item() == pytest.approx(
        -math.log(2 * math.pi)
    )


def test_polyak_update_exact() -> None:
    src, tgt = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        src.weight.copy_(T([[1.0, 2.0]]))
        src.bias.fill_(4.0)
        tgt.weight.copy_(T([[3.0, -2.0]]))
        tgt.bias.fill_(0.0)
    polyak_update(source=src, target=tgt, tau=0.25)
    assert torch.equal(tgt.weight, T([[2.5, -1.0]]))  # 0.25 * src + 0.75 * tgt
    assert torch.equal(tgt.bias, T([1.0]))


def _rows(n: int, value: float) -> dict[str, np.ndarray]:
    return {
        "obs": np.full((n, 2), value, np.float32),
        "action": np.full((n, 1), value, np.float32),
        "reward": np.full(n, value, np.float32),
        "next_obs": np.full((n, 2), value + 1, np.float32),
        "done": np.zeros(n, bool),
    }


def test_replay_ring_bounds_and_state_round_trip() -> None:
    buf = ReplayBuffer(capacity=5, obs_dim=2, action_dim=1)
    buf.add_batch(**_rows(3, 0.0))
    buf.add_batch(**_rows(4, 1.0))  # wraps: rows 0, 1 overwritten
    assert (len(buf), buf.pos, buf.added) == (5, 2, 7)
    assert buf.reward.tolist() == [1, 1, 0, 1, 1]
    buf.add_batch(**_rows(12, 2.0))  # more than the capacity: the newest 5 survive
    assert (len(buf), buf.added) == (5, 19) and set(buf.reward.tolist()) == {2.0}
    other = ReplayBuffer(capacity=5, obs_dim=2, action_dim=1)
    other.load_state_dict(buf.state_dict())
    for key in ("obs", "action", "reward", "next_obs", "done"):
        assert np.array_equal(getattr(other, key), getattr(buf, key))
    assert (other.pos, other.size, other.added) == (buf.pos, buf.size, buf.added)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    assert np.array_equal(buf.sample(8, rng_a)["obs"], other.sample(8, rng_b)["obs"])
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=6, obs_dim=2, action_dim=1).load_state_dict(buf.state_dict())


def test_replay_mixing_ratio() -> None:
    online, demo = ReplayBuffer(capacity=50, obs_dim=2, action_dim=1), ReplayBuffer(capacity=10, obs_dim=2, action_dim=1)  # fmt: skip
    online.add_batch(**_rows(50, 0.0))
    demo.add_batch(**_rows(10, 1.0))
    rng = np.random.default_rng(0)
    for ratio, want in ((0.5, 32), (0.25, 16), (0.0, 0), (1.0, 64)):
        batch = sample_mixed(online=online, demo=demo, n=64, demo_ratio=ratio, rng=rng)
        assert batch["reward"].shape == (64,) and int(batch["reward"].sum()) == want
    assert sample_mixed(online=online, demo=None, n=8, demo_ratio=0.5, rng=rng)["reward"].sum() == 0


def test_action_map_round_trip() -> None:
    from teamvla_data.sim.gym_env import action_space

    amap = ActionMap(space=action_space(3), mode="absolute", binary_grip=False)
    x = np.array([[-1, 0, 1, 0.5, 0.5, 0.5, -1, 1]], np.float32)
    env = amap.to_env(x)
    assert np.allclose(env["action_a"], [[-2.7, 0, 2.7]]) and np.allclose(env["action_b"], 1.35)
    assert env["grip_a"].tolist() == [0.0] and env["grip_b"].tolist() == [1.0]
    one = {k: v[0] for k, v in env.items()}
    assert np.allclose(amap.from_env(one), x[0], atol=1e-6)


def test_delta_action_map_steps_from_the_current_joints() -> None:
    from teamvla_data.sim.gym_env import action_space

    amap = ActionMap(space=action_space(3), mode="delta", joint_step=0.15, binary_grip=False)
    obs = np.zeros((1, 2 * 3 + 17), np.float32)
    obs[0, :6] = [0.0, 1.0, 2.65, -1.0, 0.5, 0.0]  # q_a, q_b lead the state vector
    x = np.array([[1, -1, 1, 0.5, 0, -0.5, -1, 1]], np.float32)
    env = amap.to_env(x, obs)
    # q + 0.15 x, clipped to the 2.7 rad limit (2.65 + 0.15 -> 2.7)
    assert np.allclose(env["action_a"], [[0.15, 0.85, 2.7]])
    assert np.allclose(env["action_b"], [[-0.925, 0.5, -0.075]])
    assert env["grip_a"].tolist() == [0.0] and env["grip_b"].tolist() == [1.0]
    one = {k: v[0] for k, v in env.items()}
    back = amap.from_env(one, obs[0])
    assert np.allclose(back[[0, 1, 3, 4, 5, 6, 7]], x[0, [0, 1, 3, 4, 5, 6, 7]], atol=1e-5)
    assert back[2] == pytest.approx(0.05 / 0.15, abs=1e-5)  # the clipped step, as executed
    with pytest.raises(ValueError, match="state observation"):
        amap.to_env(x)


def test_n_step_transitions_hand_computed() -> None:
    from teamvla_train.algos.replay import NStep

    acc = NStep(n=2, gamma=0.5, num_envs=2)
    o = lambda v: np.full((2, 1), v, np.float32)  # noqa: E731
    a = np.zeros((2, 1), np.float32)
    no, yes = np.array([False, False]), np.array([False, True])
    out = acc.push(obs=o(0), action=a, reward=np.array([1.0, 1.0]), next_obs=o(1), terminated=no, truncated=no)  # fmt: skip
    assert len(out["reward"]) == 0  # nothing has n rewards yet
    # world 1 terminates at its second step: both its transitions leave, done, with k = 2 and 1
    out = acc.push(obs=o(1), action=a, reward=np.array([2.0, 4.0]), next_obs=o(2), terminated=yes, truncated=no)  # fmt: skip
    assert out["reward"].tolist() == [
        2.0,
        3.0,
        4.0,
    ]  # world 0: 1 + 0.5 * 2; world 1: 1 + 0.5 * 4, then 4
    assert out["nsteps"].tolist() == [2, 2, 1] and out["done"].tolist() == [False, True, True]
    assert out["obs"][:, 0].tolist() == [0, 0, 1] and out["next_obs"][:, 0].tolist() == [2, 2, 2]
    # a truncation flushes too, but keeps bootstrapping (done false)
    out = acc.push(obs=o(2), action=a, reward=np.array([8.0, 0.0]), next_obs=o(3), terminated=no, truncated=np.array([True, False]))  # fmt: skip
    assert out["reward"].tolist() == [2.0 + 0.5 * 8.0, 8.0] and out["done"].tolist() == [
        False,
        False,
    ]
    assert out["nsteps"].tolist() == [2, 1]
    # the critic target discounts by gamma^k
    y = critic_target(reward=T([3.0]), done=T([0.0]), next_q1=T([2.0]), next_q2=T([4.0]),
                      next_logp=T([0.0]), alpha=0.0, gamma=0.5, nsteps=T([2.0]))  # fmt: skip
    assert y.item() == pytest.approx(3.0 + 0.25 * 2.0)


def test_sac_learns_a_one_step_continuous_problem() -> None:
    """Reward -(a - 0.5)^2, one-step episodes: the deterministic action reaches 0.5 in seconds."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    actor = SquashedGaussianActor(obs_dim=1, action_dim=1, hidden_dims=[32, 32])
    critic = TwinQ(obs_dim=1, action_dim=1, hidden_dims=[32, 32])
    target = TwinQ(obs_dim=1, action_dim=1, hidden_dims=[32, 32])
    target.load_state_dict(critic.state_dict())
    log_alpha = torch.tensor(math.log(0.1), requires_grad=True)
    opts = {
        "actor": torch.optim.Adam(actor.parameters(), lr=3e-3),
        "critic": torch.optim.Adam(critic.parameters(), lr=3e-3),
        "alpha": torch.optim.Adam([log_alpha], lr=3e-3),
    }
    buf = ReplayBuffer(capacity=2000, obs_dim=1, action_dim=1)
    obs = np.ones((8, 1), np.float32)
    t0 = time.perf_counter()
    for step in range(300):
        with torch.no_grad():
            a = actor.sample(torch.as_tensor(obs))[0].numpy() if step >= 10 else rng.uniform(-1, 1, (8, 1)).astype(np.float32)  # fmt: skip
        reward = -((a[:, 0] - 0.5) ** 2)
        buf.add_batch(obs=obs, action=a, reward=reward, next_obs=obs, done=np.ones(8, bool))
        batch = {k: torch.as_tensor(v) for k, v in buf.sample(64, rng).items()}
        sac_update(batch=batch, actor=actor, critic=critic, target_critic=target, log_alpha=log_alpha,
                   optimizers=opts, gamma=0.99, tau=0.05, target_entropy=-1.0)  # fmt: skip
    seconds = time.perf_counter() - t0
    best = actor.act(torch.ones(1, 1)).item()
    print(f"toy: deterministic action {best:.3f} (optimum 0.5) after 300 updates, {seconds:.1f} s")
    assert abs(best - 0.5) < 0.1
    assert seconds < 30


def _lift(env_steps: int, *extra: str) -> object:
    overrides = [
        f"sac.env_steps={env_steps}", "sac.warmup_steps=40", "sac.batch_size=32",
        "sac.hidden_dims=[32,32]", "sac.demos_per_task=1", "sac.eval_episodes_per_task=2",
        "eval.every_env_steps=80", "sac.replay_capacity=1000", "env.num_envs=4",
        "sac.n_step=1",  # every transition lands in the replay at once (no pending n-step tails)
        "trainer.log_every=5", "trainer.ckpt_every=0", *extra,
    ]  # fmt: skip
    return load_config(REPO / "configs" / "train_sac.yaml", overrides)


def _sac_state(run: Path) -> dict:
    from teamvla_train.engine.checkpointing import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(run))


def test_lift_state_run_checkpoints_and_resumes(tmp_path: Path) -> None:
    from teamvla_train.engine import train
    from teamvla_train.engine.metrics import read_events

    n = 100  # transitions, 25 engine steps of 4 worlds
    full = train(_lift(2 * n), run_dir=tmp_path / "full", progress=False, device="cpu")
    half = train(_lift(n), run_dir=tmp_path / "part", progress=False, device="cpu")
    resumed = train(_lift(2 * n, "trainer.resume_force=true"), run_dir=tmp_path / "part",
                    resume="auto", progress=False, device="cpu")  # fmt: skip
    assert (full.steps, half.steps, resumed.steps) == (50, 25, 50)
    a, b = _sac_state(tmp_path / "full"), _sac_state(tmp_path / "part")
    sa, sb = a["training_state"]["sac"], b["training_state"]["sac"]
    assert set(a["optimizer"]) == {"actor", "critic", "alpha"}
    assert {"critic", "target_critic", "log_alpha", "replay"} <= set(sa)
    assert sa["env_steps"] == sb["env_steps"] == 2 * n
    # utd 1 x 4 worlds per engine step from the one that completes the 40-transition warm-up
    assert sa["updates"] == sb["updates"] == 4 * ((2 * n - 40) // 4 + 1)
    assert int(sa["replay"]["size"]) == int(sb["replay"]["size"]) == 2 * n
    # The first half of the replay is the same experiment (restored, not re-collected).
    assert np.array_equal(sa["replay"]["obs"][:n], sb["replay"]["obs"][:n])
    assert np.array_equal(sa["replay"]["action"][:n], sb["replay"]["action"][:n])
    # The data/online mix of the updates is logged: RLPD's symmetric 0.5 once updates run.
    train_records = [
        r for r in map(json.loads, (tmp_path / "full" / "metrics.jsonl").read_text().splitlines())
        if r.get("split") == "train" and r.get("updates", 0) > 0
    ]  # fmt: skip
    # (a record averages its window, so the one that includes the warm-up shows less)
    assert train_records[-1]["demo_fraction"] == 0.5
    assert all(0 < r["demo_fraction"] <= 0.5 for r in train_records)
    evals = list(read_events(tmp_path / "full" / "metrics.jsonl", "sac_eval"))
    assert [e["env_steps"] for e in evals] == [80, 160, 200]
    print("lift evals:", evals)
    # the actor is an ordinary teamvla checkpoint for Policy.from_checkpoint
    from teamvla_data.sim import make_env
    from teamvla_train import Policy

    policy = Policy.from_checkpoint(tmp_path / "full")
    env = make_env("lift", obs_mode="state", render=False)
    obs, _ = env.reset(seed=0)
    action = policy.select_action(obs)
    assert env.action_space.contains({k: np.asarray(v) for k, v in action.items()})
    assert {float(action["grip_a"]), float(action["grip_b"])} <= {0.0, 1.0}  # binary grips
    assert a["extra"]["state_policy"]["action_map"]["mode"] == "delta"


def test_sac_init_from_loads_a_state_actor(tmp_path: Path) -> None:
    """sac.init_from starts the actor from another run's actor (e.g. a BC actor)."""
    from teamvla_train.algos.base import Context
    from teamvla_train.algos.sac import SoftActorCritic
    from teamvla_train.config import resolve_train_config
    from teamvla_train.engine import train
    from teamvla_train.engine.distributed import DistInfo

    train(_lift(40), run_dir=tmp_path / "first", progress=False, device="cpu")
    actor = _sac_state(tmp_path / "first")["model"]
    cfg = resolve_train_config(_lift(40, f"sac.init_from={tmp_path / 'first'}"))
    algo = SoftActorCritic(Context(cfg=cfg, run_dir=tmp_path / "x", device=torch.device("cpu"),
                                   dist_info=DistInfo(), amp_dtype=None))  # fmt: skip
    try:
        for key, value in algo.actor.state_dict().items():
            assert np.array_equal(value.numpy(), actor[key]), key
    finally:
        algo.close()
    bad = resolve_train_config(
        _lift(40, f"sac.init_from={tmp_path / 'first'}", "sac.hidden_dims=[16]")
    )
    with pytest.raises(Exception, match="hidden_dims"):
        SoftActorCritic(Context(cfg=bad, run_dir=tmp_path / "y", device=torch.device("cpu"),
                                dist_info=DistInfo(), amp_dtype=None))  # fmt: skip


@pytest.mark.slow
def test_sac_killed_with_sigkill_resumes_the_same_experiment(tmp_path: Path) -> None:
    # A real SIGKILL mid-run (not a clean stop): the resumed run finishes, and everything
    # collected up to the checkpoint it resumed from is the same experiment as an
    # uninterrupted run's (replay rows restored, not re-collected).
    import os
    import signal
    import subprocess
    import sys

    from teamvla_train.engine.checkpointing import read_latest

    overrides = [
        "sac.env_steps=1000", "sac.warmup_steps=40", "sac.batch_size=32",
        "sac.hidden_dims=[32,32]", "sac.demos_per_task=1", "sac.eval_episodes_per_task=0",
        "sac.replay_capacity=4000", "env.num_envs=4", "sac.n_step=1", "trainer.log_every=50",
        "trainer.ckpt_every=25",
    ]  # fmt: skip

    def command(out: Path, *extra: str) -> list[str]:
        cfg = str(REPO / "configs" / "train_sac.yaml")
        return [sys.executable, "-m", "teamvla_schema.cli", "train", "--config", cfg,
                *overrides, "--out", str(out), "--no-progress", *extra]  # fmt: skip

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = subprocess.run(command(tmp_path / "ref"), capture_output=True, text=True, env=env, cwd=REPO, timeout=300)  # fmt: skip
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "victim"
    victim = subprocess.Popen(command(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)  # fmt: skip
    pointer = run / "checkpoints" / "lift" / "latest"
    deadline = time.monotonic() + 240
    while not pointer.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    latest = read_latest(pointer.parent)
    assert latest is not None and 25 <= latest["step"] < 250
    kept = int(_sac_state(run)["training_state"]["sac"]["replay"]["size"])
    resumed = subprocess.run(command(run, "--resume", "auto"), capture_output=True, text=True, env=env, cwd=REPO, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    a = _sac_state(tmp_path / "ref")["training_state"]["sac"]
    b = _sac_state(run)["training_state"]["sac"]
    assert a["env_steps"] == b["env_steps"] == 1000
    assert int(b["replay"]["size"]) == 1000 and kept >= 100
    for key in ("obs", "action", "reward", "next_obs"):
        assert np.array_equal(a["replay"][key][:kept], b["replay"][key][:kept]), key
