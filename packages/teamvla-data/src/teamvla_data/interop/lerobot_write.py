"""Export: TeamVLA episodes -> a LeRobot v3 dataset directory.

Streaming, one episode at a time, into a hidden temporary directory that is
fsynced and renamed to the destination at the end. The layout is LeRobot's
(``meta/info.json``, ``meta/tasks.parquet``, ``meta/episodes/...``,
``data/chunk-*/file-*.parquet``, ``videos/<key>/chunk-*/file-*.mp4``); each
episode's video is its own MP4 (the format allows any grouping), so its PSNR
is measured right after encoding. Without a video encoder, cameras are stored
as PNG images inside the parquet files, bit-exact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema.atomic import atomic_write_text
from teamvla_schema.errors import SchemaError

from teamvla_data.interop import media
from teamvla_data.interop._deps import require
from teamvla_data.interop.core import (
    ConvEpisode,
    Report,
    check_target,
    field_dtypes,
    fsync_tree,
    publish,
    remove_temp,
    temp_sibling,
)
from teamvla_data.interop.lerobot_format import (
    CAMERA_STORAGE,
    CHUNKS_SIZE,
    CODEBASE_VERSION,
    DATA_FILE_MB,
    DATA_PATH,
    EPISODE_JSON,
    VIDEO_PATH,
    StreamingStats,
    arrow_column,
    hf_feature,
    write_tasks,
)
from teamvla_data.interop.mapping import (
    ACTION,
    LEROBOT_KEYS,
    STATE,
    default_action_layout,
    default_state_layout,
    parse_layout,
    resolve_keys,
)


class LeRobotWriter:
    """Writes :class:`ConvEpisode` objects as one LeRobot v3 dataset at ``dst``.

    ``cameras``: ``"auto"`` (MP4 video when PyAV with an H.264 encoder is
    installed, PNG otherwise), ``"video"`` (lossy, quality ``crf``),
    ``"video-lossless"`` (H.264 RGB at crf 0, bit-exact) or ``"png"``. ``renames`` is ``{lerobot_key: our_field}``. Call
    :meth:`close` to publish, :meth:`abort` to discard.
    """

    def __init__(
        self,
        dst: str | os.PathLike[str],
        *,
        fps: float | None = None,
        cameras: str = "auto",
        crf: int = media.DEFAULT_CRF,
        renames: Mapping[str, str] | None = None,
        state_layout: str | None = None,
        action_layout: str | None = None,
        png_level: int = 6,
        overwrite: bool = False,
        report: Report | None = None,
    ) -> None:
        if cameras not in CAMERA_STORAGE:
            raise ValueError(
                f"cameras must be one of {', '.join(CAMERA_STORAGE)}, received {cameras!r}"
            )
        self.pa = require("pyarrow", "LeRobot export")
        self.pq = require("pyarrow.parquet", "LeRobot export")
        self.lossless = cameras == "video-lossless"
        if cameras.startswith("video"):
            require("av", "video export")
            codec = media.LOSSLESS_CODEC if self.lossless else media.VIDEO_CODEC
            if not media.video_encoder_available(codec):
                raise ImportError(f"PyAV is installed but its FFmpeg has no {codec} encoder")
        self.video = cameras.startswith("video") or (
            cameras == "auto" and media.video_encoder_available()
        )
        self.fallback = cameras == "auto" and not self.video
        if not self.video:
            require("PIL.Image", "LeRobot export with PNG images")
        self.dst = Path(dst)
        self.overwrite = overwrite
        check_target(self.dst, overwrite)
        if fps is not None and (not float(fps).is_integer() or fps <= 0):
            raise ValueError(f"LeRobot needs a positive integer fps, received {fps}")
        self.fps = self._fps_option = fps
        self.crf, self.png_level = crf, png_level
        self.renames = dict(renames or {})
        self.layout_opts = (state_layout, action_layout)
        self.report = report or Report()
        self.tmp = temp_sibling(self.dst)
        self.tmp.mkdir(parents=True)
        self.plan: dict[str, Any] | None = None
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict[str, Any]] = []
        self.stats: dict[str, StreamingStats] = {}
        self.psnr: dict[str, list[float]] = {}
        self.frames = 0
        self._writer: Any = None
        self._file = (0, 0)
        self._file_bytes = 0

    @property
    def cameras(self) -> str:
        """How camera images are stored, in words."""
        if self.video:
            av = require("av", "video export")
            if self.lossless:
                return f"MP4 video (H.264 RGB, {media.LOSSLESS_CODEC} crf 0, PyAV {av.__version__}; lossless)"
            return (
                f"MP4 video (H.264, {media.VIDEO_CODEC} {media.VIDEO_PIX_FMT} crf {self.crf}, "
                f"PyAV {av.__version__}; lossy, PSNR reported)"
            )
        why = (
            f" (no {media.VIDEO_CODEC} video encoder: PyAV is not installed)"
            if self.fallback
            else ""
        )
        return (
            f"PNG images inside the parquet files (lossless; compress level {self.png_level}){why}"
        )

    # -- the plan: which of our fields goes to which LeRobot feature, fixed by the first episode
    def _make_plan(self, ep: ConvEpisode) -> dict[str, Any]:
        lr = ep.remembered("lerobot")
        keys = resolve_keys(LEROBOT_KEYS, self.renames, lr.get("keys"))
        n = int(ep.columns["q_a"].shape[1])
        state_opt, action_opt = self.layout_opts
        state = parse_layout(
            state_opt or lr.get("state_layout") or default_state_layout(ep.columns, n), STATE
        )
        action = parse_layout(
            action_opt or lr.get("action_layout") or default_action_layout(n), ACTION
        )
        names = lr.get("names", {})
        features: dict[str, dict[str, Any]] = {}
        sources: dict[str, tuple[str, Any]] = {}  # feature key -> (kind, field or layout)
        for kind, layout in ((STATE, state), (ACTION, action)):
            key = keys[kind]
            given = names.get(key)
            generated = [
                name if w == 1 else f"{name}.{i}" for name, w in layout.segments for i in range(w)
            ]
            dtype = str(layout.join({f: ep.columns[f] for f in layout.fields}, key).dtype)
            features[key] = {
                "dtype": dtype,
                "shape": [layout.width],
                "names": given
                if isinstance(given, list) and len(given) == layout.width
                else generated,
            }
            sources[key] = ("vector", layout)
        in_vectors = set(state.fields) | set(action.fields)
        for name, col in ep.columns.items():
            if name in in_vectors or name in ("task", "instruction", "timestamp"):
                continue
            shape = list(col.shape[1:])
            camera = col.dtype == np.uint8 and col.ndim == 4 and shape[-1] == 3
            key = keys.get(name) or (f"observation.images.{name}" if camera else name)
            if camera:
                features[key] = {
                    "dtype": "video" if self.video else "image",
                    "shape": shape,
                    "names": ["height", "width", "channels"],
                }
                sources[key] = ("camera", name)
            else:
                dtype = "string" if col.dtype.kind == "U" else str(col.dtype)
                features[key] = {"dtype": dtype, "shape": shape or [1], "names": None}
                sources[key] = ("column", name)
        if "timestamp" in ep.columns:
            features["teamvla.timestamp"] = {"dtype": "float64", "shape": [1], "names": None}
            sources["teamvla.timestamp"] = ("column", "timestamp")
        for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            features[key] = {
                "dtype": "float32" if key == "timestamp" else "int64",
                "shape": [1],
                "names": None,
            }
        field_keys = {s[1]: k for k, s in sources.items() if s[0] != "vector"}
        field_keys.update({STATE: keys[STATE], ACTION: keys[ACTION]})
        return {"features": features, "sources": sources, "layout_of": ep.layout(),
                "keys": field_keys, "state": state, "action": action,
                "robot_type": lr.get("robot_type")}  # fmt: skip

    # -- writing
    def write(self, ep: ConvEpisode) -> None:
        """Append one episode."""
        self._check_fps(ep)
        if self.plan is None:
            self.plan = self._make_plan(ep)
        else:
            ep.check_layout(self.plan["layout_of"], "a LeRobot dataset has one feature set")
        plan, e, t = self.plan, len(self.episodes), ep.num_steps
        row: dict[str, Any] = {"episode_index": e, "length": t}
        cols: dict[str, Any] = {}
        for key, (kind, src) in plan["sources"].items():
            feat = plan["features"][key]
            values = src.join(ep.columns, key) if kind == "vector" else ep.columns[src]
            self._stat(key, values, image=kind == "camera")
            if kind == "camera" and feat["dtype"] == "video":
                row.update(self._video(key, values, e, src))
            elif kind == "camera":
                cols[key] = [
                    {
                        "bytes": media.encode_png(values[i], self.png_level),
                        "path": f"frame-{i:06d}.png",
                    }
                    for i in range(t)
                ]
            else:
                cols[key] = values
        assert self.fps is not None
        grid = np.arange(t, dtype=np.float64) / float(self.fps)
        ts = ep.columns.get("timestamp")
        if ts is not None and np.all(np.abs(ts.astype(np.float64) - grid) <= 1e-4):
            grid = ts.astype(np.float64)
        elif ts is not None:
            self.report.note(
                "timestamps are not on the 1/fps grid: LeRobot's 'timestamp' is frame_index/fps "
                "(its video lookups need that); the exact ones are in 'teamvla.timestamp'"
            )
        cols["timestamp"] = grid.astype(np.float32)
        instr = [str(s) for s in ep.columns["instruction"]]
        for s in instr:
            self.tasks.setdefault(s, len(self.tasks))
        cols["frame_index"] = np.arange(t, dtype=np.int64)
        cols["episode_index"] = np.full(t, e, np.int64)
        cols["index"] = np.arange(self.frames, self.frames + t, dtype=np.int64)
        cols["task_index"] = np.array([self.tasks[s] for s in instr], np.int64)
        for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            self._stat(key, cols[key], image=False)
        row.update(self._append_rows(cols, t))
        row["tasks"] = list(dict.fromkeys(instr))
        row["meta/episodes/chunk_index"] = row["meta/episodes/file_index"] = 0
        row[EPISODE_JSON] = json.dumps(
            {
                "task": ep.task, "episode_id": ep.episode_id, "success": ep.success, "fps": ep.fps,
                "user": ep.user, "fields": list(ep.columns), "keys": plan["keys"],
                "state_layout": str(plan["state"]), "action_layout": str(plan["action"]),
                "dtypes": field_dtypes(ep),
            },
            sort_keys=True, allow_nan=False,
        )  # fmt: skip
        self.episodes.append(row)
        self.frames += t

    def _check_fps(self, ep: ConvEpisode) -> None:
        where = ep.source or None
        if self.fps is None:
            if ep.fps is None:
                raise SchemaError(
                    "episode has no recording rate (fps) in its metadata; pass --fps", path=where
                )
            if not float(ep.fps).is_integer():
                raise SchemaError(
                    f"LeRobot needs an integer fps, the episode's is {ep.fps}; pass --fps",
                    path=where,
                )
            self.fps = ep.fps
        elif ep.fps is not None and ep.fps != self.fps:
            if self._fps_option is None:
                raise SchemaError(
                    f"episode fps {ep.fps} differs from the dataset's {self.fps} (a LeRobot dataset has "
                    "one fps); pass --fps to override",
                    path=where,
                )
            self.report.note(f"episode fps {ep.fps} replaced by --fps {self.fps}")

    def _stat(self, key: str, values: np.ndarray, image: bool) -> None:
        if values.dtype.kind in "biuf":
            self.stats.setdefault(key, StreamingStats(image)).add(values)

    def _video(self, key: str, frames: np.ndarray, e: int, field: str) -> dict[str, Any]:
        assert self.fps is not None
        chunk, file = divmod(e, CHUNKS_SIZE)
        rel = VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        info = media.encode_video(path, frames, self.fps, crf=self.crf, lossless=self.lossless)
        assert self.plan is not None
        self.plan["features"][key]["info"] = info
        decoded = media.decode_all(path)
        if decoded.shape != frames.shape:
            raise SchemaError(
                f"the encoded video has {decoded.shape}, expected {frames.shape}",
                path=path,
                field=field,
            )
        quality = media.psnr(decoded, frames)
        if self.lossless and quality != float("inf"):
            raise SchemaError(
                "lossless video did not decode to the same pixels", path=path, field=field
            )
        if not self.lossless:
            self.psnr.setdefault(field, []).append(quality)
        p = f"videos/{key}/"
        return {f"{p}chunk_index": chunk, f"{p}file_index": file, f"{p}from_timestamp": 0.0,
                f"{p}to_timestamp": len(frames) / float(self.fps)}  # fmt: skip

    def _append_rows(self, cols: dict[str, Any], t: int) -> dict[str, Any]:
        assert self.plan is not None
        feats = self.plan["features"]
        arrays = {k: arrow_column(self.pa, feats[k], v) for k, v in cols.items()}
        order = [k for k in feats if k in arrays]
        table = self.pa.table({k: arrays[k] for k in order})
        if self._writer is not None and self._file_bytes >= DATA_FILE_MB * 2**20:
            self._writer.close()
            self._writer = None
            chunk, file = self._file
            self._file = divmod(chunk * CHUNKS_SIZE + file + 1, CHUNKS_SIZE)
        chunk, file = self._file
        if self._writer is None:
            path = self.tmp / DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            meta = {
                "huggingface": json.dumps(
                    {"info": {"features": {k: hf_feature(feats[k]) for k in order}}}
                )
            }
            self._writer = self.pq.ParquetWriter(
                path, table.schema.with_metadata(meta), compression="snappy"
            )
            self._file_bytes = 0
        self._writer.write_table(table.replace_schema_metadata(self._writer.schema.metadata))
        self._file_bytes += table.nbytes
        return {"data/chunk_index": chunk, "data/file_index": file,
                "dataset_from_index": self.frames, "dataset_to_index": self.frames + t}  # fmt: skip

    def close(self) -> Path:
        """Write the metadata files and publish the dataset; return its path."""
        if not self.episodes or self.plan is None:
            self.abort()
            raise SchemaError("nothing to export: no episodes")
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        pa, pq = self.pa, self.pq
        ep_path = self.tmp / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
        ep_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episodes), ep_path)
        tasks = list(self.tasks)
        write_tasks(pa, pq, tasks, self.tmp / "meta" / "tasks.parquet")
        assert self.fps is not None
        fps = int(self.fps)
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": self.plan["robot_type"],
            "total_episodes": len(self.episodes), "total_frames": self.frames, "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB, "video_files_size_in_mb": 200,
            "fps": fps, "splits": {"train": f"0:{len(self.episodes)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if any(f["dtype"] == "video" for f in self.plan["features"].values()) else None,
            "features": self.plan["features"],
        }  # fmt: skip
        atomic_write_text(self.tmp / "meta" / "info.json", json.dumps(info, indent=4))
        stats = {k: s.result() for k, s in self.stats.items()}
        atomic_write_text(self.tmp / "meta" / "stats.json", json.dumps(stats, indent=4))
        fsync_tree(self.tmp)
        publish(self.tmp, self.dst, self.overwrite)
        return self.dst

    def abort(self) -> None:
        """Discard everything written so far."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        remove_temp(self.tmp)
