"""The training engine: device and precision, distributed runs, the loop, metrics, checkpoints, resume.

``from teamvla_train.engine import train`` is the Python entry point behind
``teamvla train``; the algorithm it runs is ``trainer.algo`` (see
:mod:`teamvla_train.algos`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from teamvla_train.engine.loop import TrainResult, train

__all__ = ["TrainResult", "train"]


def __getattr__(name: str) -> Any:
    # Lazy: the submodules (checkpoint names, metrics files) are usable without building the loop.
    if name in __all__:
        from teamvla_train.engine import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'teamvla_train.engine' has no attribute {name!r}")
