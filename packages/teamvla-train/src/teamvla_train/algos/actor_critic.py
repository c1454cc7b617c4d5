"""What SAC and AWAC share on the engine: networks, optimisers, replay, worlds and checkpoints.

:class:`ActorCriticBase` builds, from an algorithm's config section ``s``
(:class:`teamvla_train.algo_config.SacConfig` or ``AwacConfig``) and the
``env:`` section, a tanh-Gaussian actor, twin critics with a Polyak target
copy, a temperature ``log_alpha``, their Adam optimisers, the online replay
ring, the demo buffer (n-step like the online transitions) and the worlds
(:class:`OnlineWorlds`). It implements the engine's interface and the common
part of the checkpoint, so each algorithm module only holds its update rule
and its ``train_step``.

Under ``torchrun`` each rank steps its own worlds into its own replay and the
networks stay one (gradients averaged over ranks; per-rank state beside the
checkpoints): :mod:`teamvla_train.algos.actor_critic_ranks`.

``env.obs_mode: state``: MLPs on the state vector; demos are scripted-expert
episodes recorded in the state env (:func:`teamvla_train.algos.replay.record_demos`).
``env.obs_mode: pixels``: the same heads on the BC policies' encoders
(:mod:`teamvla_train.algos.pixel`), a uint8 replay
(:class:`teamvla_train.algos.pixel_replay.PixelReplayBuffer`) and demos read from
recorded episodes through the dataloader (:mod:`teamvla_train.algos.demo_replay`).

Checkpoint layout: ``model`` is the actor (the deployable policy, loadable by
:meth:`teamvla_train.Policy.from_checkpoint`; with pixels its encoder is in it);
``optimizer`` holds ``actor``, ``critic`` and ``alpha``; ``training_state[<name>]``
holds ``critic`` (with pixels: its encoder and Q heads), ``target_critic`` (the Q
heads' Polyak copy), ``log_alpha``, ``replay``, ``rng``, ``env_steps``,
``updates`` and the algorithm's own counters; ``extra[<name>]`` and
``extra["state_policy"]`` (state) or ``extra["pixel_policy"]`` (pixels) describe
the observation, the networks and the action map.
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

from teamvla_train.algos.actor_critic_ranks import RankSync, checkpoint_due, rank_generator
from teamvla_train.algos.base import Context
from teamvla_train.algos.online import (
    OnlineWorlds,
    evaluate_actor,
    rng_state,
    set_rng_state,
    to_device,
)
from teamvla_train.algos.replay import REWARD, ReplayBuffer, demo_rows, record_demos, sample_mixed
from teamvla_train.data import TrainData
from teamvla_train.engine.checkpointing import CHECKPOINT_DIR, task_dir_name
from teamvla_train.engine.optim import to_torch_tree
from teamvla_train.models.sac_nets import TwinQ, make_actor

#: Key of the state-policy description (observation and action map) in a checkpoint's ``extra``.
STATE_POLICY_KEY = "state_policy"
#: Key of the pixel-policy description (encoders, heads, action map) in a checkpoint's ``extra``.
PIXEL_POLICY_KEY = "pixel_policy"
#: Where pixel runs record their scripted demos and (``record_online``) their online episodes.
DEMOS_DIR, ONLINE_DIR = "demos", "online_episodes"


class ActorCriticBase:
    """Shared machinery of the state-observation actor-critic algorithms (see the module docstring)."""

    name = "actor_critic"

    def __init__(self, ctx: Context, s: Any, *, data: TrainData | None = None) -> None:
        if data is not None:
            raise SchemaError(f"trainer.algo {self.name} collects its own data; it takes no data= argument")  # fmt: skip
        # Refused rather than ignored: the updates call the networks directly, unwrapped.
        if ctx.cfg.trainer.compile:
            raise SchemaError(f"trainer.compile true is not supported by trainer.algo {self.name} (only bc and dagger compile their policy); set trainer.compile false")  # fmt: skip
        env_cfg = ctx.cfg.env
        self.pixels = env_cfg.obs_mode == "pixels"
        if not self.pixels:
            for key, value in (("demo_roots", s.demo_roots), ("record_online", s.record_online)):
                if value:
                    raise SchemaError(f"{self.name}.{key} ({value!r}) needs env.obs_mode pixels (episodes hold camera images, not state vectors)")  # fmt: skip
        info = self.dist = ctx.dist_info
        if s.batch_size % info.world_size:
            raise SchemaError(f"{self.name}.batch_size ({s.batch_size}) must be divisible by the number of processes ({info.world_size}): it is one update's batch, all ranks together")  # fmt: skip
        # the rows this rank samples per update (batch_size is one update's, all ranks together)
        self.rank_batch = s.batch_size // info.world_size
        self.ctx, self.s, self.env_cfg = ctx, s, env_cfg
        self.tasks = list(env_cfg.tasks)
        self.num_joints = ctx.cfg.model.num_joints
        record = None
        if s.record_online:  # one episode root per rank when distributed
            record = ctx.run_dir / ONLINE_DIR / (f"rank_{info.rank:03d}" if info.enabled else "")
        self.worlds = OnlineWorlds(env_cfg=env_cfg, num_joints=self.num_joints, n_step=s.n_step, gamma=s.gamma,
                                   record_root=record, world_offset=info.rank * env_cfg.num_envs)  # fmt: skip
        self.amap = self.worlds.amap
        obs_dim, act_dim, dev = self.worlds.obs_dim, self.worlds.action_dim, ctx.device
        # SAC has no grip_head (always gaussian); AWAC's awac.grip_head may make the grips Bernoulli.
        self.grip_head = str(getattr(s, "grip_head", "gaussian"))
        if self.grip_head == "bernoulli" and not env_cfg.binary_grip:
            raise SchemaError(f"{self.name}.grip_head bernoulli needs env.binary_grip true")
        # AWAC has no temperature: its log_alpha stays at log(1) and is never stepped.
        temperature, entropy = (
            getattr(s, "init_temperature", 1.0),
            getattr(s, "target_entropy", None),
        )
        self.log_alpha = torch.tensor(math.log(temperature), device=dev, requires_grad=True)
        self.target_entropy = float(-act_dim if entropy is None else entropy)
        self.actor: Any
        self.critic: Any
        if self.pixels:
            from teamvla_train.algos.pixel import build_pixel_nets, pixel_optimizers
            from teamvla_train.algos.pixel_replay import PixelReplayBuffer

            self.actor, self.critic, self.target_critic = build_pixel_nets(
                model_cfg=ctx.cfg.model, num_joints=self.num_joints, action_dim=act_dim, s=s,
                grip_head=self.grip_head, device=dev,
            )  # fmt: skip
            self.actor_head, self.critic_head = self.actor.head, self.critic.head
            self.optimizers = pixel_optimizers(actor=self.actor, critic=self.critic, log_alpha=self.log_alpha, s=s)  # fmt: skip
            size = (self.worlds.image_size, self.worlds.image_size)
            self.replay: Any = PixelReplayBuffer(capacity=s.replay_capacity, image_size=size, proprio_dim=obs_dim, action_dim=act_dim)  # fmt: skip
        else:
            self.actor = make_actor(obs_dim=obs_dim, action_dim=act_dim, hidden_dims=s.hidden_dims, grip_head=self.grip_head).to(dev)  # fmt: skip
            self.critic = TwinQ(obs_dim=obs_dim, action_dim=act_dim, hidden_dims=s.hidden_dims, layer_norm=s.critic_layer_norm).to(dev)  # fmt: skip
            self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
            self.actor_head, self.critic_head = self.actor, self.critic
            self.optimizers = {
                "actor": torch.optim.Adam(self.actor.parameters(), lr=s.actor_lr),
                "critic": torch.optim.Adam(self.critic.parameters(), lr=s.critic_lr),
                "alpha": torch.optim.Adam([self.log_alpha], lr=getattr(s, "alpha_lr", 3e-4)),
            }
            self.replay = ReplayBuffer(capacity=s.replay_capacity, obs_dim=obs_dim, action_dim=act_dim)  # fmt: skip
        self.demo: Any = self._demo_buffer()
        self.rng = rank_generator(env_cfg.seed, info.rank)  # warm-up actions, batches, shifts
        self.env_steps = 0  # transitions collected, all ranks together
        self.updates = 0  # gradient updates done
        self.engine_step = 0  # train_step calls (the engine's step; names the side files)
        if s.init_from:
            self.init_actor_from(s.init_from)
        self.sync: RankSync | None = None
        if info.enabled:  # one set of networks: rank 0's initial values, gradients averaged
            nets = (self.actor, self.critic, self.target_critic)
            self.sync = RankSync(info=info, algo=self.name, ckpt_dir=ctx.run_dir / CHECKPOINT_DIR / task_dir_name(self.tasks),
                                 tensors=[*(t for n in nets for t in n.state_dict().values()), self.log_alpha],
                                 optimizers=self.optimizers, device=dev)  # fmt: skip
        self.worlds.reset(self.env_steps)

    def _demo_buffer(self) -> Any:
        """The demo buffer: state demos recorded in the state env, or (pixels) the transitions of
        ``demo_roots`` (else of scripted demos recorded into ``<run>/demos``) through the dataloader."""
        s, env_cfg = self.s, self.env_cfg
        if not self.pixels:
            if not s.demos_per_task:
                return None
            demos = record_demos(tasks=self.tasks, episodes=s.demos_per_task, seed=env_cfg.seed,
                                 num_joints=self.num_joints, amap=self.amap, n_step=s.n_step,
                                 gamma=s.gamma)  # fmt: skip
            buf: Any = ReplayBuffer(capacity=len(demos[REWARD]), obs_dim=self.worlds.obs_dim, action_dim=self.amap.dim)  # fmt: skip
            buf.add_batch(**demos)
            return buf
        from teamvla_train.algos.demo_replay import pixel_demo_buffer

        return pixel_demo_buffer(roots=s.demo_roots, record_root=self.ctx.run_dir / DEMOS_DIR,
                                 episodes=s.demos_per_task, tasks=self.tasks, seed=env_cfg.seed,
                                 image_size=self.worlds.image_size, num_joints=self.num_joints,
                                 amap=self.amap, n_step=s.n_step, gamma=s.gamma, dist=self.dist)  # fmt: skip

    def init_actor_from(self, path: str) -> None:
        """Load the actor's weights from an actor checkpoint of the same observation kind (a sac or
        awac run, e.g. BC by likelihood); with a shared encoder the critics start on it too."""
        from teamvla_schema import load_checkpoint

        from teamvla_train.engine.checkpointing import resolve_checkpoint

        ckpt_path = resolve_checkpoint(path)
        ckpt = load_checkpoint(ckpt_path)
        key = PIXEL_POLICY_KEY if self.pixels else STATE_POLICY_KEY
        spec = (ckpt.get("extra") or {}).get(key)
        if not isinstance(spec, Mapping):
            kind = "pixels" if self.pixels else "state"
            raise SchemaError(f"init_from needs an actor checkpoint of env.obs_mode {kind} (trainer.algo sac or awac; no extra.{key})", path=ckpt_path)  # fmt: skip
        mine = self.policy_spec()
        for name in ("obs_dim", "num_joints", "hidden_dims", "model"):
            if spec.get(name) != mine.get(name):
                raise SchemaError(f"init_from: {name} {spec.get(name)} in the checkpoint, {mine.get(name)} here", path=ckpt_path)  # fmt: skip
        if str(spec.get("grip_head", "gaussian")) != self.grip_head:
            raise SchemaError(f"init_from: grip_head {spec.get('grip_head', 'gaussian')} in the checkpoint, {self.grip_head} here", path=ckpt_path)  # fmt: skip
        if (spec.get("action_map") or {}).get("mode") != self.amap.mode:
            raise SchemaError(f"init_from: the checkpoint's actions are not env.action_mode {self.amap.mode}", path=ckpt_path)  # fmt: skip
        self.actor.load_state_dict(to_torch_tree(dict(ckpt["model"])))

    # ------------------------------------------------------------------ shared pieces of a step
    def transitions_per_step(self) -> int:
        """Transitions one engine step collects, all ranks together (``env.num_envs x ranks``)."""
        return self.worlds.num_envs * self.dist.world_size

    def updates_per_step(self) -> int:
        """Gradient updates after an engine step's collection: ``utd_ratio`` per transition of all ranks."""
        return int(self.s.utd_ratio) * self.transitions_per_step()

    def begin_step(self) -> None:
        """Start of a ``train_step``: a resumed rank > 0 takes back its RNG states first."""
        if self.sync is not None:
            self.sync.begin_step()

    def end_step(self) -> None:
        """End of a ``train_step``; distributed, before a checkpoint, the ranks' side files and a
        check that every rank's networks equal rank 0's (:class:`RankSync`)."""
        self.engine_step += 1
        if self.sync is not None:
            due = checkpoint_due(self.engine_step, total=self.total_steps(), ckpt_every=self.ctx.cfg.trainer.ckpt_every)  # fmt: skip
            self.sync.end_step(self, checkpoint=due)

    def collect(self, *, random: bool) -> None:
        """Step every world once (uniform random actions, or ``a ~ pi(.|s)``) into the online replay."""
        n_env, dev = self.worlds.num_envs, self.ctx.device
        if random:
            u = self.rng.uniform(-1.0, 1.0, (n_env, self.amap.dim)).astype(np.float32)
        else:
            with torch.no_grad():
                u = self.actor.sample(to_device(self.worlds.obs, dev))[0].cpu().numpy()
        done = self.worlds.step(u, env_steps=self.env_steps + self.transitions_per_step())
        if len(done[REWARD]):
            self.replay.add_batch(**done)
        self.env_steps += self.transitions_per_step()

    def update_batch(self, demo_ratio: float) -> dict[str, Any]:
        """This rank's part of an update's batch: ``batch_size / ranks`` transitions, ``demo_ratio``
        of them from the demos (RLPD); state vectors as tensors, or (pixels) random-shifted and
        encoded into features (under ``trainer.precision``'s autocast, features back in fp32)."""
        s, dev = self.s, self.ctx.device
        n_demo = demo_rows(online=self.replay, demo=self.demo, n=self.rank_batch, demo_ratio=demo_ratio)  # fmt: skip
        self.demo_fraction = n_demo / self.rank_batch  # the data/online mix, logged
        batch = sample_mixed(online=self.replay, demo=self.demo, n=self.rank_batch, demo_ratio=demo_ratio, rng=self.rng)  # fmt: skip
        if not self.pixels:
            return {k: torch.as_tensor(v, device=dev) for k, v in batch.items()}
        from teamvla_train.algos.pixel import batch_to_torch, encode_batch, features_to_fp32

        tensors = batch_to_torch(batch, device=dev, augment=s.augment_shift, rng=self.rng)
        if self.ctx.amp_dtype is None:
            return encode_batch(tensors, actor=self.actor, critic=self.critic, s=s)
        with self.ctx.autocast():
            return features_to_fp32(
                encode_batch(tensors, actor=self.actor, critic=self.critic, s=s)
            )

    def common_metrics(self) -> dict[str, torch.Tensor]:
        """Counters and online episode statistics as metric tensors."""
        dev = self.ctx.device
        values = {"updates": float(self.updates), "env_steps": float(self.env_steps),
                  "demo_fraction": float(getattr(self, "demo_fraction", 0.0)), **self.worlds.stats()}  # fmt: skip
        return {k: torch.tensor(v, device=dev) for k, v in values.items()}

    def eval_due(self, steps_before: int, last: bool) -> bool:
        """Whether an evaluation falls in this engine step: every ``eval.every_env_steps``
        transitions of all ranks (0: never in between) and at the ``last`` step; rank 0 only."""
        every = int(self.ctx.cfg.eval.every_env_steps)
        due = last or (every and self.env_steps // every > steps_before // every)
        return bool(due) and self.dist.is_main

    def evaluate(self, episodes: int) -> dict[str, float]:
        """The deterministic actor on ``episodes`` held-out seeds per task."""
        return evaluate_actor(actor=self.actor, tasks=self.tasks, episodes=episodes,
                              num_joints=self.num_joints, amap=self.amap, device=self.ctx.device,
                              obs_mode=self.env_cfg.obs_mode, image_size=self.worlds.image_size)  # fmt: skip

    # ------------------------------------------------------------------ the engine's interface
    def total_steps(self) -> int:
        """Engine steps of the whole run (each algorithm's own count)."""
        raise NotImplementedError

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

    def policy_spec(self) -> dict[str, Any]:
        """What :meth:`teamvla_train.Policy.from_checkpoint` needs to rebuild the actor
        (``extra.state_policy``, or ``extra.pixel_policy`` with the encoders' ``model`` config)."""
        spec = {
            "algo": self.name, "obs_mode": self.env_cfg.obs_mode, "obs_dim": self.worlds.obs_dim,
            "num_joints": int(self.num_joints), "hidden_dims": list(self.s.hidden_dims),
            "action_map": self.amap.to_dict(), "grip_head": self.grip_head,
        }  # fmt: skip
        if self.pixels:
            from teamvla_schema.config import to_dict

            spec.update(model=to_dict(self.ctx.cfg.model), image_size=self.worlds.image_size,
                        encoder=self.s.encoder)  # fmt: skip
        return spec

    def checkpoint_state(self) -> dict[str, Any]:
        """Actor as ``model``; the three optimisers; critics, temperature, replay and counters."""
        if self.worlds.recorder is not None:
            self.worlds.recorder.index()  # the recorded online episodes, indexed by the manifest
        return {
            "model": self.actor.state_dict(),
            "optimizer": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "scheduler": {"name": "constant"},  # constant learning rates
            "training_state": {
                self.name: {
                    "env_steps": self.env_steps,
                    "updates": self.updates,
                    "world_size": self.dist.world_size,  # ranks > 0: ranks/ beside the checkpoint
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
                self.name: {"obs_mode": self.env_cfg.obs_mode, **self.amap.to_dict()},
                PIXEL_POLICY_KEY if self.pixels else STATE_POLICY_KEY: self.policy_spec(),
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
        """Restore networks, temperature, optimisers, replay and counters; restart the episodes in
        flight. A rank > 0 takes its replay, generator and RNG states from its side file."""
        mine = (ckpt.get("training_state") or {}).get(self.name)
        if mine is None:
            raise SchemaError(f"cannot resume: not a {self.name} checkpoint (no training_state.{self.name})", path=path)  # fmt: skip
        saved, ranks = int(mine.get("world_size", 1)), self.dist.world_size
        if saved != ranks:
            raise SchemaError(
                f"cannot resume with {ranks} process(es): this {self.name} run was trained by {saved} "
                f"(each rank's replay, worlds and random streams are part of the experiment); resume "
                f"it with the same number (torchrun --nproc_per_node {saved}, or no torchrun for 1), "
                f"or start a new run ({self.name}.init_from loads its actor)", path=path,
            )  # fmt: skip
        step = int(ckpt["training_state"]["step"])
        own = mine if self.sync is None else self.sync.own_state(mine, path, step)
        try:
            self.actor.load_state_dict(to_torch_tree(dict(ckpt["model"])))
            self.critic.load_state_dict(to_torch_tree(dict(mine["critic"])))
            self.target_critic.load_state_dict(to_torch_tree(dict(mine["target_critic"])))
            for key, opt in self.optimizers.items():
                opt.load_state_dict(to_torch_tree(ckpt["optimizer"][key]))
            self.replay.load_state_dict(own["replay"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise SchemaError(f"cannot resume: the {self.name} state does not fit this config ({exc})", path=path) from None  # fmt: skip
        with torch.no_grad():
            self.log_alpha.copy_(torch.as_tensor(np.asarray(mine["log_alpha"])))
        set_rng_state(self.rng, own["rng"])
        self.env_steps, self.updates = int(mine["env_steps"]), int(mine["updates"])
        self.engine_step = step
        self.worlds.load_state_dict(own)
        self.load_extra_training_state(mine)
        if self.worlds.recorder is not None:  # episodes that ended after the checkpoint come again
            self.worlds.recorder.prune(self.env_steps)
            self.worlds.recorder.index()
        self.worlds.reset(self.env_steps)

    def close(self) -> None:
        """Close the worlds."""
        self.worlds.close()
