"""Camera fields stored as codec streams through EpisodeWriter (image_codec="lossless" | "video").

Round trips through read_episode / read_frames / iter_steps / validate, the metadata
layout, byte-identity without a codec, the one-line error when PyAV is missing, and
atomicity when encoding fails. Frames are small (24x24 or 32x32, 10 steps) to stay fast.
"""

from __future__ import annotations

import builtins
import importlib.util
import io
import json
import math
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from schema_testlib import (
    REPO_ROOT,
    make_steps,
    meta_doc,
    meta_npy,
    npy_bytes,
    npz_members,
    write_episode,
    write_zip,
)
from teamvla_schema import (
    IMAGE_CODECS,
    EpisodeMeta,
    EpisodeWriter,
    FieldEncoding,
    SchemaError,
    find_episodes,
    iter_steps,
    read_episode,
    read_episode_meta,
    read_frames,
    validate_episode_file,
    write_episode_arrays,
)
from teamvla_schema.atomic import is_temporary
from teamvla_schema.cli import main

HAVE_AV = all(importlib.util.find_spec(m) is not None for m in ("av", "zstandard"))
#: Tests that encode or decode need the codec extra (teamvla-schema[video]: PyAV and
#: zstandard); the rest run without it, as in the schema-alone nox session.
needs_av = pytest.mark.skipif(not HAVE_AV, reason='needs PyAV: pip install "teamvla-schema[video]"')

EXTRA = 'pip install "teamvla-schema[video]"'


