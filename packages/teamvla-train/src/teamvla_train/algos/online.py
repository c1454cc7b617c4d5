"""Interaction with the simulated worlds for the actor-critic algorithms (SAC, AWAC).

:class:`OnlineWorlds` steps ``env.num_envs`` worlds
(``make_vector_env(obs_mode=env.obs_mode, autoreset_mode="SameStep")``) with flat
actions in ``[-1, 1]`` (:class:`teamvla_train.models.sac_nets.ActionMap`), turns
each step into n-step transitions (:class:`teamvla_train.algos.replay.NStep`)
and keeps the return and success of the last 20 finished episodes. With
``env.obs_mode: pixels`` the actor sees pixel observations
(:mod:`teamvla_train.models.pixel_nets`: both cameras, joints, gripper state,
instruction) and, when asked, every finished episode is written as an ordinary
episode (:class:`teamvla_train.algos.online_record.EpisodeRecorder`).
:func:`evaluate_actor` plays the deterministic actor on held-out evaluation
seeds. :func:`rng_state` / :func:`set_rng_state` carry a numpy generator
through a checkpoint as JSON (PCG64's 128-bit integers as strings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from teamvla_train.algos.replay import NStep
from teamvla_train.models.pixel_nets import GripMemory, joints_of, obs_to_torch, pixel_observation
from teamvla_train.models.sac_nets import ActionMap

ONLINE_SEED_OFFSET = 1_000_000  # episode_seed indices of online scenes (demos use 0, 1, ...)


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A PCG64 generator's state as JSON-ready values."""
    bit = rng.bit_generator.state
    return {"state": str(bit["state"]["state"]), "inc": str(bit["state"]["inc"]),
            "has_uint32": int(bit["has_uint32"]), "uinteger": int(bit["uinteger"])}  # fmt: skip


