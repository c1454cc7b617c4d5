"""The bimanual world: state, one control step of "physics", success predicates and the environment.

Physics is deliberately simple and forgiving (see docs/sim.md):

* each arm's joints move towards the commanded targets, clipped to the joint
  limits, by at most ``max_joint_step`` per step, so any action yields a valid state;
* a gripper's closure moves towards its command by ``grip_speed`` per step; a
  gripper that is closing (closure rising and at least 0.5) grasps the nearest
  block, or the drawer handle, whose centre lies within ``grasp_tolerance`` of
  its grip point; the object then moves rigidly with the gripper;
* opening a gripper (closure below 0.5) releases what it holds; a block held by
  both arms follows the arm that grasped it first; a grasp is lost when the
  gripper drifts ``slip_distance`` away from the object;
* a free block falls at ``fall_speed`` onto the highest surface under its centre
  (table, cabinet top or the floor of the pulled-out tray) and rides along with
  the tray when the drawer moves.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from teamvla_data.sim.config import TASKS, TaskConfig, WorldConfig, default_task_config
from teamvla_data.sim.kinematics import POINT_DOWN, ArmModel
from teamvla_data.sim.language import parse_target, sample_instruction
from teamvla_data.sim.layout import COLORS, LAYOUT, MIN_BLOCK_SEPARATION, SPAWN_X, Layout

ARM_A, ARM_B = 0, 1
ARM_NAMES = ("a", "b")
NO_ARM = -1
HOME_GRIP = (0.30, 0.40)  # local grip point of the home posture, gripper pointing down
CLOSED = 0.5  # closure at and above which a gripper holds


@dataclass
class WorldState:
    """Everything that changes during an episode. Arrays are float64, world coordinates."""

    task: str
    instruction: str
    target: int  # index into COLORS of the block the instruction names
    q: np.ndarray  # (2, N) joint positions of arms A and B
    grip: np.ndarray  # (2,) gripper closure, 0 = open, 1 = closed
    block_pos: np.ndarray  # (2, 2) block centres (x, z), in COLORS order
    holders: list[list[int]]  # per block: arms holding it, in grasp order
    hold_offset: np.ndarray  # (2, 2, 2) block centre in the gripper frame of each holding arm
    handed_over: np.ndarray  # (2,) bool: arm B grasped the block while arm A held it
    has_drawer: bool = False
    drawer: float = 0.0  # opening of the drawer (m)
    handle_holder: int = NO_ARM
    handle_ref: float = 0.0  # drawer opening minus the holder's grip x at grasp time
    t: int = 0

    def copy(self) -> WorldState:
        """A deep copy."""
        return dataclasses.replace(
            self,
            q=self.q.copy(),
            grip=self.grip.copy(),
            block_pos=self.block_pos.copy(),
            holders=[list(h) for h in self.holders],
            hold_offset=self.hold_offset.copy(),
            handed_over=self.handed_over.copy(),
        )

    @property
    def target_color(self) -> str:
        """Colour name of the target block."""
        return COLORS[self.target]


# --------------------------------------------------------------------------- geometry helpers


def arm_sign(arm: int) -> float:
    """+1 for arm A (local x points right), -1 for arm B (mirrored)."""
    return 1.0 if arm == ARM_A else -1.0


def base_x(arm: int, layout: Layout = LAYOUT) -> float:
    """World x of an arm's shoulder."""
    return -layout.base_x if arm == ARM_A else layout.base_x


def to_world(arm: int, local: np.ndarray, layout: Layout = LAYOUT) -> np.ndarray:
    """Local points ``(..., 2)`` of ``arm`` to world coordinates."""
    out = np.array(local, dtype=np.float64)
    out[..., 0] = base_x(arm, layout) + arm_sign(arm) * out[..., 0]
    out[..., 1] += layout.base_z
    return out


def to_local(arm: int, world: np.ndarray, layout: Layout = LAYOUT) -> np.ndarray:
    """World points ``(..., 2)`` to the local frame of ``arm``."""
    out = np.array(world, dtype=np.float64)
    out[..., 0] = arm_sign(arm) * (out[..., 0] - base_x(arm, layout))
    out[..., 1] -= layout.base_z
    return out


