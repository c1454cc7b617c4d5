"""The field map between TeamVLA episodes, LeRobot v3 datasets and robomimic HDF5 files.

Everything here is plain data and numpy; docs/interop.md shows the same
mapping as a table. Three kinds of rules:

* **Keys.** A TeamVLA field corresponds to one key of the other format
  (:data:`LEROBOT_KEYS`, :data:`ROBOMIMIC_KEYS`); ``--map THEIR_KEY=OUR_FIELD``
  (:func:`parse_map`) overrides or adds pairs, in both directions.
* **Flat vectors.** LeRobot's ``observation.state`` / ``action`` and
  robomimic's ``actions`` hold both arms in one vector. A :class:`Layout`
  (``"q_a:6,grip_state_a:1,q_b:6,grip_state_b:1"``) says which slice is which
  field; the default is ALOHA's (:func:`aloha_layout`): arm A joints,
  gripper A, arm B joints, gripper B.
* **Everything else** becomes an extra field named by :func:`extra_field_name`
  and remembers its original key in the episode's user metadata, so that a
  later export writes it back under the same key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from teamvla_schema.errors import SchemaError
from teamvla_schema.fields import REQUIRED_FIELDS

#: Our fields that live in flat vectors, not under a key of their own.
STATE, ACTION = "state", "action"
#: Our field holding a gripper's measured opening (not in the schema; an extra field).
GRIP_STATE = ("grip_state_a", "grip_state_b")

#: TeamVLA field -> LeRobot feature key (besides the state/action vectors).
LEROBOT_KEYS: dict[str, str] = {
    "rgb_a": "observation.images.rgb_a",
    "rgb_b": "observation.images.rgb_b",
    "success": "next.success",
    "reward": "next.reward",
    "done": "next.done",
    "timestamp": "timestamp",
    STATE: "observation.state",
    ACTION: "action",
}
#: Camera keys tried when a LeRobot dataset has none of ours (ALOHA's wrist cameras).
LEROBOT_CAMERA_FALLBACK: dict[str, tuple[str, ...]] = {
    "rgb_a": ("observation.images.cam_left_wrist",),
    "rgb_b": ("observation.images.cam_right_wrist",),
}
#: LeRobot columns derived from the episode layout: never stored as fields.
LEROBOT_DERIVED = ("frame_index", "episode_index", "index", "task_index")
#: Exact float64 copy of our timestamps when float32 cannot hold them.
LEROBOT_EXACT_TIMESTAMP = "teamvla.timestamp"

#: TeamVLA field -> robomimic dataset path inside ``data/demo_<i>``.
ROBOMIMIC_KEYS: dict[str, str] = {
    "rgb_a": "obs/camera_a_image",
    "rgb_b": "obs/camera_b_image",
    "q_a": "obs/robot0_joint_pos",
    "q_b": "obs/robot1_joint_pos",
    "reward": "rewards",
    "done": "dones",
    "states": "states",
    ACTION: "actions",
}
#: Camera paths tried when a robomimic file has none of ours (robosuite's two-arm wrist cameras).
ROBOMIMIC_CAMERA_FALLBACK: dict[str, tuple[str, ...]] = {
    "rgb_a": ("obs/robot0_eye_in_hand_image",),
    "rgb_b": ("obs/robot1_eye_in_hand_image",),
}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SEGMENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(\d+)\s*")


@dataclass(frozen=True)
class Layout:
    """Which slice of a flat vector is which field: ``((field, width), ...)`` in order.

    A width-1 segment is a scalar field (per-step shape ``()``), a wider one a
    vector field (shape ``(width,)``).
    """

    segments: tuple[tuple[str, int], ...]

    @property
    def width(self) -> int:
        """The vector's length."""
        return sum(w for _, w in self.segments)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields, in vector order."""
        return tuple(name for name, _ in self.segments)

    def __str__(self) -> str:
        return ",".join(f"{name}:{w}" for name, w in self.segments)

    def split(self, vectors: np.ndarray, where: str = "") -> dict[str, np.ndarray]:
        """``(T, width)`` array -> ``{field: (T,) or (T, w)}`` (views, no copy)."""
        if vectors.ndim != 2 or vectors.shape[1] != self.width:
            raise SchemaError(
                f"expected a (steps, {self.width}) array for layout {self}, received shape "
                f"{list(vectors.shape)}",
                field=where or None,
            )
        out, start = {}, 0
        for name, w in self.segments:
            part = vectors[:, start : start + w]
            out[name] = part[:, 0] if w == 1 else part
            start += w
        return out

    def join(self, columns: Mapping[str, np.ndarray], where: str = "") -> np.ndarray:
        """``{field: (T,) or (T, w)}`` -> one ``(T, width)`` array (the inverse of :meth:`split`)."""
        parts = []
        for name, w in self.segments:
            if name not in columns:
                raise SchemaError(
                    f"layout {self} needs field {name!r}, which the episode does not have "
                    f"(fields: {sorted(columns)})",
                    field=where or None,
                )
            col = np.asarray(columns[name])
            col = col.reshape(len(col), -1)
            if col.shape[1] != w:
                raise SchemaError(
                    f"layout {self} gives {name!r} width {w}, the episode's is {col.shape[1]}",
                    field=where or None,
                )
            parts.append(col)
        dtypes = {p.dtype for p in parts}
        if len(dtypes) > 1:
            raise SchemaError(
                f"layout {self} joins fields of different dtypes {sorted(map(str, dtypes))}",
                field=where or None,
            )
        return np.concatenate(parts, axis=1)


def aloha_layout(kind: str, width: int, where: str = "") -> Layout:
    """ALOHA's two-arm layout of a ``width``-long state or action vector.

    ``[arm A joints (N), gripper A, arm B joints (N), gripper B]`` with
    ``N = width / 2 - 1``: state -> ``q_a, grip_state_a, q_b, grip_state_b``;
    action -> ``action_a, grip_a, action_b, grip_b``.
    """
    if width < 4 or width % 2:
        raise SchemaError(
            f"the default two-arm (ALOHA) layout needs an even {kind} width of at least 4 "
            f"(arm A joints, gripper A, arm B joints, gripper B), the dataset's is {width}; "
            f"pass --{kind}-layout, e.g. 'q_a:3,q_b:3'",
            field=where or None,
        )
    n = width // 2 - 1
    if kind == STATE:
        return Layout((("q_a", n), ("grip_state_a", 1), ("q_b", n), ("grip_state_b", 1)))
    return Layout((("action_a", n), ("grip_a", 1), ("action_b", n), ("grip_b", 1)))


def parse_layout(spec: str | Layout, kind: str, width: int | None = None) -> Layout:
    """Parse ``"field:width,field:width,..."``; ``"aloha"`` needs the vector's ``width``."""
    if isinstance(spec, Layout):
        layout = spec
    elif spec.strip().lower() == "aloha":
        if width is None:
            raise ValueError(f"--{kind}-layout aloha needs the vector width")
        return aloha_layout(kind, width)
    else:
        segments = []
        for part in spec.split(","):
            m = _SEGMENT.fullmatch(part)
            if not m or int(m.group(2)) < 1:
                raise ValueError(
                    f"bad --{kind}-layout segment {part!r} in {spec!r}: expected FIELD:WIDTH "
                    "(an identifier and a positive integer), e.g. 'q_a:6,grip_state_a:1,q_b:6,grip_state_b:1'"
                )
            segments.append((m.group(1), int(m.group(2))))
        names = [n for n, _ in segments]
        if len(set(names)) != len(names):
            raise ValueError(f"--{kind}-layout {spec!r} names a field twice")
        layout = Layout(tuple(segments))
    if width is not None and layout.width != width:
        raise SchemaError(
            f"--{kind}-layout {layout} covers {layout.width} values, the dataset's {kind} vector "
            f"has {width}",
            field=kind,
        )
    return layout


