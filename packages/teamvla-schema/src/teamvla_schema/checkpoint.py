"""Checkpoint IO without pickle: a safetensors file with the non-tensor structure as JSON.

Layout (see docs/checkpoint-format.md): the standard safetensors container
(8-byte little-endian header length, JSON header, raw little-endian tensor
bytes). Every tensor of the checkpoint is one safetensors tensor named by its
path in the checkpoint tree (``model/encoder.conv1.weight``,
``optimizer/state/0/exp_avg``). ``__metadata__`` holds ``format``,
``format_version`` and ``structure``: the whole tree as JSON in which each
tensor is replaced by ``{"__tensor__": name}``. Any safetensors reader can load
the tensors.

Reading checks the header here (precise messages, hostile files refused in
bounded time and memory) and takes the tensor bytes from
``safetensors.deserialize``; numpy dtypes come from :data:`_DTYPES` (bfloat16
and float8 through ml_dtypes). Writing stays our own: it streams the arrays
without a copy and is byte-for-byte deterministic, which safetensors' serializer
is not (it orders ``__metadata__`` keys by a per-process hash). torch is never
imported.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import re
import stat
import struct
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import ml_dtypes
import numpy as np

from teamvla_schema.atomic import atomic_write, file_kind
from teamvla_schema.errors import SchemaError

CHECKPOINT_FORMAT = "teamvla-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
SECTIONS = ("model", "optimizer", "scheduler", "training_state", "config", "stats", "extra")
#: safetensors' own limit on the JSON header (``MAX_HEADER_SIZE``).
_MAX_HEADER = 100_000_000
#: Limit on the ``structure`` JSON text: the non-tensor part of a checkpoint (configs,
#: optimiser hyper-parameters, RNG states) is a few kB to a few MB; large data belongs in
#: tensors.
_MAX_STRUCTURE = 16 * 1024 * 1024
#: Limit on the nesting of containers in the structure (real checkpoints nest < 15 deep).
_MAX_DEPTH = 100
#: Most dimensions a tensor may have (numpy 1.x's limit; numpy 2 allows 64).
_MAX_NDIM = 32
#: Largest array (in bytes, counting zero-length dimensions as 1) numpy can describe.
_MAX_BYTES = 2**63 - 1
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_NONBLOCK", 0)
)

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dt: code for code, dt in _DTYPES.items()}


# torch dtypes numpy lacks -> (torch integer dtype of the same size, ml_dtypes numpy dtype)
_TORCH_VIEWS: dict[str, tuple[str, Any]] = {
    "torch.bfloat16": ("int16", ml_dtypes.bfloat16),
    "torch.float8_e4m3fn": ("uint8", ml_dtypes.float8_e4m3fn),
    "torch.float8_e5m2": ("uint8", ml_dtypes.float8_e5m2),
}


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "dtype")


def to_numpy(x: Any) -> np.ndarray:
    """A numpy array (on the host) from a numpy array/scalar or a torch tensor.

    torch is never imported here: a tensor can only be passed in by a caller
    that already imported it, and then ``sys.modules`` holds it.
    """
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, np.generic):
        return np.asarray(x)
    if _is_torch_tensor(x):
        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        special = _TORCH_VIEWS.get(str(t.dtype))
        if special is not None:
            # numpy has no bfloat16/float8: reinterpret the bits through a same-size integer.
            torch = sys.modules["torch"]
            int_name, np_dtype = special
            return t.view(getattr(torch, int_name)).numpy().view(np_dtype)
        return t.resolve_conj().resolve_neg().numpy()
    raise TypeError(f"not a tensor: {type(x).__name__}")


class _Encoder:
    """Turns a checkpoint tree into JSON plus a flat table of named arrays."""

    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}

    def encode(self, obj: Any, path: str, depth: int = 1) -> Any:
        if obj is None or isinstance(obj, bool | str):
            return obj
        if isinstance(obj, int):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if isinstance(obj, np.ndarray | np.generic) or _is_torch_tensor(obj):
            return self._tensor(obj, path)
        if isinstance(obj, bytes | bytearray):
            return {"__bytes__": base64.b64encode(bytes(obj)).decode("ascii")}
        if depth > _MAX_DEPTH:
            raise SchemaError(
                f"nested more than {_MAX_DEPTH} containers deep; a checkpoint cannot store that",
                field=path,
            )
        depth += 1
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, f"{path}/{i}", depth) for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.encode(v, f"{path}/{i}", depth) for i, v in enumerate(obj)]
        if isinstance(obj, Mapping):
            plain = all(isinstance(k, str) and not k.startswith("__") for k in obj)
            if plain:
                return {k: self.encode(v, f"{path}/{k}", depth) for k, v in obj.items()}
            items = []
            for k, v in obj.items():
                if not (k is None or isinstance(k, bool | int | str | float)):
                    raise SchemaError(
                        f"dict key {k!r} of type {type(k).__name__} cannot be stored", field=path
                    )
                items.append([self.encode(k, path, depth), self.encode(v, f"{path}/{k}", depth)])
            return {"__dict__": items}
        raise SchemaError(
            f"value of type {type(obj).__name__} cannot be stored in a checkpoint "
            "(allowed: tensors, arrays, numbers, str, bool, None, bytes, lists, tuples, dicts)",
            field=path,
        )

    def _tensor(self, obj: Any, path: str) -> dict[str, str]:
        try:
            arr = to_numpy(obj)
        except (TypeError, RuntimeError) as exc:  # e.g. a torch dtype numpy cannot represent
            raise SchemaError(
                f"tensor cannot be stored in a checkpoint: {exc}", field=path
            ) from None
        if not arr.flags.c_contiguous:  # (0-d arrays are always contiguous)
            arr = arr.copy(order="C")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        if arr.dtype not in _CODES:
            raise SchemaError(
                f"tensor dtype {arr.dtype} cannot be stored in a checkpoint", field=path
            )
        if arr.ndim > _MAX_NDIM:
            raise SchemaError(
                f"tensor has {arr.ndim} dimensions; a checkpoint stores at most {_MAX_NDIM}",
                field=path,
            )
        name, n = path, 1
        while name in self.tensors:
            n += 1
            name = f"{path}#{n}"
        self.tensors[name] = arr
        return {"__tensor__": name}


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class _Decoder:
    """Turns the JSON structure back into the checkpoint tree, placing the tensors.

    Every malformed node is a :class:`SchemaError` naming the file and the
    node's position; nesting is bounded (:data:`_MAX_DEPTH`) and each tensor
    may be placed once.
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], path: Path) -> None:
        self.tensors = tensors
        self.path = path
        self.used: set[str] = set()

    def fail(self, what: str, where: str) -> SchemaError:
        return SchemaError(f"metadata 'structure' is malformed at {where}: {what}", path=self.path)

    def decode(self, obj: Any, depth: int, where: str = "") -> Any:
        """``obj`` decoded; ``depth`` counts the containers it is in, as the encoder does."""
        if isinstance(obj, list):
            self._check_depth(depth, where)
            return [self.decode(v, depth + 1, f"{where}/{i}") for i, v in enumerate(obj)]
        if not isinstance(obj, dict):
            return obj
        if len(obj) == 1:
            ((key, value),) = obj.items()
            if key == "__tensor__":
                return self._tensor(value, where)
            if key == "__float__":
                if not isinstance(value, str) or value not in _FLOATS:
                    raise self.fail(
                        f"__float__ must be 'nan', 'inf' or '-inf', not {_clip(value)}", where
                    )
                return _FLOATS[value]
            if key == "__bytes__":
                try:
                    return base64.b64decode(value, validate=True)
                except (TypeError, ValueError) as exc:  # binascii.Error is a ValueError
                    raise self.fail(f"__bytes__ is not base64: {exc}", where) from None
            if key == "__tuple__":
                self._check_depth(depth, where)
                if not isinstance(value, list):
                    raise self.fail(f"__tuple__ must hold a list, not {_clip(value)}", where)
                return tuple(self.decode(v, depth + 1, f"{where}/{i}") for i, v in enumerate(value))
            if key == "__dict__":
                self._check_depth(depth, where)
                return self._dict(value, depth, where)
        self._check_depth(depth, where)
        return {k: self.decode(v, depth + 1, f"{where}/{k}") for k, v in obj.items()}

    def _check_depth(self, depth: int, where: str) -> None:
        if depth > _MAX_DEPTH:
            raise self.fail(f"nested more than {_MAX_DEPTH} containers deep", where)

    def _tensor(self, name: Any, where: str) -> np.ndarray:
        if not isinstance(name, str) or name not in self.tensors:
            raise SchemaError(
                f"structure refers to missing tensor {_clip(name)} at {where}", path=self.path
            )
        if name in self.used:
            raise self.fail(f"tensor {name!r} is placed twice", where)
        self.used.add(name)
        return self.tensors[name]

    def _dict(self, items: Any, depth: int, where: str) -> dict[Any, Any]:
        if not isinstance(items, list):
            raise self.fail(
                f"__dict__ must hold a list of [key, value] pairs, not {_clip(items)}", where
            )
        out = {}
        for item in items:
            if not (isinstance(item, list) and len(item) == 2):
                raise self.fail(f"__dict__ item {_clip(item)} is not a [key, value] pair", where)
            key = self.decode(item[0], depth + 1, where)
            if not (key is None or isinstance(key, bool | int | float | str)):
                raise self.fail(
                    f"__dict__ key {_clip(key)} is not a number, string, bool or null", where
                )
            out[key] = self.decode(item[1], depth + 1, f"{where}/{key}")
        return out


