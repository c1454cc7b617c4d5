"""A pixel-observation actor (SAC, AWAC with ``env.obs_mode: pixels``) behind :class:`teamvla_train.Policy`.

``Policy.from_checkpoint(path)`` returns a :class:`PixelPolicy` when the
checkpoint holds ``extra.pixel_policy``. ``select_action(obs)`` takes exactly
what ``make_env(task)`` (``obs_mode="pixels"``) returns (``rgb_a``, ``rgb_b``
uint8 ``(H, W, 3)``, ``q_a``, ``q_b`` float32 ``(N,)``, ``instruction``) and
returns exactly what its ``step`` takes: the deterministic action of the actor
(``tanh`` of the mean; Bernoulli grips close iff ``p > 0.5``) mapped by the
checkpoint's action map. The gripper state the actor reads is the grip it
commanded at the previous step, kept inside: call :meth:`PixelPolicy.reset` at
each new episode (``reset([i])`` for environment ``i`` of a batch).
``select_actions`` is the batched form for ``make_vector_env(...)``; images of
another size than the training worlds' are resized by the encoder, as for BC.
``teamvla eval`` plays it in the pixel vector env on the held-out seeds
(:func:`teamvla_train.algos.online.state_closed_loop_eval`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from teamvla_data.batch import INSTRUCTION
from teamvla_schema import SchemaError

from teamvla_train.models.pixel_nets import (
    GripMemory,
    PixelActor,
    joints_of,
    make_pixel_actor,
    obs_to_torch,
    pixel_observation,
)
from teamvla_train.models.sac_nets import ActionMap
from teamvla_train.policy import Policy, state_dict_from_numpy


class PixelPolicy(Policy):
    """A deterministic pixel-observation actor (see the module docstring)."""

    obs_mode = "pixels"
    actor_critic = True  # one action per step from the env's observation (no chunks, no dataset)

    def __init__(
        self, *, actor: PixelActor, amap: ActionMap, num_joints: int, image_size: int,
        device: torch.device, config: dict[str, Any] | None = None, path: Path | None = None,
    ) -> None:  # fmt: skip
        # Not the dataclass __init__: there is no chunk model or normalisation here.
        self.actor = actor.to(device).eval()
        self.amap, self.device = amap, device
        self._num_joints = int(num_joints)
        self.image_size = (int(image_size), int(image_size))  # the training worlds' cameras
        self.config = dict(config or {})
        self.stats = None
        self.path = path
        self.algo = str(self.config.get("trainer", {}).get("algo", ""))
        self.grip = GripMemory(1)

    @property
    def num_joints(self) -> int:
        """Joints per arm (``N``)."""
        return self._num_joints

    def reset(self, envs: Sequence[int] | None = None) -> None:
        """New episodes (of ``envs``, all by default): their gripper state is open again."""
        self.grip.reset(envs)

    @torch.no_grad()
    def select_actions(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Actions ``(B, N)`` / ``(B,)`` for a batch of env observations (leading ``B`` axis)."""
        texts = obs[INSTRUCTION]
        if isinstance(texts, str):
            raise ValueError("select_actions takes a batch; use select_action for one environment")
        b = len(texts)
        if self.grip.value.shape[0] != b:  # another batch: a fresh memory
            self.grip = GripMemory(b)
        x = pixel_observation(obs, self.grip.value)
        u = self.actor.act(obs_to_torch(x, self.device)).cpu().numpy()  # (B, D)
        action = self.amap.to_env(u, joints_of(obs))
        self.grip.update(action)
        return action

    def select_action(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """The action for one env observation, as ``env.step`` takes it."""
        batch = {k: ([v] if k == INSTRUCTION else np.asarray(v)[None]) for k, v in obs.items() if k in ("rgb_a", "rgb_b", "q_a", "q_b", INSTRUCTION)}  # fmt: skip
        out = self.select_actions(batch)
        return {k: (v[0] if k.startswith("action") else np.float32(v[0])) for k, v in out.items()}

    def predict_chunk(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Not available: the actor predicts one action per step from its own gripper memory."""
        raise NotImplementedError("a pixel actor has no chunk prediction; use select_action")


def pixel_policy_from_checkpoint(
    ckpt: Mapping[str, Any], spec: Mapping[str, Any], *, device: str | torch.device,
    path: Path | None,
) -> PixelPolicy:  # fmt: skip
    """Rebuild the actor described by ``extra.pixel_policy`` and load its weights (``model``)."""
    from teamvla_data.sim.gym_env import action_space
    from teamvla_schema.config import from_dict

    from teamvla_train.model_config import ModelConfig

    try:
        n = int(spec["num_joints"])
        amap_spec = spec["action_map"]
        amap = ActionMap(space=action_space(n), mode=str(amap_spec["mode"]),
                         joint_step=float(amap_spec["joint_step"]),
                         binary_grip=bool(amap_spec.get("binary_grip", False)))  # fmt: skip
        cfg = from_dict(ModelConfig, dict(spec["model"]), key="extra.pixel_policy.model",
                        source=str(path) if path else None)  # fmt: skip
        actor = make_pixel_actor(cfg, num_joints=n, action_dim=amap.dim,
                                 hidden_dims=[int(h) for h in spec["hidden_dims"]],
                                 grip_head=str(spec.get("grip_head", "gaussian")))  # fmt: skip
        image_size = int(spec["image_size"])
    except (KeyError, ValueError, TypeError) as exc:
        raise SchemaError(f"bad pixel-policy description in the checkpoint: {exc}", path=path, field="extra.pixel_policy") from None  # fmt: skip
    try:
        actor.load_state_dict(state_dict_from_numpy(ckpt["model"]), strict=True)
    except RuntimeError as exc:
        raise SchemaError(f"weights do not fit the recorded actor: {exc}", path=path, field="model") from None  # fmt: skip
    return PixelPolicy(actor=actor, amap=amap, num_joints=n, image_size=image_size,
                       device=torch.device(device), config=dict(ckpt.get("config") or {}),
                       path=path)  # fmt: skip
