"""Export: TeamVLA episodes -> one robomimic HDF5 file.

Written into a hidden temporary file next to the destination, fsynced and
renamed at the end. Layout as robomimic publishes it (see
:mod:`teamvla_data.interop.robomimic`); what robomimic has no place for
(instruction, task, per-step success, timestamps, the TeamVLA metadata) goes
into a ``teamvla`` group inside each demo, which robomimic ignores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema.errors import SchemaError

from teamvla_data.interop._deps import require
from teamvla_data.interop.core import (
    ConvEpisode,
    Report,
    check_target,
    field_dtypes,
    publish,
    remove_temp,
    temp_sibling,
)
from teamvla_data.interop.mapping import (
    ACTION,
    ROBOMIMIC_KEYS,
    default_action_layout,
    parse_layout,
    resolve_keys,
)
from teamvla_data.interop.robomimic import DEMO_RE, TEAMVLA_GROUP

#: Fields that go into the demo's ``teamvla`` group (robomimic has no counterpart).
_OURS_ONLY = ("success", "instruction", "timestamp")


class RobomimicWriter:
    """Writes :class:`ConvEpisode` objects as demos of one robomimic HDF5 file at ``dst``.

    ``renames`` is ``{robomimic_path: our_field}``; ``action_layout`` overrides
    ALOHA's ``[action_a, grip_a, action_b, grip_b]``. Without ``reward`` /
    ``done`` fields, ``rewards`` is the success flag (robomimic's sparse task
    reward) and ``dones`` is 1 on the last step. Call :meth:`close` to
    publish, :meth:`abort` to discard.
    """

    def __init__(
        self,
        dst: str | os.PathLike[str],
        *,
        renames: Mapping[str, str] | None = None,
        action_layout: str | None = None,
        compression: str | None = "gzip",
        overwrite: bool = False,
        report: Report | None = None,
    ) -> None:
        self.h5py = require("h5py", "robomimic export")
        self.dst = Path(dst)
        self.overwrite = overwrite
        check_target(self.dst, overwrite)
        self.renames = dict(renames or {})
        self.action_opt = action_layout
        self.compression = compression
        self.report = report or Report()
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_sibling(self.dst)
        self.file = self.h5py.File(self.tmp, "w")
        self.data = self.file.create_group("data")
        self.total = 0
        self.env_args: dict[str, Any] | None = None
        self.masks: dict[str, list[str]] = {}
        self.fps: set[float] = set()

    def write(self, ep: ConvEpisode) -> None:
        """Append one episode as a demo."""
        rm = ep.remembered("robomimic")
        keys = resolve_keys(ROBOMIMIC_KEYS, self.renames, rm.get("keys"))
        n = int(ep.columns["q_a"].shape[1])
        layout = parse_layout(
            self.action_opt or rm.get("action_layout") or default_action_layout(n), ACTION
        )
        name = str(rm.get("demo", ""))
        if not DEMO_RE.match(name) or name in self.data:
            name = f"demo_{len(self.data)}"
            while name in self.data:
                name = f"{name}_"
        g = self.data.create_group(name)
        t = ep.num_steps
        g.attrs["num_samples"] = t
        if isinstance(rm.get("model_file"), str):
            g.attrs["model_file"] = rm["model_file"]
        self._put(g, keys[ACTION], layout.join(ep.columns, ACTION))
        written = {ACTION: keys[ACTION]}
        ours = g.create_group(TEAMVLA_GROUP)
        for field, col in ep.columns.items():
            if field in layout.fields or field == "task":
                continue
            if field in _OURS_ONLY or col.dtype.kind == "U":
                if col.dtype.kind == "U":
                    encoded = [str(s).encode("utf-8") for s in col]
                    width = max([1, *(len(b) for b in encoded)])
                    ours.create_dataset(field, data=np.array(encoded, dtype=f"S{width}"))
                else:
                    ours.create_dataset(
                        field, data=col.astype(np.uint8) if col.dtype == bool else col
                    )
                continue
            key = keys.get(field) or f"obs/{field}"
            if key in written.values() or key.startswith(f"{TEAMVLA_GROUP}/"):
                raise SchemaError(
                    f"two fields map to robomimic path {key!r}", path=ep.source or None, field=field
                )
            if col.dtype == bool:  # HDF5 has no bool; robomimic stores flags as integers
                col = col.astype(np.int64 if key == "dones" else np.uint8)
            self._put(g, key, col)
            written[field] = key
        if "reward" not in ep.columns and "rewards" not in written.values():
            self._put(g, "rewards", np.asarray(ep.columns["success"], np.float64))
        if "done" not in ep.columns and "dones" not in written.values():
            dones = np.zeros(t, np.int64)
            dones[-1] = 1
            self._put(g, "dones", dones)
        meta = {
            "task": ep.task, "episode_id": ep.episode_id, "success": ep.success, "fps": ep.fps,
            "user": ep.user, "fields": list(ep.columns), "keys": {f: k for f, k in written.items()},
            "action_layout": str(layout), "dtypes": field_dtypes(ep),
        }  # fmt: skip
        blob = json.dumps(meta, sort_keys=True, allow_nan=False).encode("utf-8")
        ours.create_dataset("meta_json", data=np.frombuffer(blob, np.uint8))
        self.total += t
        if self.env_args is None and isinstance(rm.get("env_args"), dict):
            self.env_args = rm["env_args"]
        for mask in rm.get("masks", []) if isinstance(rm.get("masks"), list) else []:
            self.masks.setdefault(str(mask), []).append(name)
        if ep.fps is not None:
            self.fps.add(ep.fps)

    def _put(self, g: Any, key: str, arr: np.ndarray) -> None:
        big = arr.ndim >= 3 and self.compression is not None
        g.create_dataset(key, data=arr, compression=self.compression if big else None)

    def close(self) -> Path:
        """Write the file-level attributes and publish the file; return its path."""
        if self.total == 0:
            self.abort()
            raise SchemaError("nothing to export: no episodes")
        self.data.attrs["total"] = self.total
        env_args = self.env_args
        if env_args is None:
            kwargs = {"control_freq": next(iter(self.fps))} if len(self.fps) == 1 else {}
            env_args = {"env_name": "teamvla", "type": 2, "env_kwargs": kwargs}
            self.report.note("env_args: no simulator recorded; written as env_name 'teamvla'")
        self.data.attrs["env_args"] = json.dumps(env_args)
        if self.masks:
            group = self.file.create_group("mask")
            for mask, demos in self.masks.items():
                width = max(len(d) for d in demos)
                group.create_dataset(
                    mask, data=np.array([d.encode() for d in demos], dtype=f"S{width}")
                )
        self.file.close()
        _fsync_file(self.tmp)
        publish(self.tmp, self.dst, self.overwrite)
        return self.dst

    def abort(self) -> None:
        """Discard everything written so far."""
        try:
            self.file.close()
        finally:
            remove_temp(self.tmp)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
