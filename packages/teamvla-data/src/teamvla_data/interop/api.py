"""The conversion driver: any supported format to any other, episode by episode."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from teamvla_data.interop.core import (
    ConvEpisode,
    Report,
    TeamvlaWriter,
    count_teamvla,
    iter_teamvla,
)
from teamvla_data.interop.mapping import parse_map

FORMATS = ("teamvla", "lerobot", "robomimic")
SUCCESS_POLICIES = ("auto", "last", "none")


class _Writer(Protocol):
    def write(self, ep: ConvEpisode) -> Any: ...


@dataclass
class ConvertResult:
    """What a conversion did: counts, time, how cameras were stored, PSNR, notes."""

    src: Path
    dst: Path
    src_format: str
    dst_format: str
    episodes: int
    steps: int
    seconds: float
    cameras: str | None = None
    #: per camera field: (lowest, mean) PSNR in dB over the episodes, for lossy video
    psnr: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def episodes_per_second(self) -> float:
        """Conversion speed."""
        return self.episodes / self.seconds if self.seconds > 0 else math.inf

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"converted {self.episodes} episode(s), {self.steps} steps, {self.src_format} -> "
            f"{self.dst_format} in {self.seconds:.2f} s ({self.episodes_per_second:.1f} episodes/s): {self.dst}"
        ]
        if self.cameras:
            lines.append(f"cameras: {self.cameras}")
        for cam, (low, mean) in self.psnr.items():
            lines.append(f"PSNR {cam}: lowest {low:.1f} dB, mean {mean:.1f} dB")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def detect_format(path: str | os.PathLike[str]) -> str:
    """``lerobot`` (a directory with meta/info.json), ``robomimic`` (an .hdf5/.h5 file) or ``teamvla``."""
    p = Path(path)
    if (p / "meta" / "info.json").is_file():
        return "lerobot"
    if p.is_file() and p.suffix.lower() in (".hdf5", ".h5"):
        return "robomimic"
    if p.is_dir():
        return "teamvla"
    raise ValueError(f"{p}: cannot tell its format (pass --from {'|'.join(FORMATS)})")


def _rename_columns(
    episodes: Iterable[ConvEpisode], renames: Mapping[str, str]
) -> Iterable[ConvEpisode]:
    for ep in episodes:
        missing = [old for old in renames if old not in ep.columns]
        if missing:
            raise ValueError(
                f"{ep.source}: --map names field(s) {missing} the episode does not have"
            )
        ep.columns = {renames.get(k, k): v for k, v in ep.columns.items()}
        yield ep


def _with_fps(episodes: Iterable[ConvEpisode], fps: float) -> Iterable[ConvEpisode]:
    for ep in episodes:
        if ep.fps is None:
            ep = dataclasses.replace(ep, fps=fps)
        yield ep


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    src_format: str | None = None,
    dst_format: str | None = None,
    renames: Sequence[str] | Mapping[str, str] | None = None,
    state_layout: str | None = None,
    action_layout: str | None = None,
    fps: float | None = None,
    task: str | None = None,
    instruction: str | None = None,
    success: str = "auto",
    cameras: str = "auto",
    crf: int = 18,
    overwrite: bool = False,
    progress: bool = False,
    image_codec: str | None = None,
    video_crf: int = 30,
) -> ConvertResult:
    """Convert the dataset at ``src`` into ``dst``, streaming one episode at a time.

    Formats: ``teamvla`` (a root of episode files), ``lerobot`` (a LeRobot v3
    dataset directory), ``robomimic`` (an HDF5 file); ``src_format`` is
    detected when not given, ``dst_format`` defaults to ``teamvla``.
    ``renames`` are ``THEIR_KEY=OUR_FIELD`` pairs (for teamvla -> teamvla:
    ``OLD=NEW`` field renames). ``state_layout`` / ``action_layout`` override
    the ALOHA split of flat vectors (``"q_a:6,grip_state_a:1,q_b:6,grip_state_b:1"``).
    ``fps`` sets the recording rate where the source has none (and overrides it
    for LeRobot export); ``task`` / ``instruction`` fill the task slug and
    instruction of imports that have none; ``success`` is ``auto``, ``last``
    or ``none`` (see docs/interop.md). ``cameras`` (``auto``, ``video``,
    ``png``) and ``crf`` choose how a LeRobot export stores images;
    ``image_codec`` (``"lossless"``, ``"video"``, ``None``: plain arrays) and
    ``video_crf`` how a conversion into our format stores camera fields
    (docs/storage.md). Every file is written atomically; a LeRobot or robomimic
    output appears only when complete.
    """
    src, dst = Path(src), Path(dst)
    src_format = src_format or detect_format(src)
    dst_format = dst_format or "teamvla"
    for name, fmt in (("--from", src_format), ("--to", dst_format)):
        if fmt not in FORMATS:
            raise ValueError(f"{name} {fmt!r}: expected one of {', '.join(FORMATS)}")
    if success not in SUCCESS_POLICIES:
        raise ValueError(f"--success {success!r}: expected one of {', '.join(SUCCESS_POLICIES)}")
    if src_format == dst_format == "teamvla" and src.resolve() == dst.resolve():
        raise ValueError("source and destination are the same root")
    if image_codec is not None and dst_format != "teamvla":
        raise ValueError(
            f"--image-codec applies to conversions into teamvla format, not --to {dst_format} "
            "(a LeRobot export stores cameras as --cameras says)"
        )
    mapping = parse_map(renames)
    report = Report()
    t0 = time.perf_counter()
    episodes: Iterable[ConvEpisode]
    side = mapping if src_format != "teamvla" else {}
    if src_format == "lerobot":
        from teamvla_data.interop.lerobot import LeRobotReader

        reader = LeRobotReader(src, renames=side, state_layout=state_layout, action_layout=action_layout,
                               task=task, success="none" if success == "auto" else success, report=report)  # fmt: skip
        episodes, total = reader, len(reader)
        if fps is not None and dst_format != "lerobot" and fps != reader.fps:
            report.note(f"--fps {fps} not applied: the LeRobot dataset records {reader.fps:g} fps")
    elif src_format == "robomimic":
        from teamvla_data.interop.robomimic import RobomimicReader

        rreader = RobomimicReader(src, renames=side, action_layout=action_layout, task=task,
                                  instruction=instruction, fps=fps, success=success, report=report)  # fmt: skip
        episodes, total = rreader, len(rreader)
    else:
        episodes, total = iter_teamvla(src), count_teamvla(src)
        if dst_format == "teamvla" and mapping:
            episodes = _rename_columns(episodes, mapping)
        if fps is not None and dst_format != "lerobot":
            episodes = _with_fps(episodes, fps)
    out = {} if src_format != "teamvla" else mapping
    writer: Any
    if dst_format == "lerobot":
        from teamvla_data.interop.lerobot_write import LeRobotWriter

        writer = LeRobotWriter(dst, fps=fps, cameras=cameras, crf=crf, renames=out, state_layout=state_layout,
                               action_layout=action_layout, overwrite=overwrite, report=report)  # fmt: skip
    elif dst_format == "robomimic":
        from teamvla_data.interop.robomimic_write import RobomimicWriter

        writer = RobomimicWriter(
            dst, renames=out, action_layout=action_layout, overwrite=overwrite, report=report
        )
    else:
        writer = TeamvlaWriter(dst, image_codec=image_codec, video_crf=video_crf)
    from tqdm import tqdm

    count = steps = 0
    try:
        for ep in tqdm(
            episodes,
            total=total,
            unit="episode",
            disable=not progress,
            desc=f"{src_format} -> {dst_format}",
        ):
            ep.check_required()
            writer.write(ep)
            count += 1
            steps += ep.num_steps
        final = writer.close() if hasattr(writer, "close") else dst
    except BaseException:
        if hasattr(writer, "abort"):
            writer.abort()
        raise
    seconds = time.perf_counter() - t0
    result = ConvertResult(
        src, Path(final), src_format, dst_format, count, steps, seconds, notes=report.lines()
    )
    if dst_format == "lerobot" or (dst_format == "teamvla" and image_codec is not None):
        result.cameras = writer.cameras
        result.psnr = {k: (min(v), sum(v) / len(v)) for k, v in writer.psnr.items()}
    return result
