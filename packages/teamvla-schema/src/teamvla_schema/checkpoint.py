"""Checkpoint IO without pickle: a safetensors file with the non-tensor structure as JSON.

Layout (see docs/checkpoint-format.md): the standard safetensors container
(8-byte little-endian header length, JSON header, raw little-endian tensor
bytes). Every tensor of the checkpoint is one safetensors tensor named by its
path in the checkpoint tree (``model/encoder.conv1.weight``,
``optimizer/state/0/exp_avg``). ``__metadata__`` holds ``format``,
``format_version`` and ``structure``: the whole tree as JSON in which each
tensor is replaced by ``{"__tensor__": name}``. Any safetensors reader can load
the tensors; this module needs numpy alone (and ml_dtypes for bfloat16).
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from teamvla_schema.atomic import atomic_write
from teamvla_schema.errors import SchemaError

CHECKPOINT_FORMAT = "teamvla-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
SECTIONS = ("model", "optimizer", "scheduler", "training_state", "config", "stats", "extra")
_MAX_HEADER = 100 * 1024 * 1024

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

    def encode(self, obj: Any, path: str) -> Any:
        if obj is None or isinstance(obj, bool | str):
            return obj
        if isinstance(obj, int):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if isinstance(obj, np.ndarray | np.generic) or _is_torch_tensor(obj):
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
            name, n = path, 1
            while name in self.tensors:
                n += 1
                name = f"{path}#{n}"
            self.tensors[name] = arr
            return {"__tensor__": name}
        if isinstance(obj, bytes | bytearray):
            return {"__bytes__": base64.b64encode(bytes(obj)).decode("ascii")}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, f"{path}/{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.encode(v, f"{path}/{i}") for i, v in enumerate(obj)]
        if isinstance(obj, Mapping):
            plain = all(isinstance(k, str) and not k.startswith("__") for k in obj)
            if plain:
                return {k: self.encode(v, f"{path}/{k}") for k, v in obj.items()}
            items = []
            for k, v in obj.items():
                if not (k is None or isinstance(k, bool | int | str | float)):
                    raise SchemaError(
                        f"dict key {k!r} of type {type(k).__name__} cannot be stored", field=path
                    )
                items.append([self.encode(k, path), self.encode(v, f"{path}/{k}")])
            return {"__dict__": items}
        raise SchemaError(
            f"value of type {type(obj).__name__} cannot be stored in a checkpoint "
            "(allowed: tensors, arrays, numbers, str, bool, None, bytes, lists, tuples, dicts)",
            field=path,
        )


def _decode(obj: Any, tensors: Mapping[str, np.ndarray], path: Path) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, path) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((key, value),) = obj.items()
        if key == "__tensor__":
            if value not in tensors:
                raise SchemaError(f"structure refers to missing tensor {value!r}", path=path)
            return tensors[value]
        if key == "__float__":
            return float(value)
        if key == "__bytes__":
            return base64.b64decode(value, validate=True)
        if key == "__tuple__":
            return tuple(_decode(v, tensors, path) for v in value)
        if key == "__dict__":
            return {_decode(k, tensors, path): _decode(v, tensors, path) for k, v in value}
    return {k: _decode(v, tensors, path) for k, v in obj.items()}


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
    header: dict[str, Any] = {
        "__metadata__": {
            "format": CHECKPOINT_FORMAT,
            "format_version": str(CHECKPOINT_FORMAT_VERSION),
            "structure": json.dumps(structure, allow_nan=False, sort_keys=False),
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
        return json.loads(self.metadata["structure"])


def read_checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Read and check a checkpoint's header; no tensor data is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(9)
            if len(head) < 9:
                raise SchemaError(f"file too short for a checkpoint ({size} bytes)", path=path)
            (n,) = struct.unpack("<Q", head[:8])
            # A safetensors header is a JSON object right after its length. Only when that
            # fails, look for the signatures of torch.save (a zip) and of a raw pickle: a
            # valid header length may well start with the same bytes (0x80 = 128).
            if head[8:9] != b"{" or n > min(_MAX_HEADER, size - 8):
                if head[:4] == b"PK\x03\x04" or (head[0] == 0x80 and 2 <= head[1] <= 5):
                    raise SchemaError(
                        "this looks like a pickle-based torch.save file; refusing to unpickle it "
                        "(TeamVLA checkpoints are safetensors)",
                        path=path,
                    )
                if n > min(_MAX_HEADER, size - 8):
                    raise SchemaError(
                        f"header length {n} exceeds the file ({size} bytes): truncated or not a checkpoint",
                        path=path,
                    )
                raise SchemaError("not a safetensors checkpoint (no JSON header)", path=path)
            fh.seek(8)
            raw = fh.read(n)
    except OSError as exc:
        raise SchemaError(f"cannot read checkpoint: {exc.strerror}", path=path) from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SchemaError(f"header is not valid JSON: {exc}", path=path) from None
    if not isinstance(header, dict):
        raise SchemaError("header is not a JSON object", path=path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SchemaError(
            "'__metadata__' must be a JSON object of strings (safetensors)", path=path
        )
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise SchemaError(
            f"not a TeamVLA checkpoint (metadata format {metadata.get('format')!r})", path=path
        )
    try:
        version = int(metadata.get("format_version", "0"))
    except ValueError:
        version = -1
    if version < 1 or version > CHECKPOINT_FORMAT_VERSION:
        raise SchemaError(
            f"checkpoint format version {metadata.get('format_version')!r} is not supported "
            f"(this reader reads 1..{CHECKPOINT_FORMAT_VERSION}); upgrade teamvla-schema",
            path=path,
        )
    data_len = size - 8 - n
    for name, entry in header.items():
        try:
            dtype = _DTYPES[entry["dtype"]]
            begin, end = (int(v) for v in entry["data_offsets"])
            shape = entry["shape"]
            if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
            ):
                raise ValueError(shape)
            count = math.prod(shape)
        except (KeyError, TypeError, ValueError):
            raise SchemaError(f"bad tensor entry {entry!r}", path=path, field=name) from None
        if not 0 <= begin <= end <= data_len or end - begin != count * dtype.itemsize:
            raise SchemaError(
                f"tensor bytes [{begin}, {end}) do not match its shape/dtype or lie outside the file "
                f"({data_len} data bytes): truncated or corrupt",
                path=path,
                field=name,
            )
    try:
        structure = json.loads(metadata["structure"])
    except (KeyError, json.JSONDecodeError, RecursionError) as exc:
        raise SchemaError(
            f"metadata 'structure' is missing or not JSON: {exc}", path=path
        ) from None
    if not isinstance(structure, dict):
        raise SchemaError("metadata 'structure' is not a JSON object", path=path)
    return CheckpointInfo(path, header, metadata, 8 + n, size)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint with numpy alone.

    Returns a dict with the sections that were saved (``model``, ``optimizer``,
    ``scheduler``, ``training_state``, ``config``, ``stats``, ``extra``) as
    numpy arrays and plain Python values, plus ``format_version``.
    """
    info = read_checkpoint_info(path)
    with open(info.path, "rb") as fh:
        fh.seek(info.data_start)
        data = bytearray(fh.read())
    tensors = {}
    for name, entry in info.tensors.items():
        begin, end = entry["data_offsets"]
        dtype = _DTYPES[entry["dtype"]]
        if end == begin:
            tensors[name] = np.zeros(entry["shape"], dtype=dtype)
            continue
        tensors[name] = np.frombuffer(
            data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=begin
        ).reshape(entry["shape"])
    try:
        out = {k: _decode(v, tensors, info.path) for k, v in info.structure.items()}
    except SchemaError:
        raise
    except (
        TypeError,
        ValueError,
        AttributeError,
        RecursionError,
    ) as exc:  # binascii.Error is a ValueError
        raise SchemaError(f"metadata 'structure' is malformed: {exc}", path=info.path) from None
    out["format_version"] = int(info.metadata["format_version"])
    return out
