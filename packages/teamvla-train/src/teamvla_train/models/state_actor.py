"""A state-observation actor (SAC, AWAC) behind the public :class:`teamvla_train.Policy` API.

``Policy.from_checkpoint(path)`` returns a :class:`StatePolicy` when the
checkpoint holds ``extra.state_policy`` (written by ``trainer.algo: sac`` and
``awac``). ``select_action(obs)`` takes exactly what ``make_env(task,
obs_mode="state")`` returns (a float32 ``(2N + 17,)`` vector) and returns
exactly what that env's ``step`` takes (``action_a``, ``action_b`` float32
``(N,)``, ``grip_a``, ``grip_b`` float32 scalars): the deterministic action
``tanh(mean)`` of the actor (with ``grip_head: bernoulli`` each grip closes
iff its ``p > 0.5``), mapped by the checkpoint's action map (delta
actions read the current joints from ``obs``). ``select_actions`` is the
batched form for ``make_vector_env(..., obs_mode="state")``. The actor has no
memory, so ``reset`` does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from teamvla_schema import SchemaError

from teamvla_train.models.sac_nets import ActionMap, SquashedGaussianActor, make_actor
from teamvla_train.policy import Policy, state_dict_from_numpy


class StatePolicy(Policy):
    """A deterministic state-observation actor (see the module docstring)."""

    obs_mode = "state"
    actor_critic = True  # one action per step from the env's observation (no chunks, no dataset)

    def __init__(
        self, *, actor: SquashedGaussianActor, amap: ActionMap, num_joints: int,
        device: torch.device, config: dict[str, Any] | None = None, path: Path | None = None,
    ) -> None:  # fmt: skip
        # Not the dataclass __init__: there is no chunk model, normalisation or camera here.
        self.actor = actor.to(device).eval()
        self.amap, self.device = amap, device
        self._num_joints = int(num_joints)
        self.config = dict(config or {})
        self.stats = None
        self.path = path
        self.algo = str(self.config.get("trainer", {}).get("algo", ""))

    @property
    def num_joints(self) -> int:
        """Joints per arm (``N``)."""
        return self._num_joints

    @property
    def obs_dim(self) -> int:
        """Length of the state vector the actor reads."""
        return self.actor.obs_dim

    def reset(self, envs: Sequence[int] | None = None) -> None:
        """Nothing to forget: the actor sees only the current state."""

    @torch.no_grad()
    def select_actions(self, obs: Any) -> dict[str, np.ndarray]:
        """Actions ``(B, N)`` / ``(B,)`` for state observations ``(B, 2N + 17)`` of a vector env."""
        x = np.asarray(obs, np.float32)
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(f"expected state observations (B, {self.obs_dim}), received {x.shape}")
        u = self.actor.act(torch.from_numpy(x).to(self.device)).cpu().numpy()
        return self.amap.to_env(u, x)

    def select_action(self, obs: Any) -> dict[str, Any]:
        """The action for one state observation ``(2N + 17,)``, as ``env.step`` takes it."""
        x = np.asarray(obs, np.float32)
        if x.shape != (self.obs_dim,):
            raise ValueError(
                f"expected one state observation ({self.obs_dim},), received {x.shape}"
            )
        batched = self.select_actions(x[None])
        return {
            k: (v[0] if k.startswith("action") else np.float32(v[0])) for k, v in batched.items()
        }

    def predict_chunk(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Not available: a state actor predicts one action from a state vector, not chunks from images."""
        raise NotImplementedError(
            "a state-observation actor has no chunk prediction; use select_action"
        )


def state_policy_from_checkpoint(
    ckpt: Mapping[str, Any],
    spec: Mapping[str, Any],
    *,
    device: str | torch.device,
    path: Path | None,
) -> StatePolicy:
    """Rebuild the actor described by ``extra.state_policy`` and load its weights (``model``)."""
    from teamvla_data.sim.gym_env import action_space

    try:
        n = int(spec["num_joints"])
        amap_spec = spec["action_map"]
        amap = ActionMap(space=action_space(n), mode=str(amap_spec["mode"]),
                         joint_step=float(amap_spec["joint_step"]),
                         binary_grip=bool(amap_spec.get("binary_grip", False)))  # fmt: skip
        # grip_head (absent before it existed: gaussian): bernoulli grips close iff p > 0.5
        actor = make_actor(obs_dim=int(spec["obs_dim"]), action_dim=amap.dim,
                           hidden_dims=[int(h) for h in spec["hidden_dims"]],
                           grip_head=str(spec.get("grip_head", "gaussian")))  # fmt: skip
    except (KeyError, ValueError, TypeError) as exc:
        raise SchemaError(f"bad state-policy description in the checkpoint: {exc}", path=path, field="extra.state_policy") from None  # fmt: skip
    try:
        actor.load_state_dict(state_dict_from_numpy(ckpt["model"]), strict=True)
    except RuntimeError as exc:
        raise SchemaError(f"weights do not fit the recorded actor: {exc}", path=path, field="model") from None  # fmt: skip
    return StatePolicy(actor=actor, amap=amap, num_joints=n, device=torch.device(device),
                       config=dict(ckpt.get("config") or {}), path=path)  # fmt: skip
