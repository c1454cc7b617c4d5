"""Networks of soft actor-critic on low-dimensional observations, and the action mapping.

* :class:`SquashedGaussianActor`: an MLP giving the mean and log standard
  deviation of a diagonal Gaussian over pre-squash actions ``u``; actions are
  ``tanh(u)`` in ``[-1, 1]^D`` with the change-of-variables correction of the
  log-probability (Haarnoja et al., 2018, appendix C).
* :class:`TwinQ`: two independent MLP critics ``Q(s, a)`` with LayerNorm after
  each hidden layer (Ball et al., 2023, RLPD).
* :class:`ActionMap`: the environment's Dict actions (``action_a``, ``action_b``:
  ``(N,)`` joint targets; ``grip_a``, ``grip_b``: scalar commands) as one flat
  vector ``[action_a, action_b, grip_a, grip_b]`` of ``2N + 2`` values in
  ``[-1, 1]``, mapped affinely to each field's box: ``low + (x + 1) / 2 * (high
  - low)``, so joint targets span the joint limits (±2.7 rad: ``2.7 * x``) and
  grips ``[0, 1]`` (``(x + 1) / 2``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0
ACTION_KEYS = ("action_a", "action_b", "grip_a", "grip_b")


def mlp(
    *, in_dim: int, hidden_dims: Sequence[int], out_dim: int, layer_norm: bool
) -> nn.Sequential:
    """Linear layers with ReLU (and LayerNorm before it when ``layer_norm``) between them."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden_dims:
        layers.append(nn.Linear(width, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(nn.ReLU())
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def squashed_log_prob(
    *, u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """log pi(tanh(u)) of a diagonal Gaussian pre-squash sample ``u``: ``(B, D) -> (B,)``.

    ``log N(u; mean, std) - sum_d log(1 - tanh(u_d)^2)``, the correction written
    as ``2 (log 2 - u - softplus(-2u))`` (exact, and stable for large ``|u|``).
    """
    std = log_std.exp()
    gauss = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)  # (B, D)
    correction = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))  # (B, D) = log(1 - tanh(u)^2)
    return (gauss - correction).sum(dim=-1)


class SquashedGaussianActor(nn.Module):
    """pi(a | s): tanh of a diagonal Gaussian whose mean and log std an MLP computes."""

    def __init__(self, *, obs_dim: int, action_dim: int, hidden_dims: Sequence[int]) -> None:
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.net = mlp(
            in_dim=obs_dim, hidden_dims=hidden_dims, out_dim=2 * action_dim, layer_norm=False
        )

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs (B, O)`` -> ``mean (B, D)``, ``log_std (B, D)`` in ``[LOG_STD_MIN, LOG_STD_MAX]``."""
        mean, raw = self.net(obs).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw) + 1.0)
        return mean, log_std

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action ``(B, D)`` in ``[-1, 1]`` and its log-probability ``(B,)``."""
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)  # (B, D), torch's global generator
        return torch.tanh(u), squashed_log_prob(u=u, mean=mean, log_std=log_std)

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action ``tanh(mean)`` ``(B, D)`` (evaluation, deployment)."""
        return torch.tanh(self(obs)[0])


class TwinQ(nn.Module):
    """Two critics ``Q1(s, a)``, ``Q2(s, a)`` on ``concat(obs, action)``."""

    def __init__(
        self, *, obs_dim: int, action_dim: int, hidden_dims: Sequence[int], layer_norm: bool = True
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = dict(
            in_dim=obs_dim + action_dim, hidden_dims=hidden_dims, out_dim=1, layer_norm=layer_norm
        )
        self.q1, self.q2 = mlp(**kw), mlp(**kw)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``obs (B, O)``, ``action (B, D)`` -> ``q1 (B,)``, ``q2 (B,)``."""
        x = torch.cat([obs, action], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class ActionMap:
    """Flat actions in ``[-1, 1]^D`` <-> the environment's Dict actions (see the module docstring)."""

    def __init__(self, *, space: Any) -> None:
        """``space``: the single (unbatched) ``gymnasium.spaces.Dict`` action space."""
        self.sizes = [int(np.prod(space[k].shape)) for k in ACTION_KEYS]  # [N, N, 1, 1]
        self.low = np.concatenate([np.broadcast_to(space[k].low, (n,)) for k, n in zip(ACTION_KEYS, self.sizes, strict=True)]).astype(np.float64)  # fmt: skip
        self.high = np.concatenate([np.broadcast_to(space[k].high, (n,)) for k, n in zip(ACTION_KEYS, self.sizes, strict=True)]).astype(np.float64)  # fmt: skip
        self.dim = int(sum(self.sizes))

    def to_env(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``x (B, D)`` in ``[-1, 1]`` -> batched Dict actions (``(B, N)`` joints, ``(B,)`` grips)."""
        x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
        values = (self.low + 0.5 * (x + 1.0) * (self.high - self.low)).astype(np.float32)
        out, start = {}, 0
        for key, n in zip(ACTION_KEYS, self.sizes, strict=True):
            part = values[:, start : start + n]
            out[key] = part if key.startswith("action") else part[:, 0]
            start += n
        return out

    def from_env(self, action: Mapping[str, Any]) -> np.ndarray:
        """One unbatched Dict action -> its flat vector ``(D,)`` in ``[-1, 1]`` (clipped)."""
        flat = np.concatenate([np.ravel(np.asarray(action[k], np.float64)) for k in ACTION_KEYS])
        x = 2.0 * (flat - self.low) / (self.high - self.low) - 1.0
        return np.clip(x, -1.0, 1.0).astype(np.float32)
