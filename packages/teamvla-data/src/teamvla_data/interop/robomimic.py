"""Import: a robomimic HDF5 file -> TeamVLA episodes, one demonstration at a time.

robomimic's published layout::

    data                     attrs: total (steps), env_args (JSON string)
      demo_<i>               attrs: num_samples, model_file (optional)
        actions   [T, A]     rewards [T]   dones [T]   states [T, S] (optional)
        obs/<key> [T, ...]   next_obs/<key> (optional)
    mask/<filter>            demo names (bytes), e.g. train / valid

Only numeric datasets are read (h5py never unpickles; object, opaque and
compound datasets are refused). Files this package exported keep the TeamVLA
metadata in ``data/demo_<i>/teamvla`` and come back exactly.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_schema.errors import SchemaError
from teamvla_schema.fields import REQUIRED_FIELDS

from teamvla_data.interop._deps import require
from teamvla_data.interop.core import ConvEpisode, Report, coerce_known, restore_dtypes
from teamvla_data.interop.mapping import (
    ACTION,
    ROBOMIMIC_CAMERA_FALLBACK,
    ROBOMIMIC_KEYS,
    Layout,
    extra_field_name,
    parse_layout,
    resolve_keys,
    slugify,
)

DEMO_RE = re.compile(r"^demo_(\d+)$")
#: Group inside each demo holding what robomimic has no place for (ours only).
TEAMVLA_GROUP = "teamvla"


def _text(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8")
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string attribute, received {type(value).__name__}")


class RobomimicReader:
    """Iterate over a robomimic HDF5 file's demonstrations as :class:`ConvEpisode` objects.

    ``renames`` is ``{robomimic_path: our_field}`` with paths relative to a demo
    (``obs/agentview_image=rgb_a``); ``action_layout`` overrides ALOHA's split
    of ``actions``; ``task``, ``instruction`` and ``fps`` fill what robomimic
    does not record (defaults: from ``env_args``); ``success``: ``"auto"``
    (``rewards > 0``, robomimic's sparse task reward), ``"last"`` or ``"none"``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        renames: Mapping[str, str] | None = None,
        action_layout: str | None = None,
        task: str | None = None,
        instruction: str | None = None,
        fps: float | None = None,
        success: str = "auto",
        report: Report | None = None,
    ) -> None:
        self.h5py = require("h5py", "robomimic import")
        self.path = Path(path)
        self.renames = dict(renames or {})
        self.action_layout, self.task, self.instruction, self.fps = (
            action_layout,
            task,
            instruction,
            fps,
        )
        self.success = success
        self.report = report or Report()
        if not self.path.is_file():
            raise SchemaError("no such file", path=self.path)
        try:
            self.file = self.h5py.File(self.path, "r")
        except OSError as exc:
            raise SchemaError(
                f"not an HDF5 file, or truncated or corrupt: {exc}", path=self.path
            ) from None
        data = self.file.get("data")
        if not isinstance(data, self.h5py.Group):
            self.file.close()
            raise SchemaError("no 'data' group; not a robomimic file", path=self.path)
        self.data = data
        found = sorted(data.keys())
        self.demos = sorted((k for k in found if DEMO_RE.match(k)), key=lambda k: int(k[5:]))
        if len(self.demos) != len(found):
            others = [k for k in found if not DEMO_RE.match(k)]
            self.report.note(f"groups {others} under data/ are not demo_<i>; not imported")
        self.env_args = self._env_args()
        self.masks = self._masks()

    def _env_args(self) -> dict[str, Any]:
        raw = self.data.attrs.get("env_args")
        if raw is None:
            return {}
        try:
            value = json.loads(_text(raw))
        except (TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SchemaError(
                f"data attribute env_args is not JSON text: {exc}", path=self.path
            ) from None
        return value if isinstance(value, dict) else {}

    def _masks(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        group = self.file.get("mask")
        if isinstance(group, self.h5py.Group):
            for name in group:
                ds = group[name]
                if not isinstance(ds, self.h5py.Dataset) or ds.dtype.kind != "S":
                    raise SchemaError(
                        "expected fixed-length byte strings", path=self.path, field=f"mask/{name}"
                    )
                out[name] = [_text(v) for v in ds[()]]
        return out

    def __len__(self) -> int:
        return len(self.demos)

    def __iter__(self) -> Iterator[ConvEpisode]:
        try:
            for name in self.demos:
                try:
                    yield self._episode(name)
                except (KeyError, TypeError, ValueError) as exc:
                    if isinstance(exc, SchemaError):
                        raise
                    raise SchemaError(
                        f"malformed demo ({type(exc).__name__}: {exc})",
                        path=self.path,
                        field=f"data/{name}",
                    ) from None
        finally:
            self.file.close()

    def _dataset(self, group: Any, key: str, t: int | None, kinds: str = "biuf") -> np.ndarray:
        where = f"{group.name}/{key}"
        ds = group.get(key)
        if not isinstance(ds, self.h5py.Dataset):
            raise SchemaError("expected a dataset, found none", path=self.path, field=where)
        dtype = ds.dtype
        if (
            dtype.kind not in kinds
            or dtype.fields is not None
            or self.h5py.check_dtype(vlen=dtype) is not None
        ):
            raise SchemaError(
                f"refusing to read a dataset of dtype {dtype} (object, opaque or variable-length data "
                "could hold pickles); expected numbers",
                path=self.path,
                field=where,
            )
        arr = ds[()]
        if t is not None and (arr.ndim == 0 or len(arr) != t):
            raise SchemaError(
                f"expected {t} steps (num_samples), found shape {list(arr.shape)}",
                path=self.path,
                field=where,
            )
        return np.asarray(arr)

    def _plan(self, g: Any, stored: dict[str, Any] | None) -> tuple[dict[str, str], Layout]:
        if stored is not None:
            return dict(stored["keys"]), parse_layout(stored["action_layout"], ACTION)
        present = {f"obs/{k}" for k in g.get("obs", {})} | {
            k for k in g if k not in ("obs", "next_obs", TEAMVLA_GROUP)
        }
        want = resolve_keys(ROBOMIMIC_KEYS, self.renames)
        keys = {f: k for f, k in want.items() if k in present}
        for cam, fallbacks in ROBOMIMIC_CAMERA_FALLBACK.items():
            if cam not in keys:
                found = next((k for k in fallbacks if k in present), None)
                if found is not None:
                    keys[cam] = found
        for need in ("rgb_a", "rgb_b", "q_a", "q_b", ACTION):
            if need not in keys:
                raise SchemaError(
                    f"nothing maps to {need} (looked for {want.get(need)!r}); the demo has {sorted(present)}; "
                    f"pass --map PATH={need}",
                    path=self.path,
                    field=g.name,
                )
        width = int(np.prod(g[keys[ACTION]].shape[1:]))
        layout = parse_layout(self.action_layout or "aloha", ACTION, width)
        taken = set(keys) | set(layout.fields)
        for key in sorted(present - set(keys.values())):
            name = extra_field_name(key, taken)
            keys[name] = key
            taken.add(name)
            self.report.note(f"{key}: no TeamVLA counterpart, kept as extra field {name!r}")
        if "next_obs" in g:
            self.report.note("next_obs not imported: it repeats obs one step later")
        return keys, layout

    def _episode(self, name: str) -> ConvEpisode:
        g = self.data[name]
        try:
            t = int(g.attrs["num_samples"])
        except (KeyError, TypeError, ValueError):
            raise SchemaError(
                "missing or bad attribute num_samples", path=self.path, field=g.name
            ) from None
        tv = g.get(TEAMVLA_GROUP)
        stored = None
        if isinstance(tv, self.h5py.Group) and "meta_json" in tv:
            stored = json.loads(self._dataset(tv, "meta_json", None, "u").tobytes().decode("utf-8"))
        keys, layout = self._plan(g, stored)
        cols: dict[str, np.ndarray] = dict(
            layout.split(self._dataset(g, keys[ACTION], t), keys[ACTION])
        )
        for field, key in keys.items():
            if field != ACTION:
                cols[field] = self._dataset(g, key, t)
        if isinstance(tv, self.h5py.Group):
            for key in tv:
                if key != "meta_json":
                    arr = self._dataset(tv, key, t, "biufS")
                    cols[key] = (
                        np.array([_text(v) for v in arr], dtype=str)
                        if arr.dtype.kind == "S"
                        else arr
                    )
        if stored:
            cols["task"] = np.full(t, stored["task"])
            restore_dtypes(cols, stored.get("dtypes", {}), f"{self.path}:{g.name}")
            return ConvEpisode(stored["task"], stored["episode_id"],
                               {f: np.ascontiguousarray(cols[f]) for f in stored["fields"]},
                               stored["user"], stored["fps"], stored["success"], f"{self.path}:{g.name}")  # fmt: skip
        return self._foreign(g, name, t, cols, keys, layout)

    def _foreign(self, g: Any, name: str, t: int, cols: dict[str, np.ndarray], keys: dict[str, str],
                 layout: Layout) -> ConvEpisode:  # fmt: skip
        where = f"{self.path}:{g.name}"
        env_name = str(self.env_args.get("env_name") or "")
        task = self.task or slugify(env_name or self.path.stem)
        cols["task"] = np.full(t, task)
        if "instruction" not in cols:
            cols["instruction"] = np.full(
                t, self.instruction if self.instruction is not None else env_name
            )
        if "success" not in cols:
            if self.success == "auto" and "reward" in cols:
                cols["success"] = np.asarray(cols["reward"]).reshape(t) > 0
                self.report.note("success taken from rewards > 0 (robomimic's sparse task reward)")
            else:
                cols["success"] = np.zeros(t, bool)
                if self.success == "last":
                    cols["success"][-1] = True
                else:
                    self.report.note(
                        "no success signal: success set false (pass --success last if every demo succeeded)"
                    )
        coerce_known(cols, where, self.report)
        kwargs = self.env_args.get("env_kwargs") or {}
        fps = self.fps if self.fps is not None else kwargs.get("control_freq")
        rm: dict[str, Any] = {"file": self.path.name, "demo": name, "keys": dict(keys),
                              "action_layout": str(layout), "env_args": self.env_args,
                              "masks": sorted(m for m, demos in self.masks.items() if name in demos)}  # fmt: skip
        if "model_file" in g.attrs:
            rm["model_file"] = _text(g.attrs["model_file"])
        lead = [*REQUIRED_FIELDS]
        order = [f for f in lead if f in cols] + [f for f in cols if f not in lead]
        return ConvEpisode(task, name, {f: np.ascontiguousarray(cols[f]) for f in order},
                           {"interop": {"robomimic": rm}}, float(fps) if fps else None, None, where)  # fmt: skip
