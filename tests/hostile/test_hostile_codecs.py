"""Crafted episode files with codec streams: every one is refused with a SchemaError naming the
file and the field, before anything unbounded is decoded, and nothing is ever unpickled."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from schema_testlib import (
    make_steps,
    meta_doc,
    meta_npy,
    npy_bytes,
    npz_members,
    write_episode,
    write_zip,
)
from teamvla_schema import (
    SchemaError,
    read_episode,
    read_episode_meta,
    read_frames,
    validate_episode_file,
)
from teamvla_schema.episode_codec import MAX_CODEC_RATIO, MAX_FRAME_PIXELS

pytest.importorskip("av")

T, H, W = 6, 16, 16


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoded")
    steps = make_steps(T, h=H, w=W)
    return {
        codec: write_episode(root / codec, steps, image_codec=codec)
        for codec in ("lossless", "video")
    }


def craft(
    src: Path,
    dst: Path,
    edit: Callable[[dict[str, Any]], None] | None = None,
    **members: bytes,
) -> Path:
    """A copy of ``src`` with its metadata edited by ``edit`` and members replaced by field name."""
    doc = copy.deepcopy(meta_doc(src))
    if edit is not None:
        edit(doc)
    raw = npz_members(src)
    raw["__meta__.npy"] = meta_npy(doc)
    for name, data in members.items():
        raw[f"{name}.npy"] = data
    return write_zip(dst, raw)


def stream_of(path: Path, name: str = "rgb_a") -> np.ndarray:
    with np.load(path, allow_pickle=False) as npz:
        return npz[name]


def refused(path: Path, match: str, *, field: str = "rgb_a", at: str = "meta") -> SchemaError:
    """The error every reader raises; ``at="meta"`` when even the metadata is refused."""
    readers: list[Callable[[], Any]] = [
        lambda: read_episode(path),
        lambda: validate_episode_file(path),
        lambda: read_frames(path, field, 0, 2),
    ]
    if at == "meta":
        readers.append(lambda: read_episode_meta(path))
    last = None
    for read in readers:
        with pytest.raises(SchemaError, match=match) as info:
            read()
        assert info.value.path == str(path), info.value
        assert info.value.field == field, info.value
        assert "\n" not in str(info.value)
        last = info.value
    assert last is not None
    return last


def entry(doc: dict[str, Any], name: str = "rgb_a") -> dict[str, Any]:
    return doc["encodings"][name]


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: entry(d).update(codec="gif"), "does not know"),
        (lambda d: entry(d).update(codec=["lossless"]), "does not know"),
        (lambda d: entry(d)["params"].update(gop=0), "bad codec parameters"),
        (lambda d: entry(d)["params"].update(gop=10**9), "bad codec parameters"),
        (lambda d: entry(d)["params"].update(preset="turbo"), "bad codec parameters"),
        (lambda d: entry(d)["params"].update(qp=3), "unknown parameter"),
        (lambda d: entry(d).update(params="fast"), "bad codec parameters"),
        (lambda d: entry(d).update(shape=[T + 1, H, W, 3]), "does not match"),
        (lambda d: entry(d).update(shape=[T, H, W]), "does not match"),
        (lambda d: entry(d).update(shape=[T, H, W, 3.0]), "does not match"),
        (lambda d: entry(d).update(dtype="float32"), "only uint8"),
        (lambda d: entry(d).update(bytes=0), "stream size"),
        (lambda d: entry(d).update(bytes="12"), "stream size"),
        (lambda d: entry(d).update(psnr=40.0), "no 'psnr'"),
        (lambda d: entry(d).pop("shape"), "keys"),
        (lambda d: entry(d).update(extra=1), "keys"),
        (lambda d: d["encodings"].update(rgb_a=[1, 2]), "keys"),
    ],
)
def test_bad_encoding_entries_are_refused_from_the_metadata(encoded, tmp_path, edit, match) -> None:
    path = craft(encoded["lossless"], tmp_path / "bad.npz", edit)
    refused(path, match)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: entry(d).pop("psnr"), "needs the 'psnr'"),
        (lambda d: entry(d).update(psnr=-3), "bad psnr"),
        (lambda d: entry(d).update(psnr="high"), "bad psnr"),
        (lambda d: entry(d)["params"].update(crf=99), "bad codec parameters"),
        (lambda d: entry(d)["params"].update(crf=True), "bad codec parameters"),
    ],
)
def test_bad_lossy_entries_are_refused(encoded, tmp_path, edit, match) -> None:
    path = craft(encoded["video"], tmp_path / "bad.npz", edit)
    refused(path, match)


def test_an_encoding_for_a_field_that_is_not_an_image(encoded, tmp_path) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["encodings"]["q_a"] = dict(entry(doc), shape=[T, 7])

    path = craft(encoded["lossless"], tmp_path / "bad.npz", edit)
    refused(path, "only uint8", field="q_a")


def test_an_encoding_for_a_field_that_does_not_exist(encoded, tmp_path) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["encodings"]["rgb_c"] = entry(doc)

    path = craft(encoded["lossless"], tmp_path / "bad.npz", edit)
    with pytest.raises(SchemaError, match="not in its 'fields' table") as info:
        read_episode_meta(path)
    assert info.value.field == "rgb_c" and info.value.path == str(path)


def test_encodings_must_be_an_object(encoded, tmp_path) -> None:
    path = craft(encoded["lossless"], tmp_path / "bad.npz", lambda d: d.update(encodings=[1]))
    with pytest.raises(SchemaError, match="'encodings' must be a JSON object") as info:
        read_episode_meta(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    ("per_step", "match"),
    [
        ([4096, 4096, 3], "may expand to"),  # 10**8 bytes from a few-KiB stream
        ([1 << 15, 1 << 15, 3], f"at most {MAX_FRAME_PIXELS} pixels"),
        ([0, W, 3], "at least one frame"),
    ],
)
def test_huge_declared_shapes_are_refused_before_decoding(
    encoded, tmp_path, per_step, match
) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["fields"]["rgb_a"]["shape"] = per_step
        entry(doc)["shape"] = [T, *per_step]

    path = craft(encoded["lossless"], tmp_path / "bad.npz", edit)
    start = time.perf_counter()
    refused(path, match)
    assert time.perf_counter() - start < 5  # nothing was decoded or allocated
    assert MAX_CODEC_RATIO >= 1 << 16


def test_many_steps_promised_by_the_metadata_are_refused(encoded, tmp_path) -> None:
    # The step count is shared with the plain fields, whose deflate bound refuses it first.
    path = craft(encoded["lossless"], tmp_path / "bad.npz", lambda d: d.update(num_steps=10**7))
    with pytest.raises(SchemaError, match="steps") as info:
        read_episode_meta(path)
    assert info.value.path == str(path)


# --------------------------------------------------------------------------- members


def test_stream_member_of_the_wrong_length(encoded, tmp_path) -> None:
    src = encoded["lossless"]
    stream = stream_of(src)
    short = craft(src, tmp_path / "short.npz", rgb_a=npy_bytes(stream[:-7]))
    refused(short, "expected uint8", at="read")
    longer = craft(
        src, tmp_path / "long.npz", rgb_a=npy_bytes(np.concatenate([stream, stream[:9]]))
    )
    refused(longer, "expected uint8", at="read")
    declared = craft(
        src, tmp_path / "declared.npz", lambda d: entry(d).update(bytes=len(stream) + 1)
    )
    refused(declared, "expected uint8", at="read")


def test_raw_pixels_where_a_stream_is_declared(encoded, tmp_path) -> None:
    pixels = np.zeros((T, H, W, 3), np.uint8)
    path = craft(encoded["lossless"], tmp_path / "bad.npz", rgb_a=npy_bytes(pixels))
    refused(path, "expected uint8", at="read")


def test_object_array_member_is_never_unpickled(encoded, tmp_path) -> None:
    objects = np.empty(3, dtype=object)
    objects[:] = [{"x": 1}, "y", 3]
    path = craft(
        encoded["lossless"], tmp_path / "bad.npz", rgb_a=npy_bytes(objects, allow_pickle=True)
    )
    refused(path, "object array", at="read")


@pytest.mark.parametrize("codec", ["lossless", "video"])
def test_corrupt_stream_bytes_fail_on_their_crc(encoded, tmp_path, codec) -> None:
    src = encoded[codec]
    stream = stream_of(src).copy()
    stream[-3] ^= 0x40  # inside the packets, covered by the stream's CRC-32
    path = craft(src, tmp_path / "bad.npz", rgb_a=npy_bytes(stream))
    refused(path, "corrupt encoded stream.*CRC", at="read")


def test_stream_header_that_disagrees_with_the_metadata(encoded, tmp_path) -> None:
    # A stream of the other codec: its own header names it, so it is never decoded as this one.
    other = stream_of(encoded["video"])
    path = craft(
        encoded["lossless"],
        tmp_path / "swap.npz",
        lambda d: entry(d).update(bytes=len(other)),
        rgb_a=npy_bytes(other),
    )
    refused(path, "corrupt encoded stream.*codec", at="read")

    # Metadata and fields agree on another frame size, but the streams hold 16x16 frames.
    def resize(doc: dict[str, Any]) -> None:
        for name in ("rgb_a", "rgb_b"):
            doc["fields"][name]["shape"] = [H, W + 2, 3]
            entry(doc, name)["shape"] = [T, H, W + 2, 3]

    path = craft(encoded["lossless"], tmp_path / "size.npz", resize)
    refused(path, "corrupt encoded stream.*shape", at="read")


def test_stream_parameters_that_disagree_with_the_metadata(encoded, tmp_path) -> None:
    path = craft(
        encoded["lossless"], tmp_path / "bad.npz", lambda d: entry(d)["params"].update(gop=15)
    )
    read_episode(path)  # decoding needs no parameters: the stream carries what the decoder needs
    with pytest.raises(SchemaError, match="records codec parameters") as info:
        validate_episode_file(path)
    assert info.value.path == str(path) and info.value.field == "rgb_a"


def test_random_garbage_streams_are_refused_quickly(encoded, tmp_path) -> None:
    rng = np.random.default_rng(5)
    src = encoded["video"]
    n = len(stream_of(src))
    start = time.perf_counter()
    for k in range(5):
        garbage = rng.integers(0, 256, n, dtype=np.uint8)
        if k % 2:
            garbage[:4] = np.frombuffer(b"TVSQ", np.uint8)
        path = craft(src, tmp_path / f"g{k}.npz", rgb_a=npy_bytes(garbage))
        refused(path, "corrupt encoded stream", at="read")
    assert time.perf_counter() - start < 10
