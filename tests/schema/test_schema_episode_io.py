"""Episode files: writer lifecycle, round trips, determinism, lazy reading."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from schema_testlib import make_step, make_steps, npz_members, write_episode
from teamvla_schema import (
    EPISODE_FILE_VERSION,
    Episode,
    EpisodeMeta,
    EpisodeWriter,
    SchemaError,
    find_episodes,
    iter_steps,
    read_episode,
    read_episode_meta,
    validate_episode_file,
    validate_step,
    write_episode_arrays,
)


def rich_steps(num: int = 5) -> list[dict[str, Any]]:
    """Steps with every optional field and several kinds of extra field."""
    out = []
    for i in range(num):
        depth = np.full((8, 8), 0.5 + i, np.float32)
        depth[i % 8, 0] = np.nan
        out.append(
            make_step(
                i,
                success=i == num - 1,
                depth_a=depth,
                depth_b=depth * 2,
                phase=["approach", "grasp", "lift", "hold", "done"][i % 5],
                timestamp=0.05 * i,
                reward=float(i) / 4,  # extra: python float
                contact=bool(i % 2),  # extra: bool
                n_objects=3,  # extra: int
                note=f"step {i} ✓",  # extra: str of varying length
                ee_pose=np.arange(6, dtype=np.float64) + i,  # extra: array
                mask=np.eye(2, dtype=bool),
            )
        )
    return out


def assert_steps_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        g = got[name]
        if isinstance(value, str | bool):
            assert type(g) is type(value) and g == value, name
        else:
            value = np.asarray(value)
            g = np.asarray(g)
            assert g.dtype == value.dtype and g.shape == value.shape, name
            assert g.tobytes() == value.tobytes(), name  # bit-exact, NaN payloads included


# --------------------------------------------------------------------------- round trips


def test_round_trip_required_fields(tmp_path: Path) -> None:
    steps = make_steps(4)
    path = write_episode(tmp_path, steps, {"task": "lift", "user": {"seed": 7}})
    assert path == tmp_path / "lift" / "lift-000000.npz"
    ep = read_episode(path)
    assert isinstance(ep, Episode) and len(ep) == 4
    assert ep.meta == EpisodeMeta(
        "lift", "lift-000000", False, 4, EPISODE_FILE_VERSION, {"seed": 7}
    )
    assert ep.arrays["rgb_a"].shape == (4, 8, 8, 3) and ep.arrays["rgb_a"].dtype == np.uint8
    assert ep.arrays["grip_a"].shape == (4,) and ep.arrays["q_a"].shape == (4, 7)
    assert ep.arrays["instruction"].dtype.kind == "U"
    for i, step in enumerate(steps):
        assert_steps_equal(ep.step(i), validate_step(step))


def test_round_trip_optional_and_extra_fields(tmp_path: Path) -> None:
    steps = rich_steps()
    path = write_episode(tmp_path, steps)
    header = validate_episode_file(path)
    assert header.fields["note"].dtype == "str"
    assert header.fields["ee_pose"].dtype == "float64" and header.fields["ee_pose"].shape == (6,)
    assert header.fields["mask"].dtype == "bool" and header.fields["mask"].shape == (2, 2)
    assert header.fields["depth_a"].shape == (8, 8)
    assert header.meta.success is True  # from the last step's flag
    got = list(iter_steps(path))
    assert len(got) == len(steps)
    for g, s in zip(got, steps, strict=True):
        assert_steps_equal(g, validate_step(s))


def test_end_episode_success_argument_overrides_last_step(tmp_path: Path) -> None:
    with EpisodeWriter(tmp_path) as w:
        w.start_episode({"task": "lift"})
        w.add_step(make_step(success=True))
        path = w.end_episode(success=False)
    assert read_episode_meta(path).meta.success is False


def test_auto_ids_are_deterministic_and_writer_reusable(tmp_path: Path) -> None:
    paths = []
    with EpisodeWriter(tmp_path) as w:
        for k in range(3):
            meta = w.start_episode({"task": "lift"})
            assert meta.episode_id == f"lift-{k:06d}"
            for step in make_steps(2):
                w.add_step(step)
            paths.append(w.end_episode())
            assert not w.in_episode and w.num_steps == 0
        w.start_episode({"task": "drawer"})
        w.add_step(make_step(task="drawer", h=4, w=6, n=3))  # a new episode may have a new layout
        paths.append(w.end_episode())
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "lift/lift-000000.npz",
        "lift/lift-000001.npz",
        "lift/lift-000002.npz",
        "drawer/drawer-000000.npz",
    ]
    assert find_episodes(tmp_path) == sorted(paths)
    # a new writer on the same root continues after the existing files
    with EpisodeWriter(tmp_path) as w:
        assert w.start_episode({"task": "lift"}).episode_id == "lift-000003"
        w.discard_episode()


def test_explicit_episode_id_and_user_meta(tmp_path: Path) -> None:
    path = write_episode(
        tmp_path, make_steps(2), {"task": "lift", "episode_id": "run3.ep-7", "user": {"a": [1]}}
    )
    assert path.name == "run3.ep-7.npz"
    assert read_episode_meta(path).meta.user == {"a": [1]}


def test_refuses_overwrite_unless_asked(tmp_path: Path) -> None:
    meta = {"task": "lift", "episode_id": "ep"}
    path = write_episode(tmp_path, make_steps(2), meta)
    before = path.read_bytes()
    with EpisodeWriter(tmp_path) as w, pytest.raises(SchemaError) as info:
        w.start_episode(meta)
    assert "exists" in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before
    # a file that appears while the episode is being recorded is not clobbered either
    with EpisodeWriter(tmp_path) as w:
        w.start_episode({"task": "lift", "episode_id": "race"})
        w.add_step(make_step())
        (tmp_path / "lift" / "race.npz").write_bytes(b"someone else")
        with pytest.raises(SchemaError, match="exists"):
            w.end_episode()
        w.discard_episode()
    assert (tmp_path / "lift" / "race.npz").read_bytes() == b"someone else"
    # overwrite=True replaces
    path2 = write_episode(tmp_path, make_steps(3), meta, overwrite=True)
    assert path2 == path and read_episode_meta(path).meta.num_steps == 3
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_exception_inside_with_discards_and_warns(tmp_path: Path) -> None:
    with (
        pytest.warns(UserWarning, match="discarded unfinished episode"),
        pytest.raises(RuntimeError, match="simulator crashed"),
        EpisodeWriter(tmp_path) as w,
    ):
        w.start_episode({"task": "lift"})
        for step in make_steps(3):
            w.add_step(step)
        raise RuntimeError("simulator crashed")
    assert not w.in_episode
    assert not tmp_path.exists() or not any(tmp_path.rglob("*"))


def test_close_with_open_episode_warns(tmp_path: Path) -> None:
    w = EpisodeWriter(tmp_path)
    w.start_episode({"task": "lift"})
    w.add_step(make_step())
    with pytest.warns(UserWarning, match="unfinished episode"):
        w.close()
    assert not any(tmp_path.rglob("*.npz"))
    # still reusable
    w.start_episode({"task": "lift"})
    w.add_step(make_step())
    assert w.end_episode().exists()


def test_clean_exit_does_not_warn(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_episode(tmp_path, make_steps(2))


def test_discard_episode(tmp_path: Path) -> None:
    with EpisodeWriter(tmp_path) as w:
        meta = w.start_episode({"task": "lift"})
        w.add_step(make_step())
        w.discard_episode()
        assert not w.in_episode and w.num_steps == 0
        assert not (tmp_path / "lift" / f"{meta.episode_id}.npz").exists()
        # the next episode starts cleanly, with a different layout even
        w.start_episode({"task": "lift", "episode_id": "after"})
        w.add_step(make_step(h=4, w=4))
        path = w.end_episode()
    assert read_episode(path).arrays["rgb_a"].shape == (1, 4, 4, 3)


def test_lifecycle_errors(tmp_path: Path) -> None:
    w = EpisodeWriter(tmp_path)
    with pytest.raises(SchemaError, match="no open episode"):
        w.add_step(make_step())
    with pytest.raises(SchemaError, match="no open episode"):
        w.end_episode()
    w.start_episode({"task": "lift"})
    with pytest.raises(SchemaError, match="still open"):
        w.start_episode({"task": "lift"})
    with pytest.raises(SchemaError, match="no steps"):
        w.end_episode()
    w.discard_episode()
    with pytest.raises(ValueError, match="format"):
        EpisodeWriter(tmp_path, fmt="hdf5")


def test_many_steps_grow_buffers(tmp_path: Path) -> None:
    steps = make_steps(150, h=4, w=4)
    path = write_episode(tmp_path, steps, initial_capacity=1)
    ep = read_episode(path, fields=["grip_a", "rgb_b"])
    assert ep.arrays["rgb_b"].shape == (150, 4, 4, 3)
    np.testing.assert_array_equal(ep.arrays["grip_a"], [validate_step(s)["grip_a"] for s in steps])


def test_writer_copies_step_arrays(tmp_path: Path) -> None:
    q = np.zeros(7, np.float32)
    with EpisodeWriter(tmp_path) as w:
        w.start_episode({"task": "lift"})
        for i in range(3):
            q[:] = i  # the recorder reuses its buffer
            w.add_step(make_step(i, q_a=q))
        path = w.end_episode()
    np.testing.assert_array_equal(read_episode(path).arrays["q_a"][:, 0], [0, 1, 2])


# --------------------------------------------------------------------------- format properties


@pytest.mark.parametrize("compress", [True, False])
def test_same_content_gives_byte_identical_files(tmp_path: Path, compress: bool) -> None:
    steps = rich_steps()
    a = write_episode(
        tmp_path / "a", steps, {"task": "lift", "user": {"b": 1, "a": 2}}, compress=compress
    )
    b = write_episode(
        tmp_path / "b", steps, {"task": "lift", "user": {"a": 2, "b": 1}}, compress=compress
    )
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.compress_type == (zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)


def test_files_load_with_plain_numpy_without_pickle(tmp_path: Path) -> None:
    path = write_episode(tmp_path, rich_steps())
    with np.load(path, allow_pickle=False) as npz:
        assert npz.files[0] == "__meta__"
        arrays = {name: npz[name] for name in npz.files}
    doc = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    assert doc["format"] == "teamvla-episode" and doc["version"] == EPISODE_FILE_VERSION
    assert doc["num_steps"] == 5 and set(doc["fields"]) == set(arrays)
    assert set(doc) == {
        "format",
        "version",
        "task",
        "episode_id",
        "success",
        "num_steps",
        "user",
        "fields",
    }
    for name, arr in arrays.items():
        assert not arr.dtype.hasobject
        assert arr.shape == (5, *doc["fields"][name]["shape"])
        kind = "str" if arr.dtype.kind == "U" else str(arr.dtype)
        assert kind == doc["fields"][name]["dtype"]


def test_written_file_validates_and_is_found(tmp_path: Path) -> None:
    path = write_episode(tmp_path, make_steps(3))
    (tmp_path / "lift" / ".lift-000009.npz.123-abcd.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("x")
    assert find_episodes(tmp_path) == [path]
    assert find_episodes(path) == [path]
    header = validate_episode_file(path)
    assert header.meta.num_steps == 3 and header.file_size == path.stat().st_size
    with pytest.raises(SchemaError, match="does not exist"):
        find_episodes(tmp_path / "missing")


def test_write_episode_arrays_low_level(tmp_path: Path) -> None:
    steps = [validate_step(s) for s in make_steps(3)]
    arrays = {k: np.stack([np.asarray(s[k]) for s in steps]) for k in steps[0]}
    meta = EpisodeMeta("lift", "low", False, 3)
    path = write_episode_arrays(tmp_path / "low.npz", meta, arrays)
    assert validate_episode_file(path).meta == meta
    with pytest.raises(SchemaError, match="3 steps"):
        write_episode_arrays(tmp_path / "x.npz", meta, {**arrays, "q_a": arrays["q_a"][:2]})
    with pytest.raises(SchemaError, match="object"):
        write_episode_arrays(tmp_path / "y.npz", meta, {**arrays, "junk": np.array([None] * 3)})
    with pytest.raises(FileExistsError):
        write_episode_arrays(path, meta, arrays)
    assert not [p for p in tmp_path.iterdir() if p.name != "low.npz"]


# --------------------------------------------------------------------------- lazy reading


@pytest.fixture
def opened_members(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of every zip member opened (i.e. decompressed) while the test runs."""
    seen: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(name.filename if isinstance(name, zipfile.ZipInfo) else str(name))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    return seen