def camera_clip(t: int, size: int, seed: int) -> np.ndarray:
    """Camera-like frames: gradients, texture, lighting drift, a soft moving blob, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.stack(
        [90 + 60 * x / size, 120 + 40 * y / size, 150 - 30 * (x + y) / (2 * size)], axis=-1
    )
    base += 3 * np.sin(x / 4 + y / 7 + seed)[..., None]
    out = np.empty((t, size, size, 3), np.float32)
    for i in range(t):
        cy, cx = size * 0.3 + 0.5 * i, size * 0.3 + 0.7 * i
        blob = 0.8 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 18.0)[..., None]
        out[i] = base * (1 + 0.03 * np.sin(i / 3)) * (1 - blob) + blob * np.array([170, 110, 80])
    out += rng.normal(0, 1, out.shape)  # sensor noise, about one 8-bit level
    return np.rint(out).clip(0, 255).astype(np.uint8)


def camera_steps(t: int = 10, size: int = 32) -> list[dict]:
    clip_a, clip_b = camera_clip(t, size, 0), camera_clip(t, size, 1)
    return [
        {**step, "rgb_a": clip_a[i], "rgb_b": clip_b[i]}
        for i, step in enumerate(make_steps(t, h=size, w=size))
    ]


def stacked(steps: list[dict], name: str) -> np.ndarray:
    return np.stack([np.asarray(s[name]) for s in steps])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.fixture(scope="module")
def steps() -> list[dict]:
    return camera_steps()


@pytest.fixture(scope="module")
def lossless_file(tmp_path_factory, steps) -> Path:
    return write_episode(tmp_path_factory.mktemp("lossless"), steps, image_codec="lossless")


@pytest.fixture(scope="module")
def video_file(tmp_path_factory, steps) -> Path:
    return write_episode(tmp_path_factory.mktemp("video"), steps, image_codec="video")


# --------------------------------------------------------------------------- round trips


@needs_av
def test_lossless_round_trip_is_bit_exact_through_every_reader(lossless_file, steps) -> None:
    episode = read_episode(lossless_file)
    for name in steps[0]:
        if name in ("rgb_a", "rgb_b", "q_a", "grip_a"):
            got = episode.arrays[name]
            want = stacked(steps, name)
            assert got.dtype == want.dtype and got.shape == want.shape, name
            np.testing.assert_array_equal(got, want)
    for start, stop in [(0, 10), (0, 1), (3, 7), (9, 10), (5, 5)]:
        np.testing.assert_array_equal(
            read_frames(lossless_file, "rgb_b", start, stop), stacked(steps, "rgb_b")[start:stop]
        )
    np.testing.assert_array_equal(read_frames(lossless_file, "rgb_a"), stacked(steps, "rgb_a"))
    for i, step in enumerate(iter_steps(lossless_file, fields=["rgb_a", "instruction"])):
        np.testing.assert_array_equal(step["rgb_a"], steps[i]["rgb_a"])
        assert step["instruction"] == steps[i]["instruction"]
    header = validate_episode_file(lossless_file)
    assert set(header.encodings) == {"rgb_a", "rgb_b"}


@needs_av
def test_read_frames_reads_only_the_groups_it_decodes(tmp_path) -> None:
    from teamvla_schema.codecs import _predictive_stream

    steps = camera_steps(t=40, size=16)  # two groups of frames (gop 30): 0..29 and 30..39
    path = write_episode(tmp_path, steps, image_codec="lossless")
    with zipfile.ZipFile(path) as zf:
        member = io.BytesIO(zf.read("rgb_a.npy"))
    stream = np.load(member, allow_pickle=False).tobytes()
    parsed = _predictive_stream.parse(stream, (40, 16, 16, 3))
    blob = bytearray(path.read_bytes())
    at = blob.find(stream[:256])
    assert at > 0 and blob.find(stream[:256], at + 1) == -1
    blob[at + int(parsed.offsets[1]) + 3] ^= 0xFF  # inside group 0's residuals
    path.write_bytes(bytes(blob))
    # Group 1 alone is read, and its CRC-32 holds: the frames come back exactly.
    want = stacked(steps, "rgb_a")
    np.testing.assert_array_equal(read_frames(path, "rgb_a", 30, 40), want[30:40])
    np.testing.assert_array_equal(read_frames(path, "rgb_b", 0, 40), stacked(steps, "rgb_b"))
    for read in (
        lambda: read_frames(path, "rgb_a", 0, 5),
        lambda: read_frames(path, "rgb_a", 25, 35),
        lambda: read_episode(path),
        lambda: validate_episode_file(path),
    ):
        with pytest.raises(SchemaError) as info:
            read()
        assert path.name in str(info.value) and "rgb_a" in str(info.value)


def test_read_frames_decodes_into_an_array_the_caller_owns(tmp_path) -> None:
    steps = camera_steps(t=40, size=16)
    path = write_episode(tmp_path, steps, image_codec="lossless")
    want = stacked(steps, "rgb_a")
    out = np.zeros((12, 16, 16, 3), np.uint8)
    assert read_frames(path, "rgb_a", 25, 37, out=out) is out  # across a group boundary
    np.testing.assert_array_equal(out, want[25:37])
    joints = np.zeros((5, *steps[0]["q_a"].shape), np.float32)  # a plain field too
    assert read_frames(path, "q_a", 3, 8, out=joints) is joints
    np.testing.assert_array_equal(joints, stacked(steps, "q_a")[3:8])
    with pytest.raises(SchemaError) as info:  # frames of another size: names file and field
        read_frames(path, "rgb_a", 0, 12, out=np.zeros((12, 8, 8, 3), np.uint8))
    assert path.name in str(info.value) and "rgb_a" in str(info.value)
    frozen = np.zeros((12, 16, 16, 3), np.uint8)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        read_frames(path, "rgb_a", 0, 12, out=frozen)


def test_read_frames_notices_a_file_replaced_or_rewritten_since(tmp_path) -> None:
    import os
    import shutil

    first = camera_steps(t=40, size=16)
    second = [{**s, "rgb_a": s["rgb_b"], "rgb_b": s["rgb_a"]} for s in first]  # other frames
    a = write_episode(tmp_path / "a", first, image_codec="lossless")
    b = write_episode(tmp_path / "b", second, image_codec="lossless")
    np.testing.assert_array_equal(read_frames(a, "rgb_a", 30, 40), stacked(first, "rgb_a")[30:40])
    # Replaced by rename (another inode), as a writer does: the new file's frames.
    shutil.copyfile(b, tmp_path / "b.tmp")
    os.replace(tmp_path / "b.tmp", a)
    np.testing.assert_array_equal(read_frames(a, "rgb_a", 30, 40), stacked(second, "rgb_a")[30:40])
    # Rewritten in place (the same inode) with other bytes: parsed again, not the old places.
    a.write_bytes(write_episode(tmp_path / "c", camera_steps(t=12, size=16)).read_bytes())
    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(IndexError):  # 12 steps now
        read_frames(a, "rgb_a", 30, 40)


def test_a_file_range_reads_on_demand_and_refuses_bytes_past_the_end(tmp_path) -> None:
    import os

    from teamvla_schema.codecs.file_range import FileRange

    path = tmp_path / "bytes"
    path.write_bytes(bytes(range(200)))
    fd = os.open(path, os.O_RDONLY)
    try:
        data = FileRange(fd, 50, 100)
        assert len(data) == 100
        assert data[:4] == bytes([50, 51, 52, 53])
        assert data[90:] == bytes(range(140, 150))
        assert data[10:10] == b"" and data[-2:] == bytes([148, 149])
        with pytest.raises(SchemaError, match="past the end"):
            FileRange(fd, 150, 100)[40:60]
        with pytest.raises(TypeError):
            data[3]  # type: ignore[index]
    finally:
        os.close(fd)


@needs_av
def test_video_records_its_psnr_and_reaches_35_db_at_crf_30(video_file, steps) -> None:
    header = read_episode_meta(video_file)
    episode = read_episode(video_file, fields=["rgb_a", "rgb_b"])
    for name in ("rgb_a", "rgb_b"):
        enc = header.encodings[name]
        assert enc.codec == "video" and not enc.lossless
        assert enc.params == {"crf": 30, "gop": 30, "preset": 8}
        decoded = episode.arrays[name]
        assert decoded.dtype == np.uint8 and decoded.shape == (10, 32, 32, 3)
        measured = psnr(decoded, stacked(steps, name))
        assert enc.psnr is not None and abs(enc.psnr - measured) < 0.01, (enc.psnr, measured)
        assert enc.psnr >= 35.0, enc.psnr
        np.testing.assert_array_equal(read_frames(video_file, name, 4, 9), decoded[4:9])
    validate_episode_file(video_file)


@needs_av
def test_video_crf_is_the_quality_knob(tmp_path, steps) -> None:
    fine = write_episode(tmp_path / "fine", steps, image_codec="video", video_crf=10)
    coarse = write_episode(tmp_path / "coarse", steps, image_codec="video", video_crf=55)
    f, c = read_episode_meta(fine).encodings["rgb_a"], read_episode_meta(coarse).encodings["rgb_a"]
    assert f.params["crf"] == 10 and c.params["crf"] == 55
    assert f.psnr is not None and c.psnr is not None and f.psnr > c.psnr
    assert f.nbytes > c.nbytes


@needs_av
def test_write_episode_arrays_takes_the_same_keywords(tmp_path, steps) -> None:
    arrays = {name: stacked(steps, name) for name in steps[0]}
    meta = EpisodeMeta("lift", "arrays-1", True, len(steps))
    path = write_episode_arrays(tmp_path / "a.npz", meta, arrays, image_codec="lossless")
    back = read_episode(path)
    for name in ("rgb_a", "rgb_b", "q_b"):
        np.testing.assert_array_equal(back.arrays[name], arrays[name])
    assert set(back.header.encodings) == {"rgb_a", "rgb_b"}


@needs_av
def test_plain_fields_read_by_range(lossless_file, steps) -> None:
    for name in ("q_a", "grip_a", "instruction", "success"):
        whole = read_episode(lossless_file, fields=[name]).arrays[name]
        part = read_frames(lossless_file, name, 2, 6)
        assert part.dtype == whole.dtype
        np.testing.assert_array_equal(part, whole[2:6])
    assert read_frames(lossless_file, "q_a", 4, 4).shape == (0, 7)


def test_read_frames_of_an_unencoded_file_and_bad_ranges(tmp_path) -> None:
    steps = make_steps(6, h=8, w=8)
    path = write_episode(tmp_path, steps)
    np.testing.assert_array_equal(read_frames(path, "rgb_a", 1, 4), stacked(steps, "rgb_a")[1:4])
    for start, stop in [(-1, 2), (3, 2), (0, 7), (1.5, 3)]:
        with pytest.raises(IndexError, match="outside 0:6"):
            read_frames(path, "rgb_a", start, stop)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="no such field"):
        read_frames(path, "depth_a")


# --------------------------------------------------------------------------- the file layout


@needs_av
def test_metadata_and_members_of_an_encoded_file(lossless_file, video_file) -> None:
    for path, codec in [(lossless_file, "lossless"), (video_file, "video")]:
        doc = meta_doc(path)
        assert doc["version"] == 1 and doc["format"] == "teamvla-episode"
        assert doc["fields"]["rgb_a"] == {"dtype": "uint8", "shape": [32, 32, 3]}  # decoded layout
        assert set(doc["encodings"]) == {"rgb_a", "rgb_b"}
        entry = doc["encodings"]["rgb_a"]
        assert entry["codec"] == codec and entry["shape"] == [10, 32, 32, 3]
        assert entry["dtype"] == "uint8"
        assert ("psnr" in entry) == (codec == "video")
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            info = zf.getinfo("rgb_a.npy")
            stream = np.load(io.BytesIO(zf.read("rgb_a.npy")), allow_pickle=False)
        assert names[0] == "__meta__.npy" and "rgb_a.npy" in names and "q_a.npy" in names
        assert info.compress_type == zipfile.ZIP_STORED  # a codec stream is not deflated again
        assert stream.dtype == np.uint8 and stream.shape == (entry["bytes"],)
        assert stream[:4].tobytes() == (b"TVLL" if codec == "lossless" else b"TVSQ")
        with np.load(path, allow_pickle=False) as npz:  # still a plain, pickle-free npz
            assert set(npz.files) >= {"__meta__", "rgb_a", "q_a"}
        header = read_episode_meta(path)
        assert header.fields["rgb_a"].shape == (32, 32, 3)
        enc = header.encodings["rgb_a"]
        assert isinstance(enc, FieldEncoding) and enc.gop == 30 and enc.nbytes == entry["bytes"]
        assert enc.to_dict() == entry


@needs_av
def test_only_schema_camera_fields_are_encoded(tmp_path) -> None:
    extra = np.zeros((8, 8, 3), np.uint8)
    steps = [dict(s, rgb_wrist=extra) for s in make_steps(4, h=8, w=8)]
    path = write_episode(tmp_path, steps, image_codec="lossless")
    header = read_episode_meta(path)
    assert set(header.encodings) == {"rgb_a", "rgb_b"}
    assert read_episode(path, fields=["rgb_wrist"]).arrays["rgb_wrist"].shape == (4, 8, 8, 3)


def test_no_codec_is_byte_identical_to_before(tmp_path) -> None:
    steps = make_steps(5, h=8, w=8)
    a = write_episode(tmp_path / "a", steps)
    b = write_episode(tmp_path / "b", steps, image_codec=None, video_crf=12)
    assert a.read_bytes() == b.read_bytes()
    assert "encodings" not in meta_doc(a)
    assert read_episode_meta(a).encodings == {}


def test_checked_in_fixture_still_loads() -> None:
    fixtures = find_episodes(REPO_ROOT / "tests" / "fixtures" / "data")
    assert fixtures
    for path in fixtures[:3]:
        header = read_episode_meta(path)
        assert header.encodings == {}
        if "rgb_a" in header.fields:
            full = read_episode(path, fields=["rgb_a"]).arrays["rgb_a"]
            np.testing.assert_array_equal(read_frames(path, "rgb_a", 1, 2), full[1:2])


@needs_av
def test_near_constant_frames_beyond_the_ratio_limit_stay_plain(tmp_path, monkeypatch) -> None:
    import teamvla_schema.episode_codec as episode_codec

    monkeypatch.setattr(episode_codec, "MAX_CODEC_RATIO", 2)
    steps = [dict(s, rgb_a=np.zeros((16, 16, 3), np.uint8)) for s in camera_steps(4, 16)]
    path = write_episode(tmp_path, steps, image_codec="lossless")
    header = validate_episode_file(path)
    assert "rgb_a" not in header.encodings  # black frames: stored as plain .npy
    np.testing.assert_array_equal(read_episode(path).arrays["rgb_a"], stacked(steps, "rgb_a"))


@needs_av
def test_teamvla_validate_checks_encoded_files(tmp_path, capsys, steps) -> None:
    write_episode(tmp_path, steps[:4], image_codec="lossless")
    assert main(["validate", str(tmp_path), "-v"]) == 0
    out = capsys.readouterr().out
    assert "rgb_a: lossless, rgb_b: lossless" in out and "1 ok, 0 bad" in out


# --------------------------------------------------------------------------- writer arguments


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_codec": "gif"}, "unknown image_codec 'gif'"),
        ({"image_codec": "video", "video_crf": 64}, "video_crf"),
        ({"image_codec": "video", "video_crf": 30.0}, "video_crf"),
        ({"video_crf": True}, "video_crf"),
    ],
)
def test_bad_codec_arguments_are_refused_up_front(tmp_path, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        EpisodeWriter(tmp_path, **kwargs)
    assert IMAGE_CODECS == ("lossless", "video")


# --------------------------------------------------------------------------- missing PyAV


def block_imports(monkeypatch, *blocked: str) -> None:
    """Make ``import`` of the ``blocked`` modules fail, as if they were not installed."""
    real_import = builtins.__import__

    def is_blocked(module: str) -> bool:
        return any(module == b or module.startswith(b + ".") for b in blocked)

    def fake_import(module, *args, **kwargs):
        if is_blocked(module):
            raise ImportError(f"No module named {module!r}")
        return real_import(module, *args, **kwargs)

    for name in [m for m in sys.modules if is_blocked(m)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.fixture
def no_codec_deps(monkeypatch):
    """Neither PyAV nor zstandard installed: no codec can encode or decode."""
    block_imports(monkeypatch, "av", "zstandard")


@pytest.fixture
def no_av(monkeypatch):
    """PyAV not installed (zstandard is)."""
    block_imports(monkeypatch, "av")


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text
    return text


@pytest.fixture
def encoded_file(tmp_path) -> Path:
    """An episode whose camera fields are lossless streams; crafted when PyAV is missing.

    Without PyAV the streams are placeholder bytes: reading them stops at the missing
    codec, before any byte of a stream is looked at.
    """
    steps = camera_steps()
    if HAVE_AV:
        return write_episode(tmp_path, steps, image_codec="lossless")
    plain = write_episode(tmp_path / "plain", steps)
    doc = meta_doc(plain)
    members = npz_members(plain)
    doc["encodings"] = {}
    for name in ("rgb_a", "rgb_b"):
        stream = np.frombuffer(b"TVSQ" + bytes(2000), np.uint8)
        members[f"{name}.npy"] = npy_bytes(stream)
        doc["encodings"][name] = {
            "codec": "lossless",
            "params": {"gop": 30, "preset": "medium"},
            "shape": [len(steps), 32, 32, 3],
            "dtype": "uint8",
            "bytes": len(stream),
        }
    members["__meta__.npy"] = meta_npy(doc)
    return write_zip(tmp_path / "crafted.npz", members)


def test_missing_codec_deps_reading_names_the_file_and_the_extra(
    encoded_file, no_codec_deps
) -> None:
    lossless_file = encoded_file
    for read in (
        lambda: read_episode(lossless_file),
        lambda: read_frames(lossless_file, "rgb_a", 0, 2),
        lambda: validate_episode_file(lossless_file),
        lambda: list(iter_steps(lossless_file)),
    ):
        with pytest.raises(ImportError) as info:
            read()
        text = one_line(info.value)
        assert EXTRA in text and str(lossless_file) in text and "rgb_a" in text
    # What needs no codec still works: metadata and the plain fields.
    assert read_episode_meta(lossless_file).encodings["rgb_a"].codec == "lossless"
    assert read_episode(lossless_file, fields=["q_a"]).arrays["q_a"].shape == (10, 7)
    assert read_frames(lossless_file, "q_a", 0, 3).shape == (3, 7)


def test_missing_codec_deps_writing_fails_before_recording(tmp_path, no_codec_deps) -> None:
    for codec in IMAGE_CODECS:
        with pytest.raises(ImportError) as info:
            EpisodeWriter(tmp_path / "root", image_codec=codec)
        text = one_line(info.value)
        assert EXTRA in text and str(tmp_path / "root") in text
        steps = make_steps(2, h=8, w=8)
        arrays = {name: stacked(steps, name) for name in steps[0]}
        target = tmp_path / "x.npz"
        with pytest.raises(ImportError) as info:
            write_episode_arrays(
                target, EpisodeMeta("lift", "x", num_steps=2), arrays, image_codec=codec
            )
        assert EXTRA in one_line(info.value) and str(target) in str(info.value)
    # Without a codec nothing needs PyAV.
    assert (
        read_episode(write_episode(tmp_path / "plain", make_steps(2, h=8, w=8))).meta.num_steps == 2
    )
    assert not (tmp_path / "x.npz").exists()


@needs_av
def test_lossless_needs_no_pyav_and_older_x264_files_still_read(tmp_path, monkeypatch) -> None:
    from teamvla_schema.codecs import lossless

    steps = camera_steps()
    older = write_episode(tmp_path / "older", steps, image_codec="lossless")
    # A file as teamvla-schema 0.1.0 wrote it: the same layout with x264 lossless streams.
    doc = meta_doc(older)
    members = npz_members(older)
    for name in ("rgb_a", "rgb_b"):
        frames = np.stack([step[name] for step in steps])
        stream = lossless.encode_x264(frames, gop=30)
        members[f"{name}.npy"] = npy_bytes(np.frombuffer(stream, np.uint8))
        doc["encodings"][name].update(params={"gop": 30, "preset": "medium"}, bytes=len(stream))
    members["__meta__.npy"] = meta_npy(doc)
    older = write_zip(tmp_path / "older.npz", members)
    back = read_episode(older)
    for name in ("rgb_a", "rgb_b"):
        np.testing.assert_array_equal(back.arrays[name], np.stack([s[name] for s in steps]))
    validate_episode_file(older)

    block_imports(monkeypatch, "av")
    path = write_episode(tmp_path / "new", steps, image_codec="lossless")
    np.testing.assert_array_equal(
        read_episode(path).arrays["rgb_a"], np.stack([s["rgb_a"] for s in steps])
    )
    with pytest.raises(ImportError) as info:  # the older streams need PyAV's H.264 decoder
        read_episode(older)
    text = one_line(info.value)
    assert EXTRA in text and str(older) in text and "rgb_a" in text


# --------------------------------------------------------------------------- atomicity


@needs_av
def test_failure_while_encoding_leaves_no_file_and_keeps_the_episode_open(
    tmp_path, monkeypatch, steps
) -> None:
    import teamvla_schema.codecs.lossless as lossless

    root = tmp_path / "root"
    first = write_episode(root, steps[:3], image_codec="lossless")
    before = first.read_bytes()
    real = lossless.encode
    calls = {"n": 0}

    def crash_on_second_field(frames, **params):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash while encoding")
        return real(frames, **params)

    monkeypatch.setattr(lossless, "encode", crash_on_second_field)
    writer = EpisodeWriter(root, image_codec="lossless")
    writer.start_episode({"task": "lift"})
    for step in steps:
        writer.add_step(step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        writer.end_episode()
    assert sorted(p.name for p in (root / "lift").iterdir()) == [first.name]  # no file, no .tmp
    assert first.read_bytes() == before
    assert writer.in_episode  # nothing lost: the episode can be written again
    monkeypatch.setattr(lossless, "encode", real)
    second = writer.end_episode()
    np.testing.assert_array_equal(read_episode(second).arrays["rgb_b"], stacked(steps, "rgb_b"))


@needs_av
def test_encoded_file_is_written_through_the_atomic_path(tmp_path, monkeypatch, steps) -> None:
    import teamvla_schema.episode as episode_mod

    real = episode_mod.write_zip

    def fails_midway(fh, members):
        fh.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(episode_mod, "write_zip", fails_midway)
    with EpisodeWriter(tmp_path, image_codec="video") as writer:
        writer.start_episode({"task": "lift", "episode_id": "full-disk"})
        for step in steps:
            writer.add_step(step)
        with pytest.raises(OSError, match=r"full-disk\.npz"):
            writer.end_episode()
        assert not any((tmp_path / "lift").iterdir())
        monkeypatch.setattr(episode_mod, "write_zip", real)
        path = writer.end_episode()
    assert json.loads(json.dumps(meta_doc(path)))["encodings"]["rgb_a"]["codec"] == "video"
    validate_episode_file(path)


# --------------------------------------------------------------------------- teamvla synth


@needs_av
def test_synth_takes_the_codec_from_the_config_and_the_command_line(tmp_path, capsys) -> None:
    sim_config = pytest.importorskip("teamvla_data.sim.config")  # teamvla-data, when installed
    from teamvla_schema.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="expected one of"):
        from_dict(sim_config.TaskConfig, {"storage": {"image_codec": "gif"}}, key="task")
    with pytest.raises(ConfigError, match="<= 63"):
        from_dict(sim_config.TaskConfig, {"storage": {"video_crf": 64}}, key="task")
    config = tmp_path / "lift.yaml"
    config.write_text(
        "task:\n  name: lift\n  storage:\n    image_codec: video\n    video_crf: 40\n"
    )
    base = ["synth", "--tasks", "lift", "--episodes-per-task", "1", "--image-size", "16"]
    base += ["--no-progress", "--config", str(config)]

    def codecs(out: Path) -> dict[str, FieldEncoding]:
        (path,) = find_episodes(out)
        return validate_episode_file(path).encodings

    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert {e.codec for e in codecs(tmp_path / "a").values()} == {"video"}
    assert codecs(tmp_path / "a")["rgb_a"].params["crf"] == 40
    assert main([*base, "--image-codec", "lossless", "--out", str(tmp_path / "b")]) == 0
    assert {e.codec for e in codecs(tmp_path / "b").values()} == {"lossless"}
    assert main([*base, "--image-codec", "none", "--out", str(tmp_path / "c")]) == 0
    assert codecs(tmp_path / "c") == {}
    assert main([*base, "--video-crf", "20", "--out", str(tmp_path / "d")]) == 0
    assert codecs(tmp_path / "d")["rgb_b"].params["crf"] == 20
    capsys.readouterr()


# --------------------------------------------------------------------------- killed writers

_KILLED_WRITER = """
import sys
import numpy as np
from teamvla_schema import EpisodeWriter

