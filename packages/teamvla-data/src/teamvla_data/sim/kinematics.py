"""Planar N-joint arm: forward kinematics, Jacobian and a damped least-squares IK step.

Everything here works in the arm's *local* frame: origin at the shoulder, x
pointing towards the middle of the table, z up. Arm B is the mirror image of
arm A, so both arms share joint conventions, rest posture and limits; the world
module converts between local and world coordinates (``x_world = base_x + sign * x``).

Link ``i`` has absolute angle ``theta_i = q_0 + ... + q_i``; the gripper points
along the last link and its *grip point* (the centre between the fingers) lies
``grip_offset`` beyond the wrist. The IK controls the grip point and the
gripper angle (three task coordinates); the remaining ``N - 3`` degrees of
freedom are resolved by a nullspace pull towards a fixed rest posture, so the
same target always yields the same, smooth joint solution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# Gripper angles in the local frame.
POINT_DOWN = -math.pi / 2
POINT_FORWARD = 0.0


def wrap_angle(a: float) -> float:
    """``a`` wrapped to [-pi, pi)."""
    return (a + math.pi) % (2 * math.pi) - math.pi


@dataclass(frozen=True)
class ArmModel:
    """Geometry and limits of one planar arm (shared by both arms)."""

    num_joints: int = 7
    reach: float = 0.90  # sum of link lengths (m), shoulder to wrist
    wrist_length: float = 0.06  # the last link is a short wrist (m)
    grip_offset: float = 0.04  # wrist to grip point (m)
    joint_limit: float = 2.7  # |q_i| <= joint_limit (rad)
    shoulder_rest: float = 1.25  # rest angle of the first joint (rad)

    @cached_property
    def link_lengths(self) -> np.ndarray:
        """Length of each link: equal links and a short wrist, summing to :attr:`reach`."""
        n = self.num_joints
        lengths = np.full(n, (self.reach - self.wrist_length) / (n - 1))
        lengths[-1] = self.wrist_length
        return lengths

    @cached_property
    def lower(self) -> np.ndarray:
        """Lower joint limits."""
        return np.full(self.num_joints, -self.joint_limit)

    @cached_property
    def upper(self) -> np.ndarray:
        """Upper joint limits."""
        return np.full(self.num_joints, self.joint_limit)

    @cached_property
    def rest(self) -> np.ndarray:
        """Rest posture: shoulder raised, the other joints bending evenly so the gripper points down.

        Used as the nullspace preference of the IK; it is a comfortable, far-from-limits shape.
        """
        n = self.num_joints
        q = np.empty(n)
        q[0] = self.shoulder_rest
        q[1:] = (POINT_DOWN - self.shoulder_rest) / (n - 1)
        return q

    # ------------------------------------------------------------------ kinematics
    def joint_points(self, q: np.ndarray) -> np.ndarray:
        """Local positions of the shoulder, every joint, the wrist and the grip point: ``(N + 2, 2)``."""
        theta = np.cumsum(q)
        c, s = np.cos(theta), np.sin(theta)
        pts = np.zeros((self.num_joints + 2, 2))
        np.cumsum(self.link_lengths * c, out=pts[1 : self.num_joints + 1, 0])
        np.cumsum(self.link_lengths * s, out=pts[1 : self.num_joints + 1, 1])
        pts[-1, 0] = pts[-2, 0] + self.grip_offset * c[-1]
        pts[-1, 1] = pts[-2, 1] + self.grip_offset * s[-1]
        return pts

    def grip_pose(self, q: np.ndarray) -> tuple[np.ndarray, float]:
        """Local grip point ``(x, z)`` and gripper angle."""
        return self.joint_points(q)[-1], float(np.sum(q))

    def jacobian(self, q: np.ndarray, pts: np.ndarray | None = None) -> np.ndarray:
        """``3 x N`` Jacobian of (grip x, grip z, gripper angle) with respect to ``q``."""
        if pts is None:
            pts = self.joint_points(q)
        tip = pts[-1]
        r = tip - pts[: self.num_joints]  # from each joint to the grip point
        jac = np.empty((3, self.num_joints))
        jac[0] = -r[:, 1]
        jac[1] = r[:, 0]
        jac[2] = 1.0
        return jac

    def ik_step(
        self,
        q: np.ndarray,
        target: np.ndarray,
        angle: float,
        *,
        max_cartesian: float,
        max_angle: float = 0.25,
        max_joint: float = 0.12,
        damping: float = 0.04,
        angle_weight: float = 0.15,
        nullspace_gain: float = 0.08,
        unwind: bool = False,
    ) -> np.ndarray:
        """One damped least-squares step from ``q`` towards grip point ``target`` and ``angle``.

        The Cartesian error is first capped to ``max_cartesian`` metres (the
        per-step speed), the angle error to ``max_angle``; the joint step is
        then scaled so no joint moves by more than ``max_joint``. Redundancy is
        resolved by a nullspace pull towards :attr:`rest`. Returns the new joint
        target (not clipped to limits; the world clips).

        With ``unwind``, the gripper angle aims at the representative of
        ``angle`` (modulo 2 pi) nearest the rest posture's angle, so a posture
        wound a full turn round (gripper angle right modulo 2 pi, joints bent
        far round and pressed against their limits) turns back instead of
        keeping the winding. Postures less than half a turn from that
        representative, as in every expert demonstration, are unchanged.
        """
        pts = self.joint_points(q)
        tip = pts[-1]
        dp = np.asarray(target, dtype=np.float64) - tip
        dist = float(np.hypot(dp[0], dp[1]))
        if dist > max_cartesian:
            dp *= max_cartesian / dist
        da = wrap_angle(angle - float(np.sum(q)))
        if unwind:
            # The representative of ``angle`` nearest the rest posture's angle (POINT_DOWN).
            rest_angle = float(np.sum(self.rest))
            turn = angle + 2 * math.pi * round((rest_angle - angle) / (2 * math.pi))
            unwound = turn - float(np.sum(q))
            if abs(unwound - da) > math.pi:  # wound a full turn (or more) away
                da = unwound
        da = max(-max_angle, min(max_angle, da))
        # Angle row scaled to metres so position and orientation errors weigh alike.
        jac = self.jacobian(q, pts)
        jac[2] *= angle_weight
        err = np.array([dp[0], dp[1], da * angle_weight])
        gram = jac @ jac.T + (damping**2) * np.eye(3)
        pinv = jac.T @ np.linalg.solve(gram, np.eye(3))
        dq = pinv @ err
        null = np.eye(self.num_joints) - pinv @ jac
        dq += null @ (nullspace_gain * (self.rest - q))
        biggest = float(np.max(np.abs(dq)))
        if biggest > max_joint:
            dq *= max_joint / biggest
        return q + dq

    def solve(
        self, target: np.ndarray, angle: float, q0: np.ndarray | None = None, iters: int = 300
    ) -> np.ndarray:
        """Iterate :meth:`ik_step` to convergence (used to compute home postures)."""
        q = self.rest.copy() if q0 is None else np.array(q0, dtype=np.float64)
        for _ in range(iters):
            q = np.clip(self.ik_step(q, target, angle, max_cartesian=0.03), self.lower, self.upper)
        return q
