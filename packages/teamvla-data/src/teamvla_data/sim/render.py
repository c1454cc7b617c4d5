"""Fast numpy renderer: two orthographic side-view cameras, uint8 RGB.

Static parts (table, shoulders, the drawer cabinet) are drawn once into a
background per camera. Each frame copies the background, fills the moving
axis-aligned rectangles (tray, handle, blocks) by slicing their pixel bounding
boxes, and draws all arm links and gripper fingers in one vectorised pass:
points sampled along every segment are stamped with a precomputed disc of
pixel offsets. A frame costs a few dozen numpy calls whatever the image size.
"""

from __future__ import annotations

import math

import numpy as np

from teamvla_data.sim.kinematics import ArmModel
from teamvla_data.sim.layout import LAYOUT, Layout
from teamvla_data.sim.world import ARM_A, ARM_B, WorldState, to_world

# --- palette (RGB) -----------------------------------------------------------------------
BACKGROUND = (226, 229, 234)
TABLE = (150, 112, 72)
PEDESTAL = (60, 60, 66)
CABINET = (196, 164, 112)
TRAY = (118, 84, 48)
HANDLE = (25, 25, 25)
BLOCK_COLORS = {"red": (215, 35, 35), "blue": (35, 75, 220)}
LINK_COLORS = {ARM_A: ((70, 70, 82), (120, 120, 134)), ARM_B: ((28, 104, 96), (64, 150, 140))}
GRIPPER_COLORS = {ARM_A: (240, 200, 30), ARM_B: (120, 220, 70)}

# --- sizes (m) -------------------------------------------------------------------------------
LINK_RADIUS = 0.014
FINGER_RADIUS = 0.009
FINGER_LENGTH = 0.07  # from the palm; the grip point lies 0.04 from the palm
PALM_OPEN = 0.060  # half distance between the fingers, open
PALM_CLOSED = 0.037  # ... and closed (just wider than a block)


