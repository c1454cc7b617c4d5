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
  ``[-1, 1]``. Grips map affinely to ``[0, 1]`` (``(x + 1) / 2``). Joints, by
  ``mode``: ``"delta"`` (the default) moves each joint target by at most
  ``joint_step`` from the current joint position read from the state
  observation, ``q + joint_step * x`` (clipped to the limits), so ``x = 0``
  holds still and a random ``x`` explores locally, as the world moves a joint
  at most ``max_joint_step`` (0.15 rad) per step anyway; ``"absolute"`` spans
  the joint limits, ``low + (x + 1) / 2 (high - low)`` (±2.7 rad: ``2.7 x``),
  where an actor must output the current posture to hold still.
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
GRIP_LEVEL = 0.5  # flat value of a recorded closed (+) or open (-) grip with binary grips


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

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        """log pi(a|s) ``(B,)`` of given actions ``(B, D)`` in ``[-1, 1]`` (AWAC's regression).

        Actions are pulled ``eps`` inside the box first: recorded grips are
        exactly 0 or 1 (``a = -1`` or ``1``), where ``atanh`` is infinite.
        """
        mean, log_std = self(obs)
        u = torch.atanh(action.clamp(-1.0 + eps, 1.0 - eps))
        return squashed_log_prob(u=u, mean=mean, log_std=log_std)


