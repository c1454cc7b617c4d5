"""Proprioception encoder: one arm's joint-position history to a feature vector."""

from __future__ import annotations

import torch
from torch import nn


class ProprioEncoder(nn.Module):
    """``q (B, To, N)`` + ``obs_is_pad (B, To)`` -> ``(B, dim)``.

    Padded frames (before the episode start; copies of step 0) are zeroed and
    flagged so the network can tell "no motion yet" from a repeated frame.
    """

    def __init__(self, *, num_joints: int, frames: int, dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.frames = frames
        self.net = nn.Sequential(
            nn.Linear(frames * (num_joints + 1), hidden),
            nn.GELU(),
            nn.Linear(hidden, dim),
            nn.LayerNorm(dim),
        )

    def forward(self, q: torch.Tensor, obs_is_pad: torch.Tensor) -> torch.Tensor:
        b = q.shape[0]
        valid = (~obs_is_pad).to(q.dtype)[..., None]  # (B, To, 1)
        x = torch.cat([q * valid, 1.0 - valid], dim=-1)  # (B, To, N+1)
        return self.net(x.reshape(b, -1))  # (B, dim)
