"""Step fields and step validation.

A step is a plain mapping from field name to value. :data:`REQUIRED_FIELDS`
must be present in every step; :data:`OPTIONAL_FIELDS` are known fields that a
recorder may add; any other field passes through if it is a number, bool, str
or a non-object array whose dtype and shape stay the same across the episode.

Implicit conversions (all lossless, nothing else is converted):

* lists, tuples and numpy scalars become arrays / Python values;
* an integer or float array (or Python number) becomes the declared float
  dtype only if every value survives the round trip exactly (so ``0.5`` is
  accepted for a float32 field, ``0.1`` as float64 is not: cast explicitly);
* an integer array becomes ``uint8`` only if every value is in 0..255;
* ``numpy.bool_`` becomes ``bool``, ``numpy.str_`` becomes ``str``.

Non-finite values (NaN, ±inf) are refused in every float field, extra fields
included, unless its spec sets ``allow_nonfinite`` (depth maps, where NaN marks
"no return"). Strings may not contain NUL characters (``"\\x00"``): the
fixed-width unicode arrays of the episode file cannot keep trailing NULs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from teamvla_schema.errors import SchemaError

Kind = Literal["array", "str", "bool"]
# A per-step shape: ints are fixed sizes, strings are sizes fixed by the first step.
Shape = tuple[int | str, ...]


@dataclass(frozen=True)
class FieldSpec:
    """Declaration of one step field."""

    name: str
    kind: Kind
    dtype: str | None  # numpy dtype name for "array" fields
    shape: Shape  # per-step shape, () for scalars
    description: str
    allow_nonfinite: bool = False

    def describe(self) -> str:
        """A short human-readable form, e.g. ``uint8[H,W,3]``."""
        if self.kind != "array":
            return self.kind
        dims = ",".join(str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]" if self.shape else f"{self.dtype} scalar"


def _spec(
    name: str, kind: Kind, dtype: str | None, shape: Shape, description: str, **kw: Any
) -> FieldSpec:
    return FieldSpec(name, kind, dtype, shape, description, **kw)


REQUIRED_FIELDS: dict[str, FieldSpec] = {
    s.name: s
    for s in (
        _spec("rgb_a", "array", "uint8", ("H", "W", 3), "RGB image from the camera of arm A."),
        _spec("rgb_b", "array", "uint8", ("H", "W", 3), "RGB image from the camera of arm B."),
        _spec("q_a", "array", "float32", ("N",), "Joint positions of arm A (radians)."),
        _spec("q_b", "array", "float32", ("N",), "Joint positions of arm B (radians)."),
        _spec(
            "action_a",
            "array",
            "float32",
            ("N",),
            "Joint-position target commanded for arm A at this step.",
        ),
        _spec(
            "action_b",
            "array",
            "float32",
            ("N",),
            "Joint-position target commanded for arm B at this step.",
        ),
        _spec("grip_a", "array", "float32", (), "Gripper command of arm A, 0 = open, 1 = closed."),
        _spec("grip_b", "array", "float32", (), "Gripper command of arm B, 0 = open, 1 = closed."),
        _spec("instruction", "str", None, (), "Natural-language instruction for the episode."),
        _spec("task", "str", None, (), "Canonical task slug (lift, handoff, drawer, ...)."),
        _spec("success", "bool", None, (), "Whether the task is accomplished at this step."),
    )
}

OPTIONAL_FIELDS: dict[str, FieldSpec] = {
    s.name: s
    for s in (
        _spec(
            "depth_a",
            "array",
            "float32",
            ("H", "W"),
            "Depth map of camera A in metres; NaN where there is no return.",
            allow_nonfinite=True,
        ),
        _spec(
            "depth_b",
            "array",
            "float32",
            ("H", "W"),
            "Depth map of camera B in metres; NaN where there is no return.",
            allow_nonfinite=True,
        ),
        _spec(
            "phase",
            "str",
            None,
            (),
            "Phase label of a scripted or annotated episode (e.g. 'approach', 'grasp').",
        ),
        _spec(
            "timestamp",
            "array",
            "float64",
            (),
            "Time of the observation in seconds since the episode started.",
        ),
        _spec(
            "reward",
            "array",
            "float32",
            (),
            "Reward the environment returned for this step's action (0 where no action was executed).",
        ),
        _spec("done", "bool", None, (), "Whether this is the episode's last step."),
    )
}

KNOWN_FIELDS: dict[str, FieldSpec] = {**REQUIRED_FIELDS, **OPTIONAL_FIELDS}

# dtype kinds an extra (undeclared) array field may have: bool, ints, floats.
_EXTRA_KINDS = frozenset("biuf")
# ... and the exact dtypes: portable ones only (no platform-dependent long double).
_EXTRA_DTYPES = frozenset(
    np.dtype(t)
    for t in (
        *("bool", "int8", "int16", "int32", "int64"),
        *("uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64"),
    )
)


@dataclass(frozen=True)
class FieldLayout:
    """Concrete per-step dtype and shape of one field within one episode."""

    dtype: str  # numpy dtype str, e.g. "uint8", "float32", "bool", "str"
    shape: tuple[int, ...]


StepLayout = dict[str, FieldLayout]


def _contiguous(arr: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray would turn a 0-d array into shape (1,).
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _fail(msg: str, field: str, step: int | None) -> SchemaError:
    return SchemaError(msg, field=field, step=step)


def _describe_value(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return f"{type(value).__name__} {value!r}"[:80]


def _lossless_cast(
    arr: np.ndarray, dtype: np.dtype, field: str, step: int | None, expected: str
) -> np.ndarray:
    if arr.dtype == dtype:
        return arr
    if arr.dtype.kind not in "biuf":
        raise _fail(f"expected {expected}, received {_describe_value(arr)}", field, step)
    if dtype.kind == "f" and arr.dtype.kind == "f" and np.can_cast(arr.dtype, dtype, "safe"):
        return arr.astype(dtype)
    with np.errstate(all="ignore"):
        cast = arr.astype(dtype)
        if arr.dtype.kind == "f" and dtype.kind in "iu" and not np.all(np.isfinite(arr)):
            ok = False
        else:
            back = cast.astype(arr.dtype)
            ok = bool(np.array_equal(back, arr, equal_nan=arr.dtype.kind == "f"))
    if not ok:
        raise _fail(
            f"expected {expected}, received {_describe_value(arr)} whose values do not convert "
            f"to {dtype} without loss (cast explicitly if that is intended)",
            field,
            step,
        )
    return cast


def _normalise_known(spec: FieldSpec, value: Any, step: int | None) -> Any:
    name = spec.name
    if spec.kind == "str":
        if isinstance(value, str):  # includes numpy.str_
            return _check_str(str(value), name, step)
        raise _fail(f"expected str, received {_describe_value(value)}", name, step)
    if spec.kind == "bool":
        if isinstance(value, bool | np.bool_):
            return bool(value)
        if isinstance(value, np.ndarray) and value.shape == () and value.dtype == np.bool_:
            return bool(value)
        raise _fail(f"expected bool, received {_describe_value(value)}", name, step)
    assert spec.dtype is not None
    dtype = np.dtype(spec.dtype)
    expected = spec.describe()
    if isinstance(value, bool | np.bool_) or (
        isinstance(value, np.ndarray) and value.dtype == np.bool_
    ):
        raise _fail(f"expected {expected}, received {_describe_value(value)}", name, step)
    if isinstance(value, str | bytes) or value is None or isinstance(value, Mapping):
        raise _fail(f"expected {expected}, received {_describe_value(value)}", name, step)
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise _fail(
            f"expected {expected}, received a value numpy cannot read: {exc}", name, step
        ) from None
    if arr.dtype == object:
        raise _fail(
            f"expected {expected}, received an object array (ragged or mixed values)", name, step
        )
    if arr.ndim != len(spec.shape) or any(
        isinstance(d, int) and d != s for d, s in zip(spec.shape, arr.shape, strict=False)
    ):
        raise _fail(f"expected {expected}, received {_describe_value(arr)}", name, step)
    arr = _lossless_cast(arr, dtype, name, step, expected)
    if dtype.kind == "f" and not spec.allow_nonfinite and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise _fail(f"expected finite {expected}, received {bad} NaN/inf value(s)", name, step)
    return _contiguous(arr)


def _check_str(value: str, field: str, step: int | None) -> str:
    # numpy's fixed-width unicode arrays strip trailing NULs: "a\x00" would come back as "a".
    if "\x00" in value:
        raise _fail(f"strings may not contain NUL characters, received {value[:60]!r}", field, step)
    return value


def _check_finite_extra(arr: np.ndarray, field: str, step: int | None) -> np.ndarray:
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise _fail(
            f"expected finite values, received {bad} NaN/inf value(s) (only fields declared with "
            "allow_nonfinite, such as depth maps, may hold them)",
            field,
            step,
        )
    return arr


def _normalise_extra(name: str, value: Any, step: int | None) -> Any:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        return _check_str(str(value), name, step)
    if isinstance(value, int | float | np.integer | np.floating):
        arr = np.asarray(value)
        if arr.dtype not in _EXTRA_DTYPES:  # a Python int beyond 64 bits becomes an object array
            raise _fail(
                f"extra number {value!r} does not fit a 64-bit integer or float; received {_describe_value(arr)}",
                name,
                step,
            )
        return _check_finite_extra(arr, name, step)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in _EXTRA_KINDS and not value.dtype.isnative:
            value = value.astype(
                value.dtype.newbyteorder("=")
            )  # byte order is not part of the value
        if value.dtype not in _EXTRA_DTYPES:
            raise _fail(
                f"extra field must be a number, bool, str or bool/int/float array "
                f"(float16/32/64, [u]int8..64); received {_describe_value(value)}",
                name,
                step,
            )
        return _contiguous(_check_finite_extra(value, name, step))
    raise _fail(
        f"extra field must be a number, bool, str or numpy array; received {type(value).__name__}",
        name,
        step,
    )


def layout_of(value: Any) -> FieldLayout:
    """The :class:`FieldLayout` of one normalised step value."""
    if isinstance(value, bool):
        return FieldLayout("bool", ())
    if isinstance(value, str):
        return FieldLayout("str", ())
    arr = np.asarray(value)
    return FieldLayout("str" if arr.dtype.kind == "U" else str(arr.dtype), tuple(arr.shape))


def validate_step(
    step: Any,
    *,
    step_index: int | None = None,
    layout: StepLayout | None = None,
) -> dict[str, Any]:
    """Validate one step and return its normalised copy.

    ``layout`` is the layout of the episode's first step (see :func:`step_layout`);
    when given, the step must carry the same fields with the same dtypes and
    shapes, which is how H, W and N stay fixed across an episode. Raises
    :class:`SchemaError` naming the field, the step and expected vs received.
    """
    if not isinstance(step, Mapping):
        raise SchemaError(
            f"a step must be a mapping of field name to value, received {type(step).__name__}",
            step=step_index,
        )
    if layout is not None:
        fast = _validate_against_layout(step, layout, step_index)
        if fast is not None:
            return fast
    missing = [name for name in REQUIRED_FIELDS if name not in step]
    if missing:
        raise SchemaError(
            f"missing required field(s) {', '.join(missing)}; expected "
            + ", ".join(f"{n}: {REQUIRED_FIELDS[n].describe()}" for n in missing),
            field=missing[0],
            step=step_index,
        )
    out: dict[str, Any] = {}
    for name, value in step.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise SchemaError(
                f"field names must be identifiers (letters, digits, _), received {name!r}",
                step=step_index,
            )
        spec = KNOWN_FIELDS.get(name)
        out[name] = (
            _normalise_known(spec, value, step_index)
            if spec
            else _normalise_extra(name, value, step_index)
        )
    _check_symbolic_dims(out, step_index)
    if layout is not None:
        _check_layout(out, layout, step_index)
    return out


_NONFINITE_OK = frozenset(name for name, spec in KNOWN_FIELDS.items() if spec.allow_nonfinite)
_LAYOUT_DTYPES: dict[str, np.dtype | None] = {"str": None}


def _layout_dtype(ref: FieldLayout) -> np.dtype | None:
    # The numpy dtype a value of this layout has; None for str and scalar bool (Python values).
    if ref.dtype == "bool" and not ref.shape:
        return None
    try:
        return _LAYOUT_DTYPES[ref.dtype]
    except KeyError:
        dt = _LAYOUT_DTYPES[ref.dtype] = np.dtype(ref.dtype)
        return dt


def _sum_is_finite(arr: np.ndarray) -> bool:
    """Whether a float array's sum is finite: one reduction instead of isfinite + all.

    A NaN or inf anywhere makes the sum non-finite. Values below 8 bytes are
    summed in float64, which no float16/32 values can overflow; a float64 sum
    that overflows is silenced (valid data must not warn) and the caller takes
    the exact full path.
    """
    if arr.dtype.itemsize < 8:
        return math.isfinite(arr.sum(dtype=np.float64))
    with np.errstate(over="ignore"):
        return math.isfinite(arr.sum())


def _validate_against_layout(
    step: Mapping[str, Any], layout: StepLayout, step_index: int | None
) -> dict[str, Any] | None:
    """The fast path for the steps after the first: the normalised step, or None.

    A value that already has exactly the dtype and shape fixed by the episode's
    first step (the usual case when recording) needs only its finiteness checked;
    any other value goes through the full per-field normalisation and must then
    match the layout. On any mismatch this returns None and :func:`validate_step`
    runs the full validation, which raises the same error it always would.
    """
    if len(step) != len(layout) or any(name not in step for name in layout):
        return None
    out: dict[str, Any] = {}
    for name, value in step.items():
        ref = layout.get(name)
        if ref is None:
            return None
        kind = type(value)
        if kind is np.ndarray or isinstance(value, np.generic):
            dt = _layout_dtype(ref)
            if dt is not None and value.dtype == dt and value.shape == ref.shape:
                arr = value if kind is np.ndarray else np.asarray(value)
                if dt.kind == "f" and name not in _NONFINITE_OK and not _sum_is_finite(arr):
                    return None
                out[name] = arr if arr.flags.c_contiguous else arr.copy(order="C")
                continue
        elif kind is str:
            if ref.dtype == "str" and "\x00" not in value:
                out[name] = value
                continue
        elif kind is bool and ref.dtype == "bool" and not ref.shape:
            out[name] = value
            continue
        # Python numbers, lists, conversions, errors: the full normalisation of this field.
        spec = KNOWN_FIELDS.get(name)
        clean = (
            _normalise_known(spec, value, step_index)
            if spec
            else _normalise_extra(name, value, step_index)
        )
        if layout_of(clean) != ref:
            return None
        out[name] = clean
    return out


def _check_symbolic_dims(step: Mapping[str, Any], step_index: int | None) -> None:
    # Symbolic dims (H, W, N) must agree across fields within one step too.
    bound: dict[str, tuple[int, str]] = {}
    for name, spec in KNOWN_FIELDS.items():
        if name not in step or spec.kind != "array":
            continue
        for dim, size in zip(spec.shape, np.shape(step[name]), strict=True):
            if isinstance(dim, str):
                if dim in bound and bound[dim][0] != size:
                    other_size, other = bound[dim]
                    raise SchemaError(
                        f"expected {spec.describe()} with {dim}={other_size} (as in field {other!r}), "
                        f"received shape {np.shape(step[name])}",
                        field=name,
                        step=step_index,
                    )
                bound.setdefault(dim, (size, name))


def _check_layout(step: Mapping[str, Any], layout: StepLayout, step_index: int | None) -> None:
    for name, ref in layout.items():
        if name not in step:
            raise SchemaError(
                f"field present in the episode's first step is missing here (expected {ref.dtype}{list(ref.shape)})",
                field=name,
                step=step_index,
            )
        got = layout_of(step[name])
        if got != ref:
            raise SchemaError(
                f"expected {ref.dtype} of shape {ref.shape} as fixed by the episode's first step, "
                f"received {got.dtype} of shape {got.shape}",
                field=name,
                step=step_index,
            )
    for name in step:
        if name not in layout:
            raise SchemaError(
                "field is not in the episode's first step; every step must carry the same fields",
                field=name,
                step=step_index,
            )


def step_layout(step: Mapping[str, Any]) -> StepLayout:
    """The layout (dtype and shape per field) of a validated step."""
    return {name: layout_of(value) for name, value in step.items()}
