"""Soft actor-critic (Haarnoja et al., 2018) with RLPD's demonstration-seeded replay (Ball et al., 2023).

The whole algorithm, top to bottom (config: the ``sac:`` and ``env:`` sections,
:class:`teamvla_train.algo_config.SacConfig` and ``EnvConfig``):

    demos     record sac.demos_per_task scripted-expert episodes per task in the state-obs env
              into the demo buffer (ReplayBuffer, algos/replay.py), as n-step transitions;
              pixels: the episodes of sac.demo_roots (or of scripted demos recorded into
              <run>/demos) read through the dataloader (algos/demo_replay.py)
    each train_step (one engine step):
      act     env.num_envs worlds step once (algos/online.py, env.obs_mode): uniformly
              random actions for the first sac.warmup_steps transitions, then a ~ pi(.|s)
              (torchrun: on every rank, its own worlds; transitions count all ranks)
      store   n-step transitions (s, a, R, s', terminated, k) into the online ring buffer
              (sac.n_step; R = sum_{i<k} gamma^i r_i; sac.replay_capacity)
      update  sac.utd_ratio * env.num_envs * ranks times (once past the warm-up): a batch of
              sac.batch_size (split over the ranks, gradients averaged: one set of
              networks), sac.demo_ratio of it from the demos (sample_mixed); pixels:
              random-shifted (sac.augment_shift) and encoded once (algos/pixel.py), then
                critic       y = R + gamma^k (1 - done) (min_j Q'_j(s', a') - alpha log pi(a'|s')),
                             a' ~ pi(.|s');  L = sum_j mean (Q_j(s, a) - y)^2
                             (sac.backup_entropy false drops the alpha log pi term)
                actor        L = mean alpha log pi(a~|s) - min_j Q_j(s, a~),  a~ ~ pi(.|s)
                temperature  L = mean -log_alpha (log pi(a~|s) + target_entropy)  (detached)
                Polyak       Q' <- tau Q + (1 - tau) Q'
      evaluate every eval.every_env_steps transitions and at the end: the deterministic
              actor (tanh of the mean) on held-out evaluation seeds, a "sac_eval" JSONL event

Actions are flat vectors in [-1, 1]: joint-target steps from the current posture
(``env.action_mode: delta``) or absolute targets, and [0, 1] grips
(:class:`teamvla_train.models.sac_nets.ActionMap`). Networks, replay, worlds and
the checkpoint layout are shared with AWAC (:mod:`teamvla_train.algos.actor_critic`):
``model`` is the actor; ``optimizer`` holds ``actor``, ``critic`` and ``alpha``;
``training_state["sac"]`` the ``critic``, ``target_critic``, ``log_alpha``, the
online replay, the sampling generator and counters. Demos are re-recorded
(deterministically) when a run starts; episodes in flight at a checkpoint start
afresh on resume. With ``env.obs_mode: pixels`` the same update rule runs on the
features of the BC policies' encoders (:mod:`teamvla_train.algos.pixel`), the
replay holds uint8 images (:mod:`teamvla_train.algos.pixel_replay`) and
``sac.record_online`` writes the online episodes out as ordinary episodes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from teamvla_train.algos.actor_critic import ActorCriticBase
from teamvla_train.algos.base import Context, StepOutput
from teamvla_train.algos.pixel import ACTOR_NEXT_OBS, ACTOR_OBS
from teamvla_train.algos.replay import ACTION, DONE, NEXT_OBS, NSTEPS, OBS, REWARD
from teamvla_train.data import TrainData
from teamvla_train.models.sac_nets import SquashedGaussianActor, TwinQ

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
    nsteps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Clipped double-Q soft target ``r + gamma^k (1 - done) (min(Q'1, Q'2) - alpha logp)``, all ``(B,)``.

    ``nsteps`` ``k`` of n-step transitions (default 1), whose ``reward`` is the discounted sum.
    """
    soft_value = torch.minimum(next_q1, next_q2) - alpha * next_logp
    discount = gamma if nsteps is None else torch.pow(gamma, nsteps)
    return reward + discount * (1.0 - done.float()) * soft_value


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
    batch: Mapping[str, Any],
    actor: SquashedGaussianActor,
    critic: TwinQ,
    target_critic: TwinQ,
    log_alpha: torch.Tensor,
    optimizers: Mapping[str, torch.optim.Optimizer],
    gamma: float,
    tau: float,
    target_entropy: float,
    backup_entropy: bool = True,
) -> dict[str, torch.Tensor]:
    """One gradient update of critic, actor and temperature, then the Polyak step; detached metrics.

    ``batch`` holds state vectors, or pixel features (:func:`teamvla_train.algos.pixel.encode_batch`):
    ``obs``/``next_obs`` are the critic's, ``actor_obs``/``actor_next_obs`` (default: the same)
    the actor's. The actor's loss reads the critic's features detached: critic gradients alone
    train the critic's encoder.
    """
    obs, action, next_obs = batch[OBS], batch[ACTION], batch[NEXT_OBS]  # (B, O), (B, D), (B, O)
    actor_obs, actor_next = batch.get(ACTOR_OBS, obs), batch.get(ACTOR_NEXT_OBS, next_obs)
    alpha = log_alpha.exp().detach()
    with torch.no_grad():
        next_action, next_logp = actor.sample(actor_next)
        next_q1, next_q2 = target_critic(next_obs, next_action)
        y = critic_target(
            reward=batch[REWARD], done=batch[DONE], next_q1=next_q1, next_q2=next_q2,
            next_logp=next_logp, alpha=alpha if backup_entropy else 0.0, gamma=gamma,
            nsteps=batch.get(NSTEPS),
        )  # fmt: skip
    q1, q2 = critic(obs, action)
    loss_q = critic_loss(q1=q1, q2=q2, target=y)
    optimizers["critic"].zero_grad(set_to_none=True)
    loss_q.backward()
    optimizers["critic"].step()

    new_action, logp = actor.sample(actor_obs)
    pq1, pq2 = critic(obs.detach(), new_action)
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


