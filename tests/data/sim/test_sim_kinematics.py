"""Planar arm kinematics: forward kinematics, Jacobian, IK step."""

from __future__ import annotations

import numpy as np
import pytest
from teamvla_data.sim.kinematics import POINT_DOWN, POINT_FORWARD, ArmModel, wrap_angle


@pytest.mark.parametrize("n", [3, 7, 10])
def test_straight_arm_reaches_full_length(n):
    model = ArmModel(num_joints=n)
    pts = model.joint_points(np.zeros(n))
    assert pts.shape == (n + 2, 2)
    assert np.allclose(pts[:, 1], 0.0)
    assert pts[-2, 0] == pytest.approx(model.reach)
    assert pts[-1, 0] == pytest.approx(model.reach + model.grip_offset)
    assert model.link_lengths.sum() == pytest.approx(model.reach)


def test_jacobian_matches_finite_differences():
    model = ArmModel(num_joints=7)
    q = np.random.default_rng(0).uniform(-1, 1, 7)
    jac = model.jacobian(q)
    eps = 1e-6
    for i in range(7):
        dq = np.zeros(7)
        dq[i] = eps
        (p1, a1), (p0, a0) = model.grip_pose(q + dq), model.grip_pose(q - dq)
        assert np.allclose((p1 - p0) / (2 * eps), jac[:2, i], atol=1e-6)
        assert (a1 - a0) / (2 * eps) == pytest.approx(jac[2, i])


def test_rest_posture_points_down_and_is_within_limits():
    model = ArmModel(num_joints=7)
    assert float(np.sum(model.rest)) == pytest.approx(POINT_DOWN)
    assert np.all(np.abs(model.rest) < model.joint_limit)


@pytest.mark.parametrize(
    ("target", "angle"),
    [((0.25, 0.035), POINT_DOWN), ((0.55, 0.3), POINT_DOWN), ((0.6, 0.07), POINT_FORWARD)],
)
def test_ik_steps_converge_smoothly(target, angle):
    model = ArmModel(num_joints=7)
    q = model.solve(np.array([0.3, 0.4]), POINT_DOWN)
    for _ in range(80):
        nxt = model.ik_step(q, np.array(target), angle, max_cartesian=0.02, max_joint=0.1)
        assert np.max(np.abs(nxt - q)) <= 0.1 + 1e-12  # bounded joint increments
        q = nxt
    tip, a = model.grip_pose(q)
    assert np.hypot(*(tip - target)) < 2e-3
    assert abs(wrap_angle(a - angle)) < 0.02


def test_ik_is_a_pure_function_of_the_state():
    model = ArmModel(num_joints=7)
    q = model.rest + 0.1
    a = model.ik_step(q, np.array([0.4, 0.2]), POINT_DOWN, max_cartesian=0.03)
    b = model.ik_step(q.copy(), np.array([0.4, 0.2]), POINT_DOWN, max_cartesian=0.03)
    assert np.array_equal(a, b)


def test_unwind_changes_nothing_less_than_half_a_turn_away():
    model = ArmModel(num_joints=7)
    for q in (model.rest + 0.1, model.rest - 0.1):
        for angle in (POINT_DOWN, POINT_FORWARD):
            plain = model.ik_step(q, np.array([0.4, 0.2]), angle, max_cartesian=0.03)
            careful = model.ik_step(q, np.array([0.4, 0.2]), angle, max_cartesian=0.03, unwind=True)
            assert np.array_equal(plain, careful)


def test_unwind_frees_a_wound_posture_that_plain_ik_cannot():
    # Arm B after random joint targets: the gripper points forward, but a full turn round
    # (angle sum -2 pi) with a joint on its limit; plain IK keeps the winding and stalls.
    model = ArmModel(num_joints=7)
    target = np.array([0.61, 0.27])
    reached = {}
    for unwind in (False, True):
        q = np.array([0.87, -0.31, -0.46, -1.57, -2.7, -1.25, -0.77])
        for _ in range(80):
            step = model.ik_step(q, target, POINT_FORWARD, max_cartesian=0.015, unwind=unwind)
            q = np.clip(step, model.lower, model.upper)
        reached[unwind] = float(np.hypot(*(model.grip_pose(q)[0] - target)))
        if unwind:
            assert float(np.sum(q)) == pytest.approx(POINT_FORWARD, abs=0.02)
    assert reached[False] > 0.1 and reached[True] < 0.005
