"""The pixel path of the actor-critic algorithms: networks and optimisers, and a batch's features.

With ``env.obs_mode: pixels`` SAC and AWAC run their update rules
(:func:`teamvla_train.algos.sac.sac_update`, :func:`teamvla_train.algos.awac.awac_update`)
on *features*: each update encodes its batch once (:func:`encode_batch`) and
hands the heads (:class:`~teamvla_train.models.sac_nets.SquashedGaussianActor`,
:class:`~teamvla_train.models.sac_nets.TwinQ`) feature tensors under the batch
keys below, as a state batch hands them state vectors.

``encoder: shared`` (the default, as DrQ-v2 and RLPD do): actor and critics
read one :class:`~teamvla_train.models.pixel_nets.PixelEncoder`; the critic
loss trains it (the ``critic`` optimiser holds it), the actor reads its
features detached (its optimiser holds the actor head only). With
``train_critic: false`` (AWAC's behaviour cloning) nothing would train a
shared encoder, so the actor's loss trains it then. ``separate``: the actor
has its own encoder, trained by the actor's loss. The target critic is the
Polyak copy of the Q heads, applied to the online encoder's features of the
next observation (DrQ-v2). The next observation's features carry no gradient.

``trainer.precision``: the update's encoder passes run under the engine's
autocast (bf16 with ``auto`` on CUDA, or ``bf16`` asked for, as BC's forward
passes do), and :func:`features_to_fp32` hands the heads fp32 features.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from teamvla_data.batch import INSTRUCTION

from teamvla_train.algos.pixel_replay import NEXT, augment_batch
from teamvla_train.algos.replay import ACTION, DONE, NEXT_OBS, NSTEPS, OBS, REWARD
from teamvla_train.models.pixel_nets import (
    PIXEL_OBS_KEYS,
    PixelActor,
    PixelCritic,
    make_pixel_actor,
    make_pixel_critic,
    obs_to_torch,
)
from teamvla_train.models.sac_nets import TwinQ

#: The actor's view of the observations when it differs from the critic's (pixel features);
#: the other keys of an update's batch are the transition's (``teamvla_train.algos.replay``).
ACTOR_OBS, ACTOR_NEXT_OBS = "actor_obs", "actor_next_obs"
ENCODERS = ("shared", "separate")


def build_pixel_nets(
    *, model_cfg: Any, num_joints: int, action_dim: int, s: Any, grip_head: str,
    device: torch.device,
) -> tuple[PixelActor, PixelCritic, TwinQ]:  # fmt: skip
    """Actor, critic and target Q heads of section ``s`` (``hidden_dims``, ``critic_layer_norm``,
    ``encoder``), with the ``model:`` section's encoders."""
    if s.encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, received {s.encoder!r}")
    critic = make_pixel_critic(model_cfg, num_joints=num_joints, action_dim=action_dim,
                               hidden_dims=s.hidden_dims, layer_norm=s.critic_layer_norm)  # fmt: skip
    shared = critic.encoder if s.encoder == "shared" else None
    actor = make_pixel_actor(model_cfg, num_joints=num_joints, action_dim=action_dim,
                             hidden_dims=s.hidden_dims, grip_head=grip_head, encoder=shared)  # fmt: skip
    target = copy.deepcopy(critic.head).requires_grad_(False)
    return actor.to(device), critic.to(device), target.to(device)


def actor_trains_encoder(s: Any) -> bool:
    """Whether the actor's loss trains its encoder: separate encoders, or no critic training."""
    return s.encoder == "separate" or not getattr(s, "train_critic", True)


def pixel_optimizers(
    *, actor: PixelActor, critic: PixelCritic, log_alpha: torch.Tensor, s: Any
) -> dict[str, torch.optim.Optimizer]:
    """``actor`` (its head, plus its encoder when :func:`actor_trains_encoder`), ``critic``
    (encoder and Q heads) and ``alpha``."""
    actor_params = list(actor.head.parameters())
    if actor_trains_encoder(s):
        actor_params += list(actor.encoder.parameters())
    return {
        "actor": torch.optim.Adam(actor_params, lr=s.actor_lr),
        "critic": torch.optim.Adam(critic.parameters(), lr=s.critic_lr),
        "alpha": torch.optim.Adam([log_alpha], lr=getattr(s, "alpha_lr", 3e-4)),
    }


def batch_to_torch(
    batch: Mapping[str, Any], *, device: torch.device, augment: int, rng: np.random.Generator
) -> dict[str, Any]:
    """A sampled pixel batch (``PixelReplayBuffer.sample`` fields, ``(B, ...)``) -> observations
    ``obs``/``next_obs`` (torch, uint8 images) and the other fields as tensors; random shift of
    ``augment`` pixels first (0: none)."""
    if augment:
        batch = augment_batch(batch, augment, rng)
    obs = {k: batch[k] for k in PIXEL_OBS_KEYS}
    nxt = {k: batch[NEXT + k] if k != INSTRUCTION else batch[k] for k in PIXEL_OBS_KEYS}
    out: dict[str, Any] = {OBS: obs_to_torch(obs, device), NEXT_OBS: obs_to_torch(nxt, device)}
    for key in (ACTION, REWARD, DONE, NSTEPS):
        out[key] = torch.as_tensor(batch[key], device=device)
    return out


def encode_batch(
    batch: Mapping[str, Any], *, actor: PixelActor, critic: PixelCritic, s: Any
) -> dict[str, Any]:
    """Observations -> features, once per update (see the module docstring): ``obs`` the critic's
    (gradient into its encoder), ``next_obs`` its features of the next observation (no gradient),
    ``actor_obs``/``actor_next_obs`` the actor's, each ``(B, F)``."""
    out = dict(batch)
    out[OBS] = critic.encoder(batch[OBS])  # (B, F)
    with torch.no_grad():
        out[NEXT_OBS] = critic.encoder(batch[NEXT_OBS])  # (B, F)
    if actor.encoder is critic.encoder:
        out[ACTOR_NEXT_OBS] = out[NEXT_OBS]
        out[ACTOR_OBS] = out[OBS] if actor_trains_encoder(s) else out[OBS].detach()
    else:
        out[ACTOR_OBS] = actor.encoder(batch[OBS])  # (B, F)
        with torch.no_grad():
            out[ACTOR_NEXT_OBS] = actor.encoder(batch[NEXT_OBS])  # (B, F)
    return out


def features_to_fp32(batch: dict[str, Any]) -> dict[str, Any]:
    """The feature tensors of :func:`encode_batch` (computed under a bf16/fp16 autocast) as fp32:
    the heads, log-probabilities and TD targets stay in fp32 (``trainer.precision`` applies to the
    encoders); the cast keeps the gradient path into the encoders."""
    for key in (OBS, NEXT_OBS, ACTOR_OBS, ACTOR_NEXT_OBS):
        batch[key] = batch[key].float()
    return batch
