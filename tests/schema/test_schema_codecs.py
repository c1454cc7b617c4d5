"""Image-sequence codecs (teamvla_schema.codecs): round trips, random access, hostile bytes."""

from __future__ import annotations

import builtins
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from teamvla_schema import SchemaError
from teamvla_schema.codecs import available_codecs, get_codec, lossless

av = pytest.importorskip("av")


def camera_frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Small camera-like frames: gradient + texture + moving square + sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 100 + 40 * xx[..., None] / max(w, 1) + 30 * yy[..., None] / max(h, 1)
    base = base + 5 * np.sin(xx / 3 + yy / 5)[..., None] + np.array([0, 20, -20], np.float32)
    frames = np.repeat(base[None], t, 0)
    for i in range(t):
        frames[i] *= 1 + 0.02 * math.sin(i / 4)
        y, x = (2 + i) % max(h - 4, 1), (1 + 2 * i) % max(w - 4, 1)
        frames[i, y : y + 4, x : x + 4] = (200, 60, 40)
    frames += rng.normal(0, 1, frames.shape)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.mark.parametrize("shape", [(1, 16, 16, 3), (12, 33, 17, 3), (40, 24, 32, 3), (3, 1, 1, 3)])
def test_lossless_round_trip_is_bit_exact(shape) -> None:
    codec = get_codec("lossless")
    frames = camera_frames(*shape[:3])
    data = codec.encode(frames, gop=8)
    assert isinstance(data, bytes)
    back = codec.decode(data, shape=shape)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, frames)


def test_lossless_random_noise_is_bit_exact() -> None:
    frames = np.random.default_rng(1).integers(0, 256, (5, 20, 22, 3), dtype=np.uint8)
    codec = get_codec("lossless")
    np.testing.assert_array_equal(codec.decode(codec.encode(frames), shape=frames.shape), frames)


def test_video_psnr_above_bound_and_monotone_in_crf() -> None:
    codec = get_codec("video")
    frames = camera_frames(16, 48, 48)
    results = []
    for crf in (15, 30, 50):
        data = codec.encode(frames, crf=crf, gop=8)
        back = codec.decode(data, shape=frames.shape)
        assert back.shape == frames.shape
        results.append((psnr(back, frames), len(data)))
    quality = [q for q, _ in results]
    sizes = [n for _, n in results]
    assert quality[0] > 33.0, results
    assert quality == sorted(quality, reverse=True), results
    assert sizes == sorted(sizes, reverse=True), results


def test_video_handles_odd_and_tiny_sizes() -> None:
    codec = get_codec("video")
    for shape in [(2, 33, 17, 3), (1, 1, 1, 3)]:
        frames = camera_frames(*shape[:3])
        assert codec.decode(codec.encode(frames), shape=shape).shape == shape


