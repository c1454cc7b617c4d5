"""Every torch-free module imports on its own, in a fresh interpreter, without importing torch.

Track A installs ``teamvla-schema`` alone and data-only users install ``teamvla-data``
without its torch extra, so importing any of their modules must not pull torch in
(torch may well be installed here: the check is that it is *not imported*).

Modules are found on disk (like ``pkgutil.walk_packages``, but without importing
sub-packages in the test process) and each is imported in its own subprocess, so
one module's imports cannot hide another's.
"""

from __future__ import annotations

import importlib.util
import pkgutil
import subprocess
import sys

import pytest

#: Modules of teamvla-data that exist to use torch (they import it at module level and are
#: only reached through ``teamvla_data.make_dataloader``, which imports them lazily);
#: skipped along with any module whose name contains "torch" (``teamvla_data._torch``).
#: Keep this list short: a module that merely accepts tensors should import torch lazily.
TORCH_MODULES: frozenset[str] = frozenset(
    {
        "teamvla_data.loader",  # make_dataloader's DataLoader plumbing
        "teamvla_data._shared_batches",  # shared-memory batch slots for DataLoader workers
    }
)

#: Packages whose every module must import without torch.
TORCH_FREE_PACKAGES = ("teamvla_schema", "teamvla_data")


def _walk(package: str) -> list[str]:
    """``package`` and all its modules and sub-packages, found without importing them."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        return []
    found = [package]
    for info in pkgutil.iter_modules(spec.submodule_search_locations, prefix=f"{package}."):
        if info.ispkg:
            found.extend(_walk(info.name))
        else:
            found.append(info.name)
    return found


def _is_torch_module(name: str) -> bool:
    return "torch" in name.rsplit(".", 1)[-1] or name in TORCH_MODULES


MODULES = sorted(
    m for package in TORCH_FREE_PACKAGES for m in _walk(package) if not _is_torch_module(m)
)

CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
if loaded:
    sys.exit("importing " + sys.argv[1] + " imported torch")
"""


def test_schema_modules_were_found() -> None:
    assert "teamvla_schema" in MODULES
    assert {"teamvla_schema.episode", "teamvla_schema.checkpoint", "teamvla_schema.cli"} <= set(
        MODULES
    )


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_without_torch(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHECK, module], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_schema_works_when_torch_cannot_be_imported() -> None:
    """With torch blocked outright, the schema package and its command still load."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import teamvla_schema, teamvla_schema.cli, teamvla_schema.checkpoint, teamvla_schema.episode\n"
        "from teamvla_schema import EpisodeWriter, load_checkpoint, save_checkpoint\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
