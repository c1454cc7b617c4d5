"""AWAC (algos/awac.py): advantage weights and the critic target on hand-computed cases, the
behaviour-cloning limit, resume equal to an uninterrupted run, init_from, the state actor behind
Policy.from_checkpoint and teamvla eval, and a slow end-to-end lift run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from teamvla_schema.checkpoint import load_checkpoint  # noqa: E402
from teamvla_schema.config import load_config  # noqa: E402
from teamvla_train.algos.awac import awac_update, awac_weights, q_target  # noqa: E402
from teamvla_train.models.sac_nets import SquashedGaussianActor, TwinQ  # noqa: E402
from train_testlib import REPO, one_torch_thread  # noqa: E402, F401

T = torch.tensor


def test_advantage_weights_hand_computed() -> None:
    adv = T([0.0, math.log(2.0), math.log(100.0), -math.log(4.0)])
    # exp(A / 1) = 1, 2, 100 -> clipped to 20, 0.25
    raw = awac_weights(adv, lam=1.0, max_weight=20.0, normalize=False)
    assert torch.allclose(raw, T([1.0, 2.0, 20.0, 0.25]))
    # normalised by the batch mean 23.25 / 4
    norm = awac_weights(adv, lam=1.0, max_weight=20.0, normalize=True)
    assert torch.allclose(norm, T([1.0, 2.0, 20.0, 0.25]) / (23.25 / 4))
    assert norm.mean().item() == pytest.approx(1.0)
    # lambda = 2 halves the exponent: exp(ln2 / 2) = sqrt 2; a huge advantage overflows to the clip
    half = awac_weights(T([math.log(2.0), 1e6]), lam=2.0, max_weight=5.0, normalize=False)
    assert torch.allclose(half, T([math.sqrt(2.0), 5.0]))
    # large lambda: every weight near 1 (behaviour cloning)
    flat = awac_weights(adv, lam=1e6, max_weight=20.0, normalize=True)
    assert torch.allclose(flat, torch.ones(4), atol=1e-5)
    adv.requires_grad_(True)
    assert not awac_weights(adv, lam=1.0, max_weight=20.0, normalize=True).requires_grad


def test_q_target_hand_computed() -> None:
    # r + gamma^k (1 - done) min(Q'1, Q'2): no entropy term in AWAC's critic
    y = q_target(reward=T([1.0, 0.5, 2.0]), done=T([0.0, 1.0, 0.0]), next_q1=T([2.0, 9.0, 4.0]),
                 next_q2=T([3.0, 9.0, 1.0]), gamma=0.5, nsteps=T([1.0, 1.0, 2.0]))  # fmt: skip
    assert torch.allclose(y, T([1.0 + 0.5 * 2.0, 0.5, 2.0 + 0.25 * 1.0]))


def _nets(seed: int = 0):
    torch.manual_seed(seed)
    actor = SquashedGaussianActor(obs_dim=2, action_dim=1, hidden_dims=[16])
    critic = TwinQ(obs_dim=2, action_dim=1, hidden_dims=[16])
    target = TwinQ(obs_dim=2, action_dim=1, hidden_dims=[16])
    target.load_state_dict(critic.state_dict())
    return actor, critic, target


def _batch(n: int = 8) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"obs": torch.randn(n, 2, generator=g), "action": torch.rand(n, 1, generator=g) * 2 - 1,
            "reward": torch.rand(n, generator=g), "next_obs": torch.randn(n, 2, generator=g),
            "done": torch.zeros(n, dtype=torch.bool), "nsteps": torch.ones(n)}  # fmt: skip


def test_uniform_weighting_is_behaviour_cloning() -> None:
    """weighting uniform: the actor's loss is -mean log pi(a|s) of the data, the critic untouched."""
    actor, critic, target = _nets()
    batch = _batch()
    before = {k: v.clone() for k, v in critic.state_dict().items()}
    want = -actor.log_prob(batch["obs"], batch["action"]).mean().item()
    opts = {"actor": torch.optim.SGD(actor.parameters(), lr=0.0), "critic": torch.optim.SGD(critic.parameters(), lr=0.1)}  # fmt: skip
    out = awac_update(batch=batch, actor=actor, critic=critic, target_critic=target, optimizers=opts,
                      gamma=0.9, tau=0.5, lam=1.0, max_weight=20.0, normalize=True, uniform=True,
                      value_samples=1, train_critic=False)  # fmt: skip
    assert out["actor_loss"].item() == pytest.approx(want, rel=1e-5)
    assert out["weight_max"].item() == 1.0
    assert all(torch.equal(v, before[k]) for k, v in critic.state_dict().items())