def test_read_meta_and_empty_field_list_decompress_no_arrays(
    tmp_path: Path, opened_members: list[str]
) -> None:
    path = write_episode(tmp_path, rich_steps())
    opened_members.clear()
    header = read_episode_meta(path)
    assert set(opened_members) == {"__meta__.npy"}
    assert "rgb_a" in header.fields
    opened_members.clear()
    ep = read_episode(path, fields=[])
    assert ep.arrays == {} and set(opened_members) == {"__meta__.npy"}
    opened_members.clear()
    ep = read_episode(path, fields=["q_a", "task"])
    assert set(ep.arrays) == {"q_a", "task"}
    assert set(opened_members) == {"__meta__.npy", "q_a.npy", "task.npy"}
    assert not any(m.startswith(("rgb_", "depth_")) for m in opened_members)


def test_read_unknown_field(tmp_path: Path) -> None:
    path = write_episode(tmp_path, make_steps(2))
    with pytest.raises(SchemaError) as info:
        read_episode(path, fields=["rgb_c"])
    assert info.value.field == "rgb_c" and "rgb_a" in str(info.value)


def test_iter_steps_with_fields(tmp_path: Path) -> None:
    steps = make_steps(3)
    path = write_episode(tmp_path, steps)
    got = list(iter_steps(path, fields=["grip_a", "success", "instruction"]))
    assert [set(g) for g in got] == [{"grip_a", "success", "instruction"}] * 3
    assert all(g["success"] is False and g["instruction"] == "lift the red block" for g in got)
    assert [float(g["grip_a"]) for g in got] == [0.0, 0.125, 0.25]


