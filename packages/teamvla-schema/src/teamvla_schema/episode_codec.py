"""Camera fields stored as codec streams inside an episode file (docs/episode-format.md).

With ``EpisodeWriter(root, image_codec="lossless" | "video")`` every camera field (a
field of the step schema holding ``uint8[H,W,3]`` per step: ``rgb_a``, ``rgb_b``) is
stored as one image-sequence stream of :mod:`teamvla_schema.codecs` instead of a ``.npy``
of pixels. The member keeps its name and stays a ``.npy``: ``<field>.npy`` holds
``uint8[n]``, the stream's bytes, stored without deflate (a codec stream does not deflate
further, and skipping it saves write time). The metadata's ``fields`` table keeps the
decoded per-step layout, so the step schema and every schema check stay as they are; a
top-level ``encodings`` table says, per encoded field, how to decode it.

This module holds what encoding adds to the file format: the metadata entry
(:class:`FieldEncoding`), encoding at write time (threads; PSNR measured for lossy
codecs), checking the metadata of a file read (nothing decoded), and decoding with
errors that name the file and field. Only :mod:`teamvla_schema.codecs` needs the codec
extra (PyAV, zstandard), and only when a stream is encoded or decoded.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from teamvla_schema.codecs import (
    MAX_VIDEO_CRF,
    Codec,
    available_codecs,
    codec_module,
    get_codec,
)
from teamvla_schema.codecs.file_range import FileRange
from teamvla_schema.errors import SchemaError
from teamvla_schema.fields import KNOWN_FIELDS, FieldLayout

log = logging.getLogger(__name__)

#: The values ``image_codec`` accepts besides ``None`` (today's plain ``.npy`` members).
IMAGE_CODECS: tuple[str, ...] = available_codecs()

#: The camera fields a codec applies to: every field the step schema declares as
#: ``uint8[H,W,3]`` (``rgb_a``, ``rgb_b``). Other fields are stored as ``.npy`` as always.
IMAGE_FIELDS: tuple[str, ...] = tuple(
    name
    for name, spec in KNOWN_FIELDS.items()
    if spec.kind == "array"
    and spec.dtype == "uint8"
    and len(spec.shape) == 3
    and spec.shape[2] == 3
)

#: An encoded field may declare at most this many decoded bytes per byte of its member on
#: disk (deflate's own limit is about 1032): checked from the metadata and the zip
#: directory before anything is decoded, so the metadata can never promise arrays the
#: file cannot back. Real camera streams stay far below it (about 300 for the benchmark
#: set's AV1); only near-constant frames come close, and the writer stores a field whose
#: stream would exceed it as plain ``.npy`` (deflate handles such frames well).
MAX_CODEC_RATIO = 1 << 16
#: The largest frame (H x W pixels) stored through a codec (4096 x 4096); larger camera
#: fields are written as plain ``.npy`` and refused in ``encodings`` when read.
MAX_FRAME_PIXELS = 1 << 24
#: Frames decoded at a time when a field is checked or its PSNR measured (bounded memory).
_CHECK_CHUNK_BYTES = 4 << 20
#: At most this many fields are encoded at once (the encoders release the GIL for most of their work).
_MAX_ENCODE_THREADS = 4

_ENTRY_KEYS = frozenset({"codec", "params", "shape", "dtype", "bytes"})


@dataclass(frozen=True)
class FieldEncoding:
    """How one field of an episode file is encoded (its entry in the metadata's ``encodings``).

    ``shape`` and ``dtype`` describe the decoded array (``(T, H, W, 3)``, ``"uint8"``);
    ``nbytes`` is the size of the stream, the member's ``uint8[nbytes]`` array. ``psnr``
    (dB, over the whole field, measured when the file was written) is set for lossy
    codecs only: ``math.inf`` when the decoded frames equal the input exactly; ``None``
    for lossless codecs.
    """

    codec: str
    params: dict[str, Any] = field(hash=False)
    shape: tuple[int, int, int, int]
    nbytes: int
    psnr: float | None = None
    dtype: str = "uint8"

    @property
    def lossless(self) -> bool:
        """Whether the decoded array equals what was written, bit for bit."""
        return bool(codec_module(self.codec).LOSSLESS)

    @property
    def gop(self) -> int | None:
        """The keyframe interval: frames :func:`~teamvla_schema.read_frames` may decode in vain."""
        gop = self.params.get("gop")
        return gop if isinstance(gop, int) else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON entry (``psnr`` only for lossy codecs; ``null`` there means exact)."""
        out: dict[str, Any] = {
            "codec": self.codec,
            "params": dict(self.params),
            "shape": list(self.shape),
            "dtype": self.dtype,
            "bytes": self.nbytes,
        }
        if not self.lossless:
            out["psnr"] = None if self.psnr is None or math.isinf(self.psnr) else self.psnr
        return out


# --------------------------------------------------------------------------- writing


#: A writer's checked codec choice: ``(codec name, parameters to encode with)``, or ``None``.
CodecChoice = tuple[str, dict[str, Any]] | None


def writer_codec(
    image_codec: str | None, video_crf: int, where: str | os.PathLike[str]
) -> CodecChoice:
    """Check the writer's codec choice: ``(codec, parameters to encode with)``, or ``None``.

    ``ValueError`` for an unknown codec or a bad ``video_crf``; a one-line
    ``ImportError`` naming the extra (and ``where``: the file or root written) when
    PyAV is missing. Called when a writer is made, so that a recorder fails before
    the first episode rather than at its end.
    """
    if (
        isinstance(video_crf, bool)
        or not isinstance(video_crf, int | np.integer)
        or not 0 <= video_crf <= MAX_VIDEO_CRF
    ):
        raise ValueError(
            f"video_crf must be an integer in 0..{MAX_VIDEO_CRF}, received {video_crf!r}"
        )
    if image_codec is None:
        return None
    if image_codec not in IMAGE_CODECS:
        raise ValueError(
            f"unknown image_codec {image_codec!r}; expected one of {list(IMAGE_CODECS)} or None"
        )
    module = codec_module(image_codec)
    wanted = {"crf": int(video_crf)} if image_codec == "video" else {}
    params = module.check_params(wanted)  # ValueError names the codec and the bad value
    try:
        module.require()
    except ImportError as exc:  # names the missing module and the extra, in one line
        raise ImportError(f"{os.fspath(where)}: image_codec={image_codec!r}: {exc}") from None
    return image_codec, params


def _frames_psnr(codec: Codec, data: bytes, frames: np.ndarray) -> float:
    """PSNR (dB) of the decoded stream against ``frames``, decoded a few MiB at a time."""
    chunk = max(1, _CHECK_CHUNK_BYTES // max(frames[0].nbytes, 1))
    sse, done = 0, 0
    for part in codec.decode_chunks(data, shape=frames.shape, chunk=chunk):
        diff = part.astype(np.int32) - frames[done : done + len(part)]
        np.square(diff, out=diff)  # at most 255**2: fits int32; summed in int64
        sse += int(diff.sum(dtype=np.int64))
        done += len(part)
    if sse == 0:
        return math.inf
    return round(10 * math.log10(255.0**2 * frames.size / sse), 3)


def _encode_one(
    name: str, frames: np.ndarray, codec_name: str, params: dict[str, Any]
) -> tuple[np.ndarray, FieldEncoding] | None:
    """One field's stream and metadata entry, or ``None`` when it is better stored as ``.npy``."""
    t, h, w, _ = frames.shape
    if h * w > MAX_FRAME_PIXELS:
        log.info("field %r: %dx%d frames exceed the codec limit; stored as .npy", name, h, w)
        return None
    codec = get_codec(codec_name)
    data = codec.encode(frames, **params)
    if frames.nbytes > MAX_CODEC_RATIO * len(data):
        # Near-constant frames: a reader could not tell this stream from a hostile one.
        log.info("field %r: frames compress beyond the codec ratio limit; stored as .npy", name)
        return None
    psnr = None if codec.LOSSLESS else _frames_psnr(codec, data, frames)
    encoding = FieldEncoding(codec_name, dict(params), (t, h, w, 3), len(data), psnr)
    return np.frombuffer(data, np.uint8), encoding


def encode_image_fields(
    arrays: Mapping[str, np.ndarray], codec_name: str, params: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, FieldEncoding]]:
    """Encode the camera fields of ``arrays``: ``(streams as uint8[n] arrays, their encodings)``.

    A field is encoded when it is one of :data:`IMAGE_FIELDS` and holds
    ``uint8[T,H,W,3]``; fields are encoded in parallel threads (the encoders
    release the GIL). Lossy streams are decoded again to measure their PSNR.
    """
    jobs = [
        (name, arr)
        for name, arr in arrays.items()
        if name in IMAGE_FIELDS
        and arr.dtype == np.uint8
        and arr.ndim == 4
        and arr.shape[3] == 3
        and len(arr) > 0
    ]
    threads = min(len(jobs), _MAX_ENCODE_THREADS, os.cpu_count() or 1)
    if threads < 2:
        results = [_encode_one(name, arr, codec_name, params) for name, arr in jobs]
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="teamvla-encode") as pool:
            futures = [
                pool.submit(_encode_one, name, arr, codec_name, params) for name, arr in jobs
            ]
            results = [f.result() for f in futures]
    streams: dict[str, np.ndarray] = {}
    encodings: dict[str, FieldEncoding] = {}
    for (name, _), result in zip(jobs, results, strict=True):
        if result is not None:
            streams[name], encodings[name] = result
    return streams, encodings


