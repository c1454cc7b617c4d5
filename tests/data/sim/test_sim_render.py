"""Camera images: the named block is where it is, in its colour, big enough; arms are visible."""

from __future__ import annotations

import numpy as np
import pytest
from teamvla_data.sim import TASKS, BimanualEnv, WorldConfig
from teamvla_data.sim.layout import LAYOUT
from teamvla_data.sim.render import BLOCK_COLORS, GRIPPER_COLORS, Camera
from teamvla_data.sim.world import ARM_A, ARM_B


def pixel_of(cam_index: int, x: float, z: float, size: int) -> tuple[int, int]:
    x0 = LAYOUT.camera_a_x0 if cam_index == 0 else LAYOUT.camera_b_x0
    cam = Camera(x0, LAYOUT.view_z0, LAYOUT.view_width, size)
    row, col = cam.to_pixels(np.array([x, z]))
    return int(row), int(col)


def color_mask(img: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.all(img == np.array(color, np.uint8), axis=-1)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("color", ["red", "blue"])
def test_named_block_is_drawn_in_its_colour_where_it_is(task, color):
    env = BimanualEnv()
    obs = env.reset(task, 3, instruction=f"move the {color} block")
    st = env.state
    b = st.target
    assert st.target_color == color
    x, z = st.block_pos[b]
    row, col = pixel_of(0, x, z, 96)
    img = obs["rgb_a"]
    assert tuple(img[row, col]) == BLOCK_COLORS[color]
    mask = color_mask(img, BLOCK_COLORS[color])
    rows, cols = np.nonzero(mask)
    assert (
        rows.max() - rows.min() + 1 >= 6 and cols.max() - cols.min() + 1 >= 6
    )  # at least 6x6 pixels
    assert rows.min() <= row <= rows.max() and cols.min() <= col <= cols.max()
    # Moving the block (clear of the other one) moves its pixels.
    st.block_pos[1 - b, 0] = -0.45
    st.block_pos[b] = (x + 0.1 if x < -0.2 else x - 0.1, 0.4)
    moved = env.observation()["rgb_a"]
    assert tuple(moved[row, col]) != BLOCK_COLORS[color]
    assert tuple(moved[pixel_of(0, *st.block_pos[b], 96)]) == BLOCK_COLORS[color]


def test_both_cameras_show_the_middle_of_the_table_and_differ():
    env = BimanualEnv()
    obs = env.reset("handoff", 0)
    assert not np.array_equal(obs["rgb_a"], obs["rgb_b"])
    # The hand-over point is visible in both views.
    for cam, key in ((0, "rgb_a"), (1, "rgb_b")):
        env.state.block_pos[env.state.target] = (LAYOUT.handoff_x, LAYOUT.handoff_z)
        img = env.observation()[key]
        assert (
            tuple(img[pixel_of(cam, LAYOUT.handoff_x, LAYOUT.handoff_z, 96)])
            == BLOCK_COLORS[env.state.target_color]
        )


def test_arm_pose_and_gripper_state_are_visible():
    env = BimanualEnv()
    obs = env.reset("lift", 0)
    assert color_mask(obs["rgb_a"], GRIPPER_COLORS[ARM_A]).sum() >= 10
    assert color_mask(obs["rgb_b"], GRIPPER_COLORS[ARM_B]).sum() >= 10
    env.state.q[ARM_A, 0] -= 0.3
    moved = env.observation()
    assert not np.array_equal(moved["rgb_a"], obs["rgb_a"])
    env.state.q[ARM_A, 0] += 0.3
    env.state.grip[ARM_A] = 1.0
    closed = env.observation()
    assert not np.array_equal(closed["rgb_a"], obs["rgb_a"])


def test_drawer_opening_is_visible():
    env = BimanualEnv()
    shut = env.reset("drawer", 0)["rgb_b"]
    env.state.drawer = 0.18
    assert not np.array_equal(env.observation()["rgb_b"], shut)


@pytest.mark.parametrize("size", [24, 64, 128])
def test_image_size_is_configurable(size):
    env = BimanualEnv(WorldConfig(image_size=size))
    obs = env.reset("drawer", 1)
    assert obs["rgb_a"].shape == obs["rgb_b"].shape == (size, size, 3)
    assert (
        color_mask(obs["rgb_a"], BLOCK_COLORS["red"]).any()
        and color_mask(obs["rgb_a"], BLOCK_COLORS["blue"]).any()
    )


def test_render_off_gives_black_images_of_the_right_size():
    obs = BimanualEnv(WorldConfig(image_size=40, render=False)).reset("lift", 0)
    assert obs["rgb_a"].shape == (40, 40, 3) and not obs["rgb_a"].any()
