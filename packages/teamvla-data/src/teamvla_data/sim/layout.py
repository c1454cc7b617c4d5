"""Fixed geometry of the world: table, arm bases, blocks, the drawer cabinet and camera views.

The world is the vertical x–z plane seen from the side: the table top is
``z = 0``, arm A stands at the left edge and arm B, its mirror image, at the
right edge. All lengths are metres. Generous sizes on purpose: blocks span at
least 6 pixels in a 96-pixel camera image and grasping tolerates a few
centimetres of error.
"""

from __future__ import annotations

from dataclasses import dataclass

COLORS = ("red", "blue")  # block names; the instruction names one of them

# Spawn ranges of the block centres (world x) per task; separation keeps the
# open gripper from covering both blocks at once.
SPAWN_X = {
    "lift": (-0.33, 0.0),
    "handoff": (-0.35, -0.12),
    "drawer": (-0.32, -0.12),
}
MIN_BLOCK_SEPARATION = 0.10


@dataclass(frozen=True)
class Layout:
    """Positions and sizes of everything that does not move (and the drawer's travel)."""

    # --- arms: shoulders on the table edges, arm B mirrored --------------------------
    base_x: float = 0.55  # |x| of both shoulders
    base_z: float = 0.0

    # --- blocks ------------------------------------------------------------------------
    block_half: float = 0.035  # half side of a square block

    # --- drawer cabinet (drawer task only); the tray slides out towards +x -------------
    cabinet_x0: float = -0.36
    cabinet_x1: float = -0.08  # front face: the tray comes out here
    cabinet_height: float = 0.12
    tray_floor: float = 0.02  # top of the tray floor
    tray_wall: float = 0.012  # thickness of the tray's front wall
    drawer_travel: float = 0.22  # maximum opening
    handle_width: float = 0.03  # handle sticks out of the front wall by this much
    handle_z0: float = 0.05
    handle_z1: float = 0.09
    # Block centres count as inside the open tray this far from its ends.
    tray_margin: float = 0.02

    # --- handoff ---------------------------------------------------------------------------
    handoff_x: float = -0.05  # where arm A presents the block (world x)
    handoff_z: float = 0.28

    # --- cameras: two orthographic side views, one centred on each arm's half -------------
    view_width: float = 0.84  # metres across (square images): 8 pixels per block side at 96 pixels
    view_z0: float = -0.05  # lowest z shown
    camera_a_x0: float = -0.70  # left edge of camera A's view (its arm, the blocks, the middle)
    camera_b_x0: float = (
        -0.14
    )  # left edge of camera B's view (the middle, the drawer front, its arm)

    @property
    def handle_grip_z(self) -> float:
        """Height at which the handle is grasped."""
        return 0.5 * (self.handle_z0 + self.handle_z1)

    def tray_front(self, opening: float) -> float:
        """World x of the tray's outer front face for a drawer opened by ``opening``."""
        return self.cabinet_x1 + opening

    def handle_point(self, opening: float) -> tuple[float, float]:
        """Grasp point of the handle (its centre) for a drawer opened by ``opening``."""
        return self.tray_front(opening) + 0.5 * self.handle_width, self.handle_grip_z

    def tray_interior(self, opening: float) -> tuple[float, float]:
        """Range of block-centre x that lies inside the part of the tray pulled out."""
        return (
            self.cabinet_x1 + self.tray_margin,
            self.tray_front(opening) - self.tray_wall - self.tray_margin,
        )


LAYOUT = Layout()
