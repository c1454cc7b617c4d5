"""Bad episode files: every one is a SchemaError naming the file, and no pickle ever runs."""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from schema_testlib import (
    make_steps,
    meta_doc,
    meta_npy,
    npy_bytes,
    npz_members,
    rewrite_episode,
    write_episode,
    write_zip,
)
from teamvla_schema import (
    SchemaError,
    iter_steps,
    read_episode,
    read_episode_meta,
    validate_episode_file,
)
from teamvla_schema.cli import main as cli_main

READERS: dict[str, Callable[[Path], Any]] = {
    "read_episode_meta": read_episode_meta,
    "read_episode": read_episode,
    "validate_episode_file": validate_episode_file,
    "iter_steps": lambda p: list(iter_steps(p)),
}


class Payload:
    """Unpickling this object creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def object_array(*items: Any) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return write_episode(tmp_path / "good", make_steps(4))


def assert_refused(
    path: Path, *, match: str | None = None, readers: tuple[str, ...] = tuple(READERS)
) -> None:
    for name in readers:
        with pytest.raises(SchemaError) as info:
            READERS[name](path)
        err = info.value
        assert err.path == str(path), name
        assert str(path) in str(err), name
        if match is not None:
            assert match in str(err), (name, str(err))


# --------------------------------------------------------------------------- pickles never run


def test_payload_is_live(tmp_path: Path) -> None:
    """Sanity check of the payload itself: an unsafe load would run it."""
    marker = tmp_path / "ran"
    path = tmp_path / "evil.npz"
    np.savez(path, x=object_array(Payload(marker)))
    with np.load(path, allow_pickle=True) as npz:
        npz["x"]
    assert marker.exists()


@pytest.mark.parametrize("member", ["__meta__", "rgb_a", "task"])
def test_object_array_member_is_refused_without_unpickling(
    tmp_path: Path, good: Path, member: str
) -> None:
    marker = tmp_path / "pwned"
    evil = npy_bytes(
        object_array(Payload(marker), Payload(marker), Payload(marker), Payload(marker)),
        allow_pickle=True,
    )
    path = rewrite_episode(good, tmp_path / "evil.npz", **{member: evil})
    if member == "__meta__":
        assert_refused(path, match="pickle")
    else:
        assert_refused(
            path,
            match="object array",
            readers=("read_episode", "validate_episode_file", "iter_steps"),
        )
        # the metadata is fine, so reading the metadata alone succeeds; the member is refused
        read_episode_meta(path)
        with pytest.raises(SchemaError, match="object array") as info:
            read_episode(path, fields=[member])
        assert info.value.field == member
    assert cli_main(["validate", str(path)]) == 1
    assert not marker.exists()


def test_seed_format_file_is_refused(tmp_path: Path) -> None:
    """The seed's layout: object arrays of metadata and per-step dicts (pickled)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "seed.npz"
    steps = [dict(s, payload=Payload(marker)) for s in make_steps(3)]
    np.savez_compressed(
        path,
        meta=object_array({"task": "lift", "episode_id": "e", "success": True}),
        steps=object_array(*steps),
    )
    assert_refused(path, match="seed-format")
    assert not marker.exists()


def test_raw_pickle_named_npz_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "pickle.npz"
    path.write_bytes(pickle.dumps(Payload(marker)))
    assert_refused(path, match="not an npz")
    assert not marker.exists()


# --------------------------------------------------------------------------- broken containers