def test_awac_actor_loss_uses_the_advantage_weights() -> None:
    """The actor's loss equals -mean w log pi(a|s) with w from the critic (after its own step)."""
    actor, critic, target = _nets()
    batch = _batch()
    opts = {"actor": torch.optim.SGD(actor.parameters(), lr=0.0), "critic": torch.optim.SGD(critic.parameters(), lr=0.0)}  # fmt: skip
    torch.manual_seed(5)
    out = awac_update(batch=batch, actor=actor, critic=critic, target_critic=target, optimizers=opts,
                      gamma=0.9, tau=0.5, lam=0.1, max_weight=3.0, normalize=False, uniform=False,
                      value_samples=1, train_critic=True)  # fmt: skip
    # replay the same random draws: the target's a' ~ pi(.|s'), then V's a~ ~ pi(.|s)
    torch.manual_seed(5)
    with torch.no_grad():
        actor.sample(batch["next_obs"])
        v = torch.minimum(*critic(batch["obs"], actor.sample(batch["obs"])[0]))
        w = torch.exp((torch.minimum(*critic(batch["obs"], batch["action"])) - v) / 0.1).clamp(
            max=3.0
        )
    want = -(w * actor.log_prob(batch["obs"], batch["action"])).mean().item()
    assert out["actor_loss"].item() == pytest.approx(want, rel=1e-5)
    assert out["weight_max"].item() == pytest.approx(w.max().item())


def _lift(*extra: str):
    overrides = [
        "awac.demos_per_task=2", "awac.batch_size=32", "awac.hidden_dims=[32,32]",
        "awac.eval_episodes_per_task=2", "awac.eval_every_updates=0", "eval.every_env_steps=0",
        "awac.replay_capacity=500", "env.num_envs=2", "trainer.log_every=5",
        "trainer.ckpt_every=0", *extra,
    ]  # fmt: skip
    return load_config(REPO / "configs" / "train_awac.yaml", overrides)


def _ckpt(run: Path) -> dict:
    from teamvla_train.engine.checkpointing import resolve_checkpoint

    return load_checkpoint(resolve_checkpoint(run))


def test_offline_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """Killed halfway through the offline phase and resumed, the networks equal an uninterrupted run's."""
    from teamvla_train.engine import train

    steps = ["awac.online_env_steps=0"]
    train(_lift("awac.offline_steps=20", *steps), run_dir=tmp_path / "full", progress=False, device="cpu")  # fmt: skip
    train(_lift("awac.offline_steps=10", *steps), run_dir=tmp_path / "part", progress=False, device="cpu")  # fmt: skip
    train(_lift("awac.offline_steps=20", "trainer.resume_force=true", *steps), run_dir=tmp_path / "part",
          resume="auto", progress=False, device="cpu")  # fmt: skip
    a, b = _ckpt(tmp_path / "full"), _ckpt(tmp_path / "part")
    sa, sb = a["training_state"]["awac"], b["training_state"]["awac"]
    assert sa["offline_updates"] == sb["offline_updates"] == 20
    assert set(a["optimizer"]) == {"actor", "critic", "alpha"}
    assert {"critic", "target_critic", "log_alpha", "replay"} <= set(sa)
    for key in a["model"]:
        assert np.array_equal(a["model"][key], b["model"][key]), key
    for key in sa["target_critic"]:
        assert np.array_equal(sa["target_critic"][key], sb["target_critic"][key]), key


