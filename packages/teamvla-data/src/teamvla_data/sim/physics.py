"""One control step of the bimanual world's "physics".

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

:class:`teamvla_data.sim.batch.BatchPhysics` is the same step for many worlds
at once; the two give bit-identical states (tests/data/sim/test_sim_vector_env.py).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from teamvla_data.sim.config import WorldConfig
from teamvla_data.sim.kinematics import ArmModel
from teamvla_data.sim.layout import COLORS, LAYOUT, Layout
from teamvla_data.sim.state import (
    ARM_A,
    ARM_B,
    CLOSED,
    NO_ARM,
    WorldState,
    gripper_axes,
    in_tray,
    to_world,
)


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
        if state.holders[state.target]:
            state.grasped = True  # for the reward of the first grasp of the named block
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
