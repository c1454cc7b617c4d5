"""What SAC and AWAC share on the engine: networks, optimisers, replay, worlds and checkpoints.

:class:`ActorCriticBase` builds, from an algorithm's config section ``s``
(:class:`teamvla_train.algo_config.SacConfig` or ``AwacConfig``) and the
``env:`` section, a tanh-Gaussian actor, twin critics with a Polyak target
copy, a temperature ``log_alpha``, their Adam optimisers, the online replay
ring, the demo buffer (scripted-expert episodes recorded in the state env,
n-step like the online transitions) and the worlds (:class:`OnlineWorlds`). It
implements the engine's interface and the common part of the checkpoint, so
each algorithm module only holds its update rule and its ``train_step``.

Checkpoint layout: ``model`` is the actor (the deployable policy, loadable by
:meth:`teamvla_train.Policy.from_checkpoint`); ``optimizer`` holds ``actor``,
``critic`` and ``alpha``; ``training_state[<name>]`` holds ``critic``,
``target_critic``, ``log_alpha``, ``replay``, ``rng``, ``env_steps``,
``updates`` and the algorithm's own counters; ``extra[<name>]`` and
``extra["state_policy"]`` describe the observation and the action map.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from teamvla_schema import SchemaError
from torch import nn

from teamvla_train.algos.base import Context
from teamvla_train.algos.online import OnlineWorlds, evaluate_actor, rng_state, set_rng_state
from teamvla_train.algos.replay import ReplayBuffer, record_demos
from teamvla_train.data import TrainData
from teamvla_train.engine.optim import to_torch_tree
from teamvla_train.models.sac_nets import TwinQ, make_actor

#: Key of the state-policy description (observation and action map) in a checkpoint's ``extra``.
STATE_POLICY_KEY = "state_policy"


class ActorCriticBase:
    """Shared machinery of the state-observation actor-critic algorithms (see the module docstring)."""

    name = "actor_critic"

    def __init__(self, ctx: Context, s: Any, *, data: TrainData | None = None) -> None:
        if ctx.dist_info.enabled:
            raise SchemaError(f"trainer.algo {self.name} runs in one process: launch it without torchrun")  # fmt: skip
        if data is not None:
            raise SchemaError(f"trainer.algo {self.name} collects its own data; it takes no data= argument")  # fmt: skip
        env_cfg = ctx.cfg.env
        if env_cfg.obs_mode != "state":
            raise SchemaError(
                f"trainer.algo {self.name} supports env.obs_mode state only (received "
                f"{env_cfg.obs_mode!r}); pixel observations are not implemented yet"
            )
        self.ctx, self.s, self.env_cfg = ctx, s, env_cfg
        self.tasks = list(env_cfg.tasks)
        self.num_joints = ctx.cfg.model.num_joints
        self.worlds = OnlineWorlds(env_cfg=env_cfg, num_joints=self.num_joints, n_step=s.n_step, gamma=s.gamma)  # fmt: skip
        self.amap = self.worlds.amap
        obs_dim, act_dim, dev = self.worlds.obs_dim, self.worlds.action_dim, ctx.device
        # SAC has no grip_head (always gaussian); AWAC's awac.grip_head may make the grips Bernoulli.
        self.grip_head = str(getattr(s, "grip_head", "gaussian"))
        if self.grip_head == "bernoulli" and not env_cfg.binary_grip:
            raise SchemaError(f"{self.name}.grip_head bernoulli needs env.binary_grip true")
        self.actor = make_actor(obs_dim=obs_dim, action_dim=act_dim, hidden_dims=s.hidden_dims, grip_head=self.grip_head).to(dev)  # fmt: skip
        self.critic = TwinQ(obs_dim=obs_dim, action_dim=act_dim, hidden_dims=s.hidden_dims, layer_norm=s.critic_layer_norm).to(dev)  # fmt: skip
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        # AWAC has no temperature: its log_alpha stays at log(1) and is never stepped.
        temperature, entropy = (
            getattr(s, "init_temperature", 1.0),
            getattr(s, "target_entropy", None),
        )
        self.log_alpha = torch.tensor(math.log(temperature), device=dev, requires_grad=True)
        self.target_entropy = float(-act_dim if entropy is None else entropy)
        self.optimizers = {
            "actor": torch.optim.Adam(self.actor.parameters(), lr=s.actor_lr),
            "critic": torch.optim.Adam(self.critic.parameters(), lr=s.critic_lr),
            "alpha": torch.optim.Adam([self.log_alpha], lr=getattr(s, "alpha_lr", 3e-4)),
        }
        self.replay = ReplayBuffer(capacity=s.replay_capacity, obs_dim=obs_dim, action_dim=act_dim)
        self.demo: ReplayBuffer | None = None
        if s.demos_per_task:
            demos = record_demos(tasks=self.tasks, episodes=s.demos_per_task, seed=env_cfg.seed,
                                 num_joints=self.num_joints, amap=self.amap, n_step=s.n_step,
                                 gamma=s.gamma)  # fmt: skip
            self.demo = ReplayBuffer(capacity=len(demos["reward"]), obs_dim=obs_dim, action_dim=act_dim)  # fmt: skip
            self.demo.add_batch(**demos)
        self.rng = np.random.default_rng([env_cfg.seed, 5417])  # warm-up actions and batches
        self.env_steps = 0  # transitions collected
        self.updates = 0  # gradient updates done
        if s.init_from:
            self.init_actor_from(s.init_from)
        self.worlds.reset(self.env_steps)

    def init_actor_from(self, path: str) -> None:
        """Load the actor's weights from a state-actor checkpoint (a sac or awac run, e.g. BC)."""
        from teamvla_schema import load_checkpoint

        from teamvla_train.engine.checkpointing import resolve_checkpoint

        ckpt_path = resolve_checkpoint(path)
        ckpt = load_checkpoint(ckpt_path)
        spec = (ckpt.get("extra") or {}).get(STATE_POLICY_KEY)
        if not isinstance(spec, Mapping):
            raise SchemaError("init_from needs a state-actor checkpoint (trainer.algo sac or awac)", path=ckpt_path)  # fmt: skip
        mine = self.state_policy_spec()
        for key in ("obs_dim", "num_joints", "hidden_dims"):
            if spec.get(key) != mine[key]:
                raise SchemaError(f"init_from: {key} {spec.get(key)} in the checkpoint, {mine[key]} here", path=ckpt_path)  # fmt: skip
        if str(spec.get("grip_head", "gaussian")) != self.grip_head:
            raise SchemaError(f"init_from: grip_head {spec.get('grip_head', 'gaussian')} in the checkpoint, {self.grip_head} here", path=ckpt_path)  # fmt: skip
        if (spec.get("action_map") or {}).get("mode") != self.amap.mode:
            raise SchemaError(f"init_from: the checkpoint's actions are not env.action_mode {self.amap.mode}", path=ckpt_path)  # fmt: skip
        self.actor.load_state_dict(to_torch_tree(dict(ckpt["model"])))

    # ------------------------------------------------------------------ shared pieces of a step
    def collect(self, *, random: bool) -> None:
        """Step every world once (uniform random actions, or ``a ~ pi(.|s)``) into the online replay."""
        n_env, dev = self.worlds.num_envs, self.ctx.device
        if random:
            u = self.rng.uniform(-1.0, 1.0, (n_env, self.amap.dim)).astype(np.float32)
        else:
            with torch.no_grad():
                u = self.actor.sample(torch.as_tensor(self.worlds.obs, device=dev))[0].cpu().numpy()
        done = self.worlds.step(u)
        if len(done["reward"]):
            self.replay.add_batch(**done)
        self.env_steps += n_env

    def tensors(self, batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """A numpy batch on the run's device."""
        return {k: torch.as_tensor(v, device=self.ctx.device) for k, v in batch.items()}

    def common_metrics(self) -> dict[str, torch.Tensor]:
        """Counters and online episode statistics as metric tensors."""
        dev = self.ctx.device
        values = {"updates": float(self.updates), "env_steps": float(self.env_steps), **self.worlds.stats()}  # fmt: skip
        return {k: torch.tensor(v, device=dev) for k, v in values.items()}

    def eval_due(self, steps_before: int, last: bool) -> bool:
        """Whether an evaluation falls in this engine step: every ``eval.every_env_steps``
        transitions (0: never in between) and at the ``last`` step."""
        every = int(self.ctx.cfg.eval.every_env_steps)
        return bool(last or (every and self.env_steps // every > steps_before // every))

    def evaluate(self, episodes: int) -> dict[str, float]:
        """The deterministic actor on ``episodes`` held-out seeds per task."""
        return evaluate_actor(actor=self.actor, tasks=self.tasks, episodes=episodes,
                              num_joints=self.num_joints, amap=self.amap, device=self.ctx.device)  # fmt: skip

    # ------------------------------------------------------------------ the engine's interface
    @property
    def epoch(self) -> int:
        """No passes over a dataset (0)."""
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
        """Nothing held out offline; evaluation runs on its own cadence (JSONL events)."""
        return {}

    def state_policy_spec(self) -> dict[str, Any]:
        """What :meth:`teamvla_train.Policy.from_checkpoint` needs to rebuild the actor."""
        return {
            "algo": self.name, "obs_mode": "state", "obs_dim": self.worlds.obs_dim,
            "num_joints": int(self.num_joints), "hidden_dims": list(self.s.hidden_dims),
            "action_map": self.amap.to_dict(), "grip_head": self.grip_head,
        }  # fmt: skip

    def checkpoint_state(self) -> dict[str, Any]:
        """Actor as ``model``; the three optimisers; critics, temperature, replay and counters."""
        return {
            "model": self.actor.state_dict(),
            "optimizer": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "scheduler": {"name": "constant"},  # constant learning rates
            "training_state": {
                self.name: {
                    "env_steps": self.env_steps,
                    "updates": self.updates,
                    "critic": self.critic.state_dict(),
                    "target_critic": self.target_critic.state_dict(),
                    "log_alpha": self.log_alpha.detach().clone(),
                    "replay": self.replay.state_dict(),
                    "rng": rng_state(self.rng),
                    **self.worlds.state_dict(),
                    **self.extra_training_state(),
                }
            },
            "extra": {
                self.name: {"obs_mode": "state", **self.amap.to_dict()},
                STATE_POLICY_KEY: self.state_policy_spec(),
            },
        }

    def extra_training_state(self) -> dict[str, Any]:
        """An algorithm's own counters in ``training_state[<name>]`` (none here)."""
        return {}

    def load_extra_training_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`extra_training_state`."""

    def load_checkpoint_state(
        self,
        ckpt: Mapping[str, Any],
        *,
        path: Path,
        force: bool,
        changes: Sequence[tuple[str, Any, Any]] = (),
    ) -> None:
        """Restore networks, temperature, optimisers, replay and counters; restart the episodes in flight."""
        mine = (ckpt.get("training_state") or {}).get(self.name)
        if mine is None:
            raise SchemaError(f"cannot resume: not a {self.name} checkpoint (no training_state.{self.name})", path=path)  # fmt: skip
        try:
            self.actor.load_state_dict(to_torch_tree(dict(ckpt["model"])))
            self.critic.load_state_dict(to_torch_tree(dict(mine["critic"])))
            self.target_critic.load_state_dict(to_torch_tree(dict(mine["target_critic"])))
            for key, opt in self.optimizers.items():
                opt.load_state_dict(to_torch_tree(ckpt["optimizer"][key]))
            self.replay.load_state_dict(mine["replay"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise SchemaError(f"cannot resume: the {self.name} state does not fit this config ({exc})", path=path) from None  # fmt: skip
        with torch.no_grad():
            self.log_alpha.copy_(torch.as_tensor(np.asarray(mine["log_alpha"])))
        set_rng_state(self.rng, mine["rng"])
        self.env_steps, self.updates = int(mine["env_steps"]), int(mine["updates"])
        self.worlds.load_state_dict(mine)
        self.load_extra_training_state(mine)
        self.worlds.reset(self.env_steps)

    def close(self) -> None:
        """Close the worlds."""
        self.worlds.close()