def test_bc_then_awac_online_init_from_and_policy(tmp_path: Path) -> None:
    """A BC actor (uniform weights, no critic), loaded by init_from and by Policy.from_checkpoint;
    then a short online phase: the replay mixes demos and online rows; teamvla eval runs it."""
    from teamvla_data.sim import make_env
    from teamvla_train import Policy
    from teamvla_train.algos.awac import AdvantageWeightedActorCritic
    from teamvla_train.algos.base import Context
    from teamvla_train.config import resolve_train_config
    from teamvla_train.engine import train
    from teamvla_train.engine.distributed import DistInfo
    from teamvla_train.engine.metrics import read_events
    from teamvla_train.evaluation import eval_config_from, evaluate_policy

    bc = ["awac.weighting=uniform", "awac.train_critic=false", "awac.online_env_steps=0", "awac.offline_steps=30"]  # fmt: skip
    train(_lift(*bc), run_dir=tmp_path / "bc", progress=False, device="cpu")
    bc_actor = _ckpt(tmp_path / "bc")["model"]

    cfg = resolve_train_config(_lift(f"awac.init_from={tmp_path / 'bc'}"))
    ctx = Context(cfg=cfg, run_dir=tmp_path / "x", device=torch.device("cpu"), dist_info=DistInfo(), amp_dtype=None)  # fmt: skip
    algo = AdvantageWeightedActorCritic(ctx)
    try:
        for key, value in algo.actor.state_dict().items():
            assert np.array_equal(value.numpy(), bc_actor[key]), key
        # mixing: online rows exist after a few steps; half of each batch comes from the demos
        algo.s.offline_steps = 0
        for _ in range(3):
            algo.train_step()
        assert len(algo.replay) > 0 and algo.demo is not None
        demo_rows = {r.tobytes() for r in algo.demo.obs[: len(algo.demo)]}
        from teamvla_train.algos.replay import sample_mixed

        batch = sample_mixed(online=algo.replay, demo=algo.demo, n=32, demo_ratio=0.5, rng=algo.rng)
        assert sum(r.tobytes() in demo_rows for r in batch["obs"][:16]) == 16
    finally:
        algo.close()

    policy = Policy.from_checkpoint(tmp_path / "bc")
    env = make_env("lift", obs_mode="state", render=False)
    obs, _ = env.reset(seed=3)
    action = policy.select_action(obs)
    assert set(action) == {"action_a", "action_b", "grip_a", "grip_b"}
    assert action["action_a"].shape == (7,) and action["action_a"].dtype == np.float32
    assert env.action_space.contains({k: np.asarray(v) for k, v in action.items()})
    env.step(action)
    batched = policy.select_actions(np.stack([obs, obs]))
    assert batched["action_a"].shape == (2, 7) and np.allclose(
        batched["action_a"][0], action["action_a"]
    )
    eval_cfg = eval_config_from(policy.config, episodes_per_task=2, tasks=["lift"])
    result = evaluate_policy(policy, eval_cfg, progress=False)
    assert result["closed_loop"]["lift"]["episodes"] == 2 and "offline" not in result

    online = _lift(f"awac.init_from={tmp_path / 'bc'}", "awac.offline_steps=5", "awac.online_env_steps=40", "eval.every_env_steps=20")  # fmt: skip
    train(online, run_dir=tmp_path / "awac", progress=False, device="cpu")
    evals = list(read_events(tmp_path / "awac" / "metrics.jsonl", "awac_eval"))
    assert [(e["phase"], e["env_steps"]) for e in evals] == [
        ("offline", 0),
        ("online", 20),
        ("online", 40),
    ]


