"""MsgPassingVLA: per-arm towers that exchange messages before their heads."""

from __future__ import annotations

import torch
from torch import nn

from teamvla_train.config import ModelConfig
from teamvla_train.models.base import BimanualPolicy, zero_init_head
from teamvla_train.models.layers import FiLMBlock


class _ArmTower(nn.Module):
    """One arm's tower: input projection, local blocks, message in/out, per-round blocks, head."""

    def __init__(self, cfg: ModelConfig, *, in_dim: int, out_dim: int) -> None:
        super().__init__()
        cond = cfg.text_dim if cfg.conditioning == "film" else None
        h = cfg.hidden_dim
        self.inp = nn.Linear(in_dim, h)
        self.blocks = nn.ModuleList(
            FiLMBlock(h, cond, dropout=cfg.dropout) for _ in range(cfg.fusion_layers)
        )
        self.send = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(h), nn.Linear(h, cfg.msg_dim), nn.GELU())
            for _ in range(cfg.msg_rounds)
        )
        self.receive = nn.ModuleList(nn.Linear(cfg.msg_dim, h) for _ in range(cfg.msg_rounds))
        self.round_blocks = nn.ModuleList(
            FiLMBlock(h, cond, dropout=cfg.dropout) for _ in range(cfg.msg_rounds)
        )
        self.out_norm = nn.LayerNorm(h)
        self.head = nn.Linear(h, out_dim)
        zero_init_head(self.head)


class MsgPassingVLA(BimanualPolicy):
    """Each arm has its own tower over its own camera and joints (plus the instruction).

    For ``msg_rounds`` rounds every tower sends a message computed from its
    hidden state to the other tower, adds the message it received, and runs one
    more block; then each tower's head emits its arm's chunk and gripper logits.
    The other arm's view and state reach a tower only through messages, so
    ``msg_rounds: 0`` is the "two independent brains" ablation.
    """

    def __init__(self, cfg: ModelConfig, *, obs_history: int, action_horizon: int) -> None:
        super().__init__(cfg, obs_history=obs_history, action_horizon=action_horizon)
        film = cfg.conditioning == "film"
        in_dim = (
            self.vision_frames * cfg.vision_dim + cfg.proprio_dim + (0 if film else cfg.text_dim)
        )
        out_dim = action_horizon * (cfg.num_joints + 1)
        n_towers = 1 if cfg.share_arm_weights else 2
        self.towers = nn.ModuleList(
            _ArmTower(cfg, in_dim=in_dim, out_dim=out_dim) for _ in range(n_towers)
        )
        # Tells a shared tower which arm it is running for (unused, but harmless, when not shared).
        self.arm_embed = nn.Parameter(torch.zeros(2, cfg.hidden_dim))

    def _tower(self, arm: int) -> _ArmTower:
        return self.towers[0 if self.cfg.share_arm_weights else arm]  # type: ignore[return-value]

    def fuse(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        text = feats["text"]  # (B, Dt)
        b = text.shape[0]
        hidden = []
        for arm in range(2):
            tower = self._tower(arm)
            parts = [
                feats["vision"][:, :, arm].reshape(b, -1),
                feats["proprio"][:, arm],
            ]  # (B, Tv*Dv), (B, Dp)
            if self.cfg.conditioning == "concat":
                parts.append(text)
            h = tower.inp(torch.cat(parts, dim=-1)) + self.arm_embed[arm]  # (B, H)
            for block in tower.blocks:
                h = block(h, text)  # (B, H)
            hidden.append(h)
        for r in range(self.cfg.msg_rounds):
            # Both messages are computed from the same round's states (a synchronous exchange).
            msgs = [self._tower(arm).send[r](hidden[arm]) for arm in range(2)]  # 2 x (B, M)
            hidden = [
                self._tower(arm).round_blocks[r](
                    hidden[arm] + self._tower(arm).receive[r](msgs[1 - arm]), text
                )
                for arm in range(2)
            ]  # 2 x (B, H)
        outs = [
            self._tower(arm).head(self._tower(arm).out_norm(hidden[arm])) for arm in range(2)
        ]  # 2 x (B, Ha*(N+1))
        out = torch.stack(outs, dim=1)  # (B, 2, Ha*(N+1))
        return out.reshape(b, 2, self.action_horizon, self.num_joints + 1)  # (B, 2, Ha, N+1)
