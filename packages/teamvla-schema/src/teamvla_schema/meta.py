"""Episode metadata."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from teamvla_schema.errors import SchemaError

#: Version of the episode file layout this package writes (see docs/episode-format.md).
EPISODE_FILE_VERSION = 1

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
EPISODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class EpisodeMeta:
    """What an episode is about, stored as JSON inside its file.

    ``num_steps`` is derived when the episode is finalised; ``user`` holds any
    free-form JSON-serialisable metadata (seed, simulator version, operator...).
    ``fps`` is the recording rate in steps per second, when known (``None``:
    unknown; files written without it stay valid and byte-identical).
    """

    task: str
    episode_id: str
    success: bool = False
    num_steps: int = 0
    version: int = EPISODE_FILE_VERSION
    user: dict[str, Any] = field(default_factory=dict)
    fps: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``fps`` only when it is known)."""
        out = dataclasses.asdict(self)
        if out["fps"] is None:
            del out["fps"]
        return out


_META_KEYS = {f.name for f in dataclasses.fields(EpisodeMeta)}


def validate_episode_meta(meta: Any, *, require_id: bool = True) -> EpisodeMeta:
    """Coerce ``meta`` (an :class:`EpisodeMeta` or a mapping) or raise :class:`SchemaError`.

    With ``require_id=False`` a missing ``episode_id`` becomes ``""`` (the
    writer fills it in).
    """
    if isinstance(meta, EpisodeMeta):
        meta = meta.to_dict()
    if not isinstance(meta, Mapping):
        raise SchemaError(
            f"episode metadata must be a mapping, received {type(meta).__name__}", field="meta"
        )
    unknown = sorted(set(meta) - _META_KEYS, key=str)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), sorted(_META_KEYS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SchemaError(
            f"unknown metadata key(s) {unknown}{hint}; known keys are {sorted(_META_KEYS)}; "
            "put free-form metadata under 'user'",
            field=str(unknown[0]),
        )
    task = meta.get("task")
    if not isinstance(task, str) or not SLUG_RE.fullmatch(task):
        raise SchemaError(
            f"expected a task slug (lower-case letters, digits, '_' or '-'), received {task!r}",
            field="task",
        )
    episode_id = meta.get("episode_id", None if require_id else "")
    if not isinstance(episode_id, str) or (
        (require_id or episode_id) and not EPISODE_ID_RE.fullmatch(episode_id)
    ):
        raise SchemaError(
            "expected an episode id of letters, digits, '_', '-' or '.' (at most 128, usable as a file name), "
            f"received {episode_id!r}",
            field="episode_id",
        )
    success = meta.get("success", False)
    if not isinstance(success, bool):
        raise SchemaError(f"expected bool, received {success!r}", field="success")
    num_steps = meta.get("num_steps", 0)
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise SchemaError(f"expected a non-negative int, received {num_steps!r}", field="num_steps")
    version = meta.get("version", EPISODE_FILE_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SchemaError(f"expected a positive int, received {version!r}", field="version")
    user = meta.get("user", {})
    if not isinstance(user, Mapping):
        raise SchemaError(f"expected a mapping, received {type(user).__name__}", field="user")
    try:
        user = json.loads(json.dumps(dict(user), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"user metadata must be JSON-serialisable: {exc}", field="user") from None
    fps = meta.get("fps")
    if fps is not None:
        if (
            isinstance(fps, bool)
            or not isinstance(fps, int | float)
            or not math.isfinite(fps)
            or fps <= 0
        ):
            raise SchemaError(
                f"expected a finite recording rate > 0 (steps per second) or null, received {fps!r}",
                field="fps",
            )
        fps = float(fps)
    return EpisodeMeta(task, episode_id, success, num_steps, version, user, fps)