@pytest.mark.slow
def test_awac_lift_end_to_end(tmp_path: Path) -> None:
    """BC on 10 lift demos, then AWAC offline + online with the default networks; prints the numbers."""
    from teamvla_train.engine import train
    from teamvla_train.engine.metrics import read_events

    base = ["env.num_envs=4", "awac.eval_episodes_per_task=10", "trainer.ckpt_every=0"]
    train(load_config(REPO / "configs" / "train_awac.yaml", [*base, "awac.weighting=uniform", "awac.train_critic=false",
          "awac.online_env_steps=0", "awac.offline_steps=300"]), run_dir=tmp_path / "bc", progress=False, device="cpu")  # fmt: skip
    train(load_config(REPO / "configs" / "train_awac.yaml", [*base, f"awac.init_from={tmp_path / 'bc'}",
          "awac.offline_steps=300", "awac.online_env_steps=400", "eval.every_env_steps=200"]),
          run_dir=tmp_path / "awac", progress=False, device="cpu")  # fmt: skip
    evals = list(read_events(tmp_path / "awac" / "metrics.jsonl", "awac_eval"))
    print("awac lift:", [(e["phase"], e["env_steps"], e["success_lift"]) for e in evals])
    assert [e["env_steps"] for e in evals if e["phase"] == "online"] == [200, 400]
    assert all(0.0 <= e["success_lift"] <= 1.0 for e in evals)


def _bernoulli_actor():
    """1 joint + 2 grips with constant outputs: joint mean 0, std 1; grip logits ln 3 (p 0.75), 0 (p 0.5)."""
    from teamvla_train.models.sac_nets import LOG_STD_MAX, LOG_STD_MIN, BernoulliGripActor

    actor = BernoulliGripActor(obs_dim=2, action_dim=3, hidden_dims=[4])
    raw0 = math.atanh(2 * (0.0 - LOG_STD_MIN) / (LOG_STD_MAX - LOG_STD_MIN) - 1)  # log std 0
    with torch.no_grad():
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.copy_(T([0.0, math.log(3.0), 0.0, raw0, 0.0, 0.0]))
    return actor


