"""Episode metadata validation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from teamvla_schema import EPISODE_FILE_VERSION, EpisodeMeta, SchemaError, validate_episode_meta


def test_valid_meta_round_trips() -> None:
    meta = validate_episode_meta(
        {
            "task": "lift",
            "episode_id": "lift-000003",
            "success": True,
            "num_steps": 4,
            "user": {"seed": 3, "sim": "v1"},
        }
    )
    assert meta == EpisodeMeta(
        "lift", "lift-000003", True, 4, EPISODE_FILE_VERSION, {"seed": 3, "sim": "v1"}
    )
    assert validate_episode_meta(meta) == meta
    assert validate_episode_meta(meta.to_dict()) == meta


@pytest.mark.parametrize(
    "task", ["Lift", "lift task", "", "-lift", "lift/../x", "x" * 65, 5, None, "lift\n"]
)
def test_bad_task_slug(task: Any) -> None:
    with pytest.raises(SchemaError) as info:
        validate_episode_meta({"task": task, "episode_id": "e1"})
    assert info.value.field == "task"
    assert "slug" in str(info.value)


@pytest.mark.parametrize("task", ["lift", "handoff", "drawer", "open_drawer-2", "a"])
def test_good_task_slug(task: str) -> None:
    assert validate_episode_meta({"task": task, "episode_id": "e1"}).task == task


@pytest.mark.parametrize(
    "episode_id", ["", "a/b", "../x", ".hidden", "x" * 129, 3, None, "a b", "e1\n"]
)
def test_bad_episode_id(episode_id: Any) -> None:
    with pytest.raises(SchemaError) as info:
        validate_episode_meta({"task": "lift", "episode_id": episode_id})
    assert info.value.field == "episode_id"


def test_episode_id_optional_for_the_writer() -> None:
    assert validate_episode_meta({"task": "lift"}, require_id=False).episode_id == ""
    with pytest.raises(SchemaError):
        validate_episode_meta({"task": "lift"})


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("sucess", "success"),
        ("taks", "task"),
        ("num_step", "num_steps"),
        ("episodeid", "episode_id"),
    ],
)
def test_unknown_key_with_hint(key: str, suggestion: str) -> None:
    with pytest.raises(SchemaError) as info:
        validate_episode_meta({"task": "lift", "episode_id": "e", key: 1})
    msg = str(info.value)
    assert info.value.field == key
    assert f"did you mean {suggestion!r}" in msg
    assert "'user'" in msg  # where free-form metadata goes


def test_unknown_non_string_key() -> None:
    with pytest.raises(SchemaError) as info:
        validate_episode_meta({"task": "lift", "episode_id": "e", 3: 1, "zzz": 2})
    assert "user" in str(info.value)


@pytest.mark.parametrize(
    "user",
    [
        {"x": object()},
        {"x": float("nan")},
        {"x": math.inf},
        {"arr": np.zeros(3)},
        {"n": np.int64(3)},
        {"b": b"bytes"},
        {"s": {1, 2}},
        {(1, 2): "tuple key"},
    ],
    ids=["object", "nan", "inf", "ndarray", "np-int", "bytes", "set", "tuple-key"],
)
def test_non_json_user_metadata(user: dict[Any, Any]) -> None:
    with pytest.raises(SchemaError) as info:
        validate_episode_meta({"task": "lift", "episode_id": "e", "user": user})
    assert info.value.field == "user"
    assert "JSON" in str(info.value)


@pytest.mark.parametrize("user", [[1, 2], "seed=3", 3])
def test_user_must_be_a_mapping(user: Any) -> None:
    with pytest.raises(SchemaError) as info:
        validate_episode_meta({"task": "lift", "episode_id": "e", "user": user})
    assert info.value.field == "user"


def test_user_metadata_is_deep_copied_json() -> None:
    user = {"nested": {"list": [1, 2.5, None, True, "x"]}, "tuple": (1, 2)}
    meta = validate_episode_meta({"task": "lift", "episode_id": "e", "user": user})
    assert meta.user == {"nested": {"list": [1, 2.5, None, True, "x"]}, "tuple": [1, 2]}
    user["nested"]["list"].append(9)
    assert meta.user["nested"]["list"] == [1, 2.5, None, True, "x"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("success", 1),
        ("success", "yes"),
        ("num_steps", -1),
        ("num_steps", 2.0),
        ("num_steps", True),
        ("version", 0),
        ("version", "1"),
        ("version", False),
    ],
)
def test_bad_scalar_meta(key: str, value: Any) -> None:
    with pytest.raises(SchemaError) as info:
        validate_episode_meta({"task": "lift", "episode_id": "e", key: value})
    assert info.value.field == key


@pytest.mark.parametrize("meta", [None, ["task", "lift"], "lift", 3])
def test_meta_must_be_a_mapping(meta: Any) -> None:
    with pytest.raises(SchemaError):
        validate_episode_meta(meta)
