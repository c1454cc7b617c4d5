"""Building blocks shared by the policies."""

from __future__ import annotations

import torch
from torch import nn


class FiLMBlock(nn.Module):
    """Pre-norm residual MLP block, optionally scaled/shifted by a conditioning vector (FiLM).

    ``x (B, D), cond (B, C) -> (B, D)``. The FiLM projection starts at zero, so
    the block starts as a plain residual MLP and learns how the instruction
    should modulate it.
    """

    def __init__(self, dim: int, cond_dim: int | None, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.film: nn.Linear | None = None
        if cond_dim:
            self.film = nn.Linear(cond_dim, 2 * dim)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)  # (B, D)
        if self.film is not None and cond is not None:
            scale, shift = self.film(cond).chunk(2, dim=-1)  # (B, D) each
            h = h * (1.0 + scale) + shift  # (B, D)
        h = self.fc2(self.drop(self.act(self.fc1(h))))  # (B, D)
        return x + self.drop(h)
