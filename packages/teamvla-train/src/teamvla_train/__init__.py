"""teamvla-train: bimanual VLA policies, the trainer and closed-loop evaluation.

``from teamvla_train import Policy`` is cheap to write but imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from teamvla_train.policy import Policy

__all__ = ["Policy", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import teamvla_train` (the CLI's entry points, version queries) stays torch-free.
    if name == "Policy":
        from teamvla_train.policy import Policy

        return Policy
    raise AttributeError(f"module 'teamvla_train' has no attribute {name!r}")
