"""Affine normalisation of joint positions and joint targets, independent of the loader's classes.

Whatever statistics the dataset used (mean/std or min/max), normalising a
field is ``(raw - offset) / scale``. The trainer converts the dataset's
statistics into this form once, gives it to the model (for the residual to
the current joints) and stores it in the checkpoint, so inference needs
neither teamvla-data's statistics classes nor the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Fields the policy normalises (grippers stay in [0, 1]).
FIELDS = ("q_a", "q_b", "action_a", "action_b")
_MIN_SCALE = 1e-6  # a constant joint must not blow up to inf


@dataclass(frozen=True)
class Affine:
    """``normalised = (raw - offset) / scale`` per field; float32 arrays of shape ``(N,)``."""

    offset: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]

    @classmethod
    def identity(cls, num_joints: int) -> Affine:
        """No normalisation."""
        zeros, ones = np.zeros(num_joints, np.float32), np.ones(num_joints, np.float32)
        return cls({k: zeros for k in FIELDS}, {k: ones for k in FIELDS})

    def normalize(self, key: str, raw: np.ndarray) -> np.ndarray:
        """Raw values of ``key`` (last axis = joints) to normalised float32."""
        return ((np.asarray(raw, np.float32) - self.offset[key]) / self.scale[key]).astype(
            np.float32
        )

    def unnormalize(self, key: str, value: np.ndarray) -> np.ndarray:
        """Normalised values of ``key`` back to raw float32."""
        return (np.asarray(value, np.float32) * self.scale[key] + self.offset[key]).astype(
            np.float32
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of arrays, for a checkpoint."""
        return {k: {"offset": self.offset[k], "scale": self.scale[k]} for k in FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Affine:
        """Inverse of :meth:`to_dict`."""
        try:
            offset = {k: np.asarray(data[k]["offset"], np.float32) for k in FIELDS}
            scale = {k: np.asarray(data[k]["scale"], np.float32) for k in FIELDS}
        except (KeyError, TypeError) as exc:
            raise ValueError(
                f"normalisation table lacks {exc}; expected keys {list(FIELDS)}"
            ) from None
        return cls(offset, scale)

    def model_buffers(self) -> dict[str, np.ndarray]:
        """The ``(2, N)`` arrays :meth:`BimanualPolicy.set_normalization` takes."""
        return {
            "q_offset": np.stack([self.offset["q_a"], self.offset["q_b"]]),
            "q_scale": np.stack([self.scale["q_a"], self.scale["q_b"]]),
            "action_offset": np.stack([self.offset["action_a"], self.offset["action_b"]]),
            "action_scale": np.stack([self.scale["action_a"], self.scale["action_b"]]),
        }


def affine_from_moments(
    *,
    mode: str,
    num_joints: int,
    fields: Mapping[str, Mapping[str, Any]],
) -> Affine:
    """Build an :class:`Affine` from per-field statistics.

    ``fields[key]`` holds ``mean``/``std`` (mode ``mean_std``) or ``min``/``max``
    (mode ``min_max``, mapped to ``[-1, 1]``). Missing fields stay identity (the
    loader did not normalise them either).
    """
    base = Affine.identity(num_joints)
    offset, scale = dict(base.offset), dict(base.scale)
    for key in FIELDS:
        st = fields.get(key)
        if st is None:
            continue
        if mode == "mean_std":
            offset[key] = np.asarray(st["mean"], np.float32).reshape(num_joints)
            scale[key] = np.maximum(
                np.asarray(st["std"], np.float32).reshape(num_joints), _MIN_SCALE
            )
        elif mode == "min_max":
            lo = np.asarray(st["min"], np.float32).reshape(num_joints)
            hi = np.asarray(st["max"], np.float32).reshape(num_joints)
            offset[key] = (hi + lo) / 2
            scale[key] = np.maximum((hi - lo) / 2, _MIN_SCALE)
        else:
            raise ValueError(f"unknown normalisation mode {mode!r}")
    return Affine(offset, scale)
