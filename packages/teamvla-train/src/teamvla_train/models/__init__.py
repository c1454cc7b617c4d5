"""Bimanual VLA policies, interchangeable by ``model.name``."""

from __future__ import annotations

from teamvla_train.config import ModelConfig
from teamvla_train.models.base import BimanualPolicy
from teamvla_train.models.msg_passing import MsgPassingVLA
from teamvla_train.models.single_brain import SingleBrainVLA

MODELS: dict[str, type[BimanualPolicy]] = {
    "single_brain": SingleBrainVLA,
    "msg_passing": MsgPassingVLA,
}


def make_model(cfg: ModelConfig, *, obs_history: int, action_horizon: int) -> BimanualPolicy:
    """Instantiate the policy named by ``cfg.name`` for the given window sizes."""
    try:
        cls = MODELS[cfg.name]
    except KeyError:
        raise ValueError(
            f"unknown model.name {cfg.name!r} (expected one of {sorted(MODELS)})"
        ) from None
    return cls(cfg, obs_history=obs_history, action_horizon=action_horizon)


__all__ = ["MODELS", "BimanualPolicy", "MsgPassingVLA", "SingleBrainVLA", "make_model"]
