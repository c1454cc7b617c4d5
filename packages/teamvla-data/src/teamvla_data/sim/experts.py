"""Scripted experts: closed-loop feedback controllers, one per task.

An expert looks only at the current :class:`~teamvla_data.sim.world.WorldState`
(the same state always gives the same action); its phase is decided from the
state too (what is held, where the grip point is). Variation between
demonstrations comes from parameters drawn once per episode: grip-point speed,
pre-grasp height and sideways offset, lift height, hand-over point, drawer
opening... Each arm is driven towards a Cartesian goal by one damped
least-squares IK step per control step (:meth:`ArmModel.ik_step`), so joint
targets are the current posture plus a small, smooth increment.

Phase labels: lift uses arm A's phase (``approach``, ``descend``, ``grasp``,
``lift``, ``open``); handoff and drawer join both arms' phases as ``"A|B"``
(e.g. ``"carry|stage"``, ``"lower|pull"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from teamvla_data.sim.config import TaskConfig, default_task_config
from teamvla_data.sim.kinematics import POINT_DOWN, POINT_FORWARD, ArmModel
from teamvla_data.sim.layout import LAYOUT, Layout
from teamvla_data.sim.registry import get_task
from teamvla_data.sim.world import (
    ARM_A,
    ARM_B,
    CLOSED,
    HOME_GRIP,
    WorldState,
    block_bottom,
    to_local,
    to_world,
)

READY_TOL = 0.012  # grip point this close to the object: close the gripper
CORRIDOR_TOL = 0.02  # grip point this close to the pre-grasp -> object segment: go straight in
MAX_JOINT_STEP = 0.12  # rad per step; below the world's limit, so targets are always reached
# Goals further than this (m) are approached faster; an expert's own episodes stay below
# 0.46 m (measured over 300 seeds per task), so recorded demonstrations are unaffected.
FAR = 0.5


@lru_cache(maxsize=32)
def _model(num_joints: int) -> ArmModel:
    return ArmModel(num_joints=num_joints)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip((p - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0))
    return float(np.hypot(*(p - (a + t * ab))))


# One arm's plan for a step: (world goal of the grip point or None = hold still,
# local gripper angle, gripper command 0/1, phase label).
Plan = tuple[np.ndarray | None, float, float, str]


@dataclass(frozen=True)
class ExpertParams:
    """Per-episode parameters of an expert (stored in the episode's ``user`` metadata)."""

    speed: float  # grip-point speed (m per step)
    approach_height: float  # pre-grasp height above the block (m)
    approach_dx: float  # sideways shift of the pre-grasp point (m)
    lift_z: float  # block-centre height to lift to (m)
    handoff_dx: float  # shift of the hand-over point (m)
    handoff_dz: float
    side_distance: float  # how far from the object a side approach starts (m)
    stage_dz: float  # height offset of arm B's waiting point (m)
    drawer_goal: float  # how far arm B pulls the drawer open (m)
    place_dx: float  # shift of the drop point inside the tray (m)


def sample_params(cfg: TaskConfig, rng: np.random.Generator) -> ExpertParams:
    """Draw an expert's per-episode parameters (always the same number of draws, in a fixed order)."""
    e = cfg.expert
    u = rng.uniform
    return ExpertParams(
        speed=float(u(e.speed_min, e.speed_max)),
        approach_height=float(u(e.approach_height_min, e.approach_height_max)),
        approach_dx=float(u(-e.approach_offset, e.approach_offset)),
        lift_z=float(u(0.23, 0.28)),
        handoff_dx=float(u(-0.03, 0.03)),
        handoff_dz=float(u(-0.03, 0.03)),
        side_distance=float(u(0.09, 0.14)),
        stage_dz=float(u(-0.05, 0.08)),
        drawer_goal=float(u(0.17, 0.20)),
        place_dx=float(u(-0.015, 0.015)),
    )


class Expert:
    """Base class: turns per-arm Cartesian goals into a schema action.

    Subclasses implement :meth:`plan`, returning for each arm ``(goal, angle,
    grip, phase)`` with ``goal`` a world grip point or ``None`` (hold still),
    ``angle`` the local gripper angle and ``grip`` 0 (open) or 1 (close).
    """

    task = ""
    # The ExpertParams fields this expert uses (the others are drawn but ignored).
    uses: tuple[str, ...] = ("speed", "approach_height", "approach_dx")

    def __init__(self, cfg: TaskConfig, rng: np.random.Generator, layout: Layout = LAYOUT) -> None:
        self.cfg = cfg.resolved()
        self.layout = layout
        self.rng = rng
        self.params = sample_params(self.cfg, rng)
        self.phase = ""

    # -- public
    def act(self, env_or_state: Any) -> dict[str, Any]:
        """The action for the current state (``action_a``, ``action_b``, ``grip_a``, ``grip_b``).

        Also sets :attr:`phase`, the label of the current phase.
        """
        state: WorldState = getattr(env_or_state, "state", env_or_state)
        model = _model(state.q.shape[1])
        plans = self.plan(state, model)
        action: dict[str, Any] = {}
        for arm, name in ((ARM_A, "a"), (ARM_B, "b")):
            goal, angle, grip, _ = plans[arm]
            q = state.q[arm]
            if goal is None:
                target = q.copy()
            else:
                local = to_local(arm, np.asarray(goal, dtype=np.float64), self.layout)
                target = model.ik_step(
                    q,
                    local,
                    angle,
                    max_cartesian=self.speed_towards(model, q, local),
                    max_joint=MAX_JOINT_STEP,
                    unwind=True,
                )
                if self.cfg.expert.noise > 0:
                    target = target + self.rng.normal(0.0, self.cfg.expert.noise, size=target.shape)
                target = np.clip(target, model.lower, model.upper)
            action[f"action_{name}"] = target.astype(np.float32)
            action[f"grip_{name}"] = np.float32(grip)
        self.phase = self.label(plans[ARM_A][3], plans[ARM_B][3])
        return action

    def speed_towards(self, model: ArmModel, q: np.ndarray, local_goal: np.ndarray) -> float:
        """Grip-point speed for this step: the episode's speed, faster when the goal is far.

        Beyond :data:`FAR` metres (further than any goal of an expert's own
        episode) the speed grows with the square of the distance, so an arm thrown far off
        the expert's path (by a weak policy, say) comes back within the step
        limit; the joint-step cap still bounds every step.
        """
        dist = float(np.hypot(*(local_goal - model.joint_points(q)[-1])))
        return self.params.speed * max(1.0, dist / FAR) ** 2

    def label(self, phase_a: str, phase_b: str) -> str:
        """Phase label of the step from the two arms' phases."""
        return f"{phase_a}|{phase_b}"

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (task and parameters) for episode metadata."""
        params = asdict(self.params)
        return {"task": self.task, **{k: round(params[k], 6) for k in self.uses}}

    def plan(self, state: WorldState, model: ArmModel) -> list[Plan]:
        """Per-arm ``(goal, angle, grip, phase)``."""
        raise NotImplementedError

    # -- helpers shared by the experts
    def grip_point(self, state: WorldState, model: ArmModel, arm: int) -> np.ndarray:
        """World grip point of ``arm``."""
        return to_world(arm, model.joint_points(state.q[arm])[-1], self.layout)

    @staticmethod
    def holds_anything(state: WorldState, arm: int) -> bool:
        """Whether ``arm`` holds a block or the handle."""
        return state.handle_holder == arm or any(arm in h for h in state.holders)

    def home(self, arm: int) -> np.ndarray:
        """World grip point of the home posture of ``arm``."""
        return to_world(arm, np.array(HOME_GRIP), self.layout)

    def reach(
        self,
        state: WorldState,
        model: ArmModel,
        arm: int,
        obj: np.ndarray,
        pre: np.ndarray,
        angle: float,
    ) -> Plan:
        """Approach ``obj`` via the pre-grasp point ``obj + pre``, go straight in, then close.

        A gripper that is closed without holding anything (a missed grasp) opens first.
        """
        grip = self.grip_point(state, model, arm)
        if state.grip[arm] >= CLOSED and not self.holds_anything(state, arm):
            return None, angle, 0.0, "open"
        if float(np.hypot(*(grip - obj))) < READY_TOL:
            return obj, angle, 1.0, "grasp"
        start = obj + pre
        if _segment_distance(grip, start, obj) < CORRIDOR_TOL:
            return obj, angle, 0.0, "descend" if angle == POINT_DOWN else "insert"
        return start, angle, 0.0, "approach"

    def pick_from_above(self, state: WorldState, model: ArmModel, arm: int, block: int) -> Plan:
        """Pick ``block`` from above with the gripper pointing down."""
        pre = np.array([self.params.approach_dx, self.params.approach_height])
        return self.reach(state, model, arm, state.block_pos[block].copy(), pre, POINT_DOWN)

    def side_offset(self, arm: int) -> np.ndarray:
        """Pre-grasp offset of a horizontal approach: from the arm's own side, slightly above."""
        side = 1.0 if arm == ARM_B else -1.0
        return np.array([side * self.params.side_distance, 0.0])


class LiftExpert(Expert):
    """Arm A picks the named block and raises it; arm B stays still."""

    task = "lift"
    uses = (*Expert.uses, "lift_z")

    def plan(self, state: WorldState, model: ArmModel) -> list[Plan]:
        plan_a: Plan
        b = state.target
        if ARM_A in state.holders[b]:
            grip = self.grip_point(state, model, ARM_A)
            plan_a = (np.array([grip[0], self.params.lift_z]), POINT_DOWN, 1.0, "lift")
        else:
            plan_a = self.pick_from_above(state, model, ARM_A, b)
        return [plan_a, (None, POINT_DOWN, 0.0, "idle")]

    def label(self, phase_a: str, phase_b: str) -> str:
        """Lift only moves arm A: its phase is the label."""
        return phase_a


class HandoffExpert(Expert):
    """Arm A picks the block and presents it mid-table; arm B takes it from the side; A lets go."""

    task = "handoff"
    uses = (*Expert.uses, "handoff_dx", "handoff_dz", "side_distance", "stage_dz")

    def handoff_point(self) -> np.ndarray:
        """Where A presents the block (world)."""
        lay = self.layout
        return np.array(
            [lay.handoff_x + self.params.handoff_dx, lay.handoff_z + self.params.handoff_dz]
        )

    def plan(self, state: WorldState, model: ArmModel) -> list[Plan]:
        plan_a: Plan
        plan_b: Plan
        b = state.target
        holders = state.holders[b]
        block = state.block_pos[b].copy()
        meet = self.handoff_point()
        # Arm A.
        if ARM_A in holders:
            plan_a = (
                (None, POINT_DOWN, 0.0, "release")
                if ARM_B in holders
                else (meet, POINT_DOWN, 1.0, "carry")
            )
        elif ARM_B in holders:
            plan_a = (self.home(ARM_A), POINT_DOWN, 0.0, "retreat")
        else:
            plan_a = self.pick_from_above(state, model, ARM_A, b)
        # Arm B.
        if ARM_B in holders:
            plan_b = (
                (None, POINT_FORWARD, 1.0, "wait")
                if ARM_A in holders
                else (block + np.array([0.1, 0.05]), POINT_FORWARD, 1.0, "take")
            )
        elif ARM_A in holders and float(np.hypot(*(block - meet))) < 0.04:
            plan_b = self.reach(state, model, ARM_B, block, self.side_offset(ARM_B), POINT_FORWARD)
        elif state.grip[ARM_B] >= CLOSED:
            plan_b = (None, POINT_FORWARD, 0.0, "open")
        else:
            stage = meet + np.array([0.22, 0.05 + self.params.stage_dz])
            plan_b = (stage, POINT_FORWARD, 0.0, "stage")
        return [plan_a, plan_b]


class DrawerExpert(Expert):
    """Arm B pulls the drawer open by its handle; arm A puts the named block into the tray."""

    task = "drawer"
    uses = (*Expert.uses, "side_distance", "drawer_goal", "place_dx")

    def place_x(self) -> float:
        """Drop point: inside the tray for any opening at or above the success threshold."""
        lo, hi = self.layout.tray_interior(self.cfg.success.drawer_open)
        return 0.5 * (lo + hi) + self.params.place_dx

    def plan(self, state: WorldState, model: ArmModel) -> list[Plan]:
        plan_a: Plan
        plan_b: Plan
        lay = self.layout
        b = state.target
        # Arm B: open the drawer and keep holding it.
        handle = np.array(lay.handle_point(state.drawer))
        if state.handle_holder == ARM_B:
            goal = np.array(lay.handle_point(self.params.drawer_goal))
            plan_b = (goal, POINT_FORWARD, 1.0, "pull")
        else:
            plan_b = self.reach(state, model, ARM_B, handle, self.side_offset(ARM_B), POINT_FORWARD)
        # Arm A: pick the block, wait above the drawer until it is open, lower, release.
        x_place = self.place_x()
        carry = np.array([x_place, lay.cabinet_height + 0.17])
        drop = np.array([x_place, lay.cabinet_height + lay.block_half + 0.04])
        lo, hi = lay.tray_interior(state.drawer)
        if ARM_A in state.holders[b]:
            block = state.block_pos[b]
            ready = (
                state.drawer >= self.cfg.success.drawer_open + 0.005
                and abs(block[0] - x_place) < 0.02
            )
            if ready and float(np.hypot(*(block - drop))) < 0.015:
                plan_a = (None, POINT_DOWN, 0.0, "release")
            elif ready:
                plan_a = (drop, POINT_DOWN, 1.0, "lower")
            else:
                plan_a = (carry, POINT_DOWN, 1.0, "carry")
        elif (
            not state.holders[b]
            and lo <= state.block_pos[b, 0] <= hi
            and lay.tray_floor - 1e-9 <= block_bottom(state, b, lay)
            and state.block_pos[b, 1] < carry[1]
        ):
            # Released over the tray: it falls in; stay clear. (A block dropped on the table
            # in front of the cabinet lies below the tray floor: it is picked up again.)
            plan_a = (carry + np.array([-0.12, 0.05]), POINT_DOWN, 0.0, "retreat")
        else:
            plan_a = self.pick_from_above(state, model, ARM_A, b)
        return [plan_a, plan_b]


# The built-in experts by task (make_expert looks tasks up in the registry).
EXPERTS: dict[str, type[Expert]] = {
    "lift": LiftExpert,
    "handoff": HandoffExpert,
    "drawer": DrawerExpert,
}


def make_expert(task: str, rng: np.random.Generator, cfg: TaskConfig | None = None) -> Expert:
    """The scripted expert of ``task`` (from the task registry) with parameters drawn from ``rng``.

    ``expert.act(env_or_state)`` gives its action in any state, e.g.
    ``make_expert(task, rng).act(gym_env.unwrapped)``.
    """
    spec = get_task(task)
    expert: Expert = spec.expert(cfg if cfg is not None else default_task_config(task), rng)
    return expert