def test_bernoulli_grip_log_prob_and_weighted_loss_hand_computed() -> None:
    """awac.grip_head bernoulli: log pi = joint tanh-Gaussian + Bernoulli log-likelihood of the grip
    labels (a > 0: recorded +-0.5); the deterministic grip closes iff p > 0.5; AWAC's loss weights it."""
    from teamvla_data.sim.gym_env import action_space
    from teamvla_train.models.sac_nets import GRIP_LEVEL, ActionMap

    actor = _bernoulli_actor()
    obs = torch.randn(2, 2)
    action = T([[0.0, 0.5, -0.5], [0.0, -0.5, 0.5]])
    gauss = -0.5 * math.log(2 * math.pi)  # N(0; 0, 1), tanh correction log(1 - 0) = 0
    want = T([gauss + math.log(0.75) + math.log(0.5), gauss + math.log(0.25) + math.log(0.5)])
    logp = actor.log_prob(obs, action)
    assert torch.allclose(logp, want, atol=1e-5)
    # weighted likelihood: w = exp(A / lambda) = 1, 3 -> L = -(1 l1 + 3 l2) / 2
    w = awac_weights(T([0.0, math.log(3.0)]), lam=1.0, max_weight=20.0, normalize=False)
    assert (-(w * logp).mean()).item() == pytest.approx(
        -(want[0] + 3 * want[1]).item() / 2, rel=1e-5
    )
    # deterministic: joint tanh(0) = 0, grip a closes (p 0.75), grip b stays open (p 0.5 is not > 0.5)
    assert torch.equal(actor.act(obs), T([[0.0, GRIP_LEVEL, -GRIP_LEVEL]] * 2))
    # samples are binary levels, and their log-prob is log_prob's
    torch.manual_seed(0)
    a, lp = actor.sample(obs)
    assert set(a[:, 1:].flatten().tolist()) <= {GRIP_LEVEL, -GRIP_LEVEL}
    assert torch.allclose(lp, actor.log_prob(obs, a, eps=1e-6), atol=1e-3)
    # recorded demo grips (0 / 1 in the env) -> -0.5 / +0.5 -> Bernoulli labels 0 / 1
    amap = ActionMap(space=action_space(7), binary_grip=True)
    q = np.zeros(7 + 7 + 17, np.float32)
    flat = amap.from_env({"action_a": np.zeros(7), "action_b": np.zeros(7), "grip_a": 1.0, "grip_b": 0.0}, q)  # fmt: skip
    assert flat[-2:].tolist() == [GRIP_LEVEL, -GRIP_LEVEL] and (flat[-2:] > 0).tolist() == [True, False]  # fmt: skip
    # AWAC's update runs with this actor: V(s) from sampled actions, the uniform loss = -mean log pi
    critic = TwinQ(obs_dim=2, action_dim=3, hidden_dims=[8])
    target = TwinQ(obs_dim=2, action_dim=3, hidden_dims=[8])
    batch = {"obs": obs, "action": action, "reward": T([0.0, 1.0]), "next_obs": obs,
             "done": torch.zeros(2, dtype=torch.bool), "nsteps": torch.ones(2)}  # fmt: skip
    opts = {"actor": torch.optim.SGD(actor.parameters(), lr=0.0), "critic": torch.optim.SGD(critic.parameters(), lr=0.0)}  # fmt: skip
    for uniform in (True, False):
        out = awac_update(batch=batch, actor=actor, critic=critic, target_critic=target, optimizers=opts,
                          gamma=0.9, tau=0.5, lam=0.1, max_weight=3.0, normalize=True, uniform=uniform,
                          value_samples=2, train_critic=True)  # fmt: skip
        assert torch.isfinite(out["actor_loss"]) and torch.isfinite(out["advantage"])
    assert out["logp_data"].item() == pytest.approx(want.mean().item(), rel=1e-5)


def test_bernoulli_grip_checkpoint_round_trip(tmp_path: Path) -> None:
    """The head kind is recorded; Policy.from_checkpoint rebuilds it and its grip closes iff p > 0.5."""
    from teamvla_data.sim import make_env
    from teamvla_train import Policy
    from teamvla_train.engine import train
    from teamvla_train.models.sac_nets import BernoulliGripActor

    bc = ["awac.grip_head=bernoulli", "awac.weighting=uniform", "awac.train_critic=false", "awac.online_env_steps=0", "awac.offline_steps=30"]  # fmt: skip
    train(_lift(*bc), run_dir=tmp_path / "bc", progress=False, device="cpu")
    assert _ckpt(tmp_path / "bc")["extra"]["state_policy"]["grip_head"] == "bernoulli"
    policy = Policy.from_checkpoint(tmp_path / "bc")
    assert isinstance(policy.actor, BernoulliGripActor)
    env = make_env("lift", obs_mode="state", render=False)
    obs, _ = env.reset(seed=3)
    obs = np.stack([obs, obs + 0.5, obs - 0.5]).astype(np.float32)
    actor = policy.actor
    with torch.no_grad():  # push one logit to each side so both grip values are exercised
        actor.net[-1].bias[actor.joints : actor.action_dim] += torch.tensor([20.0, -20.0])
        p = torch.sigmoid(actor.grip_logits(torch.from_numpy(obs))).numpy()  # (3, 2)
    actions = policy.select_actions(obs)
    got = np.stack([actions["grip_a"], actions["grip_b"]], axis=1)
    assert np.array_equal(got, (p > 0.5).astype(np.float32))
    assert got[:, 0].tolist() == [1.0] * 3 and got[:, 1].tolist() == [0.0] * 3
    single = policy.select_action(obs[0])
    assert (single["grip_a"], single["grip_b"]) == (1.0, 0.0)
