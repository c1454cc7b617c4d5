"""What both policies share: observation encoders, output decoding and the masked BC loss.

A subclass only implements :meth:`BimanualPolicy.fuse`, mapping encoded
observations to raw per-arm outputs ``(B, 2, Ha, N + 1)`` (N joint values and
one gripper logit per action step). Everything else - inputs, outputs, loss,
the residual-to-current-joints option - is identical, which is what makes
the models interchangeable by config.

Joint values live in the *normalised* action space of the dataset statistics.
With ``predict_delta`` the network predicts an offset from the current joint
positions mapped into that space, so an untrained model starts by holding
still, and learning concentrates on the motion rather than on the pose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from teamvla_data.batch import (
    ACTION_A,
    ACTION_B,
    GRIP_A,
    GRIP_B,
    INSTRUCTION,
    OBS_IS_PAD,
    Q_A,
    Q_B,
    RGB_A,
    RGB_B,
)
from torch import nn

from teamvla_train.config import ModelConfig
from teamvla_train.models.encoders import CameraEncoder, HashedTextEncoder, ProprioEncoder

ARMS = ("a", "b")


class BimanualPolicy(nn.Module):
    """Base class of the bimanual VLA policies.

    ``forward(batch)`` (= :meth:`predict`) maps observations to normalised
    action chunks and gripper logits; the losses live with the algorithms. ``batch`` follows the contract of :mod:`teamvla_data.batch`
    (images may be uint8 or float in [0, 1]).
    """

    # Normalisation buffers (registered in __init__), (2, N) each.
    q_offset: torch.Tensor
    q_scale: torch.Tensor
    action_offset: torch.Tensor
    action_scale: torch.Tensor

    def __init__(self, cfg: ModelConfig, *, obs_history: int, action_horizon: int) -> None:
        super().__init__()
        if obs_history < 0 or action_horizon < 1:
            raise ValueError(
                f"need obs_history >= 0 and action_horizon >= 1, got {obs_history}, {action_horizon}"
            )
        self.cfg = cfg
        self.obs_history = obs_history
        self.obs_frames = obs_history + 1
        # Images are the expensive input: encode only the most recent vision_frames of them.
        self.vision_frames = min(cfg.vision_frames or self.obs_frames, self.obs_frames)
        self.action_horizon = action_horizon
        self.num_joints = cfg.num_joints
        self.cameras = CameraEncoder(
            image_size=cfg.image_size,
            channels=cfg.conv_channels,
            strides=cfg.strides(),
            out_dim=cfg.vision_dim,
            pool=cfg.vision_pool,
            share=cfg.share_vision,
            cond_dim=cfg.text_dim if cfg.vision_film else None,
        )
        self.text = HashedTextEncoder(
            buckets=cfg.text_buckets,
            ngram=cfg.text_ngram,
            dim=cfg.text_dim,
            layers=cfg.text_layers,
            heads=cfg.text_heads,
            pool=cfg.text_pool,
        )
        self.proprio = nn.ModuleList(
            ProprioEncoder(num_joints=cfg.num_joints, frames=self.obs_frames, dim=cfg.proprio_dim)
            for _ in ARMS
        )
        n = cfg.num_joints
        # Affine normalisation (normalised = (raw - offset) / scale) of joint positions and
        # joint targets per arm; identity until set_normalization() is called. Buffers, so
        # they travel with the weights into every checkpoint.
        self.register_buffer("q_offset", torch.zeros(2, n))
        self.register_buffer("q_scale", torch.ones(2, n))
        self.register_buffer("action_offset", torch.zeros(2, n))
        self.register_buffer("action_scale", torch.ones(2, n))

    # ------------------------------------------------------------------ normalisation
    def set_normalization(
        self, *, q_offset: Any, q_scale: Any, action_offset: Any, action_scale: Any
    ) -> None:
        """Record the dataset's affine normalisation, each as ``(2, N)`` (arm a, arm b)."""
        for name, value in (
            ("q_offset", q_offset),
            ("q_scale", q_scale),
            ("action_offset", action_offset),
            ("action_scale", action_scale),
        ):
            buf = getattr(self, name)
            tensor = torch.as_tensor(value, dtype=buf.dtype).to(buf.device)
            if tensor.shape != buf.shape:
                raise ValueError(
                    f"{name}: expected shape {tuple(buf.shape)}, received {tuple(tensor.shape)}"
                )
            buf.copy_(tensor)

    def _hold_position(self, q_a: torch.Tensor, q_b: torch.Tensor) -> torch.Tensor:
        """Current joint positions mapped into the normalised action space: ``(B, 2, N)``."""
        q_now = torch.stack([q_a[:, -1], q_b[:, -1]], dim=1)  # (B, 2, N)
        raw = q_now * self.q_scale + self.q_offset  # (B, 2, N)
        return (raw - self.action_offset) / self.action_scale  # (B, 2, N)

    # ------------------------------------------------------------------ encoding
    def encode(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Encode the observations.

        Returns ``vision (B, Tv, 2, Dv)`` (images of the last ``Tv = vision_frames``
        frames), ``proprio (B, 2, Dp)`` (every frame) and ``text (B, Dt)``.
        """
        pad = batch[OBS_IS_PAD]
        text = self.text(batch[INSTRUCTION])  # (B, Dt)
        tv = self.vision_frames
        cond = text if self.cfg.vision_film else None
        vision = self.cameras(batch[RGB_A][:, -tv:], batch[RGB_B][:, -tv:], cond)  # (B, Tv, 2, Dv)
        proprio = torch.stack(
            [self.proprio[0](batch[Q_A], pad), self.proprio[1](batch[Q_B], pad)], dim=1
        )  # (B, 2, Dp)
        return {"vision": vision, "proprio": proprio, "text": text}

    def fuse(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoded observations to raw outputs ``(B, 2, Ha, N + 1)``; implemented by subclasses."""
        raise NotImplementedError

    # ------------------------------------------------------------------ outputs
    def predict(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Normalised joint-target chunks ``(B, Ha, N)`` and gripper logits ``(B, Ha)`` per arm."""
        raw = self.fuse(self.encode(batch))  # (B, 2, Ha, N+1)
        joints = raw[..., : self.num_joints]  # (B, 2, Ha, N)
        if self.cfg.predict_delta:
            joints = (
                joints + self._hold_position(batch[Q_A], batch[Q_B])[:, :, None, :]
            )  # (B, 2, Ha, N)
        grip = raw[..., self.num_joints]  # (B, 2, Ha)
        return {
            ACTION_A: joints[:, 0],
            ACTION_B: joints[:, 1],
            GRIP_A: grip[:, 0],
            GRIP_B: grip[:, 1],
        }

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The network's outputs (:meth:`predict`); losses belong to the algorithms (``teamvla_train.algos``)."""
        return self.predict(batch)

    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def zero_init_head(head: nn.Linear) -> None:
    """Start a head at zero output: with ``predict_delta`` the policy starts by holding still."""
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
