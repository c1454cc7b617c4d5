"""The one place teamvla-data imports torch (an optional extra).

Everything except :func:`teamvla_data.make_dataloader` works without torch.
Modules that need torch call :func:`require_torch` inside functions; modules
that only *accept* torch tensors use :func:`is_tensor`, which never imports it.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

INSTALL_HINT = "install teamvla-data[torch] (e.g. `pip install 'teamvla-data[torch]'`)"


def require_torch(feature: str = "this feature") -> ModuleType:
    """Import and return torch, or raise an ImportError that names the extra to install."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            f"{feature} needs PyTorch, which is not installed: {INSTALL_HINT}"
        ) from exc
    return torch


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor (False without importing torch when it isn't loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)
