"""Fixtures of the teamvla-data tests (helpers live in data_testlib.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_testlib import SPECS, write_many


@pytest.fixture
def episode_root(tmp_path: Path) -> Path:
    """A root with :data:`SPECS` written in it."""
    root = tmp_path / "episodes"
    write_many(root, SPECS)
    return root
