"""Soft actor-critic (Haarnoja et al., 2018) with RLPD's demonstration-seeded replay (Ball et al., 2023).

The whole algorithm, top to bottom (config: the ``sac:`` and ``env:`` sections,
:class:`teamvla_train.algo_config.SacConfig` and ``EnvConfig``):

    demos     record sac.demos_per_task scripted-expert episodes per task in the state-obs env
              into the demo buffer (ReplayBuffer, algos/replay.py)
    each train_step (one engine step):
      act     env.num_envs worlds step once (make_vector_env, obs_mode="state"): uniformly
              random actions for the first sac.warmup_steps transitions, then a ~ pi(.|s)
      store   (s, a, r, s', terminated) into the online ring buffer (sac.replay_capacity)
      update  sac.utd_ratio * env.num_envs times (once past the warm-up): a batch of
              sac.batch_size, sac.demo_ratio of it from the demos (sample_mixed), then
                critic       y = r + gamma (1 - done) (min_j Q'_j(s', a') - alpha log pi(a'|s')),
                             a' ~ pi(.|s');  L = sum_j mean (Q_j(s, a) - y)^2
                actor        L = mean alpha log pi(a~|s) - min_j Q_j(s, a~),  a~ ~ pi(.|s)
                temperature  L = mean -log_alpha (log pi(a~|s) + target_entropy)  (detached)
                Polyak       Q' <- tau Q + (1 - tau) Q'
      evaluate every sac.eval_every_env_steps transitions and at the end: the deterministic
              actor (tanh of the mean) on held-out evaluation seeds, a "sac_eval" JSONL event

Actions are flat vectors in [-1, 1] mapped affinely to the env's joint limits
and [0, 1] grips (:class:`teamvla_train.models.sac_nets.ActionMap`). The
checkpoint's ``model`` is the actor (the deployable policy); ``optimizer`` holds
``actor``, ``critic`` and ``alpha``; ``training_state["sac"]`` the ``critic``,
``target_critic``, ``log_alpha``, the online replay, the sampling generator and
counters. Demos are re-recorded (deterministically) when a run starts; episodes
in flight at a checkpoint start afresh on resume. Not yet: pixel observations,
demos from recorded datasets through the dataloader (the pixel path), AWAC.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from teamvla_schema import SchemaError
from torch import nn
from torch.nn import functional as F

from teamvla_train.algos.base import Context, StepOutput
from teamvla_train.algos.replay import ReplayBuffer, record_demos, sample_mixed
from teamvla_train.data import TrainData
from teamvla_train.engine.optim import to_torch_tree
from teamvla_train.models.sac_nets import ActionMap, SquashedGaussianActor, TwinQ

ONLINE_SEED_OFFSET = 1_000_000  # episode_seed indices of online scenes (demos use 0, 1, ...)

# --------------------------------------------------------------------------- the update rule


def critic_target(
    *,
    reward: torch.Tensor,
    done: torch.Tensor,
    next_q1: torch.Tensor,
    next_q2: torch.Tensor,
    next_logp: torch.Tensor,
    alpha: torch.Tensor | float,
    gamma: float,
) -> torch.Tensor:
    """Clipped double-Q soft target ``r + gamma (1 - done) (min(Q'1, Q'2) - alpha logp)``, all ``(B,)``."""
    soft_value = torch.minimum(next_q1, next_q2) - alpha * next_logp
    return reward + gamma * (1.0 - done.float()) * soft_value


def critic_loss(*, q1: torch.Tensor, q2: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean (q1 - y)^2 + mean (q2 - y)^2`` for ``(B,)`` inputs (the target carries no gradient)."""
    target = target.detach()
    return F.mse_loss(q1, target) + F.mse_loss(q2, target)


def actor_loss(
    *, logp: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor, alpha: torch.Tensor | float
) -> torch.Tensor:
    """``mean alpha logp - min(q1, q2)`` over ``(B,)`` (alpha is a constant here)."""
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.detach()
    return (alpha * logp - torch.minimum(q1, q2)).mean()


def temperature_loss(
    *, log_alpha: torch.Tensor, logp: torch.Tensor, target_entropy: float
) -> torch.Tensor:
    """``mean -log_alpha (logp + target_entropy)`` with ``logp`` detached; ``logp (B,)``."""
    return (-log_alpha * (logp.detach() + target_entropy)).mean()


@torch.no_grad()
def polyak_update(*, source: nn.Module, target: nn.Module, tau: float) -> None:
    """``target <- tau * source + (1 - tau) * target``, parameter by parameter (buffers copied)."""
    for p, tp in zip(source.parameters(), target.parameters(), strict=True):
        tp.mul_(1.0 - tau).add_(p, alpha=tau)
    for b, tb in zip(source.buffers(), target.buffers(), strict=True):
        tb.copy_(b)


