"""The bimanual world as a Gymnasium environment: :class:`TeamVLAEnv`, :func:`make_env`.

    env = make_env("lift", seed=0)                 # or gymnasium.make("teamvla/Lift-v0")
    obs, info = env.reset()                        # options={"instruction": "lift the blue block"}
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    make_expert("lift", rng).act(env.unwrapped)    # the expert's action in the current state

Spaces (``N`` joints per arm, ``H = W`` the image size):

* actions: ``Dict(action_a=Box(-2.7, 2.7, (N,), float32), action_b=..., grip_a=Box(0, 1, (), float32),
  grip_b=...)``: the schema's action fields, absolute joint targets (clipped to
  the limits and approached at bounded speed by the world) and gripper commands;
* ``obs_mode="pixels"`` (default): ``Dict(rgb_a=Box(0, 255, (H, W, 3), uint8), rgb_b=...,
  q_a=Box(-2.7, 2.7, (N,), float32), q_b=..., instruction=Text(...))``: the fields an
  episode stores;
* ``obs_mode="state"``: one float32 ``Box`` of :func:`state_size` values, laid out by
  :func:`state_slices` (joints, gripper closures, grip points, block positions,
  which arm holds which block, drawer opening, one-hot target); no rendering.

An episode terminates on success (``info["success"]``) and is truncated at the
task's ``max_steps`` when it has not succeeded. The reward is the world's
(:func:`teamvla_data.sim.state.step_reward` of the task's ``reward:`` weights).
``reset(seed=s)`` replays ``BimanualEnv.reset(task, s)``: the same scene for
the same seed; ``reset()`` without a seed draws the scene seed from the env's
``np_random`` (seeded by ``make_env(seed=...)`` or the last seeded reset).
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from teamvla_data.sim.config import TaskConfig, WorldConfig, default_task_config
from teamvla_data.sim.kinematics import ArmModel
from teamvla_data.sim.language import max_instruction_length
from teamvla_data.sim.layout import COLORS, LAYOUT, Layout
from teamvla_data.sim.registry import get_task, task_names
from teamvla_data.sim.seeds import EVAL_SEED_START
from teamvla_data.sim.world import ARM_A, ARM_B, BimanualEnv, WorldState, to_world

OBS_MODES = ("pixels", "state")
#: Characters an instruction may use (the Text space's charset).
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " .,;:!?'\"-()"
#: Gymnasium ids registered on import of ``teamvla_data.sim``: task name -> id.
ENV_IDS = {
    "lift": "teamvla/Lift-v0",
    "handoff": "teamvla/Handoff-v0",
    "drawer": "teamvla/Drawer-v0",
}
#: Bound on |x| and |z| of positions in the state vector (every reachable point lies within).
POSITION_BOUND = 2.0

# --------------------------------------------------------------------------- spaces


def state_slices(num_joints: int) -> dict[str, slice]:
    """Where each quantity lies in the ``obs_mode="state"`` vector, for ``num_joints`` joints per arm.

    ``q_a``, ``q_b`` (N each, radians); ``grip`` (2: closure of A, B, 0 = open);
    ``grip_point_a``, ``grip_point_b`` (2 each: world x, z of the grip points);
    ``block_red``, ``block_blue`` (2 each: world x, z of the block centres);
    ``held`` (4: red held by A, red by B, blue by A, blue by B; 0 or 1);
    ``drawer`` (1: opening in metres, 0 without a drawer); ``target`` (2: one-hot, red, blue).
    """
    sizes = [
        ("q_a", num_joints),
        ("q_b", num_joints),
        ("grip", 2),
        ("grip_point_a", 2),
        ("grip_point_b", 2),
        ("block_red", 2),
        ("block_blue", 2),
        ("held", 4),
        ("drawer", 1),
        ("target", 2),
    ]
    out, start = {}, 0
    for name, size in sizes:
        out[name] = slice(start, start + size)
        start += size
    return out


def state_size(num_joints: int) -> int:
    """Length of the state vector (``2 N + 17``)."""
    return 2 * num_joints + 17


def state_bounds(model: ArmModel, layout: Layout = LAYOUT) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the state vector."""
    sl = state_slices(model.num_joints)
    low = np.full(state_size(model.num_joints), -POSITION_BOUND, np.float32)
    high = np.full(state_size(model.num_joints), POSITION_BOUND, np.float32)
    for key in ("q_a", "q_b"):
        low[sl[key]], high[sl[key]] = -model.joint_limit, model.joint_limit
    for key in ("grip", "held", "target"):
        low[sl[key]], high[sl[key]] = 0.0, 1.0
    low[sl["drawer"]], high[sl["drawer"]] = 0.0, layout.drawer_travel
    return low, high


