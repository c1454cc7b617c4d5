"""Checkpoints: safetensors container + JSON structure, readable with numpy alone."""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from teamvla_schema import SchemaError, load_checkpoint, read_checkpoint_info, save_checkpoint
from teamvla_schema.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION, SECTIONS

ALL_DTYPES = [
    np.float64, np.float32, np.float16, ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2,
    np.int64, np.int32, np.int16, np.int8, np.uint64, np.uint32, np.uint16, np.uint8, np.bool_,
]  # fmt: skip


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def assert_same(got: Any, want: Any, where: str = "") -> None:
    """Deep equality: arrays bit-exact with dtype and shape, floats NaN-aware, exact container types."""
    if isinstance(want, np.ndarray | np.generic):
        want = np.asarray(want)
        assert isinstance(got, np.ndarray), where
        assert got.dtype == want.dtype and got.shape == want.shape, (where, got.dtype, got.shape)
        assert got.tobytes() == want.tobytes(), where
    elif isinstance(want, float):
        assert type(got) is float, where
        assert got == want or (math.isnan(got) and math.isnan(want)), where
    elif isinstance(want, dict):
        assert type(got) is dict and list(got) == list(want), (where, list(got), list(want))
        for k in want:
            assert_same(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, list | tuple):
        assert type(got) is type(want) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}/{i}")
    else:
        assert type(got) is type(want) and got == want, (where, got, want)


def nested_tree() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "model": {
            "encoder.conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "encoder.conv1.bias": np.zeros(4, np.float32),
            "head.weight": rng.standard_normal((2, 4)).astype(ml_dtypes.bfloat16),
            "head.bias": np.arange(2, dtype=np.float16),
            "bn.num_batches_tracked": np.array(12, np.int64),
            "empty": np.zeros((0, 3), np.float32),
        },
        "optimizer": {
            "state": {
                0: {
                    "step": np.array(12.0, np.float32),
                    "exp_avg": np.ones((4, 3, 3, 3), np.float32),
                },
                1: {"step": np.array(12.0, np.float32), "exp_avg": np.zeros(4, np.float32)},
            },
            "param_groups": [
                {
                    "lr": 3e-4,
                    "betas": (0.9, 0.999),
                    "eps": 1e-8,
                    "weight_decay": 0.01,
                    "amsgrad": False,
                    "foreach": None,
                    "params": [0, 1],
                },
            ],
        },
        "scheduler": {
            "T_max": 100,
            "eta_min": 0.0,
            "base_lrs": [3e-4],
            "last_epoch": 12,
            "_last_lr": [2.9e-4],
        },
        "training_state": {
            "epoch": 3,
            "step": 120,
            "best_val": float("nan"),
            "worst": float("-inf"),
            "big": 2**100,
            "rng": np.random.default_rng(7).bit_generator.state,
            "token": b"\x00\xffbytes",
            "empty_bytes": b"",
            "scalar32": np.float32(2.5),
            "scalar_i": np.int64(-3),
            "flag": np.bool_(True),
            "zero_d": np.array(7, np.uint16),
            "pair": (1, (2.5, None), []),
            "none": None,
        },
        "config": {
            "model": {"name": "single_brain", "hidden": 256},
            "optim": {"lr": 3e-4},
            "tasks": ["lift"],
        },
        "stats": {"q_a": {"mean": np.zeros(7, np.float32), "std": np.ones(7, np.float32)}},
        "extra": {
            "odd_keys": {1: "int", 2.5: "float", None: "none", "s": "str"},
            "bool_keys": {True: "yes", False: "no"},
            "dunder": {"__tensor__": "not a tensor", "__tuple__": [1]},
            "float_keys": {float("nan"): 1},
            "all_dtypes": {
                np.dtype(dt).name: np.arange(6).reshape(2, 3).astype(dt) for dt in ALL_DTYPES
            },
            "zero_size": {np.dtype(dt).name: np.zeros((2, 0), dt) for dt in ALL_DTYPES},
        },
    }


