"""The data step of ``teamvla demo``: record expert episodes unless the directory has some,
and say how the camera fields of the episodes it trains on are stored."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("teamvla_train.demo")

DATA_STAMP = "demo_data.json"
#: Keys of the stamp that say how the data is stored, not what it holds: the files themselves
#: are asked how they are stored (a stamp from before these keys existed still matches).
_STORAGE_KEYS = ("image_codec", "video_crf")


def storage_label(encodings: Mapping[str, Any]) -> str:
    """How one episode stores its camera fields: ``plain arrays``, ``lossless``, ``video crf 30``."""
    if not encodings:
        return "plain arrays"
    labels = {
        f"{e.codec} crf {e.params['crf']}" if "crf" in e.params else e.codec
        for e in encodings.values()
    }
    return " + ".join(sorted(labels))


def describe_storage(paths: Sequence[Path]) -> str:
    """How episode files store their camera fields, read from their metadata (nothing decoded).

    One label when all agree (``lossless``), else each with its count
    (``6 lossless, 3 plain arrays``); ``no episodes`` for none.
    """
    from teamvla_schema import SchemaError, read_episode_meta

    counts: Counter[str] = Counter()
    for path in paths:
        try:
            counts[storage_label(read_episode_meta(path).encodings)] += 1
        except (SchemaError, OSError):
            counts["unreadable"] += 1
    if not counts:
        return "no episodes"
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {label}" for label, n in counts.most_common())


def record_if_missing(
    data_dir: Path,
    *,
    tasks: Sequence[str],
    episodes_per_task: int,
    seed: int,
    workers: int,
    image_size: int,
    num_joints: int,
    progress: bool,
    image_codec: str | None = None,
    video_crf: int = 30,
) -> tuple[int, bool, str]:
    """Record expert episodes into ``data_dir`` unless it has some.

    Returns (episode count, recorded now, how the camera fields are stored: see
    :func:`describe_storage`). ``image_codec`` / ``video_crf`` choose that for
    new recordings (``None``: plain arrays); episodes already there are reused
    as they are stored, never re-encoded (a warning says so when they differ).
    A small stamp (``demo_data.json``) records the settings; reusing data recorded
    with other settings logs a warning (delete the directory to record afresh).
    """
    from teamvla_data.sim.record import generate_dataset
    from teamvla_schema import find_episodes

    from teamvla_train.eval_report import write_json

    wanted = {
        "tasks": list(tasks),
        "episodes_per_task": episodes_per_task,
        "seed": seed,
        "image_size": image_size,
        "num_joints": num_joints,
    }
    wanted_storage = "plain arrays" if image_codec is None else image_codec
    if image_codec == "video":
        wanted_storage += f" crf {video_crf}"
    existing = find_episodes(data_dir) if data_dir.is_dir() else []
    if existing:
        stamp_path = data_dir / DATA_STAMP
        try:
            stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stamp = None
        if isinstance(stamp, dict):
            stamp = {k: v for k, v in stamp.items() if k not in _STORAGE_KEYS}
        if stamp != wanted:
            log.warning(
                "reusing the %d episodes in %s, recorded with other settings (%s instead of %s); "
                "delete that directory to record afresh",
                len(existing),
                data_dir,
                stamp,
                wanted,
            )
        else:
            log.info("using the %d episodes already in %s", len(existing), data_dir)
        storage = describe_storage(existing)
        if storage != wanted_storage:
            log.warning(
                "the %d episodes reused in %s store their camera fields as %s, not %s as "
                "eval.demo_image_codec asks: existing episodes are not re-encoded (delete that "
                "directory to record afresh)",
                len(existing),
                data_dir,
                storage,
                wanted_storage,
            )
        return len(existing), False, storage
    paths = generate_dataset(
        data_dir,
        tasks=list(tasks),
        episodes_per_task=episodes_per_task,
        seed=seed,
        workers=workers,
        image_size=image_size,
        num_joints=num_joints,
        progress=progress,
        image_codec=image_codec or "none",
        video_crf=video_crf,
    )
    write_json(
        data_dir / DATA_STAMP, {**wanted, "image_codec": image_codec, "video_crf": video_crf}
    )
    return len(paths), True, describe_storage(paths)