def sac_update(
    *,
    batch: Mapping[str, torch.Tensor],
    actor: SquashedGaussianActor,
    critic: TwinQ,
    target_critic: TwinQ,
    log_alpha: torch.Tensor,
    optimizers: Mapping[str, torch.optim.Optimizer],
    gamma: float,
    tau: float,
    target_entropy: float,
) -> dict[str, torch.Tensor]:
    """One gradient update of critic, actor and temperature, then the Polyak step; detached metrics."""
    obs, action, next_obs = (
        batch["obs"],
        batch["action"],
        batch["next_obs"],
    )  # (B, O), (B, D), (B, O)
    alpha = log_alpha.exp().detach()
    with torch.no_grad():
        next_action, next_logp = actor.sample(next_obs)
        next_q1, next_q2 = target_critic(next_obs, next_action)
        y = critic_target(
            reward=batch["reward"], done=batch["done"], next_q1=next_q1, next_q2=next_q2,
            next_logp=next_logp, alpha=alpha, gamma=gamma,
        )  # fmt: skip
    q1, q2 = critic(obs, action)
    loss_q = critic_loss(q1=q1, q2=q2, target=y)
    optimizers["critic"].zero_grad(set_to_none=True)
    loss_q.backward()
    optimizers["critic"].step()

    new_action, logp = actor.sample(obs)
    pq1, pq2 = critic(obs, new_action)
    loss_pi = actor_loss(logp=logp, q1=pq1, q2=pq2, alpha=alpha)
    optimizers["actor"].zero_grad(set_to_none=True)
    loss_pi.backward()
    optimizers["actor"].step()

    loss_alpha = temperature_loss(log_alpha=log_alpha, logp=logp, target_entropy=target_entropy)
    optimizers["alpha"].zero_grad(set_to_none=True)
    loss_alpha.backward()
    optimizers["alpha"].step()

    polyak_update(source=critic, target=target_critic, tau=tau)
    return {
        "loss": loss_q.detach(),
        "actor_loss": loss_pi.detach(),
        "alpha_loss": loss_alpha.detach(),
        "alpha": log_alpha.detach().exp(),
        "q": q1.detach().mean(),
        "entropy": -logp.detach().mean(),
    }


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_actor(
    *, actor: SquashedGaussianActor, tasks: Sequence[str], episodes: int, num_joints: int,
    amap: ActionMap, device: torch.device,
) -> dict[str, float]:  # fmt: skip
    """Success rate and mean return per task of the deterministic actor on held-out evaluation seeds."""
    from teamvla_data.sim import eval_seeds, make_vector_env

    out: dict[str, float] = {}
    for task in tasks:
        envs = make_vector_env(
            task, episodes, obs_mode="state", render=False, num_joints=num_joints
        )
        obs, _ = envs.reset(seed=eval_seeds(task, episodes))
        alive = np.ones(episodes, bool)
        ret, success = np.zeros(episodes), np.zeros(episodes, bool)
        while alive.any():
            u = actor.act(torch.as_tensor(obs, device=device)).cpu().numpy()
            obs, reward, terminated, truncated, _ = envs.step(amap.to_env(u))
            ret += np.where(alive, reward, 0.0)
            success |= alive & terminated
            alive &= ~(terminated | truncated)
        envs.close()
        out[f"success_{task}"], out[f"return_{task}"] = float(success.mean()), float(ret.mean())
    return out


# --------------------------------------------------------------------------- the algorithm


