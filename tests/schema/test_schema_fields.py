"""validate_step: required fields, dtypes, shapes, drift, NaN policy, conversions, extra fields."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from schema_testlib import make_step
from teamvla_schema import (
    KNOWN_FIELDS,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    EpisodeWriter,
    SchemaError,
    step_layout,
    validate_step,
)

FLOAT_VECTOR_FIELDS = ["q_a", "q_b", "action_a", "action_b"]
FLOAT_SCALAR_FIELDS = ["grip_a", "grip_b"]
IMAGE_FIELDS = ["rgb_a", "rgb_b"]
STR_FIELDS = ["instruction", "task"]


def expect_error(
    step: Any, *, field: str | None = None, step_index: int | None = None, **kw: Any
) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        validate_step(step, step_index=step_index, **kw)
    err = info.value
    if field is not None:
        assert err.field == field, str(err)
        assert repr(field) in str(err)
    if step_index is not None:
        assert err.step == step_index
        assert f"step {step_index}" in str(err)
    return err


def test_valid_step_is_normalised() -> None:
    clean = validate_step(make_step(grip_a=1, grip_b=0.5))
    assert set(clean) == set(REQUIRED_FIELDS)
    assert clean["rgb_a"].dtype == np.uint8 and clean["rgb_a"].shape == (8, 8, 3)
    assert clean["q_a"].dtype == np.float32 and clean["q_a"].shape == (7,)
    assert clean["grip_a"].dtype == np.float32 and clean["grip_a"].shape == ()
    assert float(clean["grip_b"]) == 0.5
    assert type(clean["instruction"]) is str and type(clean["success"]) is bool


def test_every_required_field_is_declared() -> None:
    assert set(REQUIRED_FIELDS) == {
        "rgb_a", "rgb_b", "q_a", "q_b", "action_a", "action_b",
        "grip_a", "grip_b", "instruction", "task", "success",
    }  # fmt: skip
    assert set(OPTIONAL_FIELDS) >= {"depth_a", "depth_b", "phase", "timestamp"}
    for spec in KNOWN_FIELDS.values():
        assert spec.description


# --------------------------------------------------------------------------- wrong dtype

WRONG_DTYPE: dict[str, list[Any]] = {
    # images: floats, bools, signed out-of-range, strings
    "rgb_a": [np.zeros((8, 8, 3), np.float32) + 0.5, np.zeros((8, 8, 3), bool), "image", None],
    "rgb_b": [np.full((8, 8, 3), -1, np.int16), np.full((8, 8, 3), 256, np.int64), {"a": 1}],
    "q_a": [np.zeros(7, bool), np.array(["0"] * 7), np.zeros(7, np.complex64), None],
    "q_b": [np.full(7, 0.1, np.float64), "0.0", b"\x00" * 28],
    "action_a": [[0.1] * 7, np.array([object()] * 7), np.zeros(7, "datetime64[s]")],
    "action_b": [np.full(7, 2**25 + 1, np.int64), [1, 2, "3", 4, 5, 6, 7]],
    "grip_a": [True, "1.0", None, 0.1, np.float64(0.3)],
    "grip_b": [np.bool_(False), [0.5], 1e300, 2**70],
    "instruction": [3, None, b"lift", np.array("lift"), ["lift"]],
    "task": [1, b"lift", np.array(["lift"])],
    "success": [1, 0, "True", None, np.array([True]), np.float32(1.0)],
}


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, v) for f, vals in WRONG_DTYPE.items() for v in vals],
    ids=lambda x: x if isinstance(x, str) and x in REQUIRED_FIELDS else type(x).__name__,
)
def test_wrong_dtype_is_refused(field: str, value: Any) -> None:
    err = expect_error(make_step(**{field: value}), field=field, step_index=5)
    assert "expected" in err.reason and "received" in err.reason


@pytest.mark.parametrize("field", sorted(REQUIRED_FIELDS))
def test_every_required_field_has_a_wrong_dtype_case(field: str) -> None:
    assert WRONG_DTYPE.get(field), f"no wrong-dtype case for {field}"


# --------------------------------------------------------------------------- wrong shape


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rgb_a", np.zeros((8, 8), np.uint8)),
        ("rgb_a", np.zeros((8, 8, 4), np.uint8)),
        ("rgb_b", np.zeros((1, 8, 8, 3), np.uint8)),
        ("rgb_b", np.zeros((8, 8, 1), np.uint8)),
        ("q_a", np.zeros((7, 1), np.float32)),
        ("q_b", np.float32(0.0)),
        ("action_a", np.zeros((1, 7), np.float32)),
        ("action_b", np.zeros((), np.float32)),
        ("grip_a", np.zeros(1, np.float32)),
        ("grip_b", np.zeros((2, 2), np.float32)),
    ],
)
def test_wrong_shape_is_refused(field: str, value: Any) -> None:
    err = expect_error(make_step(**{field: value}), field=field, step_index=0)
    assert str(value.shape) in str(err)


@pytest.mark.parametrize(
    ("field", "value", "other"),
    [
        ("rgb_b", np.zeros((8, 6, 3), np.uint8), "rgb_a"),  # W differs between cameras
        ("q_b", np.zeros(6, np.float32), "q_a"),  # N differs between arms
        ("action_a", np.zeros(8, np.float32), "q_a"),
    ],
)
def test_symbolic_dims_agree_within_a_step(field: str, value: Any, other: str) -> None:
    err = expect_error(make_step(**{field: value}), field=field, step_index=2)
    assert repr(other) in str(err)


@pytest.mark.parametrize("field", sorted(REQUIRED_FIELDS))
def test_missing_required_field(field: str) -> None:
    step = make_step()
    del step[field]
    err = expect_error(step, field=field, step_index=4)
    assert "missing" in str(err)
    assert REQUIRED_FIELDS[field].describe() in str(err)


def test_missing_fields_are_all_named() -> None:
    step = make_step()
    del step["q_b"], step["task"]
    err = expect_error(step)
    assert "q_b" in str(err) and "task" in str(err)


@pytest.mark.parametrize("value", [None, [1, 2], ("rgb_a", 1), np.zeros(3), "step", 3])
def test_non_mapping_step(value: Any) -> None:
    err = expect_error(value, step_index=9)
    assert "mapping" in str(err)


@pytest.mark.parametrize("key", ["not an identifier", "", "1abc", 3, ("a",)])
def test_field_names_must_be_identifiers(key: Any) -> None:
    step = make_step()
    step[key] = 1.0
    err = expect_error(step)
    assert "identifier" in str(err)


# --------------------------------------------------------------------------- drift across steps


@pytest.mark.parametrize(
    ("field", "value", "what"),
    [
        ("rgb_a", np.zeros((8, 6, 3), np.uint8), "W"),
        ("rgb_b", np.zeros((6, 8, 3), np.uint8), "H"),
        ("q_a", np.zeros(6, np.float32), "N"),
        ("action_b", np.zeros(9, np.float32), "N"),
    ],
)
def test_dimension_drift_mid_episode_names_field_and_step(
    tmp_path, field: str, value: Any, what: str
) -> None:
    with EpisodeWriter(tmp_path) as writer:
        writer.start_episode({"task": "lift"})
        for i in range(3):
            writer.add_step(make_step(i))
        # change every field sharing the symbol consistently, so only drift vs step 0 is wrong
        drifted = make_step(3)
        if what == "N":
            for name in ("q_a", "q_b", "action_a", "action_b"):
                drifted[name] = np.zeros(value.shape, np.float32)
        else:
            shape = value.shape
            drifted["rgb_a"] = np.zeros(shape, np.uint8)
            drifted["rgb_b"] = np.zeros(shape, np.uint8)
        with pytest.raises(SchemaError) as info:
            writer.add_step(drifted)
        err = info.value
        assert err.step == 3 and "step 3" in str(err)
        assert err.field is not None and err.field in str(err)
        assert "first step" in str(err)
        # the writer is still usable: the bad step was not appended
        assert writer.num_steps == 3
        writer.add_step(make_step(3))
        assert writer.end_episode().exists()


def test_layout_argument_enforces_same_fields_and_dtypes() -> None:
    first = validate_step(make_step(0, extra=1))
    layout = step_layout(first)
    validate_step(make_step(1, extra=2), layout=layout, step_index=1)
    expect_error(make_step(1), layout=layout, field="extra", step_index=1)  # field dropped
    expect_error(make_step(1, extra=1, more=2), layout=layout, field="more", step_index=1)  # added
    expect_error(
        make_step(1, extra=1.5), layout=layout, field="extra", step_index=1
    )  # int -> float
    expect_error(make_step(1, extra=np.int32(1)), layout=layout, field="extra", step_index=1)
    expect_error(make_step(1, extra="1"), layout=layout, field="extra", step_index=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layout_fast_path_accepts_huge_finite_values_without_warning(dtype: type) -> None:
    # Finite values whose sum overflows: valid data, so no RuntimeWarning and no refusal;
    # a NaN or inf among them is still refused by the same path.
    huge = np.full(7, np.finfo(dtype).max, dtype)
    first = validate_step(make_step(0, extra=huge))
    layout = step_layout(first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = validate_step(make_step(1, extra=huge, q_a=np.full(7, 3e38, np.float32)), layout=layout, step_index=1)  # fmt: skip
    assert np.array_equal(clean["extra"], huge) and clean["q_a"].max() == np.float32(3e38)
    bad = huge.copy()
    bad[3] = np.inf
    expect_error(make_step(1, extra=bad), layout=layout, field="extra", step_index=1)


# --------------------------------------------------------------------------- NaN / inf policy


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("field", FLOAT_VECTOR_FIELDS + FLOAT_SCALAR_FIELDS)
def test_nonfinite_refused_in_float_fields(field: str, bad: float) -> None:
    value = np.zeros((7,) if field in FLOAT_VECTOR_FIELDS else (), np.float32)
    if value.ndim:
        value[3] = bad
    else:
        value = np.float32(bad)
    err = expect_error(make_step(**{field: value}), field=field, step_index=1)
    assert "NaN/inf" in str(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_refused_in_timestamp_and_extra_floats(bad: float) -> None:
    expect_error(make_step(timestamp=np.float64(bad)), field="timestamp")
    expect_error(make_step(reward=bad), field="reward")
    expect_error(make_step(feat=np.array([0.0, bad])), field="feat")


@pytest.mark.parametrize("field", ["depth_a", "depth_b"])
def test_nonfinite_allowed_in_depth(field: str) -> None:
    depth = np.ones((8, 8), np.float32)
    depth[0, 0], depth[1, 1], depth[2, 2] = np.nan, np.inf, -np.inf
    clean = validate_step(make_step(**{field: depth}))
    assert np.array_equal(clean[field], depth, equal_nan=True)


def test_depth_must_match_image_size() -> None:
    expect_error(make_step(depth_a=np.ones((8, 6), np.float32)), field="depth_a")
    expect_error(make_step(depth_b=np.ones((8, 8, 1), np.float32)), field="depth_b")


# --------------------------------------------------------------------------- lossless conversions


@pytest.mark.parametrize(
    ("field", "value", "dtype"),
    [
        ("grip_a", 1, np.float32),  # python int
        ("grip_a", 0.5, np.float32),  # python float, exact in float32
        ("grip_b", np.float64(0.25), np.float32),
        ("grip_b", np.int64(0), np.float32),
        ("q_a", [0, 1, 2, 3, 4, 5, 6], np.float32),  # list of ints
        ("q_a", (0.5, 1.5, 2.0, -0.25, 0.0, 1.0, 8.0), np.float32),  # tuple of exact floats
        ("q_b", np.arange(7, dtype=np.float16) / 4, np.float32),  # float16 -> float32
        ("action_a", np.arange(7, dtype=np.int32), np.float32),
        ("action_b", np.arange(7, dtype=np.float64) * 0.5, np.float32),
        ("rgb_a", np.arange(192, dtype=np.int64).reshape(8, 8, 3), np.uint8),  # ints 0..255
        ("rgb_b", np.full((8, 8, 3), 255, np.int32), np.uint8),
        ("rgb_b", np.full((8, 8, 3), 7.0, np.float64), np.uint8),  # whole floats in range
        ("timestamp", 3, np.float64),
        ("timestamp", np.float32(0.1), np.float64),
    ],
)
def test_lossless_conversions_accepted(field: str, value: Any, dtype: type) -> None:
    clean = validate_step(make_step(**{field: value}))
    out = clean[field]
    assert out.dtype == dtype
    assert np.array_equal(out.astype(np.float64), np.asarray(value, dtype=np.float64))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("grip_a", 0.1),  # python float 0.1 is not a float32
        ("grip_a", np.float64(0.1)),
        ("q_a", np.full(7, 0.1)),
        ("q_b", np.full(7, 2**24 + 1, np.int64)),  # int not exact in float32
        ("action_a", np.full(7, 1e39)),  # overflows float32
        ("rgb_a", np.full((8, 8, 3), 256, np.int64)),
        ("rgb_a", np.full((8, 8, 3), -1, np.int64)),
        ("rgb_b", np.full((8, 8, 3), 0.5, np.float32)),
        ("rgb_b", np.full((8, 8, 3), np.nan, np.float32)),
        ("timestamp", 2**60 + 1),  # int not exact in float64
    ],
)
def test_lossy_conversions_refused(field: str, value: Any) -> None:
    err = expect_error(make_step(**{field: value}), field=field, step_index=0)
    assert "without loss" in str(err) or "expected" in str(err)


def test_numpy_bool_and_str_are_normalised() -> None:
    clean = validate_step(
        make_step(success=np.bool_(True), instruction=np.str_("lift it"), phase=np.str_("grasp"))
    )
    assert clean["success"] is True
    assert type(clean["instruction"]) is str and type(clean["phase"]) is str
    assert validate_step(make_step(success=np.array(True)))["success"] is True


def test_input_arrays_are_not_modified_or_aliased_unsafely() -> None:
    q = np.arange(7, dtype=np.float64) * 0.5
    before = q.copy()
    clean = validate_step(make_step(q_a=q))
    assert np.array_equal(q, before) and clean["q_a"].dtype == np.float32
    # a non-contiguous view comes back C-contiguous
    rgb = np.zeros((8, 16, 3), np.uint8)[:, ::2]
    assert validate_step(make_step(rgb_a=rgb))["rgb_a"].flags.c_contiguous


def test_strings_with_nul_refused() -> None:
    expect_error(make_step(instruction="lift\x00"), field="instruction")
    expect_error(make_step(phase="a\x00b"), field="phase")
    expect_error(make_step(note="x\x00"), field="note")
    assert validate_step(make_step(instruction="héllo ✓ 🤖"))["instruction"] == "héllo ✓ 🤖"


# --------------------------------------------------------------------------- extra fields


@pytest.mark.parametrize(
    ("value", "dtype", "shape"),
    [
        (3, "int64", ()),
        (2**63, "uint64", ()),
        (0.1, "float64", ()),
        (np.float32(0.1), "float32", ()),
        (np.int8(-3), "int8", ()),
        (True, "bool", ()),
        (np.bool_(False), "bool", ()),
        ("hello", "str", ()),
        (np.zeros((2, 3), np.int16), "int16", (2, 3)),
        (np.zeros(4, bool), "bool", (4,)),
        (np.linspace(0, 1, 5), "float64", (5,)),
    ],
)
def test_extra_fields_pass(value: Any, dtype: str, shape: tuple[int, ...]) -> None:
    clean = validate_step(make_step(extra=value))
    layout = step_layout(clean)["extra"]
    assert (layout.dtype, layout.shape) == (dtype, shape)


@pytest.mark.parametrize(
    "value",
    [
        np.array([object(), 1], dtype=object),
        np.array(["a", "b"]),  # str arrays are not extra-field arrays
        np.array([b"a"]),
        np.zeros(2, np.complex128),
        np.zeros(2, np.longdouble),  # platform-dependent width: not portable
        np.longdouble(1.0),
        np.zeros(2, "datetime64[s]"),
        np.zeros(2, [("a", "i4")]),
        object(),
        None,
        [1, 2, 3],
        {"a": 1},
        b"bytes",
        1 + 2j,
        2**64,  # does not fit 64 bits: would become an object array
        -(2**63) - 1,
        "nul\x00",
    ],
    ids=lambda v: type(v).__name__ + (f"-{v.dtype}" if isinstance(v, np.ndarray) else ""),
)
def test_extra_fields_refused(value: Any) -> None:
    err = expect_error(make_step(custom=value), field="custom", step_index=3)
    assert "extra" in err.reason or "NUL" in err.reason


def test_extra_fields_consistent_across_episode(tmp_path) -> None:
    with EpisodeWriter(tmp_path) as writer:
        writer.start_episode({"task": "lift"})
        writer.add_step(make_step(0, feat=np.zeros(3, np.float32), label="a"))
        for i, bad in enumerate(
            [
                {"feat": np.zeros(4, np.float32), "label": "b"},  # shape drift
                {"feat": np.zeros(3, np.float64), "label": "b"},  # dtype drift
                {"feat": np.zeros(3, np.float32), "label": 1},  # str -> int
                {"feat": np.zeros(3, np.float32)},  # field dropped
            ]
        ):
            with pytest.raises(SchemaError) as info:
                writer.add_step(make_step(1, **bad))
            assert info.value.step == 1, i
            assert info.value.field in ("feat", "label")
        writer.add_step(make_step(1, feat=np.ones(3, np.float32), label="bb"))
        writer.discard_episode()


def test_task_of_step_must_match_episode(tmp_path) -> None:
    with EpisodeWriter(tmp_path) as writer:
        writer.start_episode({"task": "lift"})
        with pytest.raises(SchemaError) as info:
            writer.add_step(make_step(task="drawer"))
        assert info.value.field == "task" and "lift" in str(info.value)
        writer.discard_episode()


def test_error_carries_structured_facts() -> None:
    with pytest.raises(SchemaError) as info:
        validate_step(make_step(q_b=np.zeros(3, np.float32)), step_index=12)
    err = info.value
    assert isinstance(err, ValueError)  # SchemaError is a ValueError for callers catching that
    assert (err.field, err.step, err.path) == ("q_b", 12, None)
    assert err.reason in str(err) and "N=7" in err.reason


def test_extra_arrays_are_stored_in_native_byte_order() -> None:
    clean = validate_step(
        make_step(be=np.arange(3, dtype=">i4"), bf=np.array([0.5, 1.5], dtype=">f8"))
    )
    assert clean["be"].dtype == np.dtype("int32") and clean["be"].tolist() == [0, 1, 2]
    assert clean["bf"].dtype == np.dtype("float64") and clean["bf"].tolist() == [0.5, 1.5]
    # known fields too: a big-endian float32 is the same value
    assert validate_step(make_step(q_a=np.arange(7, dtype=">f4")))["q_a"].dtype == np.dtype(
        "float32"
    )
