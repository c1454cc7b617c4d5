"""Shared fixtures of the converter tests: tiny episode roots and the checked-in datasets."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from interop_testlib import write_episodes

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "interop"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_interop_fixtures", REPO / "scripts" / "make_interop_fixtures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def fixture_script() -> ModuleType:
    """scripts/make_interop_fixtures.py, whose fixture_episodes() says what the fixtures hold."""
    return _load_script()


@pytest.fixture(scope="session")
def plain_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four episodes with the required fields only (do not modify)."""
    root = tmp_path_factory.mktemp("plain") / "episodes"
    write_episodes(root)
    return root


@pytest.fixture(scope="session")
def rich_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four episodes with phase, depth, reward, done and jittered timestamps (do not modify)."""
    root = tmp_path_factory.mktemp("rich") / "episodes"
    write_episodes(root, extras=True, timestamps=True)
    return root