def state_vector(state: WorldState, model: ArmModel, layout: Layout = LAYOUT) -> np.ndarray:
    """The ``obs_mode="state"`` observation of ``state`` (float32, see :func:`state_slices`)."""
    n = model.num_joints
    out = np.empty(state_size(n), np.float64)
    sl = state_slices(n)
    out[sl["q_a"]] = state.q[ARM_A]
    out[sl["q_b"]] = state.q[ARM_B]
    out[sl["grip"]] = state.grip
    for arm, key in ((ARM_A, "grip_point_a"), (ARM_B, "grip_point_b")):
        out[sl[key]] = to_world(arm, model.joint_points(state.q[arm])[-1], layout)
    out[sl["block_red"]] = state.block_pos[0]
    out[sl["block_blue"]] = state.block_pos[1]
    out[sl["held"]] = [float(arm in state.holders[b]) for b in (0, 1) for arm in (ARM_A, ARM_B)]
    out[sl["drawer"]] = state.drawer
    out[sl["target"]] = [float(state.target == b) for b in range(len(COLORS))]
    return out.astype(np.float32)


def action_space(num_joints: int, joint_limit: float = 2.7) -> spaces.Dict:
    """The schema's action fields as a Gymnasium space."""

    def joints() -> spaces.Box:
        return spaces.Box(-joint_limit, joint_limit, (num_joints,), np.float32)

    def grip() -> spaces.Box:
        return spaces.Box(0.0, 1.0, (), np.float32)

    return spaces.Dict(
        {"action_a": joints(), "action_b": joints(), "grip_a": grip(), "grip_b": grip()}
    )


def instruction_space(max_length: int) -> spaces.Text:
    """Instructions: 1 to ``max_length`` characters of :data:`INSTRUCTION_CHARSET`."""
    return spaces.Text(max_length, min_length=1, charset=INSTRUCTION_CHARSET)


def observation_space(
    obs_mode: str, model: ArmModel, image_size: int, max_length: int, layout: Layout = LAYOUT
) -> spaces.Space[Any]:
    """The observation space of ``obs_mode`` (see the module docstring)."""
    if obs_mode == "state":
        low, high = state_bounds(model, layout)
        return spaces.Box(low, high, dtype=np.float32)

    def image() -> spaces.Box:
        return spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)

    def joints() -> spaces.Box:
        return spaces.Box(-model.joint_limit, model.joint_limit, (model.num_joints,), np.float32)

    return spaces.Dict(
        {
            "rgb_a": image(),
            "rgb_b": image(),
            "q_a": joints(),
            "q_b": joints(),
            "instruction": instruction_space(max_length),
        }
    )


def check_instruction(text: Any, space: spaces.Text) -> str:
    """``text`` if ``space`` holds it, else ``ValueError`` naming the option and the value."""
    if not isinstance(text, str):
        raise ValueError(f"options['instruction'] must be a str, received {type(text).__name__}")
    bad = sorted(set(text) - set(INSTRUCTION_CHARSET))
    if bad or not space.min_length <= len(text) <= space.max_length:
        raise ValueError(
            f"options['instruction'] must be {space.min_length} to {space.max_length} characters of "
            f"letters, digits, spaces and {INSTRUCTION_CHARSET[62:]!r}; received {text!r}"
            + (f" (bad characters {bad})" if bad else f" ({len(text)} characters)")
        )
    return text


def resolve_config(
    task: str,
    task_cfg: TaskConfig | None,
    *,
    render: bool,
    image_size: int | None,
    num_joints: int | None,
    obs_mode: str,
) -> TaskConfig:
    """The task's resolved configuration with the env's world settings applied."""
    get_task(task)
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {', '.join(OBS_MODES)}, received {obs_mode!r}")
    cfg = (task_cfg or default_task_config(task)).resolved()
    if cfg.name != task:
        raise ValueError(f"task_cfg configures {cfg.name!r}, not {task!r}")
    for i, template in enumerate(cfg.instructions or []):
        bad = sorted(set(template.replace("{color}", "")) - set(INSTRUCTION_CHARSET))
        if bad:
            raise ValueError(
                f"instructions[{i}] of task {task!r} uses characters {bad} outside the observation "
                f"space's charset (letters, digits, spaces and {INSTRUCTION_CHARSET[62:]!r}): {template!r}"
            )
    world: WorldConfig = cfg.world
    changes: dict[str, Any] = {"render": bool(render) and obs_mode == "pixels"}
    if image_size is not None:
        changes["image_size"] = int(image_size)
    if num_joints is not None:
        changes["num_joints"] = int(num_joints)
    for key, lo, hi in (("image_size", 16, 512), ("num_joints", 3, 16)):
        value = changes.get(key, getattr(world, key))
        if not lo <= value <= hi:
            raise ValueError(f"{key} must be in {lo}..{hi}, received {value!r}")
    return dataclasses.replace(cfg, world=dataclasses.replace(world, **changes))


# --------------------------------------------------------------------------- the environment


