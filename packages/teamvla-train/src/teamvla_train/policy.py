"""Inference wrapper: a trained policy loaded from a checkpoint, raw observations in, raw actions out.

::

    policy = load_policy("runs/demo/checkpoints/multi/epoch_0004.ckpt")
    out = policy.predict_chunk({
        "rgb_a": rgb_a, "rgb_b": rgb_b,        # uint8 (B, To, H, W, 3)
        "q_a": q_a, "q_b": q_b,                # float32 (B, To, N), RAW joint positions
        "obs_is_pad": pad,                     # bool (B, To)
        "instruction": ["lift the cube", ...], # list[str] (B)
    })
    out["action_a"]  # float32 (B, Ha, N) un-normalised joint targets
    out["grip_a"]    # float32 (B, Ha) probability that the gripper is closed

The checkpoint is read with :func:`teamvla_schema.load_checkpoint` (numpy,
no pickle, no ``torch.load``); the model is rebuilt from the config recorded
in it and the normalisation recorded with it is applied on the way in and
undone on the way out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import torch
import torch.nn.functional as F
from teamvla_data.batch import (
    ACTION_A,
    ACTION_B,
    GRIP_A,
    GRIP_B,
    INSTRUCTION,
    OBS_IS_PAD,
    Q_A,
    Q_B,
    RGB_A,
    RGB_B,
)
from teamvla_schema import SchemaError, load_checkpoint
from teamvla_schema.config import from_dict

from teamvla_train.config import ModelConfig
from teamvla_train.control import ChunkController
from teamvla_train.models import BimanualPolicy, make_model
from teamvla_train.normalization import Affine

#: Key of the policy description inside a checkpoint's ``extra`` section.
POLICY_KEY = "policy"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers


def policy_spec(
    model: BimanualPolicy, *, normalization: Affine, image_size: Sequence[int]
) -> dict[str, Any]:
    """Everything needed to rebuild ``model`` for inference (stored as ``extra.policy``)."""
    from teamvla_schema.config import to_dict

    return {
        "model": to_dict(model.cfg),
        "obs_history": int(model.obs_history),
        "action_horizon": int(model.action_horizon),
        "num_joints": int(model.num_joints),
        "image_size": [int(s) for s in image_size],
        "normalization": normalization.to_dict(),
    }


def numpy_to_torch(arr: np.ndarray) -> torch.Tensor:
    """A tensor from a checkpoint array (bfloat16 included), copied so it owns its memory."""
    arr = np.asarray(arr)
    if arr.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(arr, copy=True))


def state_dict_from_numpy(arrays: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Checkpoint ``model`` section to a torch state dict, without wrapper prefixes."""
    out = {}
    for name, value in arrays.items():
        for prefix in _WRAPPER_PREFIXES:
            while name.startswith(prefix):
                name = name[len(prefix) :]
        out[name] = numpy_to_torch(value)
    return out


