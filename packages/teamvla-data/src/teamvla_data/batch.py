"""The batch contract between :func:`teamvla_data.make_dataloader` and the trainer.

Every batch is a ``dict`` with exactly these keys (``B`` = batch size,
``To = obs_history + 1`` observation frames ending at the current step,
``Ha = action_horizon``, ``N`` = joints per arm, ``H, W`` = image size):

==================  =====================  =========================================================
key                 dtype / shape          meaning
==================  =====================  =========================================================
``rgb_a``/``rgb_b`` uint8 (B, To, H, W, 3) camera images, channels-last, **still uint8**: the
                                           trainer converts to float on the device
                                           (:class:`teamvla_data.transforms.ImagesToFloat`).
``q_a``/``q_b``     float32 (B, To, N)     joint positions at steps t-To+1 .. t (normalised when
                                           statistics are applied).
``obs_is_pad``      bool (B, To)           True where the frame index fell before the episode
                                           start; that frame is a copy of step 0.
``action_a``/       float32 (B, Ha, N)     joint targets at steps t .. t+Ha-1 (normalised when
``action_b``                               statistics are applied).
``grip_a``/         float32 (B, Ha)        gripper commands at steps t .. t+Ha-1, in [0, 1], never
``grip_b``                                 normalised.
``action_is_pad``   bool (B, Ha)           True past the episode end; that step is a copy of the
                                           last step.
``instruction``     list[str] (B)          natural-language instruction at step t.
``task``            list[str] (B)          task slug of the episode.
``episode_index``   int64 (B)              index of the episode in the dataset's episode table
                                           (``dataset.episodes[i]``), stable for a given selection.
``frame_index``     int64 (B)              step t within its episode.
==================  =====================  =========================================================

Arrays are numpy arrays from :class:`teamvla_data.MultiTaskDataset` and torch
tensors (same dtypes, uint8 images included) from the DataLoader returned by
:func:`teamvla_data.make_dataloader`. Use the constants below rather than
string literals.
"""

from __future__ import annotations

RGB_A = "rgb_a"
RGB_B = "rgb_b"
Q_A = "q_a"
Q_B = "q_b"
OBS_IS_PAD = "obs_is_pad"
ACTION_A = "action_a"
ACTION_B = "action_b"
GRIP_A = "grip_a"
GRIP_B = "grip_b"
ACTION_IS_PAD = "action_is_pad"
INSTRUCTION = "instruction"
TASK = "task"
EPISODE_INDEX = "episode_index"
FRAME_INDEX = "frame_index"

#: Image keys (uint8, channels-last, one frame per observation step).
IMAGE_KEYS: tuple[str, ...] = (RGB_A, RGB_B)
#: Per-observation-frame keys: shape (B, To, ...).
OBS_KEYS: tuple[str, ...] = (RGB_A, RGB_B, Q_A, Q_B)
#: Per-action-step keys: shape (B, Ha, ...).
ACTION_KEYS: tuple[str, ...] = (ACTION_A, ACTION_B, GRIP_A, GRIP_B)
#: Keys whose values are ``list[str]`` rather than arrays.
STRING_KEYS: tuple[str, ...] = (INSTRUCTION, TASK)
#: Fields that normalisation statistics cover by default (grippers stay in [0, 1]).
NORMALIZED_KEYS: tuple[str, ...] = (Q_A, Q_B, ACTION_A, ACTION_B)
#: Every key of a batch, in a fixed order.
ALL_KEYS: tuple[str, ...] = (
    RGB_A,
    RGB_B,
    Q_A,
    Q_B,
    OBS_IS_PAD,
    ACTION_A,
    ACTION_B,
    GRIP_A,
    GRIP_B,
    ACTION_IS_PAD,
    INSTRUCTION,
    TASK,
    EPISODE_INDEX,
    FRAME_INDEX,
)

__all__ = [
    "ACTION_A",
    "ACTION_B",
    "ACTION_IS_PAD",
    "ACTION_KEYS",
    "ALL_KEYS",
    "EPISODE_INDEX",
    "FRAME_INDEX",
    "GRIP_A",
    "GRIP_B",
    "IMAGE_KEYS",
    "INSTRUCTION",
    "NORMALIZED_KEYS",
    "OBS_IS_PAD",
    "OBS_KEYS",
    "Q_A",
    "Q_B",
    "RGB_A",
    "RGB_B",
    "STRING_KEYS",
    "TASK",
]