def _decode(obj: Any, tensors: Mapping[str, np.ndarray], path: Path, where: str = "") -> Any:
    """Decode one section of the structure (see :class:`_Decoder`)."""
    return _Decoder(tensors, path).decode(obj, 1, where)


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: Mapping[str, Any],
    optimizer: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    training_state: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    stats: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write a checkpoint atomically; tensors may be numpy arrays or torch tensors.

    ``model`` is a state dict; the other sections are any tree of dicts, lists,
    tuples, numbers, strings and tensors (an optimiser or scheduler
    ``state_dict()``, RNG states, the resolved config, normalisation stats).
    """
    encoder = _Encoder()
    sections = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "training_state": training_state,
        "config": config,
        "stats": stats,
        "extra": extra,
    }
    structure = {
        name: encoder.encode(value, name) for name, value in sections.items() if value is not None
    }
    structure_text = json.dumps(structure, allow_nan=False, sort_keys=False)
    if len(structure_text) > _MAX_STRUCTURE:
        raise SchemaError(
            f"the non-tensor part of the checkpoint is {len(structure_text)} characters of JSON, "
            f"above the limit of {_MAX_STRUCTURE}: store large data as numpy arrays"
        )
    header: dict[str, Any] = {
        "__metadata__": {
            "format": CHECKPOINT_FORMAT,
            "format_version": str(CHECKPOINT_FORMAT_VERSION),
            "structure": structure_text,
        }
    }
    offset = 0
    order = sorted(encoder.tensors)
    for name in order:
        arr = encoder.tensors[name]
        header[name] = {
            "dtype": _CODES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # safetensors pads the header to 8 bytes
    if len(header_bytes) > _MAX_HEADER:
        raise SchemaError(
            f"the checkpoint header would be {len(header_bytes)} bytes, above the safetensors "
            f"limit of {_MAX_HEADER} (too many tensors?)"
        )
    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as fh:
        fh.write(struct.pack("<Q", len(header_bytes)))
        fh.write(header_bytes)
        for name in order:
            fh.write(encoder.tensors[name].reshape(-1).view(np.uint8).data)
    return path


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint's header: tensor table and metadata, without tensor data."""

    path: Path
    tensors: dict[str, dict[str, Any]]  # name -> {"dtype", "shape", "data_offsets"}
    metadata: dict[str, str]
    data_start: int
    file_size: int

    @property
    def structure(self) -> dict[str, Any]:
        """The checkpoint tree with ``{"__tensor__": name}`` placeholders."""
        structure = _parse_json(self.metadata["structure"], self.path, "metadata 'structure'")
        if not isinstance(structure, dict):
            raise SchemaError("metadata 'structure' is not a JSON object", path=self.path)
        return structure