class BernoulliGripActor(SquashedGaussianActor):
    """pi(a | s) with tanh-Gaussian joints and Bernoulli grips (``awac.grip_head: bernoulli``).

    The network and its state dict are :class:`SquashedGaussianActor`'s: for the
    last ``grip_dims`` dimensions the "mean" output is the logit of closing and
    the "log std" output is unused. A grip action is the binary level
    ``+GRIP_LEVEL`` (close) or ``-GRIP_LEVEL`` (open), as recorded demos store
    it; ``log pi`` of a given action sums the joints' squashed-Gaussian
    log-density and the Bernoulli log-likelihood of ``label = (a_grip > 0)``.
    The deterministic grip closes iff ``p = sigmoid(logit) > 0.5``. Sampled
    grips are not reparameterised (AWAC needs no gradient through samples).
    """

    def __init__(
        self, *, obs_dim: int, action_dim: int, hidden_dims: Sequence[int], grip_dims: int = 2
    ) -> None:
        super().__init__(obs_dim=obs_dim, action_dim=action_dim, hidden_dims=hidden_dims)
        if not 0 < grip_dims < action_dim:
            raise ValueError(f"grip_dims must be in (0, {action_dim}), received {grip_dims}")
        self.joints = action_dim - grip_dims

    def grip_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits of closing each gripper ``(B, G)``."""
        return self(obs)[0][:, self.joints :]

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A sampled action ``(B, D)`` (joints reparameterised, grips ``+-GRIP_LEVEL``) and its log-probability."""
        mean, log_std = self(obs)
        j = self.joints
        u = mean[:, :j] + log_std[:, :j].exp() * torch.randn_like(mean[:, :j])
        logits = mean[:, j:]
        closed = torch.bernoulli(torch.sigmoid(logits.detach()))  # (B, G) in {0, 1}
        logp = squashed_log_prob(u=u, mean=mean[:, :j], log_std=log_std[:, :j])
        logp = logp - F.binary_cross_entropy_with_logits(logits, closed, reduction="none").sum(-1)
        grip = GRIP_LEVEL * (2.0 * closed - 1.0)
        return torch.cat([torch.tanh(u), grip], dim=-1), logp

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Joints ``tanh(mean)``; each grip ``+GRIP_LEVEL`` iff ``sigmoid(logit) > 0.5`` (logit > 0)."""
        mean = self(obs)[0]
        j = self.joints
        grip = torch.where(mean[:, j:] > 0.0, GRIP_LEVEL, -GRIP_LEVEL)
        return torch.cat([torch.tanh(mean[:, :j]), grip], dim=-1)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        """Joints' squashed-Gaussian log-density + the grips' Bernoulli log-likelihood ``(B,)``."""
        mean, log_std = self(obs)
        j = self.joints
        u = torch.atanh(action[:, :j].clamp(-1.0 + eps, 1.0 - eps))
        joints = squashed_log_prob(u=u, mean=mean[:, :j], log_std=log_std[:, :j])
        label = (action[:, j:] > 0.0).to(mean.dtype)
        grips = -F.binary_cross_entropy_with_logits(mean[:, j:], label, reduction="none").sum(-1)
        return joints + grips


GRIP_HEADS = ("gaussian", "bernoulli")


def make_actor(
    *, obs_dim: int, action_dim: int, hidden_dims: Sequence[int], grip_head: str = "gaussian"
) -> SquashedGaussianActor:
    """The state actor of ``grip_head`` (``gaussian``: every dimension a tanh-Gaussian)."""
    if grip_head == "gaussian":
        return SquashedGaussianActor(
            obs_dim=obs_dim, action_dim=action_dim, hidden_dims=hidden_dims
        )
    if grip_head == "bernoulli":
        return BernoulliGripActor(obs_dim=obs_dim, action_dim=action_dim, hidden_dims=hidden_dims)
    raise ValueError(f"grip_head must be one of {GRIP_HEADS}, received {grip_head!r}")


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

    def __init__(
        self, *, space: Any, mode: str = "delta", joint_step: float = 0.15, binary_grip: bool = True
    ) -> None:
        """``space``: the single (unbatched) ``gymnasium.spaces.Dict`` action space."""
        if mode not in ("delta", "absolute"):
            raise ValueError(f"action mode must be delta or absolute, received {mode!r}")
        self.mode, self.joint_step, self.binary_grip = mode, float(joint_step), bool(binary_grip)
        self.sizes = [int(np.prod(space[k].shape)) for k in ACTION_KEYS]  # [N, N, 1, 1]
        self.low = np.concatenate([np.broadcast_to(space[k].low, (n,)) for k, n in zip(ACTION_KEYS, self.sizes, strict=True)]).astype(np.float64)  # fmt: skip
        self.high = np.concatenate([np.broadcast_to(space[k].high, (n,)) for k, n in zip(ACTION_KEYS, self.sizes, strict=True)]).astype(np.float64)  # fmt: skip
        self.dim = int(sum(self.sizes))
        self.joints = (
            2 * self.sizes[0]
        )  # the state vector starts with q_a, q_b (gym_env.state_slices)

    def _current(self, obs: np.ndarray | None, batch: int) -> np.ndarray:
        """The current joint positions ``(B, 2N)`` (delta mode), from state observations ``(B, O)``."""
        if obs is None:
            raise ValueError("delta actions need the state observation (its joint positions)")
        q = np.asarray(obs, np.float64).reshape(batch, -1)[:, : self.joints]
        return q

    def to_env(self, x: np.ndarray, obs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``x (B, D)`` in ``[-1, 1]`` (and state ``obs (B, O)`` in delta mode) -> batched Dict actions."""
        x = np.clip(np.asarray(x, np.float64), -1.0, 1.0)
        values = self.low + 0.5 * (x + 1.0) * (self.high - self.low)
        if self.mode == "delta":
            q = self._current(obs, len(x))
            values[:, : self.joints] = np.clip(
                q + self.joint_step * x[:, : self.joints],
                self.low[: self.joints],
                self.high[: self.joints],
            )
        if self.binary_grip:
            values[:, self.joints :] = (x[:, self.joints :] > 0.0).astype(np.float64)
        values = values.astype(np.float32)
        out, start = {}, 0
        for key, n in zip(ACTION_KEYS, self.sizes, strict=True):
            part = values[:, start : start + n]
            out[key] = part if key.startswith("action") else part[:, 0]
            start += n
        return out

    def from_env(self, action: Mapping[str, Any], obs: np.ndarray | None = None) -> np.ndarray:
        """One unbatched Dict action (and its state ``obs (O,)`` in delta mode) -> flat ``(D,)`` (clipped)."""
        flat = np.concatenate([np.ravel(np.asarray(action[k], np.float64)) for k in ACTION_KEYS])
        x = 2.0 * (flat - self.low) / (self.high - self.low) - 1.0
        if self.mode == "delta":
            q = self._current(obs, 1)[0]
            x[: self.joints] = (flat[: self.joints] - q) / self.joint_step
        if self.binary_grip:
            # +-GRIP_LEVEL, not +-1: a recorded 0/1 grip at the edge of tanh's range is fitted by a
            # likelihood actor with a huge std around a mean stuck at the other sign (measured: BC
            # never closed the gripper); any x > 0 closes anyway.
            x[self.joints :] = np.where(flat[self.joints :] > 0.5, GRIP_LEVEL, -GRIP_LEVEL)
        return np.clip(x, -1.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint records to rebuild this map (``extra``)."""
        return {"mode": self.mode, "joint_step": self.joint_step, "binary_grip": self.binary_grip,
                "action_low": self.low.tolist(),
                "action_high": self.high.tolist(), "sizes": list(self.sizes)}  # fmt: skip