# --------------------------------------------------------------------------- reading


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_encodings(
    value: Any,
    fields: Mapping[str, FieldLayout],
    num_steps: int,
    path: Path,
    stored: Mapping[str, int],
) -> dict[str, FieldEncoding]:
    """Check the metadata's ``encodings`` table (no member is read, nothing is decoded).

    ``stored`` is each member's size on disk (from the zip directory), which
    bounds what its field may declare (:data:`MAX_CODEC_RATIO`). Raises
    :class:`SchemaError` naming the file and field for an unknown codec, bad
    parameters, a layout that is not ``uint8[T,H,W,3]`` matching the ``fields``
    table, a frame larger than :data:`MAX_FRAME_PIXELS` or more decoded bytes than
    the member can back.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SchemaError(
            "metadata 'encodings' must be a JSON object", path=path, field="encodings"
        )
    out: dict[str, FieldEncoding] = {}
    for name, entry in value.items():

        def bad(message: str, name: str = name) -> SchemaError:
            return SchemaError(message, path=path, field=name)

        layout = fields.get(name)
        if layout is None:
            raise bad("metadata 'encodings' names a field that is not in its 'fields' table")
        if not isinstance(entry, dict) or not _ENTRY_KEYS <= set(entry) <= _ENTRY_KEYS | {"psnr"}:
            got = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise bad(
                f"bad encoding entry: expected the keys {sorted(_ENTRY_KEYS)} (and 'psnr' for "
                f"lossy codecs), received {got}"
            )
        codec = entry["codec"]
        if codec not in IMAGE_CODECS:
            raise bad(
                f"encoded with codec {codec!r}, which this reader does not know (known: "
                f"{list(IMAGE_CODECS)}); a newer teamvla-schema may read it"
            )
        module = codec_module(codec)
        try:
            params = module.check_params(entry["params"])
        except ValueError as exc:
            raise bad(f"bad codec parameters {entry['params']!r}: {exc}") from None
        if (
            entry["dtype"] != "uint8"
            or layout.dtype != "uint8"
            or len(layout.shape) != 3
            or layout.shape[2] != 3
        ):
            raise bad(
                f"only uint8[H,W,3] fields can be encoded; the metadata declares "
                f"{layout.dtype}{list(layout.shape)} per step, decoded dtype {entry['dtype']!r}"
            )
        shape = entry["shape"]
        want = [num_steps, *layout.shape]
        if not isinstance(shape, list) or not all(_int(d) for d in shape) or shape != want:
            raise bad(f"encoded shape {shape!r} does not match the {want} of the metadata's fields")
        t, h, w, _ = want
        if t < 1 or h < 1 or w < 1 or h * w > MAX_FRAME_PIXELS:
            raise bad(
                f"encoded frames of {t}x{h}x{w} pixels: need at least one frame and at most "
                f"{MAX_FRAME_PIXELS} pixels per frame"
            )
        nbytes = entry["bytes"]
        if not _int(nbytes) or nbytes < 1:
            raise bad(f"bad stream size {nbytes!r} (expected a positive integer)")
        decoded = t * h * w * 3
        on_disk = stored.get(name, 0)
        if decoded > MAX_CODEC_RATIO * on_disk:
            raise bad(
                f"declares {decoded} decoded bytes ({want}) for a {on_disk}-byte member, more "
                f"than the {MAX_CODEC_RATIO}:1 a codec stream may expand to: corrupt or hostile "
                "(nothing decoded)"
            )
        psnr: float | None = None
        if module.LOSSLESS:
            if "psnr" in entry:
                raise bad(f"the lossless {codec!r} codec has no 'psnr'")
        else:
            if "psnr" not in entry:
                raise bad(
                    f"the lossy {codec!r} codec needs the 'psnr' measured when it was written"
                )
            raw = entry["psnr"]
            if raw is None:
                psnr = math.inf
            elif (
                isinstance(raw, int | float)
                and not isinstance(raw, bool)
                and math.isfinite(raw)
                and raw >= 0
            ):
                psnr = float(raw)
            else:
                raise bad(f"bad psnr {raw!r} (expected a non-negative number of dB, or null)")
        out[name] = FieldEncoding(codec, params, (t, h, w, 3), nbytes, psnr)
    return out


def _codec_for(enc: FieldEncoding, path: Path, name: str) -> Codec:
    """The codec of a field read from ``path``; a one-line ImportError naming file and extra."""
    try:
        return get_codec(enc.codec)
    except ImportError as exc:
        raise _missing(exc, enc, path, name) from None


def _missing(exc: ImportError, enc: FieldEncoding, path: Path, name: str) -> ImportError:
    """``exc`` (a missing codec dependency; it names the extra) with the file and field."""
    return ImportError(f"{path}: field {name!r} is stored with the {enc.codec!r} codec: {exc}")


def _named(exc: SchemaError, path: Path, name: str) -> SchemaError:
    return SchemaError(f"corrupt encoded stream: {exc.reason}", path=path, field=name)


def decode_field(data: np.ndarray, enc: FieldEncoding, path: Path, name: str) -> np.ndarray:
    """The whole decoded field ``uint8[T,H,W,3]`` of the stream ``data``."""
    codec = _codec_for(enc, path, name)
    try:
        return codec.decode(data.tobytes(), shape=enc.shape)
    except SchemaError as exc:
        raise _named(exc, path, name) from None
    except ImportError as exc:  # an older stream that needs another decoder (PyAV)
        raise _missing(exc, enc, path, name) from None


def decode_field_range(
    data: np.ndarray | FileRange,
    enc: FieldEncoding,
    start: int,
    stop: int,
    path: Path,
    name: str,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Frames ``start:stop`` (``0 <= start < stop <= T``), decoded from the keyframe before ``start``.

    ``data`` is the stream, or where its codec reads ranges (``RANGE_READS``) and
    its member is stored, the stream's place in the open file (see :func:`reads_ranges`).
    With ``out`` the frames are decoded into it (see ``Codec.decode_range``).
    """
    codec = _codec_for(enc, path, name)
    blob = data.tobytes() if isinstance(data, np.ndarray) else data
    try:
        return codec.decode_range(blob, start, stop, shape=enc.shape, out=out)
    except SchemaError as exc:
        raise _named(exc, path, name) from None
    except ImportError as exc:  # an older stream that needs another decoder (PyAV)
        raise _missing(exc, enc, path, name) from None


