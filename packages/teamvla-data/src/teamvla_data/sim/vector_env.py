"""Many bimanual worlds in lock step: :class:`TeamVLAVectorEnv`, :func:`make_vector_env`.

A ``gymnasium.vector.VectorEnv`` whose ``num_envs`` worlds advance together in
numpy (:class:`teamvla_data.sim.batch.BatchPhysics`) instead of one Python
world after another; cameras are rendered per world. Sub-environment ``i``
behaves exactly like ``make_env(task_i, ...)`` (same spaces, rewards,
termination, truncation and seeding; bit-identical observations)::

    envs = make_vector_env(["lift", "handoff", "drawer"], 6, obs_mode="state")
    obs, infos = envs.reset(seed=0)                 # sub-env i: scene seed 0 + i
    obs, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())

Tasks are assigned round-robin (``tasks[i % len(tasks)]``). Actions and
observations are batched as ``gymnasium.vector.utils.batch_space`` batches the
single spaces: a dict of arrays with a leading ``num_envs`` axis (the
instructions a tuple of strings). ``infos`` holds ``success``, ``t``,
``first_grasp`` (and ``scene_seed`` after resets), each with its ``_key`` mask.

Autoreset (``autoreset_mode``, gymnasium's conventions):

* ``"NextStep"`` (default): the step after a sub-env terminates or is truncated
  resets it, ignoring its action, and returns its first observation with reward
  0 and both flags false;
* ``"SameStep"``: a sub-env that ends is reset within the same step; the
  returned observation is the new episode's first, the last one is in
  ``infos["final_obs"][i]`` and its info in ``infos["final_info"]``;
* ``"Disabled"``: nothing resets by itself; reset ended sub-envs with
  ``reset(options={"reset_mask": mask})`` before stepping them again (stepping an
  ended sub-env is a ``ValueError``).

``reset(seed=s)`` seeds sub-env ``i`` with ``s + i`` (a list gives one seed
per sub-env); a reset without a seed, autoresets included, draws the scene
seed from the sub-env's own generator, as ``TeamVLAEnv.reset()`` does.
``get_state(i)`` / ``set_state(i, state)`` read and write a world's
:class:`WorldState`, e.g. for ``make_expert(task, rng).act(envs.get_state(i))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from teamvla_data.sim.batch import BatchPhysics, BatchState, SuccessTable
from teamvla_data.sim.config import TaskConfig
from teamvla_data.sim.gym_env import (
    action_space,
    check_instruction,
    instruction_space,
    observation_space,
    resolve_config,
)
from teamvla_data.sim.language import max_instruction_length
from teamvla_data.sim.seeds import EVAL_SEED_START
from teamvla_data.sim.state import ARM_A, ARM_B
from teamvla_data.sim.world import BimanualEnv, WorldState

ACTION_KEYS = ("action_a", "action_b", "grip_a", "grip_b")


class TeamVLAVectorEnv(VectorEnv[Any, dict[str, Any], np.ndarray]):
    """``num_envs`` worlds stepped together (see the module docstring)."""

    metadata: dict[str, Any] = {  # noqa: RUF012 (gymnasium's convention; copied per instance)
        "autoreset_mode": AutoresetMode.NEXT_STEP,
        "render_modes": ["rgb_array"],
    }

    def __init__(
        self,
        tasks: str | Sequence[str],
        num_envs: int,
        *,
        seed: int | None = None,
        render: bool = True,
        image_size: int | None = None,
        num_joints: int | None = None,
        obs_mode: str = "pixels",
        render_mode: str | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        task_cfgs: Mapping[str, TaskConfig] | None = None,
    ) -> None:
        names = [tasks] if isinstance(tasks, str) else list(tasks)
        if not names or num_envs < 1:
            raise ValueError(
                f"need at least one task and num_envs >= 1, received {tasks!r}, {num_envs}"
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', received {render_mode!r}")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.num_envs, self.obs_mode, self.render_mode = int(num_envs), obs_mode, render_mode
        self.tasks = [names[i % len(names)] for i in range(self.num_envs)]
        cfgs = {
            t: resolve_config(
                t,
                (task_cfgs or {}).get(t),
                render=render,
                image_size=image_size,
                num_joints=num_joints,
                obs_mode=obs_mode,
            )
            for t in dict.fromkeys(names)
        }
        self.world_cfg = next(iter(cfgs.values())).world
        for t, c in cfgs.items():
            if c.world != self.world_cfg:
                raise ValueError(
                    f"task_cfgs[{t!r}].world differs from the other tasks' ({c.world} != "
                    f"{self.world_cfg}); the worlds of a vector env share one world configuration"
                )
        # Scenes are sampled by a non-rendering BimanualEnv; cameras by the vector env itself.
        self._sampler = BimanualEnv(dataclasses.replace(self.world_cfg, render=False), cfgs)
        self._cameras = BimanualEnv(self.world_cfg, cfgs)
        model = self._sampler.model
        self.physics = BatchPhysics(model, self.world_cfg, self._sampler.layout)
        self.state = BatchState.empty(self.num_envs, model.num_joints)
        self.task_cfgs = [cfgs[t] for t in self.tasks]
        self._table = SuccessTable.of(self.task_cfgs)
        self.max_steps = np.array([int(c.max_steps or 0) for c in self.task_cfgs])
        weights = [c.reward for c in self.task_cfgs]
        self._w_step = np.array([float(w.step) for w in weights])
        self._w_grasp = np.array([float(w.grasp) for w in weights])
        self._w_success = np.array([float(w.success) for w in weights])
        length = max(max_instruction_length(c.instructions or []) for c in cfgs.values())
        self._text = instruction_space(length)
        self.single_observation_space = observation_space(
            obs_mode, model, self.world_cfg.image_size, length, self._sampler.layout
        )
        self.single_action_space = action_space(model.num_joints, model.joint_limit)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._first_seed = seed
        self.scene_seeds = np.zeros(self.num_envs, np.int64)
        self._ended = np.zeros(self.num_envs, bool)  # ended in the last step (autoreset pending)
        self._started = False

    # -- worlds
    def get_state(self, i: int) -> WorldState:
        """A copy of world ``i``'s state (what ``make_expert(task, rng).act`` reads)."""
        return self.state.get(i)

    def set_state(self, i: int, state: WorldState) -> None:
        """Replace world ``i``'s state (its task must stay the same)."""
        if state.task != self.tasks[i]:
            raise ValueError(f"sub-env {i} runs {self.tasks[i]!r}, received a {state.task!r} state")
        self.state.set(i, state)

    def _reset_one(self, i: int, seed: int | None, instruction: str | None) -> None:
        if seed is not None:
            if not isinstance(seed, int | np.integer) or seed < 0:
                raise ValueError(f"seed of sub-env {i} must be an integer >= 0, received {seed!r}")
            self._rngs[i], _ = seeding.np_random(int(seed))
            scene = int(seed)
        else:
            rng = self._rngs[i]
            if rng is None:
                rng = self._rngs[i] = seeding.np_random()[0]
            scene = int(rng.integers(EVAL_SEED_START))
        if instruction is not None:
            check_instruction(instruction, self._text)
        self._sampler.reset(self.tasks[i], scene, instruction)
        self.state.set(i, self._sampler.state)
        self.scene_seeds[i] = scene

    # -- gymnasium API
    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Reset all sub-envs, or those in ``options["reset_mask"]``; ``options["instruction"]``
        (a str, or one str or None per sub-env) replaces the drawn instructions."""
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        n = self.num_envs
        seeds = (
            [None] * n
            if seed is None
            else [seed + i for i in range(n)]
            if isinstance(seed, int)
            else list(seed)
        )
        if len(seeds) != n:
            raise ValueError(f"seed: expected an int or {n} seeds, received {len(seeds)}")
        options = dict(options or {})
        unknown = sorted(set(options) - {"reset_mask", "instruction"})
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {unknown}; options are 'reset_mask', 'instruction'"
            )
        mask = np.ones(n, bool)
        if "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (n,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({n},) with a True value, "
                    f"received {mask!r}"
                )
            if not self._started:
                raise ValueError("the first reset() resets every sub-env: pass no reset_mask")
        texts = options.get("instruction")
        if texts is None or isinstance(texts, str):
            texts = [texts] * n
        if len(texts) != n:
            raise ValueError(
                f"options['instruction']: expected a str or {n} entries, received {len(texts)}"
            )
        self._started = True
        for i in np.flatnonzero(mask):
            self._reset_one(int(i), seeds[i], texts[i])
        self._ended[mask] = False
        infos = {"scene_seed": self.scene_seeds.copy(), "_scene_seed": mask.copy()}
        return self._observations(), infos

    def step(
        self, actions: Mapping[str, Any]
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-env (see the module docstring for what happens to ended ones)."""
        if not self._started:
            raise RuntimeError("call reset() first")
        targets, grips = self._parse(actions)
        if self.autoreset_mode == AutoresetMode.DISABLED and self._ended.any():
            raise ValueError(
                f"sub-env(s) {np.flatnonzero(self._ended).tolist()} ended: reset them with "
                "reset(options={'reset_mask': mask}) before stepping (autoreset_mode='Disabled')"
            )
        s = self.state
        grasped_before = s.grasped.copy()
        self.physics.step(s, targets, grips)
        success = self.physics.success(s, self._table)
        first = s.grasped & ~grasped_before
        rewards = (
            self._w_step
            + np.where(first, self._w_grasp, 0.0)
            + np.where(success, self._w_success, 0.0)
        )
        terminated = success.copy()
        truncated = ~success & (s.t >= self.max_steps)
        infos: dict[str, Any] = {"success": success.copy(), "t": s.t.copy(), "first_grasp": first}
        ended = terminated | truncated
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            resets = self._ended.copy()
            for i in np.flatnonzero(resets):
                self._reset_one(int(i), None, None)
            rewards[resets], terminated[resets], truncated[resets] = 0.0, False, False
            for key in ("success", "first_grasp"):
                infos[key][resets] = False
            infos["t"][resets] = 0
            self._ended = terminated | truncated
            if resets.any():
                infos.update(scene_seed=self.scene_seeds.copy(), _scene_seed=resets)
        elif self.autoreset_mode == AutoresetMode.SAME_STEP and ended.any():
            last = self._observations()
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(ended):
                final_obs[i] = self._take(last, int(i))
                self._reset_one(int(i), None, None)
            final_info = {k: v.copy() for k, v in infos.items()}
            final_info.update({f"_{k}": ended.copy() for k in list(final_info)})
            infos.update(
                final_obs=final_obs,
                _final_obs=ended.copy(),
                final_info=final_info,
                _final_info=ended.copy(),
                scene_seed=self.scene_seeds.copy(),
                _scene_seed=ended.copy(),
            )
        elif self.autoreset_mode == AutoresetMode.DISABLED:
            self._ended = ended
        for key in ("success", "t", "first_grasp"):
            infos[f"_{key}"] = np.ones(self.num_envs, bool)
        return self._observations(), rewards, terminated, truncated, infos

    def _parse(self, actions: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        n, j = self.num_envs, self.physics.model.num_joints
        if not isinstance(actions, Mapping):
            raise ValueError(
                f"actions must be a mapping of {', '.join(ACTION_KEYS)}, received {type(actions).__name__}"
            )
        arrays = {}
        for key, shape in zip(ACTION_KEYS, ((n, j), (n, j), (n,), (n,)), strict=True):
            if key not in actions:
                raise ValueError(f"actions is missing {key!r}; expected {', '.join(ACTION_KEYS)}")
            value = np.asarray(actions[key], dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"{key}: expected shape {shape}, received {value.shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"{key}: NaN or infinite value in sub-env(s) {np.flatnonzero(~np.isfinite(value).reshape(n, -1).all(axis=1)).tolist()}"
                )
            arrays[key] = value
        targets = np.stack([arrays["action_a"], arrays["action_b"]], axis=1)
        grips = np.stack([arrays["grip_a"], arrays["grip_b"]], axis=1)
        return targets, grips

    # -- observations
    def _observations(self) -> Any:
        s = self.state
        if self.obs_mode == "state":
            return self.physics.state_vectors(s)
        size = self.world_cfg.image_size
        rgb = np.zeros((2, self.num_envs, size, size, 3), np.uint8)
        if self.world_cfg.render:
            renderer = self._cameras.renderer
            for i in range(self.num_envs):
                rgb[0, i], rgb[1, i] = renderer.render(self._view(i))
        return {
            "rgb_a": rgb[0],
            "rgb_b": rgb[1],
            "q_a": s.q[:, ARM_A].astype(np.float32),
            "q_b": s.q[:, ARM_B].astype(np.float32),
            "instruction": tuple(s.instruction),
        }

    def _view(self, i: int) -> WorldState:
        # What the renderer reads, without copies (q, grip, blocks, drawer).
        s = self.state
        return WorldState(
            task=s.task[i],
            instruction=s.instruction[i],
            target=int(s.target[i]),
            q=s.q[i],
            grip=s.grip[i],
            block_pos=s.block_pos[i],
            holders=[],
            hold_offset=s.hold_offset[i],
            handed_over=s.handed_over[i],
            has_drawer=bool(s.has_drawer[i]),
            drawer=float(s.drawer[i]),
        )

    def _take(self, obs: Any, i: int) -> Any:
        if self.obs_mode == "state":
            return obs[i].copy()
        return {k: (v[i] if k == "instruction" else v[i].copy()) for k, v in obs.items()}

    def render(self) -> tuple[np.ndarray, ...] | None:
        """Per sub-env, both cameras side by side (``uint8[H, 2W, 3]``) when ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array":
            return None
        renderer = self._cameras.renderer
        return tuple(
            np.concatenate(renderer.render(self._view(i)), axis=1) for i in range(self.num_envs)
        )


def make_vector_env(
    tasks_or_task: str | Sequence[str],
    num_envs: int,
    *,
    seed: int | None = None,
    render: bool = True,
    image_size: int | None = None,
    num_joints: int | None = None,
    obs_mode: str = "pixels",
    render_mode: str | None = None,
    autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
    task_cfgs: Mapping[str, TaskConfig] | None = None,
) -> TeamVLAVectorEnv:
    """``num_envs`` worlds of one task or of several (round-robin), stepped together in numpy."""
    return TeamVLAVectorEnv(
        tasks_or_task,
        num_envs,
        seed=seed,
        render=render,
        image_size=image_size,
        num_joints=num_joints,
        obs_mode=obs_mode,
        render_mode=render_mode,
        autoreset_mode=autoreset_mode,
        task_cfgs=task_cfgs,
    )


def stack_actions(actions: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Per-sub-env actions (e.g. from experts) as one batched action."""
    return {k: np.stack([np.asarray(a[k], np.float32) for a in actions]) for k in ACTION_KEYS}