def _disc(radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    r = max(1.0, radius_px)
    k = math.floor(r)
    dr, dc = np.mgrid[-k : k + 1, -k : k + 1]
    keep = dr**2 + dc**2 <= r * r + 1e-9
    return dr[keep].astype(np.intp), dc[keep].astype(np.intp)


class Camera:
    """An orthographic view of the x–z plane: a square window of the world mapped to pixels."""

    def __init__(self, x0: float, z0: float, width: float, size: int) -> None:
        self.x0, self.z_top, self.size = x0, z0 + width, size
        self.scale = size / width  # pixels per metre

    def to_pixels(self, pts: np.ndarray) -> np.ndarray:
        """World points ``(..., 2)`` to float pixel coordinates ``(..., 2)`` as (row, col)."""
        out = np.empty_like(pts)
        out[..., 0] = (self.z_top - pts[..., 1]) * self.scale
        out[..., 1] = (pts[..., 0] - self.x0) * self.scale
        return out

    def rect(
        self,
        img: np.ndarray,
        x0: float,
        x1: float,
        z0: float,
        z1: float,
        color: tuple[int, int, int],
    ) -> None:
        """Fill the world rectangle [x0, x1] x [z0, z1] (clipped to the image)."""
        s = self.scale
        c0 = max(0, round((x0 - self.x0) * s))
        c1 = min(self.size, round((x1 - self.x0) * s))
        r0 = max(0, round((self.z_top - z1) * s))
        r1 = min(self.size, round((self.z_top - z0) * s))
        if c1 > c0 and r1 > r0:
            img[r0:r1, c0:c1] = color


class Renderer:
    """Renders ``rgb_a`` and ``rgb_b`` of a :class:`WorldState`."""

    def __init__(self, model: ArmModel, size: int = 96, layout: Layout = LAYOUT) -> None:
        self.model, self.size, self.layout = model, size, layout
        self.cameras = (
            Camera(layout.camera_a_x0, layout.view_z0, layout.view_width, size),
            Camera(layout.camera_b_x0, layout.view_z0, layout.view_width, size),
        )
        scale = self.cameras[0].scale
        # Samples per segment: about one per pixel of the longest segment.
        longest = max(float(np.max(model.link_lengths)), FINGER_LENGTH, 2 * PALM_OPEN)
        self._t = np.linspace(0.0, 1.0, math.ceil(longest * scale) + 2)
        self._link_disc = _disc(LINK_RADIUS * scale)
        self._finger_disc = _disc(FINGER_RADIUS * scale)
        n = model.num_joints
        self._link_colors = np.array(
            [LINK_COLORS[arm][i % 2] for arm in (ARM_A, ARM_B) for i in range(n)], dtype=np.uint8
        )
        self._finger_colors = np.array(
            [GRIPPER_COLORS[arm] for arm in (ARM_A, ARM_B) for _ in range(3)], np.uint8
        )
        self._backgrounds = {
            has_drawer: tuple(self._background(cam, has_drawer) for cam in self.cameras)
            for has_drawer in (False, True)
        }

    def _background(self, cam: Camera, has_drawer: bool) -> np.ndarray:
        lay = self.layout
        img = np.empty((self.size, self.size, 3), np.uint8)
        img[:] = BACKGROUND
        cam.rect(img, -10.0, 10.0, -10.0, 0.0, TABLE)
        for bx in (-lay.base_x, lay.base_x):
            cam.rect(img, bx - 0.04, bx + 0.04, -0.05, 0.03, PEDESTAL)
        if has_drawer:
            cam.rect(img, lay.cabinet_x0, lay.cabinet_x1, 0.0, lay.cabinet_height, CABINET)
        img.setflags(write=False)
        return img

    def _segments(self, state: WorldState) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """World endpoints of all links ``(2N, 2)`` x2 and of the gripper parts ``(6, 2)`` x2."""
        model = self.model
        l0, l1, f0, f1 = [], [], [], []
        for arm in (ARM_A, ARM_B):
            pts = to_world(arm, model.joint_points(state.q[arm]), self.layout)
            l0.append(pts[:-2])
            l1.append(pts[1:-1])
            wrist = pts[-2]
            u = (pts[-1] - wrist) / model.grip_offset
            v = np.array([-u[1], u[0]])
            half = PALM_OPEN + (PALM_CLOSED - PALM_OPEN) * float(np.clip(state.grip[arm], 0.0, 1.0))
            left, right = wrist + half * v, wrist - half * v
            tip = FINGER_LENGTH * u
            f0.append(np.stack([left, left, right]))
            f1.append(np.stack([right, left + tip, right + tip]))
        return np.concatenate(l0), np.concatenate(l1), np.concatenate(f0), np.concatenate(f1)

    def _stamp(
        self,
        img: np.ndarray,
        cam: Camera,
        p0: np.ndarray,
        p1: np.ndarray,
        disc: tuple[np.ndarray, np.ndarray],
        colors: np.ndarray,
    ) -> None:
        a, b = cam.to_pixels(p0), cam.to_pixels(p1)
        samples = np.rint(a[:, None, :] + self._t[None, :, None] * (b - a)[:, None, :]).astype(
            np.intp
        )
        rows = (samples[:, :, 0, None] + disc[0]).ravel()
        cols = (samples[:, :, 1, None] + disc[1]).ravel()
        seg = np.repeat(np.arange(len(p0)), len(self._t) * len(disc[0]))
        ok = (rows >= 0) & (rows < self.size) & (cols >= 0) & (cols < self.size)
        img[rows[ok], cols[ok]] = colors[seg[ok]]

    def render(self, state: WorldState) -> tuple[np.ndarray, np.ndarray]:
        """Both camera images, ``uint8[H, W, 3]`` each."""
        lay = self.layout
        l0, l1, f0, f1 = self._segments(state)
        out = []
        for cam, bg in zip(self.cameras, self._backgrounds[state.has_drawer], strict=True):
            img = bg.copy()
            if state.has_drawer:
                front = lay.tray_front(state.drawer)
                cam.rect(img, lay.cabinet_x1, front, 0.0, lay.tray_floor, TRAY)
                cam.rect(img, front - lay.tray_wall, front, 0.0, lay.cabinet_height - 0.02, TRAY)
                cam.rect(img, front, front + lay.handle_width, lay.handle_z0, lay.handle_z1, HANDLE)
            h = lay.block_half
            for (x, z), color in zip(state.block_pos, BLOCK_COLORS.values(), strict=True):
                cam.rect(img, x - h, x + h, z - h, z + h, color)
            self._stamp(img, cam, l0, l1, self._link_disc, self._link_colors)
            self._stamp(img, cam, f0, f1, self._finger_disc, self._finger_colors)
            out.append(img)
        return out[0], out[1]