@dataclass
class Policy:
    """A policy ready for batched closed-loop inference (see the module docstring)."""

    model: BimanualPolicy
    normalization: Affine
    image_size: tuple[int, int]  # (H, W) of the images the model was trained on
    device: torch.device
    config: dict[str, Any] = field(default_factory=dict)  # resolved training config, when known
    stats: dict[str, Any] | None = None  # the dataset statistics stored with the checkpoint
    path: Path | None = None
    # Closed-loop control for select_action (see teamvla_train.control); None = the
    # checkpoint's eval config, else 4 and 0.0.
    replan_every: int | None = None
    temporal_ensemble: float | None = None

    def __post_init__(self) -> None:
        self.model.to(self.device).eval()
        eval_cfg = self.config.get("eval") or {}
        if self.replan_every is None:
            self.replan_every = int(eval_cfg.get("replan_every", 4))
        if self.temporal_ensemble is None:
            self.temporal_ensemble = float(eval_cfg.get("temporal_ensemble", 0.0))
        self._controller: ChunkController | None = None

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], device: str | torch.device = "cpu"
    ) -> Policy:
        """Load a checkpoint, a ``latest`` pointer or a run directory (see :func:`load_policy`)."""
        return load_policy(path, device=device)

    # ------------------------------------------------------------------ closed loop
    def reset(self, envs: Sequence[int] | None = None) -> None:
        """Start new episodes: forget history and queued actions (of ``envs`` only, when given)."""
        if self._controller is not None:
            self._controller.reset(envs)

    def _control(self, num_envs: int) -> ChunkController:
        if self._controller is None or self._controller.num_envs != num_envs:
            self._controller = ChunkController(
                self,
                num_envs,
                replan_every=int(self.replan_every or 4),
                temporal_ensemble=float(self.temporal_ensemble or 0.0),
            )
        return self._controller

    def select_action(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """The action for one environment's observation, exactly as the environment takes it.

        ``obs`` is what ``env.reset()``/``env.step()`` returned (``rgb_a``,
        ``rgb_b`` ``(H, W, 3)`` uint8, ``q_a``, ``q_b`` ``(N,)``, ``instruction``);
        the result holds ``action_a``, ``action_b`` float32 ``(N,)`` and ``grip_a``,
        ``grip_b`` float32 0/1. The observation history, the action chunk and its
        queue (or temporal ensembling) are kept inside: call :meth:`reset` at
        each new episode.
        """
        return self._control(1).act([obs])[0]

    def select_actions(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """:meth:`select_action` for ``B`` environments stepped together (a vector environment).

        ``obs`` holds each field with a leading ``B`` axis (``instruction`` a
        sequence of B strings); the result has ``action_a`` ``(B, N)`` and
        ``grip_a`` ``(B,)`` etc. When environment ``i`` ends an episode, call
        ``reset([i])`` before passing its next observation.
        """
        instructions = obs[INSTRUCTION]
        if isinstance(instructions, str):
            raise ValueError("select_actions takes a batch; use select_action for one environment")
        b = len(instructions)
        per_env = [{k: v[i] for k, v in obs.items()} for i in range(b)]
        actions = self._control(b).act(per_env)
        return {k: np.stack([a[k] for a in actions]) for k in actions[0]}

    # ------------------------------------------------------------------ one chunk

    @property
    def obs_history(self) -> int:
        """Previous frames the policy wants with the current one (``To - 1``)."""
        return self.model.obs_history

    @property
    def action_horizon(self) -> int:
        """Steps per predicted chunk (``Ha``)."""
        return self.model.action_horizon

    @property
    def num_joints(self) -> int:
        """Joints per arm (``N``)."""
        return self.model.num_joints

    def _images(self, obs: Mapping[str, Any], key: str, batch: int) -> torch.Tensor:
        arr = np.asarray(obs[key])
        to = self.obs_history + 1
        if (
            arr.dtype != np.uint8
            or arr.ndim != 5
            or arr.shape[:2] != (batch, to)
            or arr.shape[-1] != 3
        ):
            raise ValueError(
                f"obs[{key!r}]: expected uint8 (B={batch}, To={to}, H, W, 3), "
                f"received {arr.dtype} {tuple(arr.shape)}"
            )
        x = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device)  # (B, To, H, W, 3) uint8
        if tuple(arr.shape[2:4]) != self.image_size:
            # Match the loader's resize (bilinear) when the env renders at another size.
            b, t, h, w, c = x.shape
            flat = x.reshape(b * t, h, w, c).permute(0, 3, 1, 2).float()  # (B*To, 3, H, W)
            flat = F.interpolate(flat, size=self.image_size, mode="bilinear", align_corners=False)
            x = (
                flat.permute(0, 2, 3, 1)
                .reshape(b, t, *self.image_size, c)
                .clamp_(0, 255)
                .round_()
                .to(torch.uint8)
            )
        return x

    def _joints(self, obs: Mapping[str, Any], key: str, batch: int) -> torch.Tensor:
        arr = np.asarray(obs[key], dtype=np.float32)
        want = (batch, self.obs_history + 1, self.num_joints)
        if arr.shape != want:
            raise ValueError(f"obs[{key!r}]: expected float32 {want}, received {tuple(arr.shape)}")
        return torch.from_numpy(self.normalization.normalize(key, arr)).to(self.device)

    def _as_window(self, obs: Mapping[str, Any]) -> Mapping[str, Any]:
        """``obs`` as a batch of observation windows (see :meth:`predict_chunk`)."""
        missing = [k for k in (RGB_A, RGB_B, Q_A, Q_B, INSTRUCTION) if k not in obs]
        if missing:
            raise KeyError(
                f"observation lacks {missing}: predict_chunk needs rgb_a, rgb_b, q_a, q_b and "
                "instruction (what the environment returns), plus obs_is_pad for a window of To frames"
            )
        if OBS_IS_PAD in obs:
            return obs
        single = isinstance(obs[INSTRUCTION], str)
        rgb_ndim = np.ndim(obs[RGB_A]) + (1 if single else 0)  # with a batch axis
        if rgb_ndim == 5:
            raise KeyError(
                "observation windows (B, To, H, W, 3) need obs['obs_is_pad'], bool (B, To): "
                "True for frames before the episode start"
            )
        if rgb_ndim != 4:
            raise ValueError(
                f"obs['rgb_a']: expected (H, W, 3) for one environment or (B, H, W, 3) for B, "
                f"received shape {np.shape(obs[RGB_A])}"
            )
        to = self.obs_history + 1
        out: dict[str, Any] = {}
        for key in (RGB_A, RGB_B, Q_A, Q_B):
            arr = np.asarray(obs[key])
            if single:
                arr = arr[None]  # (1, ...)
            out[key] = np.repeat(arr[:, None], to, axis=1)  # (B, To, ...)
        out[INSTRUCTION] = [obs[INSTRUCTION]] if single else list(obs[INSTRUCTION])
        b = len(out[INSTRUCTION])
        out[OBS_IS_PAD] = np.tile(np.arange(to) < to - 1, (b, 1))  # (B, To): all but the last
        return out

    def predict_chunk(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Predict one action chunk per batch element from raw observations.

        ``obs``: ``rgb_a``/``rgb_b`` uint8 ``(B, To, H, W, 3)``, ``q_a``/``q_b``
        float32 ``(B, To, N)`` raw, ``obs_is_pad`` bool ``(B, To)``, ``instruction``
        ``list[str]`` of length B. Returns ``action_a``/``action_b`` float32
        ``(B, Ha, N)`` raw joint targets and ``grip_a``/``grip_b`` float32 ``(B, Ha)``
        closed-gripper probabilities.

        A plain environment observation is accepted too: one step of one
        environment (``rgb_a`` ``(H, W, 3)``, ``q_a`` ``(N,)``, ``instruction`` a
        ``str``) or one step of B environments (``(B, H, W, 3)``, ``(B, N)``, B
        instructions), without ``obs_is_pad``. It is then the first frame of an
        episode: repeated over the window and marked as padding, as the
        dataloader pads a window that reaches before the episode start. To
        carry the real history between steps, pass the window yourself.
        """
        obs = self._as_window(obs)
        instructions = list(obs[INSTRUCTION])
        b = len(instructions)
        pad = np.asarray(obs[OBS_IS_PAD], dtype=bool)
        if pad.shape != (b, self.obs_history + 1):
            raise ValueError(
                f"obs['obs_is_pad']: expected bool {(b, self.obs_history + 1)}, received {pad.shape}"
            )
        with torch.inference_mode():
            batch = {
                RGB_A: self._images(obs, RGB_A, b),
                RGB_B: self._images(obs, RGB_B, b),
                Q_A: self._joints(obs, Q_A, b),
                Q_B: self._joints(obs, Q_B, b),
                OBS_IS_PAD: torch.from_numpy(pad).to(self.device),
                INSTRUCTION: instructions,
            }
            out = self.model.predict(batch)
            result = {
                ACTION_A: self.normalization.unnormalize(
                    ACTION_A, out[ACTION_A].float().cpu().numpy()
                ),
                ACTION_B: self.normalization.unnormalize(
                    ACTION_B, out[ACTION_B].float().cpu().numpy()
                ),
                GRIP_A: torch.sigmoid(out[GRIP_A].float()).cpu().numpy(),
                GRIP_B: torch.sigmoid(out[GRIP_B].float()).cpu().numpy(),
            }
        return result


def policy_from_checkpoint_dict(
    ckpt: Mapping[str, Any], *, device: str | torch.device = "cpu", path: Path | None = None
) -> Policy:
    """Build a :class:`Policy` from an already loaded checkpoint dict.

    What the checkpoint holds is said by the key of its description in ``extra``:
    ``policy`` (a chunk policy: BC, DAgger), ``state_policy`` (a sac or awac actor on
    state vectors: :class:`teamvla_train.models.state_actor.StatePolicy`) or
    ``pixel_policy`` (a sac or awac actor on pixels:
    :class:`teamvla_train.models.pixel_policy.PixelPolicy`).
    """
    extra = ckpt.get("extra") or {}
    state_spec = extra.get("state_policy")
    if isinstance(state_spec, Mapping):
        from teamvla_train.models.state_actor import state_policy_from_checkpoint

        return state_policy_from_checkpoint(ckpt, state_spec, device=device, path=path)
    pixel_spec = extra.get("pixel_policy")
    if isinstance(pixel_spec, Mapping):
        from teamvla_train.models.pixel_policy import pixel_policy_from_checkpoint

        return pixel_policy_from_checkpoint(ckpt, pixel_spec, device=device, path=path)
    spec = (ckpt.get("extra") or {}).get(POLICY_KEY)
    if not isinstance(spec, Mapping):
        raise SchemaError(
            "checkpoint has no 'extra.policy' section: not written by the teamvla-train trainer",
            path=path,
        )
    try:
        model_cfg = from_dict(
            ModelConfig, spec["model"], key="model", source=str(path) if path else None
        )
        model = make_model(
            model_cfg,
            obs_history=int(spec["obs_history"]),
            action_horizon=int(spec["action_horizon"]),
        )
        normalization = Affine.from_dict(spec["normalization"])
        image_size = tuple(int(s) for s in spec["image_size"])
    except (KeyError, ValueError, TypeError) as exc:
        raise SchemaError(
            f"bad policy description in the checkpoint: {exc}", path=path, field="extra.policy"
        ) from None
    state = state_dict_from_numpy(ckpt["model"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SchemaError(
            f"weights do not fit the recorded model config: {exc}", path=path, field="model"
        ) from None
    return Policy(
        model=model,
        normalization=normalization,
        image_size=(image_size[0], image_size[1]),
        device=torch.device(device),
        config=dict(ckpt.get("config") or {}),
        stats=ckpt.get("stats"),
        path=path,
    )


def load_policy(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Policy:
    """Load a trainer checkpoint (or a run directory's ``latest`` pointer) as a :class:`Policy`.

    ``path`` may be a ``.ckpt`` file, a ``latest`` pointer file, or a run
    directory / checkpoint directory holding one.
    """
    from teamvla_train.engine.checkpointing import resolve_checkpoint

    ckpt_path = resolve_checkpoint(path)
    return policy_from_checkpoint_dict(load_checkpoint(ckpt_path), device=device, path=ckpt_path)