def reads_ranges(enc: FieldEncoding, path: Path, name: str) -> bool:
    """Whether the field's codec decodes from a :class:`FileRange` (reading only what it needs)."""
    return bool(getattr(_codec_for(enc, path, name), "RANGE_READS", False))


def check_field(data: np.ndarray, enc: FieldEncoding, path: Path, name: str) -> None:
    """Decode the whole stream a few MiB at a time: length, frame size, order and CRC-32.

    Also checks that the stream's own header records the parameters the
    metadata lists. Raises :class:`SchemaError` naming the file and field.
    """
    codec = _codec_for(enc, path, name)
    blob = data.tobytes()
    try:
        recorded = codec.stream_params(blob, shape=enc.shape)
        if recorded != enc.params:
            raise SchemaError(
                f"the stream records codec parameters {recorded!r}, the metadata {enc.params!r}"
            )
        frame_bytes = enc.shape[1] * enc.shape[2] * 3
        chunks: Iterator[np.ndarray] = codec.decode_chunks(
            blob, shape=enc.shape, chunk=max(1, _CHECK_CHUNK_BYTES // frame_bytes)
        )
        count = sum(len(part) for part in chunks)
    except SchemaError as exc:
        raise _named(exc, path, name) from None
    if count != enc.shape[0]:  # decode_chunks checks it too; this is the contract
        raise SchemaError(
            f"corrupt encoded stream: {count} frames decoded, {enc.shape[0]} declared",
            path=path,
            field=name,
        )
