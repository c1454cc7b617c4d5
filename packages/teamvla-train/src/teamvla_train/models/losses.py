"""Masked behaviour-cloning losses: padded action steps contribute nothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
