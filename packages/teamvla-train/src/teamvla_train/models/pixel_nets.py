"""Pixel-observation networks of SAC and AWAC, on the behaviour-cloning policies' encoders.

A pixel observation (``env.obs_mode: pixels``) is a dict of batched fields
(the keys below; ``B`` environments or transitions, ``N`` joints per arm):

==================  ==========================  ===================================================
key                 dtype / shape               meaning
==================  ==========================  ===================================================
``rgb_a``/``rgb_b`` uint8 ``(B, H, W, 3)``      both cameras, still uint8 (the encoder converts)
``proprio``         float32 ``(B, 2N + 2)``     ``[q_a (N), q_b (N), grip_a, grip_b]``: both arms'
                                                joints and gripper state
``instruction``     ``B`` strings               the episode's instruction
==================  ==========================  ===================================================

**Gripper state** is the grip command each arm executed at the previous step
(0, open, at an episode's first step): neither the camera observation nor a
recorded episode holds the closure itself, and the command is what both the
online worlds and a recorded episode (step ``t - 1``'s ``grip_a``/``grip_b``)
know. :class:`GripMemory` keeps it for ``B`` environments.

:class:`PixelEncoder` is :class:`~teamvla_train.models.encoders.CameraEncoder`
(both cameras, FiLM-conditioned on the instruction when ``model.vision_film``),
:class:`~teamvla_train.models.encoders.HashedTextEncoder` and one
:class:`~teamvla_train.models.encoders.ProprioEncoder` per arm (its ``N``
joints and its grip state as one frame of ``N + 1`` values), sized by the
``model:`` section as for the BC policies; its output concatenates the two
camera features, the two arm features and the instruction feature.
:class:`PixelActor` and :class:`PixelCritic` put the state heads of
:mod:`teamvla_train.models.sac_nets` (tanh-Gaussian or Bernoulli-grip actor,
twin LayerNorm critics) on an encoder. Whether actor and critic share one
encoder is the algorithm's choice (``sac.encoder``); the networks only map
observations to outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from teamvla_data.batch import INSTRUCTION, Q_A, Q_B, RGB_A, RGB_B
from torch import nn

from teamvla_train.model_config import ModelConfig
from teamvla_train.models.encoders import CameraEncoder, HashedTextEncoder, ProprioEncoder
from teamvla_train.models.sac_nets import SquashedGaussianActor, TwinQ, make_actor

#: Joints and gripper state of both arms, float32 ``(B, 2N + 2)``.
PROPRIO = "proprio"
#: The keys of a pixel observation.
PIXEL_OBS_KEYS: tuple[str, ...] = (RGB_A, RGB_B, PROPRIO, INSTRUCTION)
#: The image keys of a pixel observation (uint8, channels-last).
PIXEL_IMAGE_KEYS: tuple[str, ...] = (RGB_A, RGB_B)


class GripMemory:
    """Gripper state of ``B`` environments: the grip command each executed last (0 after a reset)."""

    def __init__(self, num_envs: int) -> None:
        self.value = np.zeros((num_envs, 2), np.float32)  # (B, 2): grip_a, grip_b

    def reset(self, envs: Sequence[int] | np.ndarray | None = None) -> None:
        """Open (0) for ``envs`` (all by default): their episodes start anew."""
        if envs is None:
            self.value[:] = 0.0
        else:
            self.value[np.asarray(envs, np.int64)] = 0.0

    def update(self, env_action: Mapping[str, Any]) -> None:
        """Remember the grips of a batched env action (``grip_a``, ``grip_b`` ``(B,)``)."""
        self.value = np.stack(
            [
                np.asarray(env_action["grip_a"], np.float32),
                np.asarray(env_action["grip_b"], np.float32),
            ],
            axis=1,
        )  # (B, 2)


def joints_of(raw: Mapping[str, Any]) -> np.ndarray:
    """``[q_a, q_b]`` ``(B, 2N)`` of a batched env observation (what delta actions step from)."""
    return np.concatenate(
        [np.asarray(raw[Q_A], np.float32), np.asarray(raw[Q_B], np.float32)], axis=-1
    )  # (B, 2N)


def pixel_observation(raw: Mapping[str, Any], grip: np.ndarray) -> dict[str, Any]:
    """A batched env observation (``rgb_a``, ``rgb_b``, ``q_a``, ``q_b``, ``instruction``) and the
    gripper state ``grip (B, 2)`` -> the pixel observation (see the module docstring)."""
    instructions = raw[INSTRUCTION]
    texts = [instructions] if isinstance(instructions, str) else list(instructions)
    return {
        RGB_A: np.asarray(raw[RGB_A], np.uint8),  # (B, H, W, 3)
        RGB_B: np.asarray(raw[RGB_B], np.uint8),  # (B, H, W, 3)
        PROPRIO: np.concatenate(
            [joints_of(raw), np.asarray(grip, np.float32)], axis=-1
        ),  # (B, 2N + 2)
        INSTRUCTION: np.array(texts, dtype=object),  # (B,)
    }


def obs_to_torch(obs: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """A numpy pixel observation on ``device`` (uint8 images stay uint8; instructions a list)."""
    out: dict[str, Any] = {
        key: torch.as_tensor(np.ascontiguousarray(obs[key]), device=device)
        for key in (RGB_A, RGB_B, PROPRIO)
    }
    out[INSTRUCTION] = [str(t) for t in obs[INSTRUCTION]]
    return out


class PixelEncoder(nn.Module):
    """Pixel observation -> features ``(B, 2 Dv + 2 Dp + Dt)`` (see the module docstring)."""

    def __init__(self, cfg: ModelConfig, *, num_joints: int) -> None:
        super().__init__()
        self.cfg, self.num_joints = cfg, int(num_joints)
        self.cameras = CameraEncoder(
            image_size=cfg.image_size, channels=cfg.conv_channels, strides=cfg.strides(),
            out_dim=cfg.vision_dim, pool=cfg.vision_pool, share=cfg.share_vision,
            cond_dim=cfg.text_dim if cfg.vision_film else None,
        )  # fmt: skip
        self.text = HashedTextEncoder(
            buckets=cfg.text_buckets, ngram=cfg.text_ngram, dim=cfg.text_dim,
            layers=cfg.text_layers, heads=cfg.text_heads, pool=cfg.text_pool,
        )  # fmt: skip
        self.proprio = nn.ModuleList(
            ProprioEncoder(num_joints=self.num_joints + 1, frames=1, dim=cfg.proprio_dim)
            for _ in range(2)
        )
        self.out_dim = 2 * cfg.vision_dim + 2 * cfg.proprio_dim + cfg.text_dim

    def forward(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """``obs`` (torch, see :func:`obs_to_torch`) -> ``(B, out_dim)``."""
        n = self.num_joints
        text = self.text(obs[INSTRUCTION])  # (B, Dt)
        rgb_a, rgb_b = obs[RGB_A][:, None], obs[RGB_B][:, None]  # (B, 1, H, W, 3) each
        vision = self.cameras(rgb_a, rgb_b, text if self.cfg.vision_film else None)  # (B, 1, 2, Dv)
        b = vision.shape[0]
        proprio = obs[PROPRIO].float()  # (B, 2N + 2)
        arms = [
            torch.cat([proprio[:, :n], proprio[:, 2 * n : 2 * n + 1]], dim=-1),  # (B, N + 1): arm a
            torch.cat(
                [proprio[:, n : 2 * n], proprio[:, 2 * n + 1 :]], dim=-1
            ),  # (B, N + 1): arm b
        ]
        pad = torch.zeros((b, 1), dtype=torch.bool, device=proprio.device)  # (B, 1): no padding
        feats = [
            enc(q[:, None], pad) for enc, q in zip(self.proprio, arms, strict=True)
        ]  # (B, Dp) each
        return torch.cat([vision.reshape(b, -1), *feats, text], dim=-1)  # (B, 2Dv + 2Dp + Dt)


class PixelActor(nn.Module):
    """pi(a | pixel observation): an encoder and a state actor head on its features.

    Exposes the state actor's interface (``forward``, ``sample``, ``act``,
    ``log_prob``) on pixel observations; the algorithms call ``encoder`` and
    ``head`` separately to encode a batch once per update.
    """

    def __init__(self, *, encoder: PixelEncoder, head: SquashedGaussianActor) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        self.action_dim = head.action_dim

    def forward(self, obs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean (B, D)``, ``log_std (B, D)``."""
        return self.head(self.encoder(obs))

    def sample(self, obs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """A sampled action ``(B, D)`` and its log-probability ``(B,)``."""
        return self.head.sample(self.encoder(obs))

    def act(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """The deterministic action ``(B, D)``."""
        return self.head.act(self.encoder(obs))

    def log_prob(self, obs: Mapping[str, Any], action: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) ``(B,)`` of given actions ``(B, D)``."""
        return self.head.log_prob(self.encoder(obs), action)


class PixelCritic(nn.Module):
    """Twin ``Q(pixel observation, a)``: an encoder and :class:`TwinQ` on its features."""

    def __init__(self, *, encoder: PixelEncoder, head: TwinQ) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(
        self, obs: Mapping[str, Any], action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``q1 (B,)``, ``q2 (B,)``."""
        return self.head(self.encoder(obs), action)


def make_pixel_actor(
    cfg: ModelConfig, *, num_joints: int, action_dim: int, hidden_dims: Sequence[int],
    grip_head: str = "gaussian", encoder: PixelEncoder | None = None,
) -> PixelActor:  # fmt: skip
    """A pixel actor; ``encoder`` (e.g. the critic's, shared) or a fresh one."""
    enc = encoder if encoder is not None else PixelEncoder(cfg, num_joints=num_joints)
    head = make_actor(obs_dim=enc.out_dim, action_dim=action_dim, hidden_dims=hidden_dims, grip_head=grip_head)  # fmt: skip
    return PixelActor(encoder=enc, head=head)


def make_pixel_critic(
    cfg: ModelConfig, *, num_joints: int, action_dim: int, hidden_dims: Sequence[int],
    layer_norm: bool = True,
) -> PixelCritic:  # fmt: skip
    """A pixel critic with its own encoder."""
    enc = PixelEncoder(cfg, num_joints=num_joints)
    head = TwinQ(obs_dim=enc.out_dim, action_dim=action_dim, hidden_dims=hidden_dims, layer_norm=layer_norm)  # fmt: skip
    return PixelCritic(encoder=enc, head=head)
