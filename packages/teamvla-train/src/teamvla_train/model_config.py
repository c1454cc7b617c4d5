"""The ``model`` config section: which policy network, its encoders and heads, and the BC loss weights.

Torch-free (configs are validated on machines without torch); re-exported by
:mod:`teamvla_train.config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from teamvla_schema.config import field

ModelName = Literal["single_brain", "msg_passing"]


@dataclass
class ModelConfig:
    """Architecture of the policy (both models share every field except ``msg_*``)."""

    # --- which model -----------------------------------------------------------------
    name: ModelName = field(
        default="single_brain",
        doc="single_brain: one fusion tower for both arms; msg_passing: per-arm towers exchanging messages.",
    )
    num_joints: int = field(default=7, ge=1, doc="Joints per arm (N); must match the dataset.")

    # --- vision: one small conv net per camera image, trained from scratch -------------
    image_size: int = field(
        default=64,
        ge=16,
        le=512,
        doc="Images are resized in-model to image_size x image_size (the 3 cm grasp tolerance of "
        "the simulator is ~1.7 px at 48, ~2.3 px at 64).",
    )
    conv_channels: list[int] = field(
        default_factory=lambda: [16, 32, 64],
        doc="Output channels of the 3x3 conv layers (one entry per layer).",
    )
    conv_strides: list[int] | None = field(
        default=None,
        doc="Stride (1 or 2) of each conv layer; null: 2 for every layer. Fewer stride-2 layers "
        "keep a finer feature map for the keypoints (more precise, more compute).",
    )
    vision_pool: Literal["spatial_softmax", "avg"] = field(
        default="spatial_softmax",
        doc="spatial_softmax: expected (x, y) keypoint per channel; avg: global average pooling.",
    )
    vision_dim: int = field(default=64, ge=1, doc="Feature size per camera image.")
    share_vision: bool = field(
        default=True, doc="Both cameras use one conv net (with a learned camera embedding)."
    )
    vision_film: bool = field(
        default=True,
        doc="The instruction modulates the last conv feature map (FiLM), so keypoints can "
        "follow the object the instruction names.",
    )
    vision_frames: int = field(
        default=1,
        ge=0,
        doc="Most recent frames whose images are encoded (0: every frame of the window); "
        "the joint history always uses every frame.",
    )

    # --- instruction: hashed words + character n-grams, no download ------------------
    text_buckets: int = field(
        default=4096, ge=16, doc="Hash buckets of the word / character n-gram embedding."
    )
    text_ngram: int = field(
        default=3, ge=0, le=6, doc="Character n-gram length (0: whole words only)."
    )
    text_dim: int = field(default=64, ge=1, doc="Instruction embedding size.")
    text_layers: int = field(
        default=0, ge=0, le=6, doc="Transformer layers over the words (0: mean pooling)."
    )
    text_pool: Literal["mean", "attention"] = field(
        default="attention",
        doc="mean: average of the words; attention: text_heads learned queries attend over the words.",
    )
    text_heads: int = field(
        default=2,
        ge=1,
        doc="Attention heads of the instruction transformer and of attention pooling.",
    )

    # --- proprioception ---------------------------------------------------------------
    proprio_dim: int = field(default=64, ge=1, doc="Feature size of one arm's joint-state history.")

    # --- fusion and heads -------------------------------------------------------------
    hidden_dim: int = field(default=256, ge=8, doc="Width of the fusion tower(s).")
    fusion_layers: int = field(
        default=2, ge=1, le=8, doc="Residual MLP blocks in the fusion tower(s)."
    )
    conditioning: Literal["film", "concat"] = field(
        default="film",
        doc="film: the instruction scales/shifts every fusion block; concat: appended to the input only.",
    )
    dropout: float = field(default=0.0, ge=0.0, lt=1.0, doc="Dropout inside the fusion blocks.")
    predict_delta: bool = field(
        default=True,
        doc="Predict joint targets relative to the current joint positions (residual), in normalised units.",
    )

    # --- message passing (msg_passing only) -------------------------------------------
    msg_rounds: int = field(
        default=2, ge=0, le=8, doc="Rounds of message exchange between the two arm towers."
    )
    msg_dim: int = field(default=128, ge=1, doc="Size of a message.")
    share_arm_weights: bool = field(
        default=False, doc="Both arm towers share weights (an arm embedding tells them apart)."
    )

    # --- loss -------------------------------------------------------------------------
    joint_loss: Literal["l1", "mse"] = field(default="l1", doc="Loss on normalised joint targets.")
    joint_weight: float = field(default=1.0, ge=0.0, doc="Weight of the joint loss.")
    grip_weight: float = field(
        default=0.5, ge=0.0, doc="Weight of the gripper binary cross-entropy."
    )

    def strides(self) -> list[int]:
        """The stride of every conv layer."""
        return (
            list(self.conv_strides)
            if self.conv_strides is not None
            else [2] * len(self.conv_channels)
        )

    def feature_map_size(self) -> int:
        """Side of the last conv feature map (what the pooling sees)."""
        size = self.image_size
        for st in self.strides():
            size = (size - 1) // st + 1
        return size

    def validate(self) -> None:
        """Cross-field checks."""
        if not self.conv_channels or any(c < 1 for c in self.conv_channels):
            raise ValueError(
                f"conv_channels must list positive channel counts, received {self.conv_channels}"
            )
        strides = self.strides()
        if len(strides) != len(self.conv_channels) or any(st not in (1, 2) for st in strides):
            raise ValueError(
                f"conv_strides must give 1 or 2 for each of the {len(self.conv_channels)} conv layers, "
                f"received {self.conv_strides}"
            )
        if self.feature_map_size() < 2:
            raise ValueError(
                f"image_size {self.image_size} is too small for conv strides {strides}"
            )
        if self.text_layers and self.text_dim % self.text_heads:
            raise ValueError(
                f"text_dim {self.text_dim} must be divisible by text_heads {self.text_heads}"
            )
