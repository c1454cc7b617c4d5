"""Many bimanual worlds stepped at once with numpy: :class:`BatchState` and :class:`BatchPhysics`.

The same control step as :class:`teamvla_data.sim.physics.Physics`, written
over arrays with a leading world axis (``B``), in the same floating-point
operations in the same order, so a batch of worlds and the same worlds stepped
one by one stay bit-identical (tests/data/sim/test_sim_vector_env.py checks
it). Grasps, rare events, run per world through the scalar code's arithmetic.
The success predicates of the built-in tasks are vectorised here too; a task
registered without one is judged world by world with its own predicate.

``holders[i, b]`` lists the arms holding block ``b`` of world ``i`` in grasp
order, ``-1`` padded (slot 0 is the arm the block follows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from teamvla_data.sim.config import TaskConfig, WorldConfig
from teamvla_data.sim.kinematics import ArmModel
from teamvla_data.sim.layout import COLORS, LAYOUT, Layout
from teamvla_data.sim.registry import get_task
from teamvla_data.sim.state import (
    ARM_A,
    ARM_B,
    CLOSED,
    NO_ARM,
    WorldState,
    drawer_success,
    handoff_success,
    lift_success,
)

NB = len(COLORS)


@dataclass
class BatchState:
    """The :class:`WorldState` fields of ``B`` worlds as arrays (see the module docstring)."""

    task: list[str]
    instruction: list[str]
    target: np.ndarray  # (B,) int
    q: np.ndarray  # (B, 2, N)
    grip: np.ndarray  # (B, 2)
    block_pos: np.ndarray  # (B, 2, 2)
    holders: np.ndarray  # (B, 2, 2) int, -1 padded
    hold_offset: np.ndarray  # (B, 2, 2, 2)
    handed_over: np.ndarray  # (B, 2) bool
    has_drawer: np.ndarray  # (B,) bool
    drawer: np.ndarray  # (B,)
    handle_holder: np.ndarray  # (B,) int
    handle_ref: np.ndarray  # (B,)
    t: np.ndarray  # (B,) int
    grasped: np.ndarray  # (B,) bool

    @classmethod
    def empty(cls, num_worlds: int, num_joints: int) -> BatchState:
        """``num_worlds`` blank worlds (fill them with :meth:`set`)."""
        b = num_worlds
        return cls(
            task=[""] * b,
            instruction=[""] * b,
            target=np.zeros(b, np.int64),
            q=np.zeros((b, 2, num_joints)),
            grip=np.zeros((b, 2)),
            block_pos=np.zeros((b, NB, 2)),
            holders=np.full((b, NB, 2), NO_ARM, np.int64),
            hold_offset=np.zeros((b, NB, 2, 2)),
            handed_over=np.zeros((b, NB), bool),
            has_drawer=np.zeros(b, bool),
            drawer=np.zeros(b),
            handle_holder=np.full(b, NO_ARM, np.int64),
            handle_ref=np.zeros(b),
            t=np.zeros(b, np.int64),
            grasped=np.zeros(b, bool),
        )

    def set(self, i: int, state: WorldState) -> None:
        """Copy ``state`` into world ``i``."""
        self.task[i], self.instruction[i] = state.task, state.instruction
        self.target[i] = state.target
        self.q[i], self.grip[i], self.block_pos[i] = state.q, state.grip, state.block_pos
        self.holders[i] = NO_ARM
        for b, arms in enumerate(state.holders):
            self.holders[i, b, : len(arms)] = arms
        self.hold_offset[i], self.handed_over[i] = state.hold_offset, state.handed_over
        self.has_drawer[i], self.drawer[i] = state.has_drawer, state.drawer
        self.handle_holder[i], self.handle_ref[i] = state.handle_holder, state.handle_ref
        self.t[i], self.grasped[i] = state.t, state.grasped

    def get(self, i: int) -> WorldState:
        """World ``i`` as a :class:`WorldState` (a copy)."""
        return WorldState(
            task=self.task[i],
            instruction=self.instruction[i],
            target=int(self.target[i]),
            q=self.q[i].copy(),
            grip=self.grip[i].copy(),
            block_pos=self.block_pos[i].copy(),
            holders=[[int(a) for a in self.holders[i, b] if a >= 0] for b in range(NB)],
            hold_offset=self.hold_offset[i].copy(),
            handed_over=self.handed_over[i].copy(),
            has_drawer=bool(self.has_drawer[i]),
            drawer=float(self.drawer[i]),
            handle_holder=int(self.handle_holder[i]),
            handle_ref=float(self.handle_ref[i]),
            t=int(self.t[i]),
            grasped=bool(self.grasped[i]),
        )


LIFT, HANDOFF, DRAWER, OTHER = 0, 1, 2, 3
_KINDS = {lift_success: LIFT, handoff_success: HANDOFF, drawer_success: DRAWER}


@dataclass
class SuccessTable:
    """Per world: which predicate judges it and its thresholds (from its resolved TaskConfig)."""

    cfgs: list[TaskConfig]
    kind: np.ndarray
    lift_height: np.ndarray
    handoff_height: np.ndarray
    drawer_open: np.ndarray

    @classmethod
    def of(cls, cfgs: Sequence[TaskConfig]) -> SuccessTable:
        """The table of worlds configured by ``cfgs``."""
        return cls(
            cfgs=list(cfgs),
            kind=np.array([_KINDS.get(get_task(c.name).success, OTHER) for c in cfgs], np.int64),
            lift_height=np.array([c.success.lift_height for c in cfgs]),
            handoff_height=np.array([c.success.handoff_height for c in cfgs]),
            drawer_open=np.array([c.success.drawer_open for c in cfgs]),
        )


def _compact(h: np.ndarray, keep0: np.ndarray, keep1: np.ndarray) -> np.ndarray:
    """Holder lists ``(..., 2)`` with the slots not kept removed (order kept)."""
    out = np.empty_like(h)
    out[..., 0] = np.where(keep0, h[..., 0], np.where(keep1, h[..., 1], NO_ARM))
    out[..., 1] = np.where(keep0 & keep1, h[..., 1], NO_ARM)
    return out


class BatchPhysics:
    """One control step of many worlds sharing ``model``, ``cfg`` and ``layout``."""

    def __init__(self, model: ArmModel, cfg: WorldConfig, layout: Layout = LAYOUT) -> None:
        self.model, self.cfg, self.layout = model, cfg, layout
        self._sign = np.array([1.0, -1.0])  # arm_sign of A, B
        self._base = np.array([-layout.base_x, layout.base_x])  # base_x of A, B

    def grip_frames(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World grip points and gripper axes u, v of every arm: ``(B, 2, 2)`` each."""
        m, lay = self.model, self.layout
        theta = np.cumsum(q, axis=-1)
        c, s = np.cos(theta), np.sin(theta)
        x = np.cumsum(m.link_lengths * c, axis=-1)[..., -1] + m.grip_offset * c[..., -1]
        z = np.cumsum(m.link_lengths * s, axis=-1)[..., -1] + m.grip_offset * s[..., -1]
        points = np.stack([self._base + self._sign * x, z + lay.base_z], axis=-1)
        total = np.sum(q, axis=-1)
        u = np.stack([self._sign * np.cos(total), np.sin(total)], axis=-1)
        v = np.stack([-u[..., 1], u[..., 0]], axis=-1)
        return points, u, v

    def step(self, s: BatchState, targets: np.ndarray, grip_cmd: np.ndarray) -> None:
        """Apply joint ``targets`` ``(B, 2, N)`` and gripper commands ``(B, 2)`` in place."""
        cfg, lay, m = self.cfg, self.layout, self.model
        rows = np.arange(len(s.t))
        goal = np.clip(targets, m.lower, m.upper)
        delta = goal - s.q
        s.q = np.where(
            np.abs(delta) <= cfg.max_joint_step, goal, s.q + np.sign(delta) * cfg.max_joint_step
        )
        before = s.grip.copy()
        s.grip = s.grip + np.clip(
            np.clip(grip_cmd, 0.0, 1.0) - s.grip, -cfg.grip_speed, cfg.grip_speed
        )
        points, u, v = self.grip_frames(s.q)

        # 2. releases.
        opened = s.grip < CLOSED
        h = s.holders
        slot_open = (h >= 0) & opened[rows[:, None, None], np.maximum(h, 0)]
        s.holders = h = _compact(
            h, (h[..., 0] >= 0) & ~slot_open[..., 0], (h[..., 1] >= 0) & ~slot_open[..., 1]
        )
        hh = s.handle_holder
        s.handle_holder = np.where((hh >= 0) & opened[rows, np.maximum(hh, 0)], NO_ARM, hh)

        # 3. held blocks follow their first holder; the other holder slips if dragged away.
        for b in range(NB):

            def implied(arms: np.ndarray, b: int = b) -> np.ndarray:
                a = np.maximum(arms, 0)
                off = s.hold_offset[rows, b, a]
                return points[rows, a] + off[:, 0:1] * u[rows, a] + off[:, 1:2] * v[rows, a]

            held = h[:, b, 0] >= 0
            pos = np.where(held[:, None], implied(h[:, b, 0]), s.block_pos[:, b])
            pos[:, 1] = np.where(held, np.maximum(pos[:, 1], lay.block_half), pos[:, 1])
            s.block_pos[:, b] = pos
            keep = []
            for slot in (0, 1):
                d = implied(h[:, b, slot]) - pos
                keep.append(
                    (h[:, b, slot] >= 0) & ~(np.hypot(d[:, 0], d[:, 1]) > cfg.slip_distance)
                )
            h[:, b] = _compact(h[:, b], keep[0], keep[1])

        # 4. the drawer follows the arm holding its handle.
        old = s.drawer.copy()
        hh = s.handle_holder
        pulling = s.has_drawer & (hh >= 0)
        gx, gz = points[rows, np.maximum(hh, 0), 0], points[rows, np.maximum(hh, 0), 1]
        s.drawer = np.where(pulling, np.clip(s.handle_ref + gx, 0.0, lay.drawer_travel), s.drawer)
        hx = (lay.cabinet_x1 + s.drawer) + 0.5 * lay.handle_width
        lost = pulling & (np.hypot(gx - hx, gz - lay.handle_grip_z) > cfg.slip_distance)
        s.handle_holder = np.where(lost, NO_ARM, hh)
        moved = s.has_drawer & (s.drawer != old)
        if moved.any():
            for b in range(NB):
                ride = moved & self.in_tray(s, b, old)
                s.block_pos[:, b, 0] = np.where(
                    ride, s.block_pos[:, b, 0] + (s.drawer - old), s.block_pos[:, b, 0]
                )

        # 5. grasps (rare: world by world, with the scalar code's arithmetic).
        for arm in (ARM_A, ARM_B):
            closing = (s.grip[:, arm] >= CLOSED) & (s.grip[:, arm] > before[:, arm])
            holding = (s.handle_holder == arm) | np.any(s.holders == arm, axis=(1, 2))
            for i in np.flatnonzero(closing & ~holding):
                self._try_grasp(s, int(i), arm, points[i, arm], u[i, arm], v[i, arm])

        # 6. free blocks fall onto their support.
        for b in range(NB):
            z = s.block_pos[:, b, 1]
            bottom = z - lay.block_half
            support = self.support_height(s, b)
            fall = (s.holders[:, b, 0] < 0) & (bottom > support)
            s.block_pos[:, b, 1] = np.where(
                fall, np.maximum(support, bottom - cfg.fall_speed) + lay.block_half, z
            )
        s.grasped |= s.holders[rows, s.target, 0] >= 0
        s.t += 1

    def _try_grasp(
        self, s: BatchState, i: int, arm: int, grip: np.ndarray, u: np.ndarray, v: np.ndarray
    ) -> None:
        # The arithmetic of Physics._try_grasp, on world i.
        best, best_d = None, self.cfg.grasp_tolerance
        for b in range(NB):
            d = float(np.hypot(*(s.block_pos[i, b] - grip)))
            if d <= best_d:
                best, best_d = b, d
        if s.has_drawer[i] and s.handle_holder[i] == NO_ARM:
            hx, hz = self.layout.handle_point(float(s.drawer[i]))
            d = float(np.hypot(grip[0] - hx, grip[1] - hz))
            if d <= best_d:
                s.handle_holder[i] = arm
                s.handle_ref[i] = float(s.drawer[i]) - float(grip[0])
                return
        if best is None:
            return
        rel = s.block_pos[i, best] - grip
        s.hold_offset[i, best, arm] = (rel @ u, rel @ v)
        if arm == ARM_B and ARM_A in s.holders[i, best]:
            s.handed_over[i, best] = True
        slot = 0 if s.holders[i, best, 0] < 0 else 1
        s.holders[i, best, slot] = arm

    def support_height(self, s: BatchState, b: int) -> np.ndarray:
        """Per world, the height of the highest surface under block ``b`` its bottom is not below."""
        lay = self.layout
        x = s.block_pos[:, b, 0]
        bottom = s.block_pos[:, b, 1] - lay.block_half
        lo = lay.cabinet_x1 + lay.tray_margin
        hi = ((lay.cabinet_x1 + s.drawer) - lay.tray_wall) - lay.tray_margin
        tray = s.has_drawer & (lo <= x) & (x <= hi) & (bottom >= lay.tray_floor - 1e-9)
        top = (
            s.has_drawer
            & (lay.cabinet_x0 <= x)
            & (x <= lay.cabinet_x1)
            & (bottom >= lay.cabinet_height - 1e-9)
        )
        return np.where(tray, lay.tray_floor, np.where(top, lay.cabinet_height, 0.0))

    def in_tray(self, s: BatchState, b: int, opening: np.ndarray | None = None) -> np.ndarray:
        """Per world: block ``b`` is free and rests on the floor of the pulled-out tray."""
        lay = self.layout
        opening = s.drawer if opening is None else opening
        x = s.block_pos[:, b, 0]
        bottom = s.block_pos[:, b, 1] - lay.block_half
        lo = lay.cabinet_x1 + lay.tray_margin
        hi = ((lay.cabinet_x1 + opening) - lay.tray_wall) - lay.tray_margin
        return (
            s.has_drawer
            & (s.holders[:, b, 0] < 0)
            & (lo <= x)
            & (x <= hi)
            & (np.abs(bottom - lay.tray_floor) < 1e-9)
        )

    def success(self, s: BatchState, table: SuccessTable) -> np.ndarray:
        """The success predicate of every world (``table`` holds each world's task and thresholds)."""
        rows = np.arange(len(s.t))
        tgt = s.target
        first, second = s.holders[rows, tgt, 0], s.holders[rows, tgt, 1]
        bottom = s.block_pos[rows, tgt, 1] - self.layout.block_half
        in_tray = np.zeros(len(rows), bool)
        for b in range(NB):
            in_tray |= (tgt == b) & self.in_tray(s, b)
        handed = s.handed_over[rows, tgt]
        out = np.where(
            table.kind == LIFT,
            (first >= 0) & (bottom >= table.lift_height),
            np.where(
                table.kind == HANDOFF,
                (first == ARM_B) & (second < 0) & handed & (bottom >= table.handoff_height),
                in_tray & (s.drawer >= table.drawer_open),
            ),
        )
        for i in np.flatnonzero(table.kind == OTHER):  # tasks without a batched predicate
            cfg = table.cfgs[int(i)]
            out[i] = bool(get_task(cfg.name).success(s.get(int(i)), cfg, self.layout))
        return np.asarray(out, bool)

    def state_vectors(self, s: BatchState) -> np.ndarray:
        """The ``obs_mode="state"`` vectors ``(B, 2N + 17)`` float32 (layout: gym_env.state_slices)."""
        b, n = len(s.t), self.model.num_joints
        points, _, _ = self.grip_frames(s.q)
        held = s.holders[:, :, :, None] == np.array([ARM_A, ARM_B])  # (B, block, slot, arm)
        out = np.concatenate(
            [
                s.q[:, ARM_A],
                s.q[:, ARM_B],
                s.grip,
                points.reshape(b, 4),
                s.block_pos.reshape(b, 2 * NB),
                held.any(axis=2).reshape(b, 2 * NB).astype(np.float64),
                s.drawer[:, None],
                (s.target[:, None] == np.arange(NB)).astype(np.float64),
            ],
            axis=1,
        )
        assert out.shape == (b, 2 * n + 17)
        return out.astype(np.float32)
