"""Hostile-input tests reuse the helper modules of tests/schema and tests/data.

pytest puts only this folder on ``sys.path`` (no ``__init__.py``), so the two
helper folders are added here; their module names (``schema_testlib``,
``data_testlib``) are unique, so nothing can clash.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _folder in ("schema", "data"):
    _path = str(_TESTS / _folder)
    if _path not in sys.path:
        sys.path.append(_path)