# --------------------------------------------------------------------------- the algorithm


class SoftActorCritic(ActorCriticBase):
    """SAC on the engine (see the module docstring)."""

    name = "sac"

    def __init__(self, ctx: Context, *, data: TrainData | None = None) -> None:
        super().__init__(ctx, ctx.cfg.sac, data=data)

    def train_step(self) -> StepOutput:
        """One batched env step into the replay, then utd_ratio updates per transition (of all
        ranks) after warm-up."""
        self.begin_step()
        t0 = time.perf_counter()
        s, dev, before = self.s, self.ctx.device, self.env_steps
        self.collect(random=self.env_steps < s.warmup_steps)
        t1 = time.perf_counter()

        metrics = {k: torch.zeros((), device=dev) for k in ("loss", "actor_loss", "alpha_loss", "q", "entropy")}  # fmt: skip
        metrics["alpha"] = self.log_alpha.detach().exp()
        if self.env_steps >= max(s.warmup_steps, 1):
            for _ in range(self.updates_per_step()):
                metrics = sac_update(
                    batch=self.update_batch(s.demo_ratio), actor=self.actor_head, critic=self.critic_head,
                    target_critic=self.target_critic, log_alpha=self.log_alpha,
                    optimizers=self.optimizers, gamma=s.gamma, tau=s.tau,
                    target_entropy=self.target_entropy, backup_entropy=s.backup_entropy,
                )  # fmt: skip
                self.updates += 1
        metrics.update(self.common_metrics())
        out = StepOutput(metrics=metrics, samples=self.transitions_per_step(), data_time=t1 - t0,
                         compute_time=time.perf_counter() - t1)  # fmt: skip
        if s.eval_episodes_per_task and self.eval_due(before, last=self.env_steps >= s.env_steps):
            result = self.evaluate(s.eval_episodes_per_task)
            out.events.append({"event": "sac_eval", "env_steps": self.env_steps, **result})
        self.end_step()
        return out

    def total_steps(self) -> int:
        """Engine steps: ``ceil(sac.env_steps / (env.num_envs x ranks))``."""
        return -(-self.s.env_steps // self.transitions_per_step())
