"""The behaviour-cloning loss: masked joint and gripper terms; padded action steps contribute nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from teamvla_data.batch import ACTION_A, ACTION_B, ACTION_IS_PAD, GRIP_A, GRIP_B

from teamvla_train.config import ModelConfig


def _masked_mean(per_step: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_step (B, Ha)`` over the steps where ``is_pad`` is False."""
    valid = (~is_pad).to(per_step.dtype)  # (B, Ha)
    return (per_step * valid).sum() / valid.sum().clamp_min(1.0)


def joint_loss(
    pred: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor, kind: str = "l1"
) -> torch.Tensor:
    """L1 or MSE between ``(B, Ha, N)`` joint chunks, averaged over joints and valid steps."""
    diff = pred.float() - target.float()  # (B, Ha, N)
    if kind == "l1":
        per_step = diff.abs().mean(dim=-1)  # (B, Ha)
    elif kind == "mse":
        per_step = diff.square().mean(dim=-1)  # (B, Ha)
    else:
        raise ValueError(f"unknown joint loss {kind!r} (expected 'l1' or 'mse')")
    # where() rather than multiplication alone: a NaN/inf in a padded target must not leak in.
    per_step = torch.where(is_pad, torch.zeros_like(per_step), per_step)  # (B, Ha)
    return _masked_mean(per_step, is_pad)


def grip_loss(logits: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits between ``(B, Ha)`` gripper chunks over valid steps."""
    target = torch.where(is_pad, torch.zeros_like(target), target).float()  # (B, Ha)
    per_step = F.binary_cross_entropy_with_logits(
        logits.float(), target, reduction="none"
    )  # (B, Ha)
    return _masked_mean(per_step, is_pad)


def grip_accuracy(logits: torch.Tensor, target: torch.Tensor, is_pad: torch.Tensor) -> torch.Tensor:
    """Fraction of valid steps whose open/closed prediction matches the target."""
    hit = ((logits > 0) == (target > 0.5)).float()  # (B, Ha)
    return _masked_mean(hit, is_pad)


def bc_loss(
    out: Mapping[str, torch.Tensor], batch: Mapping[str, Any], cfg: ModelConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Masked BC loss of a policy's outputs against the batch, and detached metrics (no host sync).

    ``cfg.joint_loss`` (l1 | mse), ``cfg.joint_weight`` and ``cfg.grip_weight``
    weigh the terms: ``joint_weight * (joint_a + joint_b) + grip_weight * (grip_a + grip_b)``.
    """
    pad = batch[ACTION_IS_PAD]
    terms = {}
    for arm, act, grip in (("a", ACTION_A, GRIP_A), ("b", ACTION_B, GRIP_B)):
        terms[f"joint_{arm}"] = joint_loss(out[act], batch[act], pad, cfg.joint_loss)
        terms[f"grip_{arm}"] = grip_loss(out[grip], batch[grip], pad)
    loss = cfg.joint_weight * (terms["joint_a"] + terms["joint_b"]) + cfg.grip_weight * (
        terms["grip_a"] + terms["grip_b"]
    )
    metrics = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
    with torch.no_grad():
        metrics["grip_acc"] = 0.5 * (
            grip_accuracy(out[GRIP_A], batch[GRIP_A], pad)
            + grip_accuracy(out[GRIP_B], batch[GRIP_B], pad)
        )
    return loss, metrics