rng = np.random.default_rng(0)
frames = rng.integers(0, 256, (8, 48, 48, 3), dtype=np.uint8)  # noise: slow to encode
print("ready", flush=True)
with EpisodeWriter(sys.argv[1], image_codec="lossless") as writer:
    while True:
        writer.start_episode({"task": "lift"})
        for i in range(40):
            q = np.full(7, i / 64, np.float32)
            writer.add_step({
                "rgb_a": frames[i % 8], "rgb_b": frames[(i + 3) % 8],
                "q_a": q, "q_b": -q, "action_a": q, "action_b": -q,
                "grip_a": 0.5, "grip_b": 0.0, "instruction": "lift the red block",
                "task": "lift", "success": i == 39,
            })
        writer.end_episode()
"""


@needs_av
@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_a_writer_killed_while_encoding_leaves_no_half_file(tmp_path) -> None:
    root = tmp_path / "root"
    for delay in (0.3, 0.55, 0.8):
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    episodes = find_episodes(root)
    assert episodes, "no episode finished before the kills; lengthen the delays"
    for path in episodes:
        assert set(validate_episode_file(path).encodings) == {"rgb_a", "rgb_b"}
    for path in root.rglob("*"):
        if path.is_file() and path not in episodes:
            assert is_temporary(path), f"unexpected visible file {path}"


@needs_av
@pytest.mark.slow
def test_bench_storage_write_quick_prints_the_table(tmp_path) -> None:
    pytest.importorskip("PIL")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "bench_storage_write.py"),
            "--quick",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for row in ("image_codec=None", "image_codec=lossless", "image_codec=video crf 30"):
        assert f"EpisodeWriter {row}" in result.stdout
    assert "LeRobot-style PNG" in result.stdout and "LeRobot-style AV1" in result.stdout
    assert "bytes on disk" in result.stdout and "PSNR dB" in result.stdout
    assert not list(tmp_path.iterdir())  # cleaned up after itself
