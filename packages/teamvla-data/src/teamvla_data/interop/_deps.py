"""The one place the converters import their optional dependencies.

``teamvla-data[lerobot]`` brings pyarrow (parquet), PyAV (MP4 video) and Pillow
(PNG); ``teamvla-data[robomimic]`` brings h5py. Modules call :func:`require`
inside functions, so importing :mod:`teamvla_data.interop` (and registering
``teamvla convert``) never needs them.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

#: import name -> (distribution, extra that installs it)
PACKAGES: dict[str, tuple[str, str]] = {
    "pyarrow": ("pyarrow", "lerobot"),
    "pyarrow.parquet": ("pyarrow", "lerobot"),
    "pyarrow.compute": ("pyarrow", "lerobot"),
    "av": ("av (PyAV)", "lerobot"),
    "PIL.Image": ("Pillow", "lerobot"),
    "h5py": ("h5py", "robomimic"),
}


def install_hint(extra: str) -> str:
    """How to install an extra, e.g. ``install teamvla-data[lerobot] (...)``."""
    return f"install teamvla-data[{extra}] (e.g. `pip install 'teamvla-data[{extra}]'`)"


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise a one-line ImportError naming the extra to install."""
    dist, extra = PACKAGES[module]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{feature} needs {dist}, which is not installed: {install_hint(extra)}"
        ) from None


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False