@pytest.mark.parametrize("fraction", [0.001, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file(tmp_path: Path, good: Path, fraction: float) -> None:
    data = good.read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(data[: max(4, int(len(data) * fraction))])
    assert_refused(path)


@pytest.mark.parametrize("cut", [1, 2, 3, 22, 23, 100])
def test_truncated_at_the_end(tmp_path: Path, good: Path, cut: int) -> None:
    path = tmp_path / "cut.npz"
    path.write_bytes(good.read_bytes()[:-cut])
    assert_refused(path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    assert_refused(path, match="empty")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_refused(path, match="not an npz")


def test_zip_magic_then_garbage(tmp_path: Path) -> None:
    path = tmp_path / "fake.npz"
    path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    assert_refused(path, match="corrupt")


def test_npy_renamed_npz(tmp_path: Path) -> None:
    path = tmp_path / "array.npz"
    np.save(tmp_path / "array.npy", np.zeros((4, 8, 8, 3), np.uint8))
    os.replace(tmp_path / "array.npy", path)
    assert_refused(path, match="not an npz")


def test_directory_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "dir.npz").mkdir()
    assert_refused(tmp_path / "dir.npz", readers=("read_episode_meta",))
    assert_refused(tmp_path / "missing.npz", readers=("read_episode_meta",))


def test_plain_npz_without_meta(tmp_path: Path) -> None:
    path = tmp_path / "plain.npz"
    np.savez_compressed(path, rgb_a=np.zeros((4, 8, 8, 3), np.uint8))
    assert_refused(path, match="__meta__")


# --------------------------------------------------------------------------- bad metadata


def test_future_version_is_refused_with_upgrade_message(tmp_path: Path, good: Path) -> None:
    doc = meta_doc(good)
    doc["version"] = 2
    path = rewrite_episode(good, tmp_path / "future.npz", __meta__=meta_npy(doc))
    assert_refused(path, match="upgrade")
    assert_refused(path, match="version 2")


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"{" * 100_000],
    ids=["broken", "empty", "not-utf8", "list", "string", "deep"],
)
def test_broken_metadata_json(tmp_path: Path, good: Path, raw: bytes) -> None:
    path = rewrite_episode(good, tmp_path / "broken.npz", __meta__=meta_npy(raw))
    assert_refused(path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format": "something-else"}, "format"),
        ({"task": "Not A Slug"}, "slug"),
        ({"num_steps": -1}, "num_steps"),
        ({"version": "1"}, "version"),
        ({"fields": None}, "fields"),
        ({"fields": {"rgb_a": {"dtype": "uint8"}}}, "bad field entry"),
        ({"fields": {"rgb_a": {"dtype": "uint8", "shape": [-8, 8, 3]}}}, "bad field entry"),
        ({"fields": {"rgb_a": {"dtype": "no-such-dtype", "shape": [8, 8, 3]}}}, "bad field entry"),
        ({"fields": {"ghost": {"dtype": "uint8", "shape": []}}}, "no array member"),
        ({"surprise": 1}, "unknown metadata key"),
    ],
)
def test_bad_metadata_content(
    tmp_path: Path, good: Path, change: dict[str, Any], match: str
) -> None:
    doc = {**meta_doc(good), **change}
    path = rewrite_episode(good, tmp_path / "bad.npz", __meta__=meta_npy(doc))
    assert_refused(path, match=match)


def test_metadata_member_wrong_dtype(tmp_path: Path, good: Path) -> None:
    path = rewrite_episode(good, tmp_path / "bad.npz", __meta__=npy_bytes(np.zeros(10, np.int32)))
    assert_refused(path, match="uint8")


# --------------------------------------------------------------------------- members vs metadata


@pytest.mark.parametrize(
    ("field", "arr"),
    [
        ("q_a", np.zeros((4, 7), np.float64)),  # dtype differs
        ("q_a", np.zeros((4, 6), np.float32)),  # per-step shape differs
        ("rgb_a", np.zeros((5, 8, 8, 3), np.uint8)),  # step count differs
        ("rgb_b", np.zeros((4, 8, 8), np.uint8)),
        ("task", np.zeros(4, np.int64)),
        ("success", np.array(["yes"] * 4)),
        ("grip_a", np.zeros((4, 7, 7), np.float32, order="F")),
    ],
)
def test_member_does_not_match_metadata(
    tmp_path: Path, good: Path, field: str, arr: np.ndarray
) -> None:
    path = rewrite_episode(good, tmp_path / "bad.npz", **{field: npy_bytes(arr)})
    assert_refused(
        path, match="declared in the metadata", readers=("read_episode", "validate_episode_file")
    )
    read_episode_meta(path)  # the metadata alone is fine


def test_member_missing(tmp_path: Path, good: Path) -> None:
    path = rewrite_episode(good, tmp_path / "bad.npz", rgb_b=None)
    assert_refused(path, match="no array member")


def test_member_with_lying_npy_header_is_refused_before_allocating(
    tmp_path: Path, good: Path
) -> None:
    # a header claiming 10**12 bytes on a member of a few bytes
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**12,)}
    )
    path = rewrite_episode(good, tmp_path / "bomb.npz", rgb_a=header.getvalue() + b"\x00" * 16)
    assert_refused(path, match="at most", readers=("read_episode", "validate_episode_file"))


def test_member_not_npy(tmp_path: Path, good: Path) -> None:
    path = rewrite_episode(good, tmp_path / "bad.npz", q_a=b"this is not an npy file at all")
    assert_refused(path, match="corrupt", readers=("read_episode", "validate_episode_file"))


def test_truncated_member_data(tmp_path: Path, good: Path) -> None:
    raw = npz_members(good)["rgb_a.npy"]
    path = rewrite_episode(good, tmp_path / "bad.npz", rgb_a=raw[:-10])
    assert_refused(path, readers=("read_episode", "validate_episode_file"))


def test_trailing_bytes_after_member_data(tmp_path: Path, good: Path) -> None:
    raw = npz_members(good)["q_a.npy"]
    path = rewrite_episode(good, tmp_path / "bad.npz", q_a=raw + b"\x00" * 8)
    assert_refused(
        path, match="unexpected bytes", readers=("read_episode", "validate_episode_file")
    )


# --------------------------------------------------------------------------- schema-level checks


def _with_arrays(good: Path, dst: Path, **arrays: np.ndarray) -> Path:
    return rewrite_episode(good, dst, **{k: npy_bytes(v) for k, v in arrays.items()})


