"""The bimanual world as an environment: :class:`BimanualEnv`.

``reset(task, seed, instruction=None) -> obs`` and ``step(action) -> (obs,
success, done, info)``; ``info["reward"]`` is the step's reward from the
task's ``reward:`` weights (:func:`~teamvla_data.sim.state.step_reward`). The
state, geometry helpers and predicates live in :mod:`teamvla_data.sim.state`,
one control step of physics in :mod:`teamvla_data.sim.physics` (both
re-exported here); the Gymnasium form is :mod:`teamvla_data.sim.gym_env`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from teamvla_data.sim.config import TaskConfig, WorldConfig, default_task_config
from teamvla_data.sim.kinematics import ArmModel
from teamvla_data.sim.language import parse_target, sample_instruction
from teamvla_data.sim.layout import COLORS, LAYOUT, MIN_BLOCK_SEPARATION, Layout
from teamvla_data.sim.physics import Physics
from teamvla_data.sim.registry import check_task, get_task, scene_key, task_names
from teamvla_data.sim.state import (
    ARM_A,
    ARM_B,
    ARM_NAMES,
    CLOSED,
    HOME_GRIP,
    NO_ARM,
    WorldState,
    arm_sign,
    base_x,
    block_bottom,
    drawer_success,
    gripper_axes,
    handoff_success,
    home_posture,
    in_tray,
    is_success,
    lift_success,
    step_reward,
    to_local,
    to_world,
    world_points,
)

__all__ = [
    "ARM_A",
    "ARM_B",
    "ARM_NAMES",
    "CLOSED",
    "HOME_GRIP",
    "NO_ARM",
    "BimanualEnv",
    "Physics",
    "WorldState",
    "arm_sign",
    "base_x",
    "block_bottom",
    "drawer_success",
    "gripper_axes",
    "handoff_success",
    "home_posture",
    "in_tray",
    "is_success",
    "lift_success",
    "step_reward",
    "to_local",
    "to_world",
    "world_points",
]

# --------------------------------------------------------------------------- environment


def _f32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


class BimanualEnv:
    """Two planar arms, a red and a blue block, and (for the drawer task) a drawer.

    ``reset(task, seed, instruction=None)`` returns the first observation as a
    step dict in the schema layout (``rgb_a``, ``rgb_b``, ``q_a``, ``q_b``,
    ``instruction``, ``task``, ``success``); adding the action fields
    (``action_a``, ``action_b``, ``grip_a``, ``grip_b``) makes it a step for
    :meth:`teamvla_schema.EpisodeWriter.add_step`. ``step(action)`` returns
    ``(obs, success, done, info)``. Same seed and actions give bit-identical
    observations.
    """

    def __init__(
        self,
        world_cfg: WorldConfig | None = None,
        task_cfgs: Mapping[str, TaskConfig] | None = None,
        layout: Layout = LAYOUT,
    ) -> None:
        self.world_cfg = world_cfg or WorldConfig()
        self.layout = layout
        self.model = ArmModel(num_joints=self.world_cfg.num_joints)
        self.physics = Physics(self.model, self.world_cfg, layout)
        # Resolved configuration per task: the defaults (with this world) unless given.
        self.task_cfgs = {t: default_task_config(t, self.world_cfg) for t in task_names()}
        for name, cfg in (task_cfgs or {}).items():
            if name not in self.task_cfgs or cfg.name != name:
                raise ValueError(
                    f"task_cfgs[{name!r}] must configure one of {', '.join(task_names())} under its own name"
                )
            self.task_cfgs[name] = cfg.resolved()
        self._renderer: Any = None
        self._state: WorldState | None = None
        self._done = False

    # -- properties
    @property
    def state(self) -> WorldState:
        """The current state (mutable; tests edit it to build hand-made situations)."""
        if self._state is None:
            raise RuntimeError("call reset() first")
        return self._state

    @property
    def num_joints(self) -> int:
        """Joints per arm (N)."""
        return self.model.num_joints

    @property
    def task_cfg(self) -> TaskConfig:
        """Resolved configuration of the current task."""
        return self.task_cfgs[self.state.task]

    @property
    def renderer(self) -> Any:
        """The camera renderer (created on first use)."""
        if self._renderer is None:
            from teamvla_data.sim.render import Renderer

            self._renderer = Renderer(self.model, self.world_cfg.image_size, self.layout)
        return self._renderer

    # -- episode
    def reset(self, task: str, seed: int, instruction: str | None = None) -> dict[str, Any]:
        """Start an episode of ``task`` from the scene drawn from ``seed``.

        The scene (block positions, arm postures) depends on ``(task, seed)``
        only. Without ``instruction`` the target colour and a paraphrase are
        drawn from the seed too; an explicit instruction sets the target to the
        colour it names (``ValueError`` unless it names exactly one).
        """
        check_task(task)
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, received {seed!r}")
        if task not in self.task_cfgs:  # registered after this env was made
            self.task_cfgs[task] = default_task_config(task, self.world_cfg)
        cfg = self.task_cfgs[task]
        # Separate streams: the scene never depends on whether an instruction was given.
        # The task's stream key comes from its name (registry.scene_key), not its position.
        scene_seq, lang_seq = np.random.SeedSequence([int(seed), scene_key(task)]).spawn(2)
        scene_rng = np.random.default_rng(scene_seq)
        drawn, _ = sample_instruction(list(cfg.instructions or []), np.random.default_rng(lang_seq))
        text = drawn if instruction is None else str(instruction)
        target = COLORS.index(parse_target(text))
        self._state = self._sample_scene(task, text, target, scene_rng)
        self._done = False
        return self.observation()

    def _sample_scene(
        self, task: str, instruction: str, target: int, rng: np.random.Generator
    ) -> WorldState:
        lay = self.layout
        spec = get_task(task)
        lo, hi = spec.spawn_x
        xs = [float(rng.uniform(lo, hi))]
        while True:  # rejection sampling: the second block keeps its distance
            x = float(rng.uniform(lo, hi))
            if abs(x - xs[0]) >= MIN_BLOCK_SEPARATION:
                xs.append(x)
                break
        has_drawer = spec.has_drawer
        floor = lay.cabinet_height if has_drawer else 0.0
        n = self.model.num_joints
        home = home_posture(self.model)
        q = np.stack([home + rng.uniform(-0.05, 0.05, n) for _ in range(2)])
        # Joint positions stored at float32 precision so observed q equals the state.
        q = q.astype(np.float32).astype(np.float64)
        return WorldState(
            task=task,
            instruction=instruction,
            target=target,
            q=q,
            grip=np.zeros(2),
            block_pos=np.array([[x, floor + lay.block_half] for x in xs]),
            holders=[[], []],
            hold_offset=np.zeros((2, 2, 2)),
            handed_over=np.zeros(2, dtype=bool),
            has_drawer=has_drawer,
        )

    def step(self, action: Mapping[str, Any]) -> tuple[dict[str, Any], bool, bool, dict[str, Any]]:
        """Apply ``action`` (``action_a``, ``action_b``: N joint targets; ``grip_a``, ``grip_b``: 0..1).

        Targets are clipped to the joint limits and approached at bounded
        speed, gripper commands clipped to [0, 1]. A malformed action (missing
        key, wrong shape, NaN) raises ``ValueError`` and leaves the state unchanged.
        ``info`` holds ``t``, ``target``, ``drawer``, ``holders``, ``reward``
        (:func:`step_reward` of the task's weights) and ``first_grasp`` (the
        named block was held for the first time this episode).
        """
        state = self.state
        targets, grips = self._parse_action(action)
        grasped_before = state.grasped
        self.physics.step(state, targets, grips)
        cfg = self.task_cfg
        success = is_success(state, cfg, self.layout)
        done = success or state.t >= int(cfg.max_steps or 0)
        self._done = done
        first_grasp = state.grasped and not grasped_before
        obs = self.observation(success=success)
        info = {
            "t": state.t,
            "target": state.target_color,
            "drawer": state.drawer,
            "holders": [list(h) for h in state.holders],
            "reward": step_reward(cfg.reward, success=success, first_grasp=first_grasp),
            "first_grasp": first_grasp,
        }
        return obs, success, done, info

    def _parse_action(self, action: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(action, Mapping):
            raise ValueError(f"an action must be a mapping, received {type(action).__name__}")
        n = self.model.num_joints
        targets = np.empty((2, n))
        grips = np.empty(2)
        for arm, name in enumerate(ARM_NAMES):
            for key in (f"action_{name}", f"grip_{name}"):
                if key not in action:
                    raise ValueError(
                        f"action is missing {key!r}; expected action_a, action_b (float[{n}]) and grip_a, grip_b (float)"
                    )
            tgt = np.asarray(action[f"action_{name}"], dtype=np.float64)
            if tgt.shape != (n,):
                raise ValueError(f"action_{name}: expected shape ({n},), received {tgt.shape}")
            grip = np.asarray(action[f"grip_{name}"], dtype=np.float64)
            if grip.size != 1:
                raise ValueError(f"grip_{name}: expected a scalar, received shape {grip.shape}")
            if not (np.all(np.isfinite(tgt)) and np.isfinite(grip).all()):
                raise ValueError(f"action_{name}/grip_{name}: NaN or infinite value")
            targets[arm] = tgt
            grips[arm] = float(grip.reshape(()))
        return targets, grips

    def observation(self, success: bool | None = None) -> dict[str, Any]:
        """The current observation as schema step fields (no action fields)."""
        state = self.state
        if success is None:
            success = is_success(state, self.task_cfg, self.layout)
        if self.world_cfg.render:
            rgb_a, rgb_b = self.renderer.render(state)
        else:
            size = self.world_cfg.image_size
            rgb_a = np.zeros((size, size, 3), np.uint8)
            rgb_b = np.zeros((size, size, 3), np.uint8)
        return {
            "rgb_a": rgb_a,
            "rgb_b": rgb_b,
            "q_a": _f32(state.q[ARM_A]),
            "q_b": _f32(state.q[ARM_B]),
            "instruction": state.instruction,
            "task": state.task,
            "success": bool(success),
        }

    def hold_action(self) -> dict[str, Any]:
        """An action that keeps both arms where they are and the grippers as they are."""
        state = self.state
        return {
            "action_a": _f32(state.q[ARM_A]),
            "action_b": _f32(state.q[ARM_B]),
            "grip_a": np.float32(state.grip[ARM_A] >= CLOSED),
            "grip_b": np.float32(state.grip[ARM_B] >= CLOSED),
        }
