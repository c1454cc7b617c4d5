"""The format documents' reader snippets actually read the files this package writes."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from schema_testlib import REPO_ROOT
from teamvla_schema import load_checkpoint, save_checkpoint

DOCS = REPO_ROOT / "docs"


def python_block_after(doc: Path, heading: str) -> str:
    text = doc.read_text(encoding="utf-8")
    start = text.index(heading)
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no python block after {heading!r} in {doc.name}"
    return match.group(1)


def same(a: Any, b: Any) -> bool:
    if isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    if isinstance(b, dict):
        return isinstance(a, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in b)
    if isinstance(b, list | tuple):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and a == b


def test_numpy_only_checkpoint_reader_from_the_docs(tmp_path: Path) -> None:
    code = python_block_after(DOCS / "checkpoint-format.md", "### With numpy alone")
    path = save_checkpoint(
        tmp_path / "c.ckpt",
        model={
            "w": np.arange(6, dtype=np.float32).reshape(2, 3),
            "bf": np.ones(3, ml_dtypes.bfloat16),
        },
        optimizer={
            "state": {0: {"exp_avg": np.zeros(2)}},
            "param_groups": [{"betas": (0.9, 0.999)}],
        },
        training_state={"nan": float("nan"), "b": b"\x00\x01", "big": 2**100, "t": (1, None)},
        extra={"__odd": 1},
    )
    namespace: dict[str, Any] = {"path": str(path)}
    exec(compile(code, "checkpoint-format.md", "exec"), namespace)
    got = namespace["checkpoint"]
    want = load_checkpoint(path)
    want.pop("format_version")
    # the doc reader keeps bfloat16 as raw uint16 bits
    bf = got["model"].pop("bf")
    assert bf.dtype == np.uint16 and bf.tobytes() == want["model"].pop("bf").tobytes()
    assert same(got, want)


def test_docs_name_every_required_field_and_dtype_code() -> None:
    from teamvla_schema import REQUIRED_FIELDS
    from teamvla_schema.checkpoint import _DTYPES, SECTIONS

    episode_doc = (DOCS / "episode-format.md").read_text(encoding="utf-8")
    for name in REQUIRED_FIELDS:
        assert f"`{name}`" in episode_doc, name
    checkpoint_doc = (DOCS / "checkpoint-format.md").read_text(encoding="utf-8")
    for code in _DTYPES:
        assert f"`{code}`" in checkpoint_doc, code
    for section in SECTIONS:
        assert f"`{section}`" in checkpoint_doc, section