class SoftActorCritic:
    """SAC on the engine (see the module docstring)."""

    name = "sac"

    def __init__(self, ctx: Context, *, data: TrainData | None = None) -> None:
        if ctx.dist_info.enabled:
            raise SchemaError("trainer.algo sac runs in one process: launch it without torchrun")
        if data is not None:
            raise SchemaError("trainer.algo sac collects its own data; it takes no data= argument")
        env_cfg, s = ctx.cfg.env, ctx.cfg.sac
        if env_cfg.obs_mode != "state":
            raise SchemaError(
                f"trainer.algo sac supports env.obs_mode state only (received {env_cfg.obs_mode!r}); "
                "pixel observations are not implemented yet"
            )
        from teamvla_data.sim import make_vector_env

        self.ctx, self.s, self.env_cfg = ctx, s, env_cfg
        self.tasks = list(env_cfg.tasks)
        self.num_joints = ctx.cfg.model.num_joints
        self.envs = make_vector_env(
            self.tasks, env_cfg.num_envs, obs_mode="state", render=False,
            num_joints=self.num_joints, autoreset_mode="SameStep",
        )  # fmt: skip
        self.amap = ActionMap(space=self.envs.single_action_space)
        obs_shape = self.envs.single_observation_space.shape or (0,)  # state: one flat Box
        obs_dim, act_dim = int(obs_shape[0]), self.amap.dim
        dev = ctx.device
        self.actor = SquashedGaussianActor(obs_dim=obs_dim, action_dim=act_dim, hidden_dims=s.hidden_dims).to(dev)  # fmt: skip
        self.critic = TwinQ(obs_dim=obs_dim, action_dim=act_dim, hidden_dims=s.hidden_dims, layer_norm=s.critic_layer_norm).to(dev)  # fmt: skip
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(s.init_temperature), device=dev, requires_grad=True)
        self.target_entropy = float(-act_dim if s.target_entropy is None else s.target_entropy)
        self.optimizers = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=s.actor_lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=s.critic_lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=s.alpha_lr),
        }
        self.replay = ReplayBuffer(capacity=s.replay_capacity, obs_dim=obs_dim, action_dim=act_dim)
        self.demo: ReplayBuffer | None = None
        if s.demos_per_task:
            demos = record_demos(tasks=self.tasks, episodes=s.demos_per_task, seed=env_cfg.seed,
                                 num_joints=self.num_joints, amap=self.amap)  # fmt: skip
            self.demo = ReplayBuffer(capacity=len(demos["reward"]), obs_dim=obs_dim, action_dim=act_dim)  # fmt: skip
            self.demo.add_batch(**demos)
        self.rng = np.random.default_rng([env_cfg.seed, 5417])  # warm-up actions and batches
        self.env_steps = 0  # transitions collected
        self.updates = 0  # gradient updates done
        self.recent_returns: list[float] = []  # the last 20 finished online episodes
        self.recent_success: list[float] = []
        self._reset_envs()

    def _reset_envs(self) -> None:
        from teamvla_data.sim import episode_seed

        tasks, base = self.envs.tasks, ONLINE_SEED_OFFSET + self.env_steps
        seeds = [episode_seed(self.env_cfg.seed, t, base + i) for i, t in enumerate(tasks)]
        self.obs, _ = self.envs.reset(seed=seeds)
        self.ep_return = np.zeros(self.envs.num_envs)

    # ------------------------------------------------------------------ one engine step
    def train_step(self) -> StepOutput:
        """One batched env step into the replay, then utd_ratio * num_envs updates after warm-up."""
        t0 = time.perf_counter()
        s, n_env, dev = self.s, self.envs.num_envs, self.ctx.device
        if self.env_steps < s.warmup_steps:
            u = self.rng.uniform(-1.0, 1.0, (n_env, self.amap.dim)).astype(np.float32)
        else:
            with torch.no_grad():
                u = self.actor.sample(torch.as_tensor(self.obs, device=dev))[0].cpu().numpy()
        next_obs, reward, terminated, truncated, infos = self.envs.step(self.amap.to_env(u))
        ended = terminated | truncated
        real_next = np.array(next_obs, np.float32, copy=True)
        for i in np.flatnonzero(ended):  # SameStep autoreset: the ending observation is final_obs
            real_next[i] = infos["final_obs"][i]
        self.replay.add_batch(obs=self.obs, action=u, reward=reward, next_obs=real_next, done=terminated)  # fmt: skip
        self.obs = next_obs
        self.env_steps += n_env
        self.ep_return += reward
        for i in np.flatnonzero(ended):
            self.recent_returns = [*self.recent_returns, float(self.ep_return[i])][-20:]
            self.recent_success = [*self.recent_success, float(terminated[i])][-20:]
            self.ep_return[i] = 0.0
        t1 = time.perf_counter()

        metrics = {k: torch.zeros((), device=dev) for k in ("loss", "actor_loss", "alpha_loss", "q", "entropy")}  # fmt: skip
        metrics["alpha"] = self.log_alpha.detach().exp()
        if self.env_steps >= max(s.warmup_steps, 1):
            for _ in range(s.utd_ratio * n_env):
                batch = sample_mixed(online=self.replay, demo=self.demo, n=s.batch_size, demo_ratio=s.demo_ratio, rng=self.rng)  # fmt: skip
                tensors = {k: torch.as_tensor(v, device=dev) for k, v in batch.items()}
                metrics = sac_update(
                    batch=tensors, actor=self.actor, critic=self.critic,
                    target_critic=self.target_critic, log_alpha=self.log_alpha,
                    optimizers=self.optimizers, gamma=s.gamma, tau=s.tau,
                    target_entropy=self.target_entropy,
                )  # fmt: skip
                self.updates += 1
        metrics["updates"] = torch.tensor(float(self.updates), device=dev)
        metrics["env_steps"] = torch.tensor(float(self.env_steps), device=dev)
        metrics["episode_return"] = torch.tensor(float(np.mean(self.recent_returns or [0.0])), device=dev)  # fmt: skip
        metrics["episode_success"] = torch.tensor(float(np.mean(self.recent_success or [0.0])), device=dev)  # fmt: skip
        out = StepOutput(metrics=metrics, samples=n_env, data_time=t1 - t0,
                         compute_time=time.perf_counter() - t1)  # fmt: skip
        every, before = s.eval_every_env_steps, self.env_steps - n_env
        last = self.env_steps >= s.env_steps
        if s.eval_episodes_per_task and (last or (every and self.env_steps // every > before // every)):  # fmt: skip
            out.events.append({"event": "sac_eval", "env_steps": self.env_steps, **self.evaluate()})
        return out

    def evaluate(self) -> dict[str, float]:
        """The deterministic actor on ``sac.eval_episodes_per_task`` held-out seeds per task."""
        self.actor.eval()
        try:
            return evaluate_actor(actor=self.actor, tasks=self.tasks, episodes=self.s.eval_episodes_per_task,
                                  num_joints=self.num_joints, amap=self.amap, device=self.ctx.device)  # fmt: skip
        finally:
            self.actor.train()

    # ------------------------------------------------------------------ the engine's interface
    def total_steps(self) -> int:
        """Engine steps: ``ceil(sac.env_steps / env.num_envs)``."""
        return -(-self.s.env_steps // self.env_cfg.num_envs)

    @property
    def epoch(self) -> int:
        """SAC has no passes over a dataset (0)."""
        return 0

    def train(self, mode: bool = True) -> None:
        """Training (or evaluation) mode of every network."""
        for net in (self.actor, self.critic, self.target_critic):
            net.train(mode)

    def lr(self) -> float:
        """The actor's learning rate."""
        return float(self.optimizers["actor"].param_groups[0]["lr"])

    def policy_network(self) -> nn.Module:
        """The actor (the deployable policy)."""
        return self.actor

    def validate(self) -> dict[str, float]:
        """Nothing held out offline; evaluation runs on its own cadence (``sac_eval`` events)."""
        return {}

    def checkpoint_state(self) -> dict[str, Any]:
        """Actor as ``model``; the three optimisers; critics, temperature, replay and counters."""
        bit = self.rng.bit_generator.state  # PCG64's 128-bit integers as strings
        extra = {"obs_mode": "state", "action_low": self.amap.low, "action_high": self.amap.high}
        rng = {"state": str(bit["state"]["state"]), "inc": str(bit["state"]["inc"]), "has_uint32": int(bit["has_uint32"]), "uinteger": int(bit["uinteger"])}  # fmt: skip
        return {
            "model": self.actor.state_dict(),
            "optimizer": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "scheduler": {"name": "constant"},  # constant learning rates
            "training_state": {
                "sac": {
                    "env_steps": self.env_steps,
                    "updates": self.updates,
                    "critic": self.critic.state_dict(),
                    "target_critic": self.target_critic.state_dict(),
                    "log_alpha": self.log_alpha.detach().clone(),
                    "replay": self.replay.state_dict(),
                    "rng": rng,
                    "recent_returns": list(self.recent_returns),
                    "recent_success": list(self.recent_success),
                }
            },
            "extra": {"sac": extra},
        }

    def load_checkpoint_state(
        self,
        ckpt: Mapping[str, Any],
        *,
        path: Path,
        force: bool,
        changes: Sequence[tuple[str, Any, Any]] = (),
    ) -> None:
        """Restore networks, temperature, optimisers, replay and counters; restart the episodes in flight."""
        mine = (ckpt.get("training_state") or {}).get("sac")
        if mine is None:
            raise SchemaError(
                "cannot resume: not a sac checkpoint (no training_state.sac)", path=path
            )
        try:
            self.actor.load_state_dict(to_torch_tree(dict(ckpt["model"])))
            self.critic.load_state_dict(to_torch_tree(dict(mine["critic"])))
            self.target_critic.load_state_dict(to_torch_tree(dict(mine["target_critic"])))
            for key, opt in self.optimizers.items():
                opt.load_state_dict(to_torch_tree(ckpt["optimizer"][key]))
            self.replay.load_state_dict(mine["replay"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise SchemaError(f"cannot resume: the sac state does not fit this config ({exc})", path=path) from None  # fmt: skip
        with torch.no_grad():
            self.log_alpha.copy_(torch.as_tensor(np.asarray(mine["log_alpha"])))
        r = mine["rng"]
        self.rng.bit_generator.state = {
            "bit_generator": "PCG64", "state": {"state": int(r["state"]), "inc": int(r["inc"])},
            "has_uint32": int(r["has_uint32"]), "uinteger": int(r["uinteger"]),
        }  # fmt: skip
        self.env_steps, self.updates = int(mine["env_steps"]), int(mine["updates"])
        self.recent_returns = [float(x) for x in mine.get("recent_returns", [])]
        self.recent_success = [float(x) for x in mine.get("recent_success", [])]
        self._reset_envs()

    def close(self) -> None:
        """Close the vector env."""
        self.envs.close()