@contextlib.contextmanager
def _open_checkpoint(path: Path) -> Iterator[tuple[IO[bytes], int]]:
    """The checkpoint opened for reading, and its size; only regular files are opened.

    ``stat`` first, so that devices and FIFOs are never opened at all; the open
    itself is non-blocking (a FIFO swapped in meanwhile cannot hang it) and the
    descriptor is checked again, so what is read is the regular file that was
    checked.
    """

    def refuse(mode: int) -> SchemaError:
        return SchemaError(
            f"{file_kind(mode)}, not a checkpoint file (expected a regular file)", path=path
        )

    try:
        st = os.stat(path)
        fd = os.open(path, _OPEN_FLAGS) if stat.S_ISREG(st.st_mode) else -1
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SchemaError(f"cannot open checkpoint: {reason}", path=path) from None
    if fd < 0:
        raise refuse(st.st_mode)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(st.st_mode)
        fh = open(fd, "rb", closefd=True)  # noqa: SIM115 - closed by the with block below
    except BaseException:
        os.close(fd)
        raise
    with fh:
        try:
            yield fh, st.st_size
        except OSError as exc:
            raise SchemaError(f"cannot read checkpoint: {exc.strerror or exc}", path=path) from None


def _read_exact(fh: IO[bytes], n: int, path: Path, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise SchemaError(
            f"file ended after {len(data)} of the {n} bytes of {what}: it is truncated "
            "or changed while being read",
            path=path,
        )
    return data


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # json would keep the last one silently
            raise ValueError(f"duplicate key {_clip(key)}")
        out[key] = value
    return out


def _parse_json(text: str | bytes, path: Path, what: str) -> Any:
    """JSON with every failure (bad syntax, duplicate keys, too deep, huge integers) a SchemaError."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise SchemaError(f"{what} is nested too deeply", path=path) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, duplicate keys, int digits
        raise SchemaError(f"{what} is not valid JSON: {exc}", path=path) from None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_entry(name: str, entry: Any, path: Path) -> None:
    """One tensor entry of the header: known dtype, sane shape, offsets matching the shape."""

    def bad(what: str) -> SchemaError:
        return SchemaError(f"bad tensor entry: {what}; entry {_clip(entry)}", path=path, field=name)

    if not isinstance(entry, dict):
        raise bad("expected a JSON object with dtype, shape and data_offsets")
    dtype_code = entry.get("dtype")
    if not isinstance(dtype_code, str) or dtype_code not in _DTYPES:
        raise bad(f"unknown dtype {_clip(dtype_code)} (known: {', '.join(_DTYPES)})")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise bad("shape must be a list of non-negative integers")
    if len(shape) > _MAX_NDIM:
        raise bad(f"{len(shape)} dimensions, more than the {_MAX_NDIM} numpy supports")
    itemsize = _DTYPES[dtype_code].itemsize
    if math.prod(max(d, 1) for d in shape) * itemsize > _MAX_BYTES:
        raise bad("shape too large for any array")
    offsets = entry.get("data_offsets")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
        raise bad("data_offsets must be a list of two integers [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise bad(f"data_offsets [{begin}, {end}) must satisfy 0 <= begin <= end")
    if end - begin != math.prod(shape) * itemsize:
        raise bad(
            f"data_offsets [{begin}, {end}) span {end - begin} bytes, which do not match "
            f"shape {shape} of {dtype_code} ({math.prod(shape) * itemsize} bytes)"
        )


def _clip(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_layout(tensors: Mapping[str, Mapping[str, Any]], data_len: int, path: Path) -> None:
    """The tensors tile the data section exactly, as safetensors requires: no gap, overlap or tail."""
    position, previous = 0, None
    for name, entry in sorted(tensors.items(), key=lambda kv: tuple(kv[1]["data_offsets"])):
        begin, end = entry["data_offsets"]
        if end > data_len:
            raise SchemaError(
                f"tensor bytes [{begin}, {end}) lie outside the data section ({data_len} bytes): "
                "truncated or corrupt",
                path=path,
                field=name,
            )
        if begin < position:
            raise SchemaError(
                f"tensor bytes [{begin}, {end}) overlap those of {previous!r} (which end at "
                f"{position}): corrupt",
                path=path,
                field=name,
            )
        if begin > position:
            raise SchemaError(
                f"{begin - position} bytes before this tensor's data belong to no tensor "
                "(safetensors packs tensors back to back): corrupt",
                path=path,
                field=name,
            )
        position, previous = end, name
    if position != data_len:
        raise SchemaError(
            f"the last {data_len - position} bytes of the data section belong to no tensor: "
            "corrupt, or not written as a safetensors file",
            path=path,
        )


def _read_info(fh: IO[bytes], path: Path, size: int) -> CheckpointInfo:
    head = fh.read(9)
    if len(head) < 9:
        raise SchemaError(f"file too short for a checkpoint ({size} bytes)", path=path)
    (n,) = struct.unpack("<Q", head[:8])
    # A safetensors header is a JSON object right after its length. Only when that fails,
    # look for the signatures of torch.save (a zip) and of a raw pickle: a valid header
    # length may well start with the same bytes (0x80 = 128).
    if head[8:9] != b"{" or not 2 <= n <= min(_MAX_HEADER, size - 8):
        if head[:4] == b"PK\x03\x04" or (head[0] == 0x80 and 2 <= head[1] <= 5):
            raise SchemaError(
                "this looks like a pickle-based torch.save file; refusing to unpickle it "
                "(TeamVLA checkpoints are safetensors)",
                path=path,
            )
        if n > size - 8:
            raise SchemaError(
                f"header length {n} exceeds the file ({size} bytes): truncated or not a checkpoint",
                path=path,
            )
        if n > _MAX_HEADER:
            raise SchemaError(
                f"header length {n} is above the safetensors limit of {_MAX_HEADER} bytes",
                path=path,
            )
        raise SchemaError("not a safetensors checkpoint (no JSON header)", path=path)
    raw = head[8:] + _read_exact(fh, n - 1, path, "the header")
    header = _parse_json(raw, path, "header")
    if not isinstance(header, dict):
        raise SchemaError("header is not a JSON object", path=path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SchemaError(
            "'__metadata__' must be a JSON object of strings (safetensors)", path=path
        )
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise SchemaError(
            f"not a TeamVLA checkpoint (metadata format {_clip(metadata.get('format'))})",
            path=path,
        )
    version_text = metadata.get("format_version", "0")
    version = int(version_text) if re.fullmatch("[0-9]{1,9}", version_text) else -1
    if version < 1 or version > CHECKPOINT_FORMAT_VERSION:
        raise SchemaError(
            f"checkpoint format version {_clip(metadata.get('format_version'))} is not supported "
            f"(this reader reads 1..{CHECKPOINT_FORMAT_VERSION}); upgrade teamvla-schema",
            path=path,
        )
    for name, entry in header.items():
        _check_entry(name, entry, path)
    _check_layout(header, size - 8 - n, path)
    structure_text = metadata.get("structure")
    if structure_text is None:
        raise SchemaError("metadata 'structure' is missing", path=path)
    if len(structure_text) > _MAX_STRUCTURE:
        raise SchemaError(
            f"metadata 'structure' is {len(structure_text)} characters, above the limit of "
            f"{_MAX_STRUCTURE}",
            path=path,
        )
    if not isinstance(_parse_json(structure_text, path, "metadata 'structure'"), dict):
        raise SchemaError("metadata 'structure' is not a JSON object", path=path)
    return CheckpointInfo(path, header, metadata, 8 + n, size)


def read_checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Read and check a checkpoint's header; no tensor data is read."""
    path = Path(path)
    with _open_checkpoint(path) as (fh, size):
        return _read_info(fh, path, size)


def _load_tensors(raw: bytes, info: CheckpointInfo) -> dict[str, np.ndarray]:
    """Every tensor of the file, through ``safetensors.deserialize`` (writable numpy arrays).

    ``deserialize`` gives each tensor's dtype code and bytes (its own copy) for
    every dtype; the numpy dtype comes from :data:`_DTYPES` (bfloat16 and float8
    from ml_dtypes, which safetensors' numpy API lacks).
    """
    from safetensors import SafetensorError, deserialize

    path = info.path
    try:
        flat = deserialize(raw)
    except SafetensorError as exc:
        raise SchemaError(f"safetensors cannot read the file: {exc}", path=path) from None
    tensors: dict[str, np.ndarray] = {}
    for name, view in flat:
        entry = info.tensors.get(name)
        if (
            entry is None
            or view["dtype"] != entry["dtype"]
            or list(view["shape"]) != entry["shape"]
        ):
            raise SchemaError(
                "safetensors reads a different tensor table than the header: corrupt",
                path=path,
                field=name,
            )
        dtype = _DTYPES[entry["dtype"]]
        data = view["data"]
        if dtype == np.bool_ and len(data) and np.frombuffer(data, np.uint8).max() > 1:
            raise SchemaError("BOOL tensor holds bytes other than 0 and 1", path=path, field=name)
        tensors[name] = np.frombuffer(data, dtype=dtype).reshape(entry["shape"])
    if len(tensors) != len(info.tensors):
        raise SchemaError(
            "safetensors reads a different tensor table than the header: corrupt", path=path
        )
    return tensors


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with numpy alone (tensor bytes through the ``safetensors`` package).

    Returns a dict with the sections that were saved (``model``, ``optimizer``,
    ``scheduler``, ``training_state``, ``config``, ``stats``, ``extra``) as
    numpy arrays and plain Python values, plus ``format_version``.
    """
    path = Path(path)
    with _open_checkpoint(path) as (fh, size):
        info = _read_info(fh, path, size)
        fh.seek(0)
        raw = _read_exact(fh, size, path, "the file")
    tensors = _load_tensors(raw, info)
    del raw
    decoder = _Decoder(tensors, info.path)
    out = {k: decoder.decode(v, 1, k) for k, v in info.structure.items()}
    out["format_version"] = int(info.metadata["format_version"])
    return out
