"""Bad input is refused with an error naming the file; missing extras say what to install;
nothing unpickles; a failed export leaves nothing behind."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from interop_testlib import FIXTURES, write_episodes
from teamvla_data.interop import convert
from teamvla_schema import SchemaError, find_episodes
from teamvla_schema.cli import main

pytest.importorskip("pyarrow")  # teamvla-data[lerobot]; the dev group has it
pytest.importorskip("PIL")


def _copy(name: str, tmp_path: Path) -> Path:
    src = FIXTURES / name
    dst = tmp_path / name
    tmp_path.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy(src, dst)
    return dst


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    ("rel", "match"),
    [
        ("data/chunk-000/file-000.parquet", "corrupt or truncated parquet file"),
        ("meta/info.json", "unreadable or truncated JSON"),
        ("meta/tasks.parquet", "corrupt or truncated parquet file"),
        ("meta/episodes/chunk-000/file-000.parquet", "corrupt or truncated parquet file"),
    ],
)
def test_truncated_lerobot_files_are_named(rel: str, match: str, tmp_path: Path) -> None:
    root = _copy("lerobot_aloha_images", tmp_path)
    _truncate(root / rel)
    with pytest.raises(SchemaError, match=match) as exc:
        convert(root, tmp_path / "out")
    assert exc.value.path == str(root / rel)
    assert not find_episodes(tmp_path / "out") if (tmp_path / "out").exists() else True


def test_truncated_video_is_named(tmp_path: Path) -> None:
    pytest.importorskip("av")
    root = _copy("lerobot_aloha_video", tmp_path)
    video = root / "videos" / "observation.images.cam_right_wrist" / "chunk-000" / "file-000.mp4"
    _truncate(video, 0.3)
    with pytest.raises(SchemaError) as exc:
        convert(root, tmp_path / "out")
    assert exc.value.path == str(video)


def test_missing_and_corrupt_sources(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="not a LeRobot v3 dataset") as exc:
        convert(tmp_path, tmp_path / "out", src_format="lerobot")
    assert exc.value.path == str(tmp_path / "meta" / "info.json")
    root = _copy("lerobot_aloha_images", tmp_path)
    info = root / "meta" / "info.json"
    info.write_text(info.read_text().replace('"v3.0"', '"v2.1"'))
    with pytest.raises(SchemaError, match=r"version v2\.1; this reader supports v3\.0"):
        convert(root, tmp_path / "out")
    pytest.importorskip("h5py")
    h5 = _copy("robomimic_twoarm.hdf5", tmp_path)
    _truncate(h5)
    with pytest.raises(SchemaError, match="not an HDF5 file, or truncated or corrupt") as exc:
        convert(h5, tmp_path / "out2")
    assert exc.value.path == str(h5)


def test_object_and_opaque_hdf5_data_is_refused(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    for label, make in (
        ("vlen strings", lambda g: g.create_dataset("obs/note", data=np.array(["a"] * 4, dtype=object),
                                                    dtype=h5py.string_dtype())),
        ("opaque bytes", lambda g: g.create_dataset("obs/blob", data=np.zeros(4, dtype="V8"))),
    ):  # fmt: skip
        path = _copy("robomimic_twoarm.hdf5", tmp_path / label)
        with h5py.File(path, "a") as f:
            make(f["data/demo_0"])
        with pytest.raises(SchemaError, match="refusing to read a dataset of dtype") as exc:
            convert(path, tmp_path / label / "out")
        assert exc.value.path == str(path) and "/data/demo_0/obs/" in str(exc.value)


def test_pickled_arrow_extension_types_are_refused(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    root = _copy("lerobot_aloha_images", tmp_path)
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    i = table.schema.get_field_index("next.reward")
    field = table.schema.field(i).with_metadata(
        {b"ARROW:extension:name": b"arrow.py_extension_type"}
    )
    pq.write_table(table.cast(table.schema.set(i, field)), path)
    with pytest.raises(SchemaError, match="pickled Arrow extension type") as exc:
        convert(root, tmp_path / "out")
    assert exc.value.path == str(path) and exc.value.field == "next.reward"


@pytest.mark.parametrize(
    ("blocked", "fmt", "extra"),
    [("pyarrow", "lerobot", "lerobot"), ("h5py", "robomimic", "robomimic")],
)
def test_a_missing_extra_is_one_line_naming_it(
    blocked, fmt, extra, plain_root, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setitem(sys.modules, blocked, None)  # import of it now fails
    dst = tmp_path / ("out.hdf5" if fmt == "robomimic" else "out")
    with pytest.raises(ImportError) as exc:
        convert(plain_root, dst, dst_format=fmt, fps=10)
    msg = str(exc.value)
    assert "\n" not in msg and f"install teamvla-data[{extra}]" in msg, msg
    code = main(["convert", str(plain_root), str(dst), "--to", fmt, "--fps", "10", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"teamvla-data[{extra}]" in err[0]
    assert not dst.exists()


def test_a_failed_export_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    write_episodes(root, joints=4)
    write_episodes(tmp_path / "wide", joints=5)
    odd = root / "lift" / "lift-000009.npz"
    shutil.copy(find_episodes(tmp_path / "wide")[0], odd)  # 5 joints among 4-joint episodes
    with pytest.raises(SchemaError, match=r"expected float32\[4\]") as exc:
        convert(root, tmp_path / "lr", dst_format="lerobot", fps=10, cameras="png")
    assert exc.value.path == str(odd)
    assert not (tmp_path / "lr").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_episode_without_a_required_field_is_named(tmp_path: Path) -> None:
    from teamvla_schema import read_episode, write_episode_arrays

    pytest.importorskip("h5py")
    root = tmp_path / "eps"
    write_episodes(root)
    path = find_episodes(root)[1]
    ep = read_episode(path)
    write_episode_arrays(
        path, ep.meta, {k: v for k, v in ep.arrays.items() if k != "q_a"}, overwrite=True
    )
    for fmt, dst in (("robomimic", tmp_path / "rm.hdf5"), ("lerobot", tmp_path / "lr")):
        with pytest.raises(SchemaError, match="missing required field") as exc:
            convert(root, dst, dst_format=fmt, fps=10, cameras="png")
        assert exc.value.path == str(path) and exc.value.field == "q_a"
        assert not dst.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_importing_into_a_root_that_has_the_episodes_is_refused(tmp_path: Path) -> None:
    convert(FIXTURES / "lerobot_aloha_images", tmp_path / "out")
    with pytest.raises(SchemaError, match="episode already exists"):
        convert(FIXTURES / "lerobot_aloha_images", tmp_path / "out")