class TeamVLAEnv(gym.Env[Any, dict[str, Any]]):
    """One task of the bimanual world as a ``gymnasium.Env`` (see the module docstring).

    ``env.unwrapped.state`` is the world state (mutable, as ``BimanualEnv.state``),
    ``env.unwrapped.world`` the underlying :class:`BimanualEnv`.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012

    def __init__(
        self,
        task: str = "lift",
        *,
        seed: int | None = None,
        render: bool = True,
        image_size: int | None = None,
        num_joints: int | None = None,
        obs_mode: str = "pixels",
        render_mode: str | None = None,
        task_cfg: TaskConfig | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', received {render_mode!r}")
        if seed is not None and (not isinstance(seed, int | np.integer) or seed < 0):
            raise ValueError(f"seed must be None or an integer >= 0, received {seed!r}")
        cfg = resolve_config(
            task,
            task_cfg,
            render=render,
            image_size=image_size,
            num_joints=num_joints,
            obs_mode=obs_mode,
        )
        self.task = task
        self.obs_mode = obs_mode
        self.render_mode = render_mode
        self.task_cfg = cfg
        self.world = BimanualEnv(cfg.world, {task: cfg})
        self.max_steps = int(cfg.max_steps or 0)
        model = self.world.model
        self.action_space = action_space(model.num_joints, model.joint_limit)
        self.observation_space = observation_space(
            obs_mode, model, cfg.world.image_size, max_instruction_length(cfg.instructions or [])
        )
        self._text = instruction_space(max_instruction_length(cfg.instructions or []))
        self._first_seed = None if seed is None else int(seed)
        self.scene_seed: int | None = None  # the world seed of the current episode

    @property
    def state(self) -> WorldState:
        """The world state (``make_expert(task, rng).act(env.unwrapped)`` reads it)."""
        return self.world.state

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start an episode; ``options={"instruction": text}`` replaces the drawn instruction."""
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"instruction"})
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; the only option is 'instruction'")
        instruction = options.get("instruction")
        if instruction is not None:
            check_instruction(instruction, self._text)
        scene = int(seed) if seed is not None else int(self.np_random.integers(EVAL_SEED_START))
        self.scene_seed = scene
        obs = self.world.reset(self.task, scene, instruction)
        info = {"success": False, "t": 0, "scene_seed": scene, "target": self.state.target_color}
        return self._observation(obs), info

    def step(self, action: Mapping[str, Any]) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Apply ``action``; returns ``(obs, reward, terminated, truncated, info)``."""
        obs, success, _, info = self.world.step(action)
        terminated = bool(success)
        truncated = not terminated and self.state.t >= self.max_steps
        info["success"] = terminated
        return self._observation(obs), float(info["reward"]), terminated, truncated, info

    def _observation(self, obs: dict[str, Any]) -> Any:
        if self.obs_mode == "state":
            return state_vector(self.state, self.world.model, self.world.layout)
        return {k: obs[k] for k in ("rgb_a", "rgb_b", "q_a", "q_b", "instruction")}

    def render(self) -> np.ndarray | None:
        """Both cameras side by side, ``uint8[H, 2W, 3]``, when ``render_mode="rgb_array"``."""
        if self.render_mode != "rgb_array":
            return None
        rgb_a, rgb_b = self.world.renderer.render(self.state)
        return np.concatenate([rgb_a, rgb_b], axis=1)


def make_env(
    task: str,
    *,
    seed: int | None = None,
    render: bool = True,
    image_size: int | None = None,
    obs_mode: str = "pixels",
    render_mode: str | None = None,
    num_joints: int | None = None,
    task_cfg: TaskConfig | None = None,
) -> TeamVLAEnv:
    """A :class:`TeamVLAEnv` of ``task`` (a registered task name).

    ``seed`` seeds the first ``reset()`` (``make_env(t, seed=s).reset()`` is
    ``reset(seed=s)``); ``render=False`` gives black camera images (fast);
    ``image_size`` and ``num_joints`` override the task configuration's world
    (default: ``task_cfg`` or the task's defaults, 96 pixels, 7 joints).
    """
    return TeamVLAEnv(
        task,
        seed=seed,
        render=render,
        image_size=image_size,
        num_joints=num_joints,
        obs_mode=obs_mode,
        render_mode=render_mode,
        task_cfg=task_cfg,
    )


def env_id(task: str) -> str:
    """The Gymnasium id of a registered task (``teamvla/<Name>-v0``)."""
    get_task(task)
    return ENV_IDS.get(task, f"teamvla/{task[:1].upper()}{task[1:]}-v0")


def register_envs() -> list[str]:
    """Register ``teamvla/<Task>-v0`` for every registered task (idempotent); return the ids."""
    ids = []
    for task in task_names():
        name = env_id(task)
        if name not in gym.registry:
            gym.register(id=name, entry_point=f"{__name__}:make_env", kwargs={"task": task})
        ids.append(name)
    return ids
