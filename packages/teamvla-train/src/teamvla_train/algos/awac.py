"""Advantage-weighted actor-critic (Nair, Gupta, Dalal and Levine, 2020): offline, then online.

The whole algorithm, top to bottom (config: the ``awac:`` and ``env:`` sections,
:class:`teamvla_train.algo_config.AwacConfig` and ``EnvConfig``):

    demos     record awac.demos_per_task scripted-expert episodes per task in the state-obs env
              (n-step transitions with the world's rewards, from the task's reward: weights);
              pixels: the episodes of awac.demo_roots (or scripted demos recorded into
              <run>/demos) read through the dataloader, n-step the same way
    init      optionally load the actor from awac.init_from (an actor checkpoint of the same
              observation kind, e.g. BC by likelihood)
    offline   awac.offline_steps updates on batches of awac.batch_size demo transitions
              (torchrun: split over the ranks, gradients averaged: one set of networks)
    online    awac.online_env_steps transitions (all ranks together): each engine step,
              env.num_envs worlds (per rank) step once with a ~ pi(.|s) into the rank's online
              replay, then awac.utd_ratio * num_envs * ranks updates on batches with
              awac.demo_ratio demo rows (sample_mixed)
    update    critic  y = R + gamma^k (1 - done) min_j Q'_j(s', a'),  a' ~ pi(.|s')
                      L = sum_j mean (Q_j(s, a) - y)^2
              actor   A = min_j Q(s, a) - V(s),  V(s) = mean over awac.value_samples a~ ~ pi(.|s)
                      of min_j Q(s, a~)
                      w = min(exp(A / lambda), awac.max_weight), divided by its batch mean
                      (awac.normalize_weights); weighting uniform: w = 1 (behaviour cloning)
                      L = - mean w log pi(a|s)   (w carries no gradient)
              Polyak  Q' <- tau Q + (1 - tau) Q'
    evaluate  every awac.eval_every_updates offline updates and when the offline phase ends,
              every eval.every_env_steps transitions online and at the end: "awac_eval" events

**lambda.** AWAC solves ``max_pi E[Q(s, a)]`` subject to ``KL(pi || pi_beta) <=
eps`` towards the behaviour policy ``pi_beta`` of the data; the closed-form
solution ``pi* ∝ pi_beta exp(A / lambda)``, projected onto the actor by
weighted maximum likelihood on the data's own actions, *is* the weighting: no
explicit KL term exists. ``lambda`` is the Lagrange multiplier: small lambda
lets the largest advantages dominate (greedy on the critic, far from the data),
large lambda makes every weight near 1 (behaviour cloning). The actor only
ever raises the likelihood of actions in the replay, so it cannot chase the
critic's errors on actions nobody took; that is why it does not collapse when
fine-tuning starts, as an unconstrained SAC actor can.

Shared with SAC (:mod:`teamvla_train.algos.actor_critic`): networks, replay,
worlds, evaluation and the checkpoint layout (``training_state["awac"]``,
with ``offline_updates``). The temperature ``log_alpha`` exists for the layout
and is never stepped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional as F

from teamvla_train.algos.actor_critic import ActorCriticBase
from teamvla_train.algos.base import Context, StepOutput
from teamvla_train.algos.pixel import ACTOR_NEXT_OBS, ACTOR_OBS
from teamvla_train.algos.replay import ACTION, DONE, NEXT_OBS, NSTEPS, OBS, REWARD
from teamvla_train.algos.sac import polyak_update
from teamvla_train.data import TrainData
from teamvla_train.models.sac_nets import SquashedGaussianActor, TwinQ

# --------------------------------------------------------------------------- the update rule


def awac_weights(
    advantage: torch.Tensor, *, lam: float, max_weight: float, normalize: bool
) -> torch.Tensor:
    """``min(exp(A / lam), max_weight)`` ``(B,)``, divided by its mean when ``normalize``; no gradient."""
    w = torch.exp(advantage.detach() / lam).clamp(max=max_weight)  # exp overflow -> inf -> clipped
    return w / w.mean() if normalize else w


def q_target(
    *, reward: torch.Tensor, done: torch.Tensor, next_q1: torch.Tensor, next_q2: torch.Tensor,
    gamma: float, nsteps: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """``r + gamma^k (1 - done) min(Q'1, Q'2)`` (no entropy term), all ``(B,)``."""
    discount = gamma if nsteps is None else torch.pow(gamma, nsteps)
    return reward + discount * (1.0 - done.float()) * torch.minimum(next_q1, next_q2)


def awac_update(
    *, batch: Mapping[str, Any], actor: SquashedGaussianActor, critic: TwinQ,
    target_critic: TwinQ, optimizers: Mapping[str, torch.optim.Optimizer], gamma: float,
    tau: float, lam: float, max_weight: float, normalize: bool, uniform: bool,
    value_samples: int, train_critic: bool,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """One gradient update of critic and actor, then the Polyak step; detached metrics.

    ``batch`` holds state vectors or pixel features, as :func:`teamvla_train.algos.sac.sac_update`'s.
    """
    obs, action, next_obs = batch[OBS], batch[ACTION], batch[NEXT_OBS]  # (B, O), (B, D), (B, O)
    actor_obs, actor_next = batch.get(ACTOR_OBS, obs), batch.get(ACTOR_NEXT_OBS, next_obs)
    zero = torch.zeros((), device=obs.device)
    loss_q, q_data = zero, zero
    if train_critic:
        with torch.no_grad():
            next_action, _ = actor.sample(actor_next)
            next_q1, next_q2 = target_critic(next_obs, next_action)
            y = q_target(reward=batch[REWARD], done=batch[DONE], next_q1=next_q1,
                         next_q2=next_q2, gamma=gamma, nsteps=batch.get(NSTEPS))  # fmt: skip
        q1, q2 = critic(obs, action)
        loss_q = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        optimizers["critic"].zero_grad(set_to_none=True)
        loss_q.backward()
        optimizers["critic"].step()
        q_data = q1.detach().mean()

    with torch.no_grad():
        if uniform:
            advantage, w = torch.zeros_like(batch[REWARD]), torch.ones_like(batch[REWARD])
        else:
            q_sa = torch.minimum(*critic(obs, action))  # (B,)
            v = torch.stack([torch.minimum(*critic(obs, actor.sample(actor_obs)[0])) for _ in range(value_samples)]).mean(0)  # fmt: skip
            advantage = q_sa - v
            w = awac_weights(advantage, lam=lam, max_weight=max_weight, normalize=normalize)
    logp = actor.log_prob(actor_obs, action)  # (B,)
    loss_pi = -(w * logp).mean()
    optimizers["actor"].zero_grad(set_to_none=True)
    loss_pi.backward()
    optimizers["actor"].step()

    if train_critic:
        polyak_update(source=critic, target=target_critic, tau=tau)
    return {
        "loss": loss_q.detach(),
        "actor_loss": loss_pi.detach(),
        "q": q_data,
        "advantage": advantage.mean(),
        "weight_max": w.max(),
        "logp_data": logp.detach().mean(),
    }


# --------------------------------------------------------------------------- the algorithm


class AdvantageWeightedActorCritic(ActorCriticBase):
    """AWAC on the engine (see the module docstring)."""

    name = "awac"

    def __init__(self, ctx: Context, *, data: TrainData | None = None) -> None:
        super().__init__(ctx, ctx.cfg.awac, data=data)
        self.offline_updates = 0  # updates of the offline phase done

    def _update(self, *, demo_ratio: float) -> dict[str, torch.Tensor]:
        s = self.s
        self.updates += 1
        return awac_update(
            batch=self.update_batch(demo_ratio), actor=self.actor_head, critic=self.critic_head,
            target_critic=self.target_critic, optimizers=self.optimizers, gamma=s.gamma,
            tau=s.tau, lam=s.lam, max_weight=s.max_weight, normalize=s.normalize_weights,
            uniform=s.weighting == "uniform", value_samples=s.value_samples,
            train_critic=s.train_critic,
        )  # fmt: skip

    def train_step(self) -> StepOutput:
        """An offline update on the demos, or (after them) one env step and utd_ratio updates per
        transition (of all ranks)."""
        self.begin_step()
        t0 = time.perf_counter()
        s, before = self.s, self.env_steps
        event: dict[str, Any] | None = None
        if self.offline_updates < s.offline_steps:  # offline: demo rows only (the replay is empty)
            t1 = time.perf_counter()
            metrics = self._update(demo_ratio=1.0)
            self.offline_updates += 1
            every, end = s.eval_every_updates, self.offline_updates == s.offline_steps
            if end or (every and self.offline_updates % every == 0):
                event = {"phase": "offline"}
        else:
            self.collect(random=False)
            t1 = time.perf_counter()
            metrics = {}
            for _ in range(self.updates_per_step()):
                metrics = self._update(demo_ratio=s.demo_ratio)
            if self.eval_due(before, last=self.env_steps >= s.online_env_steps):
                event = {"phase": "online"}
        metrics.update(self.common_metrics())
        metrics["offline_updates"] = torch.tensor(
            float(self.offline_updates), device=self.ctx.device
        )
        out = StepOutput(metrics=metrics, samples=s.batch_size, data_time=t1 - t0,
                         compute_time=time.perf_counter() - t1)  # fmt: skip
        if event is not None and s.eval_episodes_per_task and self.dist.is_main:
            result = self.evaluate(s.eval_episodes_per_task)
            out.events.append({"event": "awac_eval", **event, "env_steps": self.env_steps,
                               "updates": self.updates, **result})  # fmt: skip
        self.end_step()
        return out

    def total_steps(self) -> int:
        """Engine steps: ``awac.offline_steps + ceil(awac.online_env_steps / (env.num_envs x ranks))``."""
        return self.s.offline_steps + -(-self.s.online_env_steps // self.transitions_per_step())

    def extra_training_state(self) -> dict[str, Any]:
        """The offline phase's progress."""
        return {"offline_updates": self.offline_updates}

    def load_extra_training_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`extra_training_state`."""
        self.offline_updates = int(state["offline_updates"])


__all__ = ["AdvantageWeightedActorCritic", "awac_update", "awac_weights", "q_target"]