def test_validate_finds_nan_and_names_step(tmp_path: Path, good: Path) -> None:
    q = np.zeros((4, 7), np.float32)
    q[2, 5] = np.nan
    path = _with_arrays(good, tmp_path / "nan.npz", q_b=q)
    read_episode(path)  # reading is fine: NaN is a value
    with pytest.raises(SchemaError) as info:
        validate_episode_file(path)
    assert (info.value.field, info.value.step) == ("q_b", 2)


def test_validate_finds_task_column_mismatch(tmp_path: Path, good: Path) -> None:
    path = _with_arrays(
        good, tmp_path / "task.npz", task=np.array(["lift", "lift", "drawer", "lift"])
    )
    with pytest.raises(SchemaError) as info:
        validate_episode_file(path)
    assert (info.value.field, info.value.step) == ("task", 2)


def test_validate_requires_required_fields(tmp_path: Path, good: Path) -> None:
    doc = meta_doc(good)
    del doc["fields"]["rgb_b"]
    path = rewrite_episode(good, tmp_path / "nofield.npz", __meta__=meta_npy(doc), rgb_b=None)
    read_episode(path)
    with pytest.raises(SchemaError, match="missing required") as info:
        validate_episode_file(path)
    assert info.value.field == "rgb_b"


def test_validate_checks_declared_dtype_of_known_fields(tmp_path: Path, good: Path) -> None:
    doc = meta_doc(good)
    doc["fields"]["q_a"] = {"dtype": "float64", "shape": [7]}
    path = rewrite_episode(
        good, tmp_path / "f64.npz", __meta__=meta_npy(doc), q_a=npy_bytes(np.zeros((4, 7)))
    )
    read_episode(path)
    with pytest.raises(SchemaError, match=r"float32\[N\]"):
        validate_episode_file(path)


def test_validate_checks_extra_float_fields(tmp_path: Path, good: Path) -> None:
    doc = meta_doc(good)
    doc["fields"]["torque"] = {"dtype": "float64", "shape": []}
    members = npz_members(good)
    members["__meta__.npy"] = meta_npy(doc)
    members["torque.npy"] = npy_bytes(np.array([0.0, 1.0, np.inf, 0.0]))
    path = write_zip(tmp_path / "extra.npz", members)
    with pytest.raises(SchemaError) as info:
        validate_episode_file(path)
    assert (info.value.field, info.value.step) == ("torque", 2)


# --------------------------------------------------------------------------- fuzzing


_FUZZ_SOURCES: dict[bool, bytes] = {}


def _fuzz_source(compress: bool) -> bytes:
    if compress not in _FUZZ_SOURCES:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_episode(Path(tmp), make_steps(3, h=4, w=4), compress=compress)
            _FUZZ_SOURCES[compress] = path.read_bytes()
    return _FUZZ_SOURCES[compress]


@settings(max_examples=300, deadline=None)
@given(
    compress=st.booleans(),
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4
    ),
)
def test_corrupted_bytes_never_raise_anything_but_schema_error(
    compress: bool, flips: list[tuple[float, int]]
) -> None:
    raw = bytearray(_fuzz_source(compress))
    for where, mask in flips:
        raw[int(where * len(raw))] ^= mask
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed.npz"
        path.write_bytes(bytes(raw))
        try:
            validate_episode_file(path)
        except SchemaError as exc:
            assert exc.path == str(path)


@settings(max_examples=60, deadline=None)
@given(
    members=st.dictionaries(
        st.sampled_from(["__meta__.npy", "rgb_a.npy", "x.npy", "meta"]), st.binary(max_size=300)
    )
)
def test_random_zip_members_never_raise_anything_but_schema_error(
    members: dict[str, bytes],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_zip(Path(tmp) / "random.npz", members)
        with pytest.raises(SchemaError):
            validate_episode_file(path)


def test_zip_member_with_unsupported_compression(tmp_path: Path, good: Path) -> None:
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        infos = zf.infolist()
    # method 99 (AES) for the second member, in its local header and its central-directory entry
    raw[infos[1].header_offset + 8 : infos[1].header_offset + 10] = (99).to_bytes(2, "little")
    central = [i for i in range(len(raw) - 4) if raw[i : i + 4] == b"PK\x01\x02"]
    assert len(central) == len(infos)
    raw[central[1] + 10 : central[1] + 12] = (99).to_bytes(2, "little")
    path = tmp_path / "method.npz"
    path.write_bytes(bytes(raw))
    assert_refused(path, readers=("read_episode", "validate_episode_file"))


def test_zip_member_flagged_encrypted(tmp_path: Path, good: Path) -> None:
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        infos = zf.infolist()
    central = [i for i in range(len(raw) - 4) if raw[i : i + 4] == b"PK\x01\x02"]
    for off in (infos[2].header_offset + 6, central[2] + 8):  # general-purpose flag bit 0
        raw[off] |= 1
    path = tmp_path / "encrypted.npz"
    path.write_bytes(bytes(raw))
    assert_refused(path, readers=("read_episode", "validate_episode_file"))