def expected_after_load(tree: Any) -> Any:
    """What load_checkpoint returns for ``tree``: numpy scalars come back as 0-d arrays."""
    if isinstance(tree, np.generic):
        return np.asarray(tree)
    if isinstance(tree, dict):
        return {k: expected_after_load(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [expected_after_load(v) for v in tree]
    if isinstance(tree, tuple):
        return tuple(expected_after_load(v) for v in tree)
    return tree


def test_round_trip_nested_structures(tmp_path: Path) -> None:
    tree = nested_tree()
    path = save_checkpoint(tmp_path / "epoch_0003.ckpt", **tree)
    out = load_checkpoint(path)
    assert out.pop("format_version") == CHECKPOINT_FORMAT_VERSION
    assert list(out) == list(SECTIONS)
    # NaN keys cannot be compared by lookup: check that one by hand
    nan_keys = out["extra"].pop("float_keys")
    tree["extra"].pop("float_keys")
    ((key, value),) = nan_keys.items()
    assert math.isnan(key) and value == 1
    assert_same(out, expected_after_load(tree))
    assert out["training_state"]["big"] == 2**100
    rng = np.random.default_rng(0)
    rng.bit_generator.state = out["training_state"]["rng"]
    assert rng.integers(1 << 30) == np.random.default_rng(7).integers(1 << 30)


def test_loaded_arrays_are_writable(tmp_path: Path) -> None:
    out = load_checkpoint(save_checkpoint(tmp_path / "c.ckpt", model={"w": np.ones(3, np.float32)}))
    out["model"]["w"][0] = 5  # not a read-only view into a file
    assert out["model"]["w"][0] == 5


def test_only_given_sections_are_stored(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.ckpt", model={}, stats={"n": 3})
    out = load_checkpoint(path)
    assert out == {"model": {}, "stats": {"n": 3}, "format_version": 1}


@pytest.mark.parametrize("length", [128 + 256 * 2, 128 + 256 * 3, 0x4B50])
def test_header_length_bytes_that_look_like_pickle_or_zip(tmp_path: Path, length: int) -> None:
    # regression: a header length of 128 (+256k) starts with 0x80 like a pickle, and one of
    # 0x4b50 starts with "PK" like a zip; both are ordinary checkpoints.
    def save(pad: int) -> tuple[Path, int]:
        path = save_checkpoint(
            tmp_path / "c.ckpt", model={"w": np.ones(2, np.float32)}, extra={"p": "x" * pad}
        )
        return path, struct.unpack("<Q", path.read_bytes()[:8])[0]

    _, base = save(0)
    if base > length:
        pytest.skip("the minimal header is already longer")
    for pad in range(max(0, length - base - 8), length - base + 8):
        path, n = save(pad)
        if n == length:
            break
    assert n == length
    assert path.read_bytes()[:1] in (b"\x80", b"P")
    assert load_checkpoint(path)["extra"]["p"] == "x" * pad


def test_non_contiguous_and_big_endian_arrays(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    model = {"t": base.T, "s": base[:, ::2], "be": np.arange(5, dtype=">i4")}
    out = load_checkpoint(save_checkpoint(tmp_path / "c.ckpt", model=model))["model"]
    np.testing.assert_array_equal(out["t"], base.T)
    np.testing.assert_array_equal(out["s"], base[:, ::2])
    assert out["be"].dtype == np.dtype("<i4") and out["be"].tolist() == [0, 1, 2, 3, 4]


def test_colliding_tensor_paths_get_unique_names(tmp_path: Path) -> None:
    model = {"a/b": np.zeros(1, np.float32), "a": {"b": np.ones(1, np.float32)}}
    path = save_checkpoint(tmp_path / "c.ckpt", model=model)
    assert sorted(read_checkpoint_info(path).tensors) == ["model/a/b", "model/a/b#2"]
    out = load_checkpoint(path)["model"]
    assert out["a/b"][0] == 0 and out["a"]["b"][0] == 1


@pytest.mark.parametrize(
    "value",
    [
        object(),
        {1, 2},
        np.zeros(2, np.complex64),
        np.array(["a"]),
        np.array([None], dtype=object),
        1 + 2j,
    ],
    ids=["object", "set", "complex", "str-array", "object-array", "complex-scalar"],
)
def test_unsupported_values_are_refused(tmp_path: Path, value: Any) -> None:
    with pytest.raises(SchemaError) as info:
        save_checkpoint(tmp_path / "c.ckpt", model={}, extra={"deep": [1, {"x": value}]})
    assert info.value.field == "extra/deep/1/x"
    assert not list(tmp_path.iterdir())


def test_unsupported_dict_key(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="dict key"):
        save_checkpoint(tmp_path / "c.ckpt", model={}, extra={(1, 2): "tuple key"})


# --------------------------------------------------------------------------- the container


def test_header_layout_and_metadata(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.ckpt", **nested_tree())
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and raw[8:9] == b"{"
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__")
    assert meta["format"] == CHECKPOINT_FORMAT and meta["format_version"] == "1"
    structure = json.loads(meta["structure"])
    assert list(structure) == list(SECTIONS)
    assert structure["model"]["encoder.conv1.weight"] == {
        "__tensor__": "model/encoder.conv1.weight"
    }
    assert structure["optimizer"]["state"]["__dict__"][0][0] == 0
    assert structure["optimizer"]["param_groups"][0]["betas"] == {"__tuple__": [0.9, 0.999]}
    assert structure["training_state"]["best_val"] == {"__float__": "nan"}
    assert structure["training_state"]["token"] == {"__bytes__": "AP9ieXRlcw=="}
    # tensors are packed back to back in name order, covering the data section exactly
    offset = 0
    for name in sorted(header):
        begin, end = header[name]["data_offsets"]
        assert begin == offset
        offset = end
    assert 8 + n + offset == len(raw)
    info = read_checkpoint_info(path)
    assert (
        info.data_start == 8 + n and info.file_size == len(raw) and set(info.tensors) == set(header)
    )


def test_same_content_gives_identical_bytes(tmp_path: Path) -> None:
    a = save_checkpoint(tmp_path / "a.ckpt", **nested_tree())
    b = save_checkpoint(tmp_path / "b.ckpt", **nested_tree())
    assert a.read_bytes() == b.read_bytes()


def test_readable_by_the_safetensors_package(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open

    tree = nested_tree()
    tree["model"]["head.weight"] = tree["model"]["head.weight"].astype(
        np.float32
    )  # numpy lacks bf16
    tree["extra"] = {
        "zero_size": {"f32": np.zeros((2, 0), np.float32)},
        "b": np.array([True, False]),
    }
    path = save_checkpoint(tmp_path / "plain.ckpt", **tree)
    tensors = safetensors_numpy.load_file(str(path))
    assert (
        tensors["model/encoder.conv1.weight"].tobytes()
        == tree["model"]["encoder.conv1.weight"].tobytes()
    )
    assert tensors["optimizer/state/0/exp_avg"].shape == (4, 3, 3, 3)
    assert tensors["extra/zero_size/f32"].shape == (2, 0)
    ours = load_checkpoint(path)
    for name, arr in tensors.items():
        section, *rest = name.split("/")
        assert section in SECTIONS
        node: Any = ours[section]
        for key in rest:
            node = (
                node[int(key)]
                if isinstance(node, dict) and key.isdigit() and int(key) in node
                else node[key]
            )
        np.testing.assert_array_equal(arr, node)

    # with bfloat16 inside: safe_open still reads the metadata and every other tensor
    full = save_checkpoint(tmp_path / "full.ckpt", **nested_tree())
    with safe_open(str(full), framework="np") as f:
        meta = f.metadata()
        assert meta["format"] == CHECKPOINT_FORMAT and meta["format_version"] == "1"
        assert set(json.loads(meta["structure"])) == set(SECTIONS)
        assert "model/head.weight" in f.keys()  # noqa: SIM118 - safe_open is not a dict
        np.testing.assert_array_equal(
            f.get_tensor("model/head.bias"), np.arange(2, dtype=np.float16)
        )


def test_tensors_are_read_through_safetensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors

    calls: list[int] = []
    real = safetensors.deserialize

    def spy(data: bytes) -> Any:
        calls.append(len(data))
        return real(data)

    monkeypatch.setattr(safetensors, "deserialize", spy)
    path = save_checkpoint(tmp_path / "c.ckpt", **nested_tree())
    out = load_checkpoint(path)
    assert calls == [path.stat().st_size]
    assert out["model"]["head.weight"].dtype == ml_dtypes.bfloat16
    assert out["extra"]["all_dtypes"]["float8_e5m2"].dtype == ml_dtypes.float8_e5m2


def test_safetensors_errors_become_schema_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a check of ours that safetensors shares; should they ever disagree, the file is
    # still refused with the file named (not a SafetensorError)
    import safetensors

    def refuse(data: bytes) -> Any:
        raise safetensors.SafetensorError("Error while deserializing header: InvalidOffset")

    monkeypatch.setattr(safetensors, "deserialize", refuse)
    path = save_checkpoint(tmp_path / "c.ckpt", model={"w": np.ones(2, np.float32)})
    with pytest.raises(SchemaError, match=r"safetensors cannot read the file: .*InvalidOffset"):
        load_checkpoint(path)


def test_files_written_by_the_safetensors_package_load(tmp_path: Path) -> None:
    # safetensors lays tensors out by dtype size, then name (ours: by name) and writes
    # __metadata__ in hash order: both are valid safetensors files and load the same
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    tensors = {
        "model/a.bool": np.array([True, False]),
        "model/b.f64": np.arange(3, dtype=np.float64),
        "model/c.bf16": np.arange(4).astype(ml_dtypes.bfloat16),
        "model/d.i64": np.array(7, np.int64),
        "model/e.empty": np.zeros((0, 2), np.float32),
    }
    structure = {"model": {name[6:]: {"__tensor__": name} for name in tensors}}
    metadata = {
        "structure": json.dumps(structure),
        "format_version": "1",
        "format": CHECKPOINT_FORMAT,
    }
    path = tmp_path / "theirs.ckpt"
    path.write_bytes(safetensors_numpy.save(tensors, metadata=metadata))
    ours = save_checkpoint(tmp_path / "ours.ckpt", model={k[6:]: v for k, v in tensors.items()})
    assert path.read_bytes() != ours.read_bytes()  # another layout, same content
    assert_same(load_checkpoint(path), load_checkpoint(ours))


# --------------------------------------------------------------------------- torch


def test_torch_model_and_adamw_state(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3)
    rng_state = torch.get_rng_state()
    for _ in range(2):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        sched.step()
    path = save_checkpoint(
        tmp_path / "torch.ckpt",
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        training_state={"epoch": 1, "torch_rng": rng_state},
    )
    out = load_checkpoint(path)
    for name, tensor in model.state_dict().items():
        got = out["model"][name]
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, tensor.numpy())
    state = opt.state_dict()
    assert set(out["optimizer"]["state"]) == set(state["state"])  # int keys survive
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(out["optimizer"]["state"][idx][key], value.numpy())
    assert out["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert out["scheduler"] == sched.state_dict()
    # the numpy state loads back into fresh torch objects
    model2 = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)
    )
    model2.load_state_dict({k: torch.from_numpy(v) for k, v in out["model"].items()})
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    opt2.load_state_dict(
        {
            "state": {
                i: {k: torch.from_numpy(v) for k, v in s.items()}
                for i, s in out["optimizer"]["state"].items()
            },
            "param_groups": out["optimizer"]["param_groups"],
        }
    )
    assert out["training_state"]["torch_rng"].dtype == np.uint8
    assert torch.equal(torch.from_numpy(out["training_state"]["torch_rng"]), rng_state)


def test_torch_bfloat16_round_trips_bit_exactly(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    t = torch.randn(3, 5).to(torch.bfloat16)
    t[0, 0] = float("nan")
    t[0, 1] = float("-inf")
    half = torch.randn(4).half()
    non_contig = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    path = save_checkpoint(
        tmp_path / "bf16.ckpt", model={"w": t, "h": half, "nc": non_contig, "b": torch.tensor(True)}
    )
    assert read_checkpoint_info(path).tensors["model/w"]["dtype"] == "BF16"
    out = load_checkpoint(path)["model"]
    assert out["w"].dtype == ml_dtypes.bfloat16
    assert out["w"].view(np.int16).tobytes() == t.view(torch.int16).numpy().tobytes()
    back = torch.from_numpy(out["w"].view(np.int16)).view(torch.bfloat16)
    assert torch.equal(back.view(torch.int16), t.view(torch.int16))
    assert out["h"].dtype == np.float16 and out["h"].tobytes() == half.numpy().tobytes()
    np.testing.assert_array_equal(out["nc"], non_contig.numpy())
    assert out["b"].dtype == np.bool_ and out["b"].shape == ()


def test_torch_save_file_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    path = tmp_path / "torch_save.ckpt"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": Payload(marker)}, path)
    for fn in (read_checkpoint_info, load_checkpoint):
        with pytest.raises(SchemaError, match="pickle"):
            fn(path)
    assert not marker.exists()


# --------------------------------------------------------------------------- bad files


def test_pickle_files_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"p{protocol}.ckpt"
        path.write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=protocol))
        with pytest.raises(SchemaError) as info:
            load_checkpoint(path)
        assert info.value.path == str(path)
    # a torch.save-style zip holding a pickle
    path = tmp_path / "zip.ckpt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(Payload(marker)))
        zf.writestr("archive/version", "3\n")
    with pytest.raises(SchemaError, match="pickle"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "good.ckpt", **nested_tree())


def _split(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(path: Path, header: dict[str, Any], data: bytes) -> Path:
    hb = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + data)
    return path


def assert_refused(path: Path, match: str | None = None) -> SchemaError:
    with pytest.raises(SchemaError) as info:
        load_checkpoint(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    if match:
        assert match in str(info.value), str(info.value)
    return info.value


@pytest.mark.parametrize("keep", [0, 4, 8, 9, 100, -1, -17])
def test_truncated_checkpoint(tmp_path: Path, ckpt: Path, keep: int) -> None:
    raw = ckpt.read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(raw[:keep])
    assert_refused(path)


@pytest.mark.parametrize("delta", [1, 8, 10**6, 2**63, -8, -100])
def test_header_length_lying(tmp_path: Path, ckpt: Path, delta: int) -> None:
    raw = ckpt.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    path = tmp_path / "lying.ckpt"
    path.write_bytes(struct.pack("<Q", (n + delta) % 2**64) + raw[8:])
    assert_refused(path)


@pytest.mark.parametrize(
    "offsets",
    [[0, 10**9], [10**9, 10**9 + 16], [-8, 8], [8, 0], [0, 4], ["0", "x"], [0], None],
)
def test_offsets_outside_file_or_inconsistent(tmp_path: Path, ckpt: Path, offsets: Any) -> None:
    header, data = _split(ckpt)
    header["model/encoder.conv1.bias"]["data_offsets"] = offsets
    assert_refused(_join(tmp_path / "off.ckpt", header, data))


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"dtype": "F128", "shape": [4], "data_offsets": [0, 16]}, "bad tensor entry"),
        ({"dtype": "F32", "shape": [-1, -4], "data_offsets": [0, 16]}, "bad tensor entry"),
        ({"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}, "bad tensor entry"),
        ({"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}, "do not match"),
        ("not an object", "bad tensor entry"),
    ],
)
def test_bad_tensor_entries(tmp_path: Path, ckpt: Path, entry: Any, match: str) -> None:
    header, data = _split(ckpt)
    header["model/encoder.conv1.bias"] = entry
    assert_refused(_join(tmp_path / "entry.ckpt", header, data), match)


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        (None, "not a TeamVLA checkpoint"),
        (5, "__metadata__"),
        ({"format": "other"}, "not a TeamVLA checkpoint"),
        ({"format": CHECKPOINT_FORMAT, "format_version": "2"}, "upgrade"),
        ({"format": CHECKPOINT_FORMAT, "format_version": "x"}, "not supported"),
        ({"format": CHECKPOINT_FORMAT, "format_version": 1}, "__metadata__"),
        ({"format": CHECKPOINT_FORMAT, "format_version": "1"}, "structure"),
        ({"format": CHECKPOINT_FORMAT, "format_version": "1", "structure": "{oops"}, "structure"),
        ({"format": CHECKPOINT_FORMAT, "format_version": "1", "structure": "[1]"}, "structure"),
    ],
)
def test_bad_metadata(tmp_path: Path, ckpt: Path, metadata: Any, match: str) -> None:
    header, data = _split(ckpt)
    if metadata is None:
        del header["__metadata__"]
    else:
        header["__metadata__"] = metadata
    assert_refused(_join(tmp_path / "meta.ckpt", header, data), match)


@pytest.mark.parametrize(
    "node",
    [
        {"__tensor__": "model/missing"},
        {"__tensor__": ["unhashable"]},
        {"__tuple__": 5},
        {"__bytes__": "not base64!"},
        {"__float__": "pi"},
        {"__dict__": [[1]]},
        {"__dict__": [[[1, 2], 3]]},
        {"__dict__": 7},
    ],
)
def test_malformed_structure(tmp_path: Path, ckpt: Path, node: Any) -> None:
    header, data = _split(ckpt)
    structure = json.loads(header["__metadata__"]["structure"])
    structure["extra"]["bad"] = node
    header["__metadata__"]["structure"] = json.dumps(structure)
    assert_refused(_join(tmp_path / "structure.ckpt", header, data), "structure")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    for name, data in {
        "empty": b"",
        "text": b"hello world, not a checkpoint",
        "json": b"\x10" + b"\x00" * 7 + b"[1,2,3]   " + b"x" * 8,
    }.items():
        path = tmp_path / f"{name}.ckpt"
        path.write_bytes(data)
        assert_refused(path)
    assert_refused(tmp_path / "missing.ckpt")


# --------------------------------------------------------------------------- atomicity


def test_failed_save_leaves_existing_file_untouched(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "epoch_0001.ckpt", model={"w": np.ones(3, np.float32)})
    before = path.read_bytes()
    with pytest.raises(SchemaError):
        save_checkpoint(path, model={"w": np.zeros(3, np.float32)}, extra={"bad": object()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001.ckpt"]


def test_failure_midway_through_writing_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_checkpoint(tmp_path / "epoch_0001.ckpt", model={"w": np.ones(3, np.float32)})
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, model={"w": np.zeros(1000, np.float32)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001.ckpt"]


def test_overwrite_false(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.ckpt", model={})
    with pytest.raises(FileExistsError):
        save_checkpoint(path, model={"w": np.ones(1)}, overwrite=False)
    assert load_checkpoint(path)["model"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ckpt"]
