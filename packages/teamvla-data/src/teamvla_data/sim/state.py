"""World state, geometry helpers, success predicates and step rewards of the bimanual world.

:class:`WorldState` is everything that changes during an episode; the
predicates (:func:`is_success` and one function per built-in task) and
:func:`step_reward` are pure functions of it. :mod:`teamvla_data.sim.physics`
advances a state by one control step and :mod:`teamvla_data.sim.world` wraps
both into the environment.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from teamvla_data.sim.config import RewardConfig, TaskConfig
from teamvla_data.sim.kinematics import POINT_DOWN, ArmModel
from teamvla_data.sim.layout import COLORS, LAYOUT, Layout
from teamvla_data.sim.registry import get_task

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
    grasped: bool = False  # the target block has been held (by either arm) in this episode

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


def lift_success(state: WorldState, cfg: TaskConfig, layout: Layout = LAYOUT) -> bool:
    """Lift: the target block is held and its bottom is at least ``lift_height`` above the table."""
    b = state.target
    return bool(state.holders[b]) and block_bottom(state, b, layout) >= cfg.success.lift_height


def handoff_success(state: WorldState, cfg: TaskConfig, layout: Layout = LAYOUT) -> bool:
    """Handoff: only arm B holds the target block, B took it from A, its bottom is >= ``handoff_height``."""
    b = state.target
    return (
        state.holders[b] == [ARM_B]
        and bool(state.handed_over[b])
        and block_bottom(state, b, layout) >= cfg.success.handoff_height
    )


def drawer_success(state: WorldState, cfg: TaskConfig, layout: Layout = LAYOUT) -> bool:
    """Drawer: the target block rests inside the tray and the drawer is open >= ``drawer_open``."""
    return in_tray(state, state.target, layout) and state.drawer >= cfg.success.drawer_open


def is_success(state: WorldState, cfg: TaskConfig, layout: Layout = LAYOUT) -> bool:
    """The success predicate of ``state.task`` (from the task registry), judged on the named block.

    * lift: the target block is held and its bottom is at least ``lift_height`` above the table;
    * handoff: only arm B holds the target block, B took it from A (``handed_over``), and
      its bottom is at least ``handoff_height`` high;
    * drawer: the target block rests inside the tray and the drawer is open at least ``drawer_open``.
    """
    return bool(get_task(state.task).success(state, cfg, layout))


# --------------------------------------------------------------------------- rewards


def step_reward(weights: RewardConfig, *, success: bool, first_grasp: bool) -> float:
    """Reward of one step from the task's ``reward:`` weights; the terms add.

    ``weights.step`` every step, plus ``weights.grasp`` on the step where the
    target block is first held (by either arm), plus ``weights.success`` on the
    step where the success predicate fires.
    """
    reward = float(weights.step)
    if first_grasp:
        reward += float(weights.grasp)
    if success:
        reward += float(weights.success)
    return reward
