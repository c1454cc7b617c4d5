"""SingleBrainVLA: one shared fusion tower over both arms' observations and the instruction."""

from __future__ import annotations

import torch
from torch import nn

from teamvla_train.config import ModelConfig
from teamvla_train.models.base import BimanualPolicy, zero_init_head
from teamvla_train.models.layers import FiLMBlock


class SingleBrainVLA(BimanualPolicy):
    """Both cameras, both arms' joint histories and the instruction feed one MLP tower.

    The tower (residual blocks, FiLM-conditioned on the instruction by
    default) ends in one head that emits both arms' action chunks and gripper
    logits, so coordination is implicit in the shared hidden state.
    """

    def __init__(self, cfg: ModelConfig, *, obs_history: int, action_horizon: int) -> None:
        super().__init__(cfg, obs_history=obs_history, action_horizon=action_horizon)
        film = cfg.conditioning == "film"
        in_dim = (
            self.vision_frames * 2 * cfg.vision_dim
            + 2 * cfg.proprio_dim
            + (0 if film else cfg.text_dim)
        )
        self.inp = nn.Linear(in_dim, cfg.hidden_dim)
        self.blocks = nn.ModuleList(
            FiLMBlock(cfg.hidden_dim, cfg.text_dim if film else None, dropout=cfg.dropout)
            for _ in range(cfg.fusion_layers)
        )
        self.out_norm = nn.LayerNorm(cfg.hidden_dim)
        self.head = nn.Linear(cfg.hidden_dim, 2 * action_horizon * (cfg.num_joints + 1))
        zero_init_head(self.head)

    def fuse(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        b = feats["text"].shape[0]
        parts = [
            feats["vision"].reshape(b, -1),
            feats["proprio"].reshape(b, -1),
        ]  # (B, Tv*2*Dv), (B, 2*Dp)
        if self.cfg.conditioning == "concat":
            parts.append(feats["text"])  # (B, Dt)
        h = self.inp(torch.cat(parts, dim=-1))  # (B, H)
        for block in self.blocks:
            h = block(h, feats["text"])  # (B, H)
        out = self.head(self.out_norm(h))  # (B, 2*Ha*(N+1))
        return out.reshape(b, 2, self.action_horizon, self.num_joints + 1)  # (B, 2, Ha, N+1)