def set_rng_state(rng: np.random.Generator, r: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state` into ``rng``."""
    rng.bit_generator.state = {
        "bit_generator": "PCG64", "state": {"state": int(r["state"]), "inc": int(r["inc"])},
        "has_uint32": int(r["has_uint32"]), "uinteger": int(r["uinteger"]),
    }  # fmt: skip


def make_action_map(env_cfg: Any, space: Any) -> ActionMap:
    """The action map the ``env:`` section names (``action_mode``, ``joint_step``, ``binary_grip``)."""
    return ActionMap(space=space, mode=env_cfg.action_mode, joint_step=env_cfg.joint_step,
                     binary_grip=env_cfg.binary_grip)  # fmt: skip


def actor_input(raw: Any, grip: GripMemory, *, pixels: bool) -> tuple[Any, np.ndarray]:
    """A batched env observation -> (what the actor reads, numpy; the joints delta actions step
    from): the state vector itself, or the pixel observation with the gripper state."""
    if not pixels:
        x = np.asarray(raw, np.float32)
        return x, x
    return pixel_observation(raw, grip.value), joints_of(raw)


def to_device(x: Any, device: torch.device) -> Any:
    """An actor input (state array or pixel observation) on ``device``."""
    if isinstance(x, Mapping):
        return obs_to_torch(x, device)
    return torch.as_tensor(x, device=device)


class OnlineWorlds:
    """``num_envs`` worlds, stepped with flat actions into n-step transitions."""

    def __init__(
        self, *, env_cfg: Any, num_joints: int, n_step: int, gamma: float,
        record_root: Path | None = None, world_offset: int = 0,
    ) -> None:  # fmt: skip
        from teamvla_data.sim import make_vector_env

        self.cfg, self.tasks = env_cfg, list(env_cfg.tasks)
        self.world_offset = int(world_offset)  # rank x env.num_envs under torchrun, else 0
        self.pixels = env_cfg.obs_mode == "pixels"
        self.envs = make_vector_env(
            self.tasks, env_cfg.num_envs, obs_mode=env_cfg.obs_mode, render=self.pixels,
            image_size=env_cfg.image_size if self.pixels else None, num_joints=num_joints,
            autoreset_mode="SameStep",
        )  # fmt: skip
        self.num_envs = self.envs.num_envs
        self.amap = make_action_map(env_cfg, self.envs.single_action_space)
        self.image_size = int(self.envs.world_cfg.image_size)
        if self.pixels:  # the joints and gripper state of the pixel observation
            self.obs_dim = 2 * int(num_joints) + 2
        else:
            self.obs_dim = int((self.envs.single_observation_space.shape or (0,))[0])
        self.action_dim = self.amap.dim
        self.nstep = NStep(n=n_step, gamma=gamma, num_envs=self.num_envs)
        self.grip = GripMemory(self.num_envs)
        self.recorder: Any = None
        if record_root is not None:
            from teamvla_train.algos.online_record import EpisodeRecorder

            self.recorder = EpisodeRecorder(record_root, tasks=self.envs.tasks)
        self.recent_returns: list[float] = []  # the last 20 finished online episodes
        self.recent_success: list[float] = []
        self.raw: Any = None  # the envs' last observations
        self.obs: Any = None  # what the actor reads of them
        self.joints = np.zeros((self.num_envs, 2 * int(num_joints)), np.float32)
        self.ep_return = np.zeros(self.num_envs)

    def reset(self, env_steps: int) -> None:
        """Start every world on a fresh scene: world ``i`` from seed index ``env_steps +
        world_offset + i`` of ``env.seed`` (``env_steps``: transitions so far, all ranks; a rank's
        ``world_offset`` keeps its worlds' seeds apart from every other rank's)."""
        from teamvla_data.sim import episode_seed

        base = ONLINE_SEED_OFFSET + env_steps + self.world_offset
        seeds = [episode_seed(self.cfg.seed, t, base + i) for i, t in enumerate(self.envs.tasks)]
        self.raw, _ = self.envs.reset(seed=seeds)
        self.grip.reset()
        self.obs, self.joints = actor_input(self.raw, self.grip, pixels=self.pixels)
        self.ep_return = np.zeros(self.num_envs)
        self.nstep.reset()
        if self.recorder is not None:
            self.recorder.reset(self.envs.scene_seeds)

    def _final(self, next_raw: Any, infos: Mapping[str, Any], ended: np.ndarray) -> Any:
        """``next_raw`` with the rows of the worlds that ended replaced by their final observation
        (SameStep autoreset returns the next episode's first one)."""
        if not ended.any():
            return next_raw
        if not self.pixels:
            real = np.array(next_raw, np.float32, copy=True)
            for i in np.flatnonzero(ended):
                real[i] = infos["final_obs"][i]
            return real
        fields = {k: (np.array(v, copy=True) if k != "instruction" else list(v)) for k, v in next_raw.items()}  # fmt: skip
        for i in np.flatnonzero(ended):
            for key, value in infos["final_obs"][i].items():
                fields[key][i] = value
        return fields

    def step(self, u: np.ndarray, env_steps: int = 0) -> dict[str, Any]:
        """Execute flat actions ``u (B, D)``; the n-step transitions completed (``add_batch`` arguments).

        ``env_steps``: transitions collected once this step is done (names recorded episodes).
        """
        action = self.amap.to_env(u, self.joints)
        next_raw, reward, terminated, truncated, infos = self.envs.step(action)
        ended = terminated | truncated
        if self.recorder is not None:
            self.recorder.add(self.raw, action, reward)
        self.grip.update(action)  # the gripper state of the next observations
        final_raw = self._final(next_raw, infos, ended)
        real_next, _ = actor_input(final_raw, self.grip, pixels=self.pixels)
        out = self.nstep.push(obs=self.obs, action=u, reward=reward, next_obs=real_next,
                              terminated=terminated, truncated=truncated)  # fmt: skip
        self.ep_return += reward
        for i in np.flatnonzero(ended):
            self.recent_returns = [*self.recent_returns, float(self.ep_return[i])][-20:]
            self.recent_success = [*self.recent_success, float(terminated[i])][-20:]
            self.ep_return[i] = 0.0
            if self.recorder is not None:
                final = {k: v[i] for k, v in final_raw.items()}
                self.recorder.finish(int(i), final, success=bool(terminated[i]), env_steps=env_steps,
                                     scene_seed=int(self.envs.scene_seeds[i]))  # fmt: skip
        self.grip.reset(np.flatnonzero(ended))  # their next observation starts an episode
        self.raw = next_raw
        self.obs, self.joints = actor_input(next_raw, self.grip, pixels=self.pixels)
        return out

    def stats(self) -> dict[str, float]:
        """Mean return and success of the last 20 finished episodes (0 before any)."""
        return {"episode_return": float(np.mean(self.recent_returns or [0.0])),
                "episode_success": float(np.mean(self.recent_success or [0.0]))}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """The episode statistics (the worlds themselves restart on resume)."""
        return {"recent_returns": list(self.recent_returns), "recent_success": list(self.recent_success)}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.recent_returns = [float(x) for x in state.get("recent_returns", [])]
        self.recent_success = [float(x) for x in state.get("recent_success", [])]

    def close(self) -> None:
        """Close the vector env (and index the recorded episodes)."""
        if self.recorder is not None:
            self.recorder.index()
        self.envs.close()


@torch.no_grad()
def evaluate_actor(
    *, actor: Any, tasks: Sequence[str], episodes: int, num_joints: int, amap: ActionMap,
    device: torch.device, obs_mode: str = "state", image_size: int | None = None,
) -> dict[str, float]:  # fmt: skip
    """Success rate and mean return per task of the deterministic actor on held-out evaluation
    seeds (state vectors, or pixel observations rendered at ``image_size``)."""
    from teamvla_data.sim import eval_seeds, make_vector_env

    pixels = obs_mode == "pixels"
    out: dict[str, float] = {}
    was_training = actor.training
    actor.eval()
    for task in tasks:
        envs = make_vector_env(
            task, episodes, obs_mode=obs_mode, render=pixels, num_joints=num_joints,
            image_size=image_size if pixels else None,
        )  # fmt: skip
        obs, _ = envs.reset(seed=eval_seeds(task, episodes))
        grip = GripMemory(episodes)
        alive = np.ones(episodes, bool)
        ret, success = np.zeros(episodes), np.zeros(episodes, bool)
        while alive.any():
            x, joints = actor_input(obs, grip, pixels=pixels)
            action = amap.to_env(actor.act(to_device(x, device)).cpu().numpy(), joints)
            grip.update(action)  # a world that ended restarts (NextStep) and is no longer alive
            obs_next, reward, terminated, truncated, _ = envs.step(action)
            ret += np.where(alive, reward, 0.0)
            success |= alive & terminated
            alive &= ~(terminated | truncated)
            obs = obs_next
        envs.close()
        out[f"success_{task}"], out[f"return_{task}"] = float(success.mean()), float(ret.mean())
    actor.train(was_training)
    return out


def rollout_state_policy(
    policy: Any, task: str, seeds: Sequence[int], *, instructions: Sequence[str] | None = None,
    max_steps: int | None = None,
) -> list[tuple[bool, int, int]]:  # fmt: skip
    """Closed-loop episodes of an actor policy (``select_actions``; state or pixel observations,
    ``policy.obs_mode``) on ``seeds``: ``(success, steps, step_limit)`` each; ``instructions``
    replace the drawn ones (language swap)."""
    from teamvla_data.sim import make_vector_env

    n = len(seeds)
    pixels = getattr(policy, "obs_mode", "state") == "pixels"
    # NextStep autoreset: a world that ended restarts on the next step; the alive mask ignores it.
    envs = make_vector_env(task, n, obs_mode="pixels" if pixels else "state", render=pixels,
                           num_joints=policy.num_joints,
                           image_size=int(policy.image_size[0]) if pixels else None)  # fmt: skip
    options = {"instruction": list(instructions)} if instructions is not None else None
    obs, _ = envs.reset(seed=[int(s) for s in seeds], options=options)
    policy.reset()
    limit = int(envs.unwrapped.max_steps[0])
    alive, success, steps = np.ones(n, bool), np.zeros(n, bool), np.zeros(n, int)
    while alive.any() and (not max_steps or steps.max() < max_steps):
        obs, _, terminated, truncated, _ = envs.step(policy.select_actions(obs))
        steps += alive
        success |= alive & terminated
        alive &= ~(terminated | truncated)
    envs.close()
    return [(bool(success[i]), int(steps[i]), limit) for i in range(n)]


def state_closed_loop_eval(policy: Any, cfg: Any) -> dict[str, Any]:
    """``teamvla eval``'s closed loop (``evaluation.closed_loop_eval``) for a sac/awac actor (state
    or pixel observations): its env on the same held-out seeds, language swap included;
    ``{task: TaskOutcome}``."""
    from teamvla_data.sim.config import WorldConfig
    from teamvla_data.sim.language import swap_instruction
    from teamvla_data.sim.seeds import eval_seeds
    from teamvla_data.sim.world import BimanualEnv

    from teamvla_train.evaluation import TaskOutcome
    from teamvla_train.rollout import EpisodeResult, EpisodeSpec

    probe = BimanualEnv(WorldConfig(render=False, num_joints=policy.num_joints))
    out: dict[str, TaskOutcome] = {}
    for task in cfg.tasks:
        seeds = [int(s) for s in eval_seeds(task, cfg.episodes_per_task)]
        texts = [str(probe.reset(task, s)["instruction"]) for s in seeds]
        runs: dict[str, tuple[list[str] | None, list[str]]] = {"normal": (None, texts)}
        if cfg.language_swap:
            swapped = [swap_instruction(t) for t in texts]
            runs["swapped"] = (swapped, swapped)
        results: dict[str, list[Any]] = {"normal": [], "swapped": []}
        for kind, (given, shown) in runs.items():
            done = rollout_state_policy(policy, task, seeds, instructions=given, max_steps=cfg.max_steps or None)  # fmt: skip
            texts_given: list[str | None] = (
                list(given) if given is not None else [None] * len(seeds)
            )
            spec = [EpisodeSpec(task, s, g) for s, g in zip(seeds, texts_given, strict=True)]
            results[kind] = [EpisodeResult(sp, txt, ok, n, limit) for sp, txt, (ok, n, limit) in zip(spec, shown, done, strict=True)]  # fmt: skip
        out[task] = TaskOutcome(task, seeds, results["normal"], results["swapped"])
    return out
