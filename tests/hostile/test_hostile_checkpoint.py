"""Hostile checkpoint files: each is refused with a SchemaError naming the file, quickly.

Never a crash, a hang, a MemoryError, an unpickling or silently wrong data. The
cases that could hang (a FIFO, ``/dev/zero``) run in a subprocess with a timeout.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from teamvla_schema import SchemaError, load_checkpoint, read_checkpoint_info, save_checkpoint
from teamvla_schema import checkpoint as ckpt_module

pytestmark = pytest.mark.timeout(30)

META = {"format": "teamvla-checkpoint", "format_version": "1"}


def good(tmp_path: Path) -> Path:
    return save_checkpoint(
        tmp_path / "good.ckpt",
        model={"a": np.arange(4, dtype=np.float32), "b": np.ones(2, np.float32)},
        extra={"n": 1},
    )


def split(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write(path: Path, header: dict[str, Any] | bytes, data: bytes = b"") -> Path:
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    return path


def with_structure(structure: Any, tensors: dict[str, Any] | None = None) -> dict[str, Any]:
    text = structure if isinstance(structure, str) else json.dumps(structure)
    return {"__metadata__": {**META, "structure": text}, **(tensors or {})}


def refused(path: str | Path, *needles: str) -> SchemaError:
    """Both readers refuse ``path`` with a SchemaError naming it and saying each of ``needles``."""
    for reader in (read_checkpoint_info, load_checkpoint):
        with pytest.raises(SchemaError) as info:
            reader(path)
        assert info.value.path == str(path) and str(path) in str(info.value)
        for needle in needles:
            assert needle in str(info.value), str(info.value)
    return info.value


# --------------------------------------------------------------------------- header length


@pytest.mark.parametrize("length", [2**63, 2**64 - 1, 10**12])
def test_huge_header_length(tmp_path: Path, length: int) -> None:
    path = tmp_path / "huge.ckpt"
    path.write_bytes(struct.pack("<Q", length) + b'{"__metadata__": {}}')
    refused(path, "header length", "exceeds the file")


def test_header_length_one_past_the_file(tmp_path: Path) -> None:
    raw = good(tmp_path).read_bytes()
    path = tmp_path / "long.ckpt"
    path.write_bytes(struct.pack("<Q", len(raw) - 7) + raw[8:])
    refused(path, "exceeds the file")


def test_header_length_above_the_safetensors_limit(tmp_path: Path) -> None:
    # a sparse file: the length fits the file, but not the 100 MB safetensors cap
    path = tmp_path / "big.ckpt"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", 100_000_001) + b"{")
        fh.truncate(8 + 100_000_001)
    refused(path, "above the safetensors limit")


@pytest.mark.parametrize("length", [0, 1])
def test_header_too_short_for_an_object(tmp_path: Path, length: int) -> None:
    path = tmp_path / "tiny.ckpt"
    path.write_bytes(struct.pack("<Q", length) + b"{}" + b" " * 6)
    refused(path, "no JSON header")


@pytest.mark.parametrize("keep", [9, 20, -3])
def test_truncated_header(tmp_path: Path, keep: int) -> None:
    raw = good(tmp_path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    path = tmp_path / "cut.ckpt"
    path.write_bytes(raw[: keep if keep > 0 else 8 + n + keep])
    refused(path)


# --------------------------------------------------------------------------- tensor table


@pytest.mark.parametrize(
    ("a", "b", "needle"),
    [
        ([0, 16], [8, 16], "overlap"),  # b's bytes lie inside a's
        ([0, 16], [0, 8], "overlap"),  # same start
        ([0, 8], [16, 24], "belong to no tensor"),  # a gap between a and b
    ],
)
def test_overlapping_or_gapped_offsets(
    tmp_path: Path, a: list[int], b: list[int], needle: str
) -> None:
    header, data = split(good(tmp_path))
    header["model/a"]["data_offsets"] = a
    header["model/b"]["data_offsets"] = b
    header["model/b"]["shape"] = [(b[1] - b[0]) // 4]
    header["model/a"]["shape"] = [(a[1] - a[0]) // 4]
    refused(write(tmp_path / "overlap.ckpt", header, data), needle)


def test_bytes_after_the_last_tensor(tmp_path: Path) -> None:
    header, data = split(good(tmp_path))
    refused(write(tmp_path / "tail.ckpt", header, data + b"\0" * 8), "belong to no tensor")


@pytest.mark.parametrize(
    ("offsets", "needle"),
    [
        ([16, 10**9], "do not match"),
        ([10**9, 10**9 + 8], "outside the data section"),
        ([2**64, 2**64 + 8], "outside the data section"),
        ([10**30, 10**30 + 8], "outside the data section"),
        ([-8, 0], "0 <= begin <= end"),
        ([16, 8], "0 <= begin <= end"),
        ([16, 23], "do not match"),
        ([16.0, 24.0], "two integers"),  # floats: not silently truncated
        ([False, True], "two integers"),
        (["16", "24"], "two integers"),
        ([16, 24, 32], "two integers"),
        ({"begin": 16}, "two integers"),
    ],
)
def test_bad_data_offsets(tmp_path: Path, offsets: Any, needle: str) -> None:
    header, data = split(good(tmp_path))
    header["model/b"]["data_offsets"] = offsets  # "model/b" is the second tensor: [16, 24)
    refused(write(tmp_path / "off.ckpt", header, data), "model/b", needle)


@pytest.mark.parametrize("literal", ["1e999", "Infinity", "NaN", "1" * 5000])
def test_offsets_that_are_not_json_integers(tmp_path: Path, literal: str) -> None:
    # 1e999 parses as inf (int(inf) raised OverflowError); 5000 digits exceed Python's
    # int-parsing limit (a plain ValueError); neither may escape as anything but SchemaError.
    header, data = split(good(tmp_path))
    text = json.dumps(header).replace(
        '"data_offsets": [16, 24]', f'"data_offsets": [16, {literal}]'
    )
    assert literal in text
    refused(write(tmp_path / "lit.ckpt", text.encode(), data))


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"dtype": "F128", "shape": [2], "data_offsets": [16, 24]}, "unknown dtype 'F128'"),
        ({"dtype": "C64", "shape": [1], "data_offsets": [16, 24]}, "unknown dtype"),
        ({"dtype": ["F32"], "shape": [2], "data_offsets": [16, 24]}, "unknown dtype"),
        ({"shape": [2], "data_offsets": [16, 24]}, "unknown dtype None"),
        ({"dtype": "F32", "shape": [-2], "data_offsets": [16, 24]}, "non-negative integers"),
        ({"dtype": "F32", "shape": [2.0], "data_offsets": [16, 24]}, "non-negative integers"),
        ({"dtype": "F32", "shape": [True, 2], "data_offsets": [16, 24]}, "non-negative"),
        ({"dtype": "F32", "shape": [0, 2**62], "data_offsets": [16, 16]}, "too large"),
        ({"dtype": "F32", "shape": [1] * 65, "data_offsets": [16, 20]}, "dimensions"),
        ({"dtype": "F32", "shape": [2**64, 2**64], "data_offsets": [16, 24]}, "too large"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_tensor_entries(tmp_path: Path, entry: Any, needle: str) -> None:
    header, data = split(good(tmp_path))
    header["model/b"] = entry
    refused(write(tmp_path / "entry.ckpt", header, data), "model/b", needle)


def test_bool_tensor_with_bytes_other_than_0_and_1(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "b.ckpt", model={"mask": np.array([True, False, True])})
    raw = bytearray(path.read_bytes())
    raw[-1] = 0x02  # numpy would show a bool holding 2: silently wrong data
    path.write_bytes(bytes(raw))
    with pytest.raises(SchemaError, match="BOOL tensor holds bytes other than 0 and 1") as info:
        load_checkpoint(path)
    assert info.value.path == str(path) and info.value.field == "model/mask"


def test_duplicate_tensor_names_in_the_header(tmp_path: Path) -> None:
    header, data = split(good(tmp_path))
    text = json.dumps(header)
    entry = json.dumps(header["model/b"])
    text = text.replace('"model/b":', f'"model/a": {entry}, "model/b":', 1)  # "model/a" twice
    refused(write(tmp_path / "dup.ckpt", text.encode(), data), "duplicate key 'model/a'")


# --------------------------------------------------------------------------- header JSON


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        (b"[1, 2, 3]", "no JSON header"),
        (b'"text"  ', "no JSON header"),
        (b"{not json", "not valid JSON"),
        (b'{"a": 1}\xff\xfe', "not valid JSON"),
        (b"{" * 100_000, "not valid JSON"),  # unbalanced: JSON's own error
        (b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
)
def test_header_not_a_json_object(tmp_path: Path, header: bytes, needle: str) -> None:
    refused(write(tmp_path / "json.ckpt", header), needle)


@pytest.mark.parametrize(
    "metadata",
    [None, [], "x", {"format": "teamvla-checkpoint", "format_version": "1", "structure": 5}],
)
def test_metadata_not_an_object_of_strings(tmp_path: Path, metadata: Any) -> None:
    header = {"__metadata__": metadata} if metadata is not None else {}
    refused(write(tmp_path / "meta.ckpt", header))


@pytest.mark.parametrize("version", ["1" * 5000, "²", "١", " 1", "1.0", "-1", "0"])
def test_odd_format_versions(tmp_path: Path, version: str) -> None:
    header = {"__metadata__": {**META, "format_version": version, "structure": "{}"}}
    refused(write(tmp_path / "version.ckpt", header), "format version")


# --------------------------------------------------------------------------- structure


def test_structure_above_the_size_cap(tmp_path: Path) -> None:
    cap = ckpt_module._MAX_STRUCTURE
    assert cap <= 64 * 1024 * 1024  # the test below must stay small and fast
    header = with_structure({"extra": {"blob": "x" * cap}})
    path = write(tmp_path / "big.ckpt", header)
    refused(path, "above the limit")


def test_writer_refuses_a_structure_it_could_not_read_back(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="store large data as numpy arrays"):
        save_checkpoint(tmp_path / "c.ckpt", model={}, extra={"blob": "x" * (16 * 1024 * 1024)})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("depth", [100_000, 2_000])
def test_structure_nested_too_deeply_for_json(tmp_path: Path, depth: int) -> None:
    # Python's json raises RecursionError here: it must come out as a SchemaError
    structure = '{"extra": ' + "[" * depth + "]" * depth + "}"
    refused(write(tmp_path / "deep.ckpt", with_structure(structure)), "nested too deeply")


def test_structure_nested_past_the_depth_limit(tmp_path: Path) -> None:
    depth = ckpt_module._MAX_DEPTH
    # a section at depth 1 holding depth-1 nested lists: exactly the limit, which loads
    ok = '{"extra": ' + "[" * (depth - 1) + "[]" + "]" * (depth - 1) + "}"
    assert load_checkpoint(write(tmp_path / "ok.ckpt", with_structure(ok)))["extra"]
    deep = '{"extra": ' + "[" * depth + "[]" + "]" * depth + "}"
    with pytest.raises(SchemaError, match=f"nested more than {depth}") as info:
        load_checkpoint(write(tmp_path / "deep.ckpt", with_structure(deep)))
    assert info.value.path == str(tmp_path / "deep.ckpt")


def test_writer_and_reader_agree_on_the_depth_limit(tmp_path: Path) -> None:
    def nest(n: int) -> Any:
        value: Any = np.zeros(1, np.float32)
        for i in range(n):
            value = [value] if i % 3 else ({"k": value} if i % 2 else (value,))
        return value

    # "extra" is at depth 1, so nest(depth - 1) reaches the limit exactly
    depth = ckpt_module._MAX_DEPTH
    path = save_checkpoint(tmp_path / "ok.ckpt", model={}, extra={"x": nest(depth - 1)})
    node = load_checkpoint(path)["extra"]["x"]
    for _ in range(depth - 1):
        node = node["k"] if isinstance(node, dict) else node[0]
    np.testing.assert_array_equal(node, np.zeros(1, np.float32))
    with pytest.raises(SchemaError, match="nested more than") as info:
        save_checkpoint(tmp_path / "deep.ckpt", model={}, extra={"x": nest(depth)})
    assert info.value.field is not None and info.value.field.startswith("extra/x")
    assert not (tmp_path / "deep.ckpt").exists()


@pytest.mark.parametrize(
    ("node", "needle"),
    [
        ({"__tensor__": "model/nope"}, "missing tensor 'model/nope'"),
        ({"__tensor__": 7}, "missing tensor 7"),
        ({"__float__": "1e5"}, "__float__ must be"),
        ({"__float__": 5}, "__float__ must be"),
        ({"__tuple__": {"a": 1}}, "__tuple__ must hold a list"),
        ({"__dict__": [[{"__tuple__": [1]}, 2]]}, "is not a number"),
        ({"__dict__": [[1, 2, 3]]}, "not a [key, value] pair"),
        ({"__bytes__": 12}, "not base64"),
    ],
)
def test_malformed_structure_nodes(tmp_path: Path, node: Any, needle: str) -> None:
    header, data = split(good(tmp_path))
    structure = json.loads(header["__metadata__"]["structure"])
    structure["extra"]["bad"] = node
    header["__metadata__"]["structure"] = json.dumps(structure)
    path = write(tmp_path / "node.ckpt", header, data)
    with pytest.raises(SchemaError, match="structure") as info:
        load_checkpoint(path)
    assert info.value.path == str(path) and needle in str(info.value), str(info.value)


def test_tensor_placed_twice(tmp_path: Path) -> None:
    # two places sharing one array: changing one would silently change the other
    header, data = split(good(tmp_path))
    structure = json.loads(header["__metadata__"]["structure"])
    structure["extra"]["again"] = {"__tensor__": "model/a"}
    header["__metadata__"]["structure"] = json.dumps(structure)
    path = write(tmp_path / "twice.ckpt", header, data)
    with pytest.raises(SchemaError, match="placed twice") as info:
        load_checkpoint(path)
    assert info.value.path == str(path)


def test_duplicate_keys_in_the_structure(tmp_path: Path) -> None:
    header = with_structure('{"extra": {"lr": 1, "lr": 2}}')
    refused(write(tmp_path / "dup.ckpt", header), "duplicate key 'lr'")


# --------------------------------------------------------------------------- not files


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.ckpt"
    path.touch()
    refused(path, "too short")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.ckpt").mkdir()
    err = refused(tmp_path / "dir.ckpt")
    assert (
        str(err)
        == f"{tmp_path / 'dir.ckpt'}: a directory, not a checkpoint file (expected a regular file)"
    )


def test_symlink_loop(tmp_path: Path) -> None:
    a, b = tmp_path / "a.ckpt", tmp_path / "b.ckpt"
    a.symlink_to(b)
    b.symlink_to(a)
    refused(a, "symbolic links")


def test_missing_file_and_nul_in_the_name(tmp_path: Path) -> None:
    err = refused(tmp_path / "missing.ckpt")
    assert (
        str(err)
        == f"{tmp_path / 'missing.ckpt'}: cannot open checkpoint: No such file or directory"
    )
    refused(str(tmp_path / "bad\0name.ckpt"), "cannot open checkpoint: embedded null byte")


def _in_subprocess(path: str, timeout: float = 20) -> str:
    """Run both readers on ``path`` in a fresh interpreter; a hang fails instead of blocking."""
    code = textwrap.dedent(
        f"""
        import sys
        from teamvla_schema import SchemaError, load_checkpoint, read_checkpoint_info
        for reader in (read_checkpoint_info, load_checkpoint):
            try:
                reader({path!r})
            except SchemaError as exc:
                print(exc)
            else:
                sys.exit("accepted")
        """
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"reading {path} did not finish within {timeout} s")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    out = _in_subprocess(str(fifo))
    expected = f"{fifo}: a FIFO, not a checkpoint file (expected a regular file)"
    assert out.splitlines() == [expected] * 2, out


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_is_not_read_forever() -> None:
    out = _in_subprocess("/dev/zero")
    expected = "/dev/zero: a character device, not a checkpoint file (expected a regular file)"
    assert out.splitlines() == [expected] * 2, out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_fifo_swapped_in_after_the_check_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the race: the path is a regular file when checked, a FIFO when opened
    fifo, regular = tmp_path / "pipe", good(tmp_path)
    os.mkfifo(fifo)
    real_stat = os.stat

    def racy_stat(p: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        return real_stat(regular if Path(p) == fifo else p, *args, **kwargs)

    monkeypatch.setattr(os, "stat", racy_stat)
    for reader in (read_checkpoint_info, load_checkpoint):
        with pytest.raises(SchemaError) as info:
            reader(fifo)
        assert str(info.value) == (
            f"{fifo}: a FIFO, not a checkpoint file (expected a regular file)"
        )


# --------------------------------------------------------------------------- pickles


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_is_refused_and_never_run(tmp_path: Path, protocol: int) -> None:
    # (torch.save zips: tests/schema/test_schema_checkpoint.py)
    marker = tmp_path / "pwned"
    path = tmp_path / "p.ckpt"
    path.write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=protocol))
    refused(path)
    assert not marker.exists()
