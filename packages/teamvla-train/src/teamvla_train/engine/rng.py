"""Every random stream of a training process, captured into and restored from a checkpoint.

Python's ``random``, numpy's global generator and torch's CPU (and CUDA)
generators: restoring them makes a resumed run draw exactly what an
uninterrupted run would have drawn.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and every CUDA device) generator states, checkpoint-ready."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": version,
            "state": np.asarray(py_state, dtype=np.uint64),
            "gauss": gauss,
        },
        "numpy": {
            "name": np_name,
            "keys": np_keys,
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (arrays as loaded by ``load_checkpoint``)."""
    py = state["python"]
    random.setstate(
        (int(py["version"]), tuple(int(x) for x in np.asarray(py["state"])), py["gauss"])
    )
    nps = state["numpy"]
    np.random.set_state(
        (
            nps["name"],
            np.asarray(nps["keys"], dtype=np.uint32),
            nps["pos"],
            nps["has_gauss"],
            nps["gauss"],
        )
    )
    torch.set_rng_state(torch.from_numpy(np.array(state["torch"], dtype=np.uint8)))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [torch.from_numpy(np.array(s, dtype=np.uint8)) for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
