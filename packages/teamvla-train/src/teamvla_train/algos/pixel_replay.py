"""A bounded replay buffer of pixel transitions, stored compactly, and DrQ's random shift.

:class:`PixelReplayBuffer` is the pixel counterpart of
:class:`teamvla_train.algos.replay.ReplayBuffer` (same ring, counters,
``add_batch``/``sample``/``state_dict`` and the same use by ``sample_mixed``).
A transition ``(obs, action, reward, next_obs, done, k)`` of pixel observations
(:mod:`teamvla_train.models.pixel_nets`) is stored as

==========================  ========================  ======================================
field                       dtype / shape per row     bytes per transition (H = W = S, N = 7)
==========================  ========================  ======================================
``rgb_a``, ``rgb_b``        uint8 ``(H, W, 3)`` each  ``2 * 3 S^2``
``next_rgb_a``/``_b``       uint8 ``(H, W, 3)`` each  ``2 * 3 S^2``
``proprio``/``next_...``    float32 ``(2N + 2,)``     ``2 * 4 (2N + 2)`` = 128
``instruction``             int32 id                  4 (the strings once, in ``instructions``)
``action``                  float32 ``(2N + 2,)``     ``4 (2N + 2)`` = 64
``reward``, ``nsteps``      float32                   8
``done``                    bool                      1
==========================  ========================  ======================================

so ``12 S^2 + 205`` bytes: 49,357 at 64 px, 110,797 at 96 px (:meth:`bytes_per_transition`).
Images are never held as floats here: ``sample`` returns uint8 rows and the
encoder converts them on the device. The arrays are allocated at ``capacity``
rows up front (untouched pages cost no memory until written). ``next_obs``
images are a second copy of a later frame (simple, and it keeps every row
self-contained when the ring overwrites old rows): half the bytes go there.

:func:`random_shift` is DrQ's augmentation (Kostrikov, Yarats and Fergus, 2020):
pad each image by ``pad`` edge pixels and crop a random window of the original
size, i.e. shift it by ``-pad .. pad`` pixels in each direction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from teamvla_data.batch import INSTRUCTION, RGB_A, RGB_B

from teamvla_train.algos.replay import ACTION, DONE, NSTEPS, REWARD
from teamvla_train.algos.ring import RingArrays
from teamvla_train.models.pixel_nets import PIXEL_IMAGE_KEYS, PROPRIO

#: Batch keys of the next observation's fields (``next_`` + the observation key).
NEXT = "next_"
#: Array fields of the ring (the instruction strings live in ``instructions``).
PIXEL_FIELDS = (
    RGB_A, RGB_B, PROPRIO, INSTRUCTION, NEXT + RGB_A, NEXT + RGB_B, NEXT + PROPRIO,
    ACTION, REWARD, DONE, NSTEPS,
)  # fmt: skip
#: Image fields of a sampled batch (what :func:`random_shift` augments).
BATCH_IMAGE_KEYS = (*PIXEL_IMAGE_KEYS, *(NEXT + k for k in PIXEL_IMAGE_KEYS))


class PixelReplayBuffer(RingArrays):
    """A ring of at most ``capacity`` pixel transitions (see the module docstring)."""

    def __init__(
        self, *, capacity: int, image_size: tuple[int, int], proprio_dim: int, action_dim: int
    ) -> None:
        h, w = int(image_size[0]), int(image_size[1])
        shapes: dict[str, tuple[tuple[int, ...], Any]] = {
            RGB_A: ((h, w, 3), np.uint8), RGB_B: ((h, w, 3), np.uint8),
            PROPRIO: ((proprio_dim,), np.float32), INSTRUCTION: ((), np.int32),
            ACTION: ((action_dim,), np.float32), REWARD: ((), np.float32),
            DONE: ((), bool), NSTEPS: ((), np.float32),
        }  # fmt: skip
        for key in (*PIXEL_IMAGE_KEYS, PROPRIO):
            shapes[NEXT + key] = shapes[key]
        super().__init__(capacity, shapes)
        self.instructions: list[str] = []  # id -> text
        self._ids: dict[str, int] = {}

    @property
    def bytes_per_transition(self) -> int:
        """Bytes one stored transition takes (every field of one row)."""
        return int(sum(a[:1].nbytes for a in self.arrays.values()))

    def _instruction_ids(self, texts: Any) -> np.ndarray:
        out = np.empty(len(texts), np.int32)
        for i, text in enumerate(texts):
            key = str(text)
            if key not in self._ids:
                self._ids[key] = len(self.instructions)
                self.instructions.append(key)
            out[i] = self._ids[key]
        return out

    def add_batch(
        self, *, obs: Mapping[str, Any], action: np.ndarray, reward: np.ndarray,
        next_obs: Mapping[str, Any], done: np.ndarray, nsteps: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """Append ``B`` transitions; ``obs``/``next_obs`` are batched pixel observations (``(B, ...)``)."""
        n = len(reward)
        values: dict[str, Any] = {
            ACTION: action, REWARD: reward, DONE: done,
            NSTEPS: np.ones(n, np.float32) if nsteps is None else nsteps,
            INSTRUCTION: self._instruction_ids(obs[INSTRUCTION]),
        }  # fmt: skip
        for key in (*PIXEL_IMAGE_KEYS, PROPRIO):
            values[key], values[NEXT + key] = obs[key], next_obs[key]
        self.write(values)

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` transitions drawn uniformly with replacement: uint8 images, the instruction texts."""
        out = self.draw(n, rng)
        out[INSTRUCTION] = np.array([self.instructions[i] for i in out[INSTRUCTION]], dtype=object)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Counters, the instruction texts and the filled rows (uint8 images) for a checkpoint."""
        return {**super().state_dict(), "instructions": list(self.instructions)}

    def load_state_dict(
        self, state: Mapping[str, Any], *, defaults: Mapping[str, float] | None = None
    ) -> None:
        """Restore :meth:`state_dict`; the capacity and the row shapes must match this buffer's."""
        super().load_state_dict(state, defaults=defaults)
        self.instructions = [str(t) for t in state["instructions"]]
        self._ids = {t: i for i, t in enumerate(self.instructions)}


def random_shift(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Shift each image of ``images (B, H, W, C)`` uint8 by ``-pad .. pad`` pixels in y and x,
    drawn per image, repeating the edge pixels (= edge-pad by ``pad``, random crop to ``(H, W)``)."""
    if pad <= 0:
        return images
    b, h, w = images.shape[:3]
    dy = np.asarray(rng.integers(-pad, pad + 1, size=b))  # (B,)
    dx = np.asarray(rng.integers(-pad, pad + 1, size=b))  # (B,)
    edges = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    padded = np.pad(images, edges, mode="edge")  # (B, H + 2 pad, W + 2 pad, C)
    out = np.empty_like(images)  # (B, H, W, C)
    for i in range(b):
        y, x = pad + int(dy[i]), pad + int(dx[i])
        out[i] = padded[i, y : y + h, x : x + w]
    return out


def augment_batch(batch: Mapping[str, np.ndarray], pad: int, rng: np.random.Generator) -> dict[str, np.ndarray]:  # fmt: skip
    """:func:`random_shift` on every image field of a sampled batch (each image its own shift)."""
    out = dict(batch)
    for key in BATCH_IMAGE_KEYS:
        out[key] = random_shift(np.asarray(batch[key]), pad, rng)
    return out