def default_state_layout(fields: Iterable[str], n: int) -> Layout:
    """The state layout an export uses: ALOHA's when both gripper states exist, else joints only."""
    have = set(fields)
    if all(g in have for g in GRIP_STATE):
        return aloha_layout(STATE, 2 * n + 2)
    return Layout((("q_a", n), ("q_b", n)))


def default_action_layout(n: int) -> Layout:
    """The action layout an export uses: ALOHA's."""
    return aloha_layout(ACTION, 2 * n + 2)


def parse_map(pairs: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["THEIR_KEY=OUR_FIELD", ...]`` -> ``{their_key: our_field}``.

    ``OUR_FIELD`` is a field name (an identifier) or ``state`` / ``action`` for
    the flat vectors. Each key and each field may appear once.
    """
    if not pairs:
        return {}
    items = list(pairs.items()) if isinstance(pairs, Mapping) else []
    if not isinstance(pairs, Mapping):
        for pair in pairs:
            key, sep, field = pair.partition("=")
            if not sep or not key.strip() or not field.strip():
                raise ValueError(
                    f"bad --map {pair!r}: expected THEIR_KEY=OUR_FIELD, e.g. observation.images.top=rgb_a"
                )
            items.append((key.strip(), field.strip()))
    out: dict[str, str] = {}
    for key, field in items:
        if not _IDENT.fullmatch(field):
            raise ValueError(
                f"bad --map {key}={field}: {field!r} is not a field name (an identifier)"
            )
        if key in out:
            raise ValueError(f"--map names {key!r} twice")
        if field in out.values():
            raise ValueError(f"--map maps two keys to field {field!r}")
        out[key] = field
    return out


def resolve_keys(
    defaults: Mapping[str, str],
    renames: Mapping[str, str],
    remembered: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``{our_field: their_key}``: the defaults, then keys remembered from an import, then ``--map``."""
    keys = dict(defaults)
    for field, key in (remembered or {}).items():
        keys[field] = key
    for key, field in renames.items():
        for other in [f for f, k in keys.items() if k == key and f != field]:
            del keys[other]
        keys[field] = key
    return keys


def slugify(text: str, fallback: str = "imported") -> str:
    """A task slug (``[a-z0-9][a-z0-9_-]{0,63}``) made from free text."""
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_")[:64].strip("-_")
    return slug or fallback


def extra_field_name(key: str, taken: Iterable[str]) -> str:
    """An identifier for another format's ``key`` (``observation.effort`` -> ``effort``), unused so far."""
    base = key
    for prefix in ("observation.images.", "observation.", "next.", "obs/"):
        if base.startswith(prefix):
            base = base[len(prefix) :]
            break
    base = re.sub(r"\W+", "_", base).strip("_") or "field"
    if not base[0].isalpha() and base[0] != "_":
        base = f"f_{base}"
    used = set(taken) | set(REQUIRED_FIELDS) | {STATE, ACTION}
    name, i = base, 1
    while name in used:
        name, i = f"{base}_{i}", i + 1
    return name