def reference_decode(data: bytes, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Every frame through PyAV's own per-frame conversion (``to_ndarray(format="rgb24")``)."""
    from teamvla_schema.codecs import _stream

    parsed = _stream.parse(data, codec_name(data), shape)
    ctx = _stream._decoder(av, parsed.header["bitstream"], parsed.extradata)
    out = np.empty(shape, np.uint8)
    frames = []
    for k in range(len(parsed.table)):
        packet = av.Packet(parsed.packet(k))
        packet.pts = packet.dts = int(parsed.table["pts"][k])
        frames += ctx.decode(packet)
    frames += ctx.decode(None)
    for frame in frames:
        out[frame.pts] = frame.to_ndarray(format="rgb24")[: shape[1], : shape[2]]
    return out


def codec_name(data: bytes) -> str:
    return "lossless" if b'"lossless"' in data[:512] else "video"


@pytest.mark.parametrize("name", ["lossless", "video"])
@pytest.mark.parametrize("shape", [(9, 24, 32, 3), (5, 17, 13, 3), (40, 48, 64, 3)])
@pytest.mark.parametrize("stacking", [True, False])
def test_fast_pixel_conversion_equals_pyav_per_frame_conversion(
    name, shape, stacking, monkeypatch
) -> None:
    # The decoder reorders the G, B, R planes itself (lossless) or converts groups of 4:2:0
    # frames stacked in one swscale call (video; per frame where its self-check says stacking
    # is not exact, forced here with stacking=False); every path must give exactly the pixels
    # of PyAV's per-frame conversion, for whole streams and for ranges cut mid-group.
    from teamvla_schema.codecs import _pixels

    monkeypatch.setattr(_pixels, "_STACK_EXACT", {})
    if not stacking:
        monkeypatch.setattr(_pixels.RgbConverter, "stacking_is_exact", lambda self, w, h: False)
    codec = get_codec(name)
    frames = camera_frames(*shape[:3], seed=3)
    # lossless: the x264 streams of teamvla-schema 0.1.0, which files may still hold.
    data = codec.encode(frames, gop=30) if name == "video" else lossless.encode_x264(frames)
    reference = reference_decode(data, shape)
    np.testing.assert_array_equal(codec.decode(data, shape=shape), reference)
    t = shape[0]
    for start, stop in [(0, 1), (t // 3, t // 3 + 2), (max(0, t - 20), t)]:
        np.testing.assert_array_equal(
            codec.decode_range(data, start, stop, shape=shape), reference[start:stop]
        )
    if name == "video" and stacking:
        coded = (shape[2] + shape[2] % 2, shape[1] + shape[1] % 2)  # (W, H), padded to even
        assert _pixels._STACK_EXACT.get(coded) is True


@pytest.mark.parametrize("name", ["lossless", "video"])
def test_decode_range_equals_slicing_the_full_decode(name) -> None:
    codec = get_codec(name)
    frames = camera_frames(30, 24, 24)
    data = codec.encode(frames, gop=7)
    full = codec.decode(data, shape=frames.shape)
    for start, stop in [(0, 1), (0, 30), (6, 8), (7, 8), (13, 29), (29, 30)]:
        part = codec.decode_range(data, start, stop, shape=frames.shape)
        np.testing.assert_array_equal(part, full[start:stop])
    with pytest.raises(IndexError):
        codec.decode_range(data, 5, 31, shape=frames.shape)


@pytest.mark.parametrize("name", ["lossless", "video"])
def test_wrong_expected_shape_is_refused(name) -> None:
    codec = get_codec(name)
    frames = camera_frames(4, 16, 16)
    data = codec.encode(frames)
    for shape in [
        (5, 16, 16, 3),
        (4, 16, 18, 3),
        (4, 18, 16, 3),
        (4, 16, 16, 4),
        (400, 960, 960, 3),
    ]:
        with pytest.raises(SchemaError, match="shape"):
            codec.decode(data, shape=shape)
    with pytest.raises(SchemaError, match="codec"):  # the other codec's bytes
        get_codec("video" if name == "lossless" else "lossless").decode(data, shape=frames.shape)


@pytest.mark.parametrize("name", ["lossless", "video"])
def test_corrupt_or_truncated_bytes_fail_fast_and_clearly(name) -> None:
    codec = get_codec(name)
    frames = camera_frames(6, 16, 16)
    data = codec.encode(frames, gop=3)
    rng = np.random.default_rng(0)
    bad = [b"", b"TVSQ", data[:20], data[: len(data) // 2], data[:-1], data + b"\0", b"x" * 500]
    for _ in range(20):
        flipped = bytearray(data)
        flipped[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        bad.append(bytes(flipped))
    bad.append(rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
    t0 = time.perf_counter()
    for blob in bad:
        try:
            back = codec.decode(blob, shape=frames.shape)
        except SchemaError as exc:
            assert str(exc).strip() and "\n" not in str(exc)
        else:  # a flip in a field that does not matter (e.g. a JSON space) may still decode
            assert back.shape == frames.shape
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("name", ["lossless", "video"])
def test_decode_chunks_yields_every_frame_in_order(name) -> None:
    codec = get_codec(name)
    frames = camera_frames(11, 16, 16)
    data = codec.encode(frames, gop=4)
    chunks = list(codec.decode_chunks(data, shape=frames.shape, chunk=3))
    assert [len(c) for c in chunks] == [3, 3, 3, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), codec.decode(data, shape=frames.shape))
    with pytest.raises(SchemaError, match="shape"):
        next(codec.decode_chunks(data, shape=(12, 16, 16, 3), chunk=3))


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("video", {"crf": 64}, "crf"),
        ("video", {"crf": -1}, "crf"),
        ("video", {"crf": 30.0}, "crf"),
        ("video", {"crf": True}, "crf"),
        ("video", {"gop": 0}, "gop"),
        ("video", {"preset": 14}, "preset"),
        ("video", {"bitrate": 5}, "unknown"),
        ("lossless", {"gop": 1 << 20}, "gop"),
        ("lossless", {"preset": "turbo"}, "preset"),
        ("lossless", {"crf": 30}, "unknown"),
        ("lossless", [("gop", 3)], "mapping"),
    ],
)
def test_check_params_refuses_bad_values(name, params, message) -> None:
    with pytest.raises(ValueError, match=message):
        get_codec(name).check_params(params)


def test_check_params_fills_in_the_defaults() -> None:
    assert get_codec("video").check_params({}) == {"crf": 30, "gop": 30, "preset": 8}
    assert get_codec("video").check_params({"preset": None})["preset"] is None
    assert get_codec("lossless").check_params({}) == {"gop": 30}
    assert get_codec("lossless").check_params({"gop": 7}) == {"gop": 7}
    # What x264 streams of teamvla-schema 0.1.0 record stays readable.
    older = {"gop": 7, "preset": "medium"}
    assert get_codec("lossless").check_params(older) == older


def test_encode_rejects_bad_frames() -> None:
    codec = get_codec("lossless")
    for frames in [
        np.zeros((2, 8, 8), np.uint8),
        np.zeros((2, 8, 8, 3), np.float32),
        np.zeros((0, 8, 8, 3), np.uint8),
    ]:
        with pytest.raises(SchemaError):
            codec.encode(frames)


def test_registry() -> None:
    assert available_codecs() == ("lossless", "video")
    assert get_codec("lossless").LOSSLESS and not get_codec("video").LOSSLESS
    with pytest.raises(KeyError, match="unknown codec"):
        get_codec("gif")


@pytest.mark.parametrize(
    ("name", "dependency", "said"),
    [("lossless", "zstandard", "zstandard"), ("video", "av", "PyAV")],
)
def test_a_missing_dependency_gives_a_one_line_import_error_naming_the_extra(
    name, dependency, said, monkeypatch
) -> None:
    real_import = builtins.__import__

    def blocked(module, *args, **kwargs):
        if module == dependency or module.startswith(dependency + "."):
            raise ImportError(f"No module named {dependency!r}")
        return real_import(module, *args, **kwargs)

    monkeypatch.delitem(sys.modules, dependency, raising=False)
    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(ImportError) as info:
        get_codec(name)
    message = str(info.value)
    assert "teamvla-schema[video]" in message and "\n" not in message
    assert said in message


def test_teamvla_schema_imports_without_av() -> None:
    code = (
        "import sys; sys.modules['av'] = None\n"
        "import teamvla_schema, teamvla_schema.codecs\n"
        "from teamvla_schema.codecs import lossless, video\n"
        "assert teamvla_schema.codecs.available_codecs()\n"
        "try:\n    teamvla_schema.codecs.get_codec('video')\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'pip install "teamvla-schema[video]"' in out.stdout


@pytest.mark.slow
def test_many_partial_video_decodes_do_not_deadlock(tmp_path: Path) -> None:
    """A decoder freed before the end of its stream must not hang (libdav1d worker threads
    waiting for the GIL did, within the first hundred of these calls, before decoders were
    made single-threaded). Run in a child so a hang is a failure, not a stuck suite."""
    pytest.importorskip("av")
    script = tmp_path / "ranges.py"
    script.write_text(
        "import numpy as np\n"
        "from teamvla_schema.codecs import get_codec\n"
        "rng = np.random.default_rng(0)\n"
        "frames = rng.integers(0, 256, (100, 96, 96, 3), dtype=np.uint8)\n"
        "codec = get_codec('video')\n"
        "data = codec.encode(frames)\n"
        "for i in range(400):\n"
        "    start = (i * 7) % 90\n"
        "    codec.decode_range(data, start, start + 2, shape=frames.shape)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def _decode_in_child(data: bytes, shape: tuple[int, ...], expected: np.ndarray, out) -> None:
    back = get_codec(codec_name(data)).decode(data, shape=shape)
    out.put(bool(np.array_equal(back, expected)))


@pytest.mark.parametrize("name", ["video", "lossless"])
def test_decoding_in_a_forked_worker_after_the_parent_decoded(name) -> None:
    # DataLoader workers are forked from a process that may have decoded already. The
    # converter's swscale contexts must not be carried into the child: one that ran scaling
    # threads in the parent waited for ever for them in the child (a loader hang).
    import multiprocessing

    codec = get_codec(name)
    frames = camera_frames(40, 48, 64, seed=5)
    data = codec.encode(frames, gop=30)
    expected = codec.decode(data, shape=frames.shape)  # the parent's contexts now exist
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_decode_in_child, args=(data, frames.shape, expected, out))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail("decoding in a forked child hung")
    assert child.exitcode == 0
    assert out.get(timeout=5) is True
