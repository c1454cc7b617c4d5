"""Import: a LeRobot v3 dataset directory -> TeamVLA episodes, one at a time.

Reads ``meta/info.json``, ``meta/tasks.parquet`` and ``meta/episodes`` with
pyarrow (never pandas, nothing unpickles), then each episode's rows of its
data file and its frames from the MP4 files (PyAV, in order) or from the PNG
bytes inside the parquet (Pillow). Episodes this package exported carry their
TeamVLA metadata in the ``teamvla/episode`` column and come back exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema.errors import SchemaError
from teamvla_schema.fields import REQUIRED_FIELDS

from teamvla_data.interop import media
from teamvla_data.interop._deps import require
from teamvla_data.interop.core import ConvEpisode, Report, coerce_known, restore_dtypes
from teamvla_data.interop.lerobot_format import (
    DATA_PATH,
    EPISODE_JSON,
    column_to_numpy,
    refuse_pickled_types,
)
from teamvla_data.interop.mapping import (
    ACTION,
    LEROBOT_CAMERA_FALLBACK,
    LEROBOT_DERIVED,
    LEROBOT_KEYS,
    STATE,
    Layout,
    extra_field_name,
    parse_layout,
    resolve_keys,
    slugify,
)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SchemaError("missing; not a LeRobot v3 dataset directory", path=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"unreadable or truncated JSON: {exc}", path=path) from None


class LeRobotReader:
    """Iterate over a LeRobot v3 dataset's episodes as :class:`ConvEpisode` objects.

    ``renames`` is ``{lerobot_key: our_field}`` (``--map``); ``state_layout`` /
    ``action_layout`` override ALOHA's split of the flat vectors; ``task`` is
    the task slug (default: from the directory name); ``success`` says where
    the per-step success flag comes from when the dataset has no
    ``next.success`` column: ``"none"`` (all false) or ``"last"`` (each
    episode's last step succeeded).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        renames: Mapping[str, str] | None = None,
        state_layout: str | None = None,
        action_layout: str | None = None,
        task: str | None = None,
        success: str = "none",
        report: Report | None = None,
    ) -> None:
        self.pa = require("pyarrow", "LeRobot import")
        self.pq = require("pyarrow.parquet", "LeRobot import")
        self.pc = require("pyarrow.compute", "LeRobot import")
        self.root = Path(root)
        self.renames = dict(renames or {})
        self.layout_opts = (state_layout, action_layout)
        self.task = task
        self.success = success
        self.report = report or Report()
        info_path = self.root / "meta" / "info.json"
        self.info = _load_json(info_path)
        version = (
            str(self.info.get("codebase_version", "?")) if isinstance(self.info, dict) else "?"
        )
        if not version.startswith("v3"):
            raise SchemaError(
                f"LeRobot dataset version {version}; this reader supports v3.0 (LeRobot's "
                "convert_dataset_v21_to_v30 upgrades older datasets)",
                path=info_path,
            )
        self.features: dict[str, dict[str, Any]] = self.info.get("features") or {}
        fps = self.info.get("fps")
        if (
            isinstance(fps, bool)
            or not isinstance(fps, int | float)
            or not fps > 0
            or not self.features
        ):
            raise SchemaError("expected a positive 'fps' and a 'features' mapping", path=info_path)
        self.fps = float(fps)
        self.info.setdefault("data_path", DATA_PATH)
        self.tasks = self._read_tasks()
        self.episodes = self._read_episodes()
        self._table: tuple[Path, Any] | None = None
        self._videos: dict[Path, media.VideoReader] = {}

    # -- metadata
    def _read(self, path: Path, skip_prefix: str | None = None) -> Any:
        """A parquet file as a table (columns starting with ``skip_prefix`` left out)."""
        try:
            schema = self.pq.read_schema(path)
            refuse_pickled_types(schema, str(path))
            names = [n for n in schema.names if not (skip_prefix and n.startswith(skip_prefix))]
            if skip_prefix and len(names) < len(schema.names):
                self.report.note(
                    "per-episode statistics (meta/episodes stats/*) not imported: recomputable"
                )
            return self.pq.read_table(path, columns=names)
        except FileNotFoundError:
            raise SchemaError("missing parquet file", path=path) from None
        except (OSError, self.pa.ArrowException) as exc:
            raise SchemaError(f"corrupt or truncated parquet file: {exc}", path=path) from None

    def _read_tasks(self) -> dict[int, str]:
        path = self.root / "meta" / "tasks.parquet"
        table = self._read(path)
        meta = table.schema.metadata or {}
        try:
            index_cols = (
                json.loads(meta[b"pandas"]).get("index_columns", []) if b"pandas" in meta else []
            )
        except (ValueError, AttributeError):
            raise SchemaError("unreadable pandas metadata", path=path) from None
        text_col = next(
            (c for c in [*index_cols, "task"] if isinstance(c, str) and c in table.column_names),
            None,
        )
        if text_col is None or "task_index" not in table.column_names:
            raise SchemaError("expected columns task_index and the task text", path=path)
        return dict(
            zip(
                table.column("task_index").to_pylist(),
                table.column(text_col).to_pylist(),
                strict=True,
            )
        )

    def _read_episodes(self) -> list[dict[str, Any]]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise SchemaError(
                "no episode metadata files (chunk-*/file-*.parquet)",
                path=self.root / "meta" / "episodes",
            )
        rows: list[dict[str, Any]] = []
        for path in files:
            rows += self._read(path, "stats/").to_pylist()
        rows.sort(key=lambda r: r["episode_index"])
        return rows

    def __len__(self) -> int:
        return len(self.episodes)

    def __iter__(self) -> Iterator[ConvEpisode]:
        try:
            for row in self.episodes:
                try:
                    yield self._episode(row)
                except (KeyError, TypeError, ValueError) as exc:
                    if isinstance(exc, SchemaError):
                        raise
                    raise SchemaError(
                        f"episode {row.get('episode_index')}: malformed metadata ({type(exc).__name__}: {exc})",
                        path=self.root / "meta" / "episodes",
                    ) from None
        finally:
            for reader in self._videos.values():
                reader.close()

    # -- one episode
    def _rows(self, row: dict[str, Any]) -> tuple[Path, Any]:
        rel = self.info["data_path"].format(
            chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
        )
        path = self.root / rel
        if self._table is None or self._table[0] != path:
            self._table = (path, self._read(path))
        table = self._table[1]
        e = row["episode_index"]
        rows = table.filter(self.pc.equal(table.column("episode_index"), e))
        if rows.num_rows != row["length"]:
            raise SchemaError(
                f"episode {e}: expected {row['length']} frames (meta/episodes), found {rows.num_rows}",
                path=path,
            )
        frame = rows.column("frame_index").to_numpy()
        if not np.array_equal(frame, np.arange(len(frame))):
            raise SchemaError(
                f"episode {e}: frame_index is not 0..{len(frame) - 1} in order", path=path
            )
        return path, rows

    def _plan(self, stored: dict[str, Any] | None) -> tuple[dict[str, str], Layout, Layout]:
        """``({our_field: lerobot_key}, state layout, action layout)``."""
        if stored is not None:
            keys = dict(stored["keys"])
            return (
                keys,
                parse_layout(stored["state_layout"], STATE),
                parse_layout(stored["action_layout"], ACTION),
            )
        want = resolve_keys(LEROBOT_KEYS, self.renames)
        keys = {f: k for f, k in want.items() if k in self.features}
        for cam, fallbacks in LEROBOT_CAMERA_FALLBACK.items():
            if cam not in keys:
                found = next((k for k in fallbacks if k in self.features), None)
                if found is not None:
                    keys[cam] = found
            if cam not in keys:
                cams = [k for k, f in self.features.items() if f.get("dtype") in ("video", "image")]
                raise SchemaError(
                    f"no camera for {cam}: the dataset's cameras are {cams}; "
                    f"pass --map CAMERA_KEY={cam}",
                    path=self.root / "meta" / "info.json",
                    field=cam,
                )
        layouts = []
        for kind, opt in ((STATE, self.layout_opts[0]), (ACTION, self.layout_opts[1])):
            key = keys.get(kind)
            if key is None:
                raise SchemaError(
                    f"no {kind} vector ({want[kind]!r}); pass --map KEY={kind}",
                    path=self.root / "meta" / "info.json",
                )
            width = int(np.prod(self.features[key]["shape"]))
            layouts.append(parse_layout(opt or "aloha", kind, width))
        taken = set(keys) | set(layouts[0].fields) | set(layouts[1].fields)
        mapped = set(keys.values())
        for key in self.features:
            if key not in mapped and key not in LEROBOT_DERIVED:
                name = extra_field_name(key, taken)
                keys[name] = key
                taken.add(name)
                self.report.note(f"{key}: no TeamVLA counterpart, kept as extra field {name!r}")
        return keys, layouts[0], layouts[1]

    def _values(
        self, key: str, rows: Any, path: Path, row: dict[str, Any], ts: np.ndarray
    ) -> np.ndarray:
        feat = self.features.get(key)
        if feat is None:
            raise SchemaError(
                f"feature {key!r} is not in info.json", path=self.root / "meta" / "info.json"
            )
        dtype, shape = feat["dtype"], list(feat["shape"])
        if dtype == "video":
            rel = self.info["video_path"].format(
                video_key=key,
                chunk_index=row[f"videos/{key}/chunk_index"],
                file_index=row[f"videos/{key}/file_index"],
            )
            vpath = self.root / rel
            if not vpath.is_file():
                raise SchemaError("missing video file", path=vpath, field=key)
            reader = self._videos.setdefault(vpath, media.VideoReader(vpath))
            start = float(row[f"videos/{key}/from_timestamp"])
            frames = reader.frames_at(start + ts, 0.5 / self.fps, key)
        elif dtype == "image":
            if key not in rows.column_names:
                raise SchemaError("image column is missing", path=path, field=key)
            cells = rows.column(key).to_pylist()
            frames = np.stack([self._image(c, path, key, i) for i, c in enumerate(cells)])
        else:
            if key not in rows.column_names:
                raise SchemaError("column is missing", path=path, field=key)
            return column_to_numpy(self.pa, rows.column(key), dtype, shape, str(path), key)
        if list(frames.shape[1:]) != shape[: frames.ndim - 1]:
            raise SchemaError(
                f"frames are {list(frames.shape[1:])}, info.json declares {shape}",
                path=path,
                field=key,
            )
        return frames

    def _image(self, cell: Any, path: Path, key: str, i: int) -> np.ndarray:
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if data is None:
            raise SchemaError("image has no embedded bytes", path=path, field=key, step=i)
        return media.decode_png(data, str(path), key, i)

    def _episode(self, row: dict[str, Any]) -> ConvEpisode:
        path, rows = self._rows(row)
        e, t = int(row["episode_index"]), int(row["length"])
        stored = json.loads(row[EPISODE_JSON]) if row.get(EPISODE_JSON) else None
        keys, state, action = self._plan(stored)
        ts = rows.column("timestamp").to_numpy().astype(np.float64)
        cols: dict[str, np.ndarray] = {}
        cols.update(state.split(self._values(keys[STATE], rows, path, row, ts), keys[STATE]))
        cols.update(action.split(self._values(keys[ACTION], rows, path, row, ts), keys[ACTION]))
        for name, key in keys.items():
            if name not in (STATE, ACTION):
                cols[name] = self._values(key, rows, path, row, ts)
        task_index = rows.column("task_index").to_numpy()
        try:
            cols["instruction"] = np.array([self.tasks[int(i)] for i in task_index], dtype=str)
        except KeyError as exc:
            raise SchemaError(f"task_index {exc} is not in meta/tasks.parquet", path=path) from None
        slug = stored["task"] if stored else (self.task or slugify(self.root.name))
        cols["task"] = np.full(t, slug)
        if stored:
            order = stored["fields"]
            restore_dtypes(cols, stored.get("dtypes", {}), str(path))
            return ConvEpisode(slug, stored["episode_id"], {f: np.ascontiguousarray(cols[f]) for f in order},
                               stored["user"], stored["fps"], stored["success"], str(path))  # fmt: skip
        return self._foreign(cols, keys, state, action, e, t, path, ts)

    def _foreign(self, cols: dict[str, np.ndarray], keys: dict[str, str], state: Layout, action: Layout,
                 e: int, t: int, path: Path, ts: np.ndarray) -> ConvEpisode:  # fmt: skip
        if "success" in cols:
            cols["success"] = cols["success"].astype(bool).reshape(t)
        else:
            cols["success"] = np.zeros(t, bool)
            if self.success == "last":
                cols["success"][-1] = True
            else:
                self.report.note(
                    "no next.success column: success set false (pass --success last if every episode succeeded)"
                )
        coerce_known(cols, str(path), self.report)
        grid = (np.arange(t) / self.fps).astype(np.float32)
        if np.array_equal(ts.astype(np.float32), grid):
            cols.pop("timestamp", None)  # exactly frame_index / fps: the metadata's fps says it
        else:
            cols["timestamp"] = ts
        lead = [*REQUIRED_FIELDS]
        order = [f for f in lead if f in cols] + [f for f in cols if f not in lead]
        names = {k: self.features[k].get("names") for k in (keys[STATE], keys[ACTION])}
        lr = {"dataset": self.root.name, "episode_index": e, "robot_type": self.info.get("robot_type"),
              "keys": dict(keys), "state_layout": str(state), "action_layout": str(action), "names": names}  # fmt: skip
        return ConvEpisode(str(cols["task"][0]), f"episode_{e:06d}", {f: np.ascontiguousarray(cols[f]) for f in order},
                           {"interop": {"lerobot": lr}}, self.fps, None, str(path))  # fmt: skip