def gripper_axes(arm: int, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World unit vectors along the gripper (u) and across it (v)."""
    theta = float(np.sum(q))
    u = np.array([arm_sign(arm) * math.cos(theta), math.sin(theta)])
    return u, np.array([-u[1], u[0]])


@lru_cache(maxsize=32)
def home_posture(model: ArmModel) -> np.ndarray:
    """Joint posture with the grip point at :data:`HOME_GRIP`, gripper down (same for both arms)."""
    q = model.solve(np.array(HOME_GRIP), POINT_DOWN)
    q.setflags(write=False)
    return q


def world_points(model: ArmModel, state: WorldState, layout: Layout = LAYOUT) -> np.ndarray:
    """World positions ``(2, N + 2, 2)``: shoulder, joints, wrist and grip point of both arms."""
    return np.stack([to_world(a, model.joint_points(state.q[a]), layout) for a in (ARM_A, ARM_B)])


# --------------------------------------------------------------------------- success predicates


def block_bottom(state: WorldState, block: int, layout: Layout = LAYOUT) -> float:
    """Height of a block's bottom face above the table."""
    return float(state.block_pos[block, 1]) - layout.block_half


def in_tray(state: WorldState, block: int, layout: Layout = LAYOUT) -> bool:
    """The block is free and resting on the floor of the pulled-out part of the tray."""
    if not state.has_drawer or state.holders[block]:
        return False
    lo, hi = layout.tray_interior(state.drawer)
    x = float(state.block_pos[block, 0])
    return lo <= x <= hi and abs(block_bottom(state, block, layout) - layout.tray_floor) < 1e-9


def is_success(state: WorldState, cfg: TaskConfig, layout: Layout = LAYOUT) -> bool:
    """The success predicate of ``state.task``, judged on the named (target) block.

    * lift: the target block is held and its bottom is at least ``lift_height`` above the table;
    * handoff: only arm B holds the target block, B took it from A (``handed_over``), and
      its bottom is at least ``handoff_height`` high;
    * drawer: the target block rests inside the tray and the drawer is open at least ``drawer_open``.
    """
    b = state.target
    thr = cfg.success
    if state.task == "lift":
        return bool(state.holders[b]) and block_bottom(state, b, layout) >= thr.lift_height
    if state.task == "handoff":
        return (
            state.holders[b] == [ARM_B]
            and bool(state.handed_over[b])
            and block_bottom(state, b, layout) >= thr.handoff_height
        )
    if state.task == "drawer":
        return in_tray(state, b, layout) and state.drawer >= thr.drawer_open
    raise ValueError(f"unknown task {state.task!r}")


# --------------------------------------------------------------------------- physics


class Physics:
    """Advances a :class:`WorldState` by one control step (see the module docstring)."""

    def __init__(self, model: ArmModel, cfg: WorldConfig, layout: Layout = LAYOUT) -> None:
        self.model = model
        self.cfg = cfg
        self.layout = layout

    def grip_point(self, state: WorldState, arm: int) -> np.ndarray:
        """World grip point of ``arm``."""
        return to_world(arm, self.model.joint_points(state.q[arm])[-1], self.layout)

    def step(self, state: WorldState, targets: np.ndarray, grip_cmd: np.ndarray) -> None:
        """Apply joint ``targets`` ``(2, N)`` and gripper commands ``(2,)`` in place."""
        cfg, lay = self.cfg, self.layout
        # 1. joints: clip the target to the limits, then move at bounded speed.
        goal = np.clip(targets, self.model.lower, self.model.upper)
        delta = goal - state.q
        # A reachable target is taken exactly (no rounding), so q(t+1) equals the action.
        state.q = np.where(
            np.abs(delta) <= cfg.max_joint_step, goal, state.q + np.sign(delta) * cfg.max_joint_step
        )
        before = state.grip.copy()
        cmd = np.clip(grip_cmd, 0.0, 1.0)
        state.grip = state.grip + np.clip(cmd - state.grip, -cfg.grip_speed, cfg.grip_speed)
        grips = [self.grip_point(state, a) for a in (ARM_A, ARM_B)]
        axes = [gripper_axes(a, state.q[a]) for a in (ARM_A, ARM_B)]

        # 2. releases: an opening gripper lets go.
        for arm in (ARM_A, ARM_B):
            if state.grip[arm] < CLOSED:
                for holders in state.holders:
                    if arm in holders:
                        holders.remove(arm)
                if state.handle_holder == arm:
                    state.handle_holder = NO_ARM

        # 3. held blocks follow their first holder; other holders slip if dragged away.
        for b, holders in enumerate(state.holders):
            if not holders:
                continue
            state.block_pos[b] = self._implied(b, holders[0], state, grips, axes)
            state.block_pos[b, 1] = max(
                state.block_pos[b, 1], lay.block_half
            )  # never into the table
            for arm in list(holders):
                if (
                    np.hypot(*(self._implied(b, arm, state, grips, axes) - state.block_pos[b]))
                    > cfg.slip_distance
                ):
                    holders.remove(arm)

        # 4. the drawer follows the arm holding its handle.
        if state.has_drawer:
            old = state.drawer
            if state.handle_holder != NO_ARM:
                arm = state.handle_holder
                state.drawer = float(
                    np.clip(state.handle_ref + grips[arm][0], 0.0, lay.drawer_travel)
                )
                hx, hz = lay.handle_point(state.drawer)
                if np.hypot(grips[arm][0] - hx, grips[arm][1] - hz) > cfg.slip_distance:
                    state.handle_holder = NO_ARM
            if state.drawer != old:
                self._carry_tray_contents(state, old)

        # 5. grasps: a closing gripper takes the nearest object within tolerance.
        for arm in (ARM_A, ARM_B):
            closing = state.grip[arm] >= CLOSED and state.grip[arm] > before[arm]
            if closing and not self._holds_anything(state, arm):
                self._try_grasp(state, arm, grips[arm], axes[arm])

        # 6. free blocks fall onto their support.
        for b, holders in enumerate(state.holders):
            if not holders:
                bottom = state.block_pos[b, 1] - lay.block_half
                support = self.support_height(state, b)
                if bottom > support:
                    state.block_pos[b, 1] = max(support, bottom - cfg.fall_speed) + lay.block_half
        state.t += 1

    # -- helpers
    def _implied(
        self,
        b: int,
        arm: int,
        state: WorldState,
        grips: list[np.ndarray],
        axes: list[tuple[np.ndarray, np.ndarray]],
    ) -> np.ndarray:
        u, v = axes[arm]
        off = state.hold_offset[b, arm]
        return grips[arm] + off[0] * u + off[1] * v

    @staticmethod
    def _holds_anything(state: WorldState, arm: int) -> bool:
        return state.handle_holder == arm or any(arm in h for h in state.holders)

    def _try_grasp(
        self, state: WorldState, arm: int, grip: np.ndarray, axes: tuple[np.ndarray, np.ndarray]
    ) -> None:
        tol = self.cfg.grasp_tolerance
        best, best_d = None, tol
        for b in range(len(COLORS)):
            d = float(np.hypot(*(state.block_pos[b] - grip)))
            if d <= best_d:
                best, best_d = b, d
        if state.has_drawer and state.handle_holder == NO_ARM:
            hx, hz = self.layout.handle_point(state.drawer)
            d = float(np.hypot(grip[0] - hx, grip[1] - hz))
            if d <= best_d:
                state.handle_holder = arm
                state.handle_ref = state.drawer - float(grip[0])
                return
        if best is None:
            return
        u, v = axes
        rel = state.block_pos[best] - grip
        state.hold_offset[best, arm] = (rel @ u, rel @ v)
        if arm == ARM_B and ARM_A in state.holders[best]:
            state.handed_over[best] = True
        state.holders[best].append(arm)

    def support_height(self, state: WorldState, b: int) -> float:
        """Height of the highest surface under block ``b``'s centre that its bottom is not below."""
        lay = self.layout
        x = float(state.block_pos[b, 0])
        bottom = float(state.block_pos[b, 1]) - lay.block_half
        support = 0.0  # the table
        if state.has_drawer:
            lo, hi = lay.tray_interior(state.drawer)
            if lo <= x <= hi and bottom >= lay.tray_floor - 1e-9:
                support = lay.tray_floor
            elif lay.cabinet_x0 <= x <= lay.cabinet_x1 and bottom >= lay.cabinet_height - 1e-9:
                support = lay.cabinet_height
        return support

    def _carry_tray_contents(self, state: WorldState, old_opening: float) -> None:
        # Blocks resting in the tray (judged at the old opening) slide with it.
        moved = state.drawer - old_opening
        probe = dataclasses.replace(state, drawer=old_opening)
        for b in range(len(COLORS)):
            if in_tray(probe, b, self.layout):
                state.block_pos[b, 0] += moved


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
        self.task_cfgs = {t: default_task_config(t, self.world_cfg) for t in TASKS}
        for name, cfg in (task_cfgs or {}).items():
            if name not in TASKS or cfg.name != name:
                raise ValueError(
                    f"task_cfgs[{name!r}] must configure one of {', '.join(TASKS)} under its own name"
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
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; tasks are {', '.join(TASKS)}")
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, received {seed!r}")
        cfg = self.task_cfgs[task]
        # Separate streams: the scene never depends on whether an instruction was given.
        scene_seq, lang_seq = np.random.SeedSequence([int(seed), TASKS.index(task)]).spawn(2)
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
        lo, hi = SPAWN_X[task]
        xs = [float(rng.uniform(lo, hi))]
        while True:  # rejection sampling: the second block keeps its distance
            x = float(rng.uniform(lo, hi))
            if abs(x - xs[0]) >= MIN_BLOCK_SEPARATION:
                xs.append(x)
                break
        has_drawer = task == "drawer"
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
        """
        state = self.state
        targets, grips = self._parse_action(action)
        self.physics.step(state, targets, grips)
        success = is_success(state, self.task_cfg, self.layout)
        done = success or state.t >= int(self.task_cfg.max_steps or 0)
        self._done = done
        obs = self.observation(success=success)
        info = {
            "t": state.t,
            "target": state.target_color,
            "drawer": state.drawer,
            "holders": [list(h) for h in state.holders],
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