def test_reader_returns_writable_independent_arrays(tmp_path: Path) -> None:
    path = write_episode(tmp_path, make_steps(2))
    a = read_episode(path).arrays["q_a"]
    a[:] = 0  # no error: a private copy
    assert read_episode(path).arrays["q_a"].any()


def test_file_permissions_are_ordinary(tmp_path: Path) -> None:
    path = write_episode(tmp_path, make_steps(1))
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert set(npz_members(path)) >= {"__meta__.npy", "rgb_a.npy"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- the zip container


def test_parallel_and_sequential_compression_give_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import teamvla_schema.zipwrite as zipwrite_mod

    steps = rich_steps()
    monkeypatch.setattr(zipwrite_mod, "_PARALLEL_MIN_BYTES", 10**12)
    sequential = write_episode(tmp_path / "seq", steps).read_bytes()
    monkeypatch.setattr(zipwrite_mod, "_PARALLEL_MIN_BYTES", 0)  # every member in a worker thread
    monkeypatch.setattr(zipwrite_mod.os, "cpu_count", lambda: 4)
    parallel = write_episode(tmp_path / "par", steps)
    assert parallel.read_bytes() == sequential
    assert validate_episode_file(parallel).meta.num_steps == 5


@pytest.mark.parametrize("compress", [True, False])
def test_zip_structure_is_standard(tmp_path: Path, compress: bool) -> None:
    path = write_episode(tmp_path, rich_steps(), compress=compress)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None  # every CRC checks out
        infos = zf.infolist()
        assert infos[0].filename == "__meta__.npy"
        for info in infos:
            assert info.flag_bits == 0 and info.create_system == 3
            assert (info.external_attr >> 16) & 0o777 == 0o644
            assert info.compress_type == (zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
            assert info.file_size < 2**32 and not info.extra  # no ZIP64 records for small files
    # nothing after the end-of-central-directory record, no archive comment
    assert path.read_bytes()[-22:-18] == b"PK\x05\x06"


def test_zip64_records_when_sizes_do_not_fit_32_bits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exercise the ZIP64 code path by lowering the limit (real >4 GiB files are too slow to test)."""
    import teamvla_schema.zipwrite as zipwrite_mod

    monkeypatch.setattr(zipwrite_mod, "_ZIP64_LIMIT", 100)
    steps = rich_steps()
    path = write_episode(tmp_path, steps)
    raw = path.read_bytes()
    assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw  # ZIP64 end records
    monkeypatch.undo()
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert any(info.extra for info in zf.infolist())
    with np.load(path, allow_pickle=False) as npz:
        assert npz["rgb_a"].shape == (5, 8, 8, 3)
    for i, got in enumerate(iter_steps(path)):
        assert_steps_equal(got, validate_step(steps[i]))


def test_big_and_non_contiguous_columns(tmp_path: Path) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    steps = [validate_step(make_step(i, h=64, w=64)) for i in range(40)]
    arrays = {k: np.stack([np.asarray(s[k]) for s in steps]) for k in steps[0]}
    arrays["rgb_a"] = frames  # > 256 KiB: compressed in a worker thread
    arrays["rgb_b"] = np.asfortranarray(frames[:, ::-1])  # not C-contiguous
    meta = EpisodeMeta("lift", "big", False, 40)
    path = write_episode_arrays(tmp_path / "big.npz", meta, arrays)
    ep = read_episode(path)
    assert np.array_equal(ep.arrays["rgb_a"], frames)
    assert np.array_equal(ep.arrays["rgb_b"], frames[:, ::-1])
    validate_episode_file(path)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        ("__meta__", np.zeros(3), "identifier"),
        ("bad name", np.zeros(3), "identifier"),
        ("scalar", np.float32(1.0), "stacked"),
        ("zero_d", np.array(1.0), "stacked"),
        ("listy", [1, 2, 3], "stacked"),
    ],
)
def test_write_episode_arrays_refuses_bad_columns(
    tmp_path: Path, name: str, value: Any, match: str
) -> None:
    meta = EpisodeMeta("lift", "x", False, 3)
    with pytest.raises(SchemaError, match=match):
        write_episode_arrays(tmp_path / "x.npz", meta, {name: value})
    assert not list(tmp_path.iterdir())


def test_other_zip_tools_accept_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unzip = shutil.which("unzip")
    if unzip is None:
        pytest.skip("Info-ZIP unzip is not installed")
    import teamvla_schema.zipwrite as zipwrite_mod

    paths = [
        write_episode(tmp_path / "plain", rich_steps()),
        write_episode(tmp_path / "stored", rich_steps(), compress=False),
    ]
    monkeypatch.setattr(zipwrite_mod, "_ZIP64_LIMIT", 100)
    paths.append(write_episode(tmp_path / "zip64", rich_steps()))
    for path in paths:
        result = subprocess.run(
            [unzip, "-t", str(path)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0 and "No errors detected" in result.stdout, (
            result.stdout + result.stderr
        )


def test_non_ascii_field_names(tmp_path: Path) -> None:
    steps = [make_step(i, größe=np.float32(i), 名前="ok") for i in range(2)]
    path = write_episode(tmp_path, steps)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("größe.npy")
        assert info.flag_bits & 0x800  # the UTF-8 name flag
    got = list(iter_steps(path))
    assert float(got[1]["größe"]) == 1.0 and got[0]["名前"] == "ok"
    with np.load(path, allow_pickle=False) as npz:
        assert "größe" in npz.files
