#!/usr/bin/env python3
"""Writing camera-like episodes: EpisodeWriter's storage modes against LeRobot-style writers.

    python benchmarks/bench_storage_write.py            # 64 episodes x 100 steps x 2 cameras, 96x96
    python benchmarks/bench_storage_write.py --quick    # 4 episodes x 20 steps (smoke test)

The frames are bench_codecs.py's camera-like set (gradients, texture, lighting drift, a
moving object, a panning camera, Gaussian sensor noise of sigma 1; see that file), the
other step fields bench_writer.py's. Every row writes the same episodes to disk; the
clock runs from the first step to the last byte written (frame generation excluded):

* ``EpisodeWriter image_codec=...``: ``start_episode``, one validated ``add_step`` per
  step, ``end_episode`` (encoding, atomic write with fsync and rename). ``None`` is
  the plain format (deflated ``.npy``), ``lossless`` the bit-exact temporal-prediction
  stream, ``video`` AV1 at ``crf`` 30 (the PSNR is the one the writer measured and stored);
* ``... encode threads off``: the same with the camera fields encoded one after the
  other instead of in parallel threads (a diagnostic of the thread pool);
* ``LeRobot-style PNG``: one PNG file per frame (Pillow defaults), written by a pool of
  4 threads per episode like LeRobot's image writer; images only, no fsync;
* ``LeRobot-style AV1``: LeRobot's ``encode_video_frames`` defaults (libsvtav1,
  yuv420p, crf 30, g=2, the encoder's default preset), one file per episode and camera
  (raw packets, no mp4 container); images only, no fsync. Its PSNR is measured after
  the clock stops.

Bytes are everything on disk; ``x PNG`` is relative to the PNG row. LeRobot's own PNG
and AV1 writers took 54-66 s for this set (355 MB) on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import teamvla_schema.episode_codec as episode_codec

# The frame generator and the LeRobot-style AV1 encoder of bench_codecs.py (which exits
# with a message when PyAV or Pillow is missing), the other step fields of bench_writer.py;
# this folder is on sys.path when the script runs.
from bench_codecs import camera_like_episode, lerobot_av1_encode
from bench_writer import episode_steps, make_episode
from PIL import Image
from teamvla_schema import EpisodeWriter, read_episode_meta
from teamvla_schema.codecs import get_codec

CAMERAS = ("rgb_a", "rgb_b")


@dataclass
class Result:
    seconds: float
    nbytes: int
    psnr: float | None  # None: bit-exact


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def mean_psnr(mses: list[float]) -> float | None:
    """PSNR over all frames from per-clip mean squared errors (clips of equal size)."""
    mse = sum(mses) / len(mses)
    return None if mse == 0 else 10 * math.log10(255.0**2 / mse)


def run_writer(out: Path, episodes: list[list[dict[str, Any]]], image_codec: str | None) -> Result:
    start = time.perf_counter()
    with EpisodeWriter(out, image_codec=image_codec, video_crf=30) as writer:
        for k, steps in enumerate(episodes):
            writer.start_episode({"task": "lift", "episode_id": f"lift-{k:06d}"})
            for step in steps:
                writer.add_step(step)
            writer.end_episode()
    seconds = time.perf_counter() - start
    mses = []
    for path in sorted(out.rglob("*.npz")):
        for enc in read_episode_meta(path).encodings.values():
            if enc.psnr is not None:
                mses.append(0.0 if math.isinf(enc.psnr) else 255.0**2 / 10 ** (enc.psnr / 10))
    return Result(seconds, folder_bytes(out), mean_psnr(mses) if mses else None)


def run_writer_one_thread(
    out: Path, episodes: list[list[dict[str, Any]]], image_codec: str | None
) -> Result:
    saved = episode_codec._MAX_ENCODE_THREADS
    episode_codec._MAX_ENCODE_THREADS = 1
    try:
        return run_writer(out, episodes, image_codec)
    finally:
        episode_codec._MAX_ENCODE_THREADS = saved


def _png_file(frame: np.ndarray, path: Path) -> None:
    Image.fromarray(frame).save(path, format="PNG")


def run_png(out: Path, episodes: list[list[dict[str, Any]]], _: str | None) -> Result:
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        for k, steps in enumerate(episodes):
            jobs = []
            for cam in CAMERAS:
                folder = out / "images" / f"observation.images.{cam}" / f"episode_{k:06d}"
                folder.mkdir(parents=True)
                for i, step in enumerate(steps):
                    jobs.append(pool.submit(_png_file, step[cam], folder / f"frame_{i:06d}.png"))
            for job in jobs:
                job.result()
    return Result(time.perf_counter() - start, folder_bytes(out), None)


def run_lerobot_av1(out: Path, episodes: list[list[dict[str, Any]]], _: str | None) -> Result:
    start = time.perf_counter()
    written = []
    for k, steps in enumerate(episodes):
        for cam in CAMERAS:
            frames = np.stack([step[cam] for step in steps])
            folder = out / "videos" / f"observation.images.{cam}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"episode_{k:06d}.av1"
            path.write_bytes(lerobot_av1_encode(frames))
            written.append((path, frames))
    seconds = time.perf_counter() - start
    video = get_codec("video")
    mses = []
    for path, frames in written:
        back = video.decode(path.read_bytes(), shape=frames.shape)
        mses.append(float(np.mean((back.astype(np.float64) - frames) ** 2)))
    return Result(seconds, folder_bytes(out), mean_psnr(mses))


@dataclass
class Method:
    name: str
    run: Callable[[Path, list[list[dict[str, Any]]], str | None], Result]
    codec: str | None = None


METHODS = [
    Method("EpisodeWriter image_codec=None", run_writer, None),
    Method("EpisodeWriter image_codec=lossless", run_writer, "lossless"),
    Method("  ... encode threads off (diagnostic)", run_writer_one_thread, "lossless"),
    Method("EpisodeWriter image_codec=video crf 30", run_writer, "video"),
    Method("  ... encode threads off (diagnostic)", run_writer_one_thread, "video"),
    Method("LeRobot-style PNG per frame (4 threads)", run_png),
    Method("LeRobot-style AV1 (svtav1 crf 30, g=2)", run_lerobot_av1),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 episodes x 20 steps")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.steps = 4, 20

    rng = np.random.default_rng(args.seed)
    episodes = []
    raw = 0
    for k in range(args.episodes):
        columns = make_episode(k, args.steps, args.size, joints=7)
        for camera, name in enumerate(CAMERAS):
            columns[name] = camera_like_episode(rng, args.steps, args.size, pan=camera == 0)[0]
            raw += columns[name].nbytes
        episodes.append(episode_steps(columns))
    frames = args.episodes * args.steps * len(CAMERAS)

    base = Path(tempfile.mkdtemp(prefix="bench_storage_write_", dir=args.dir))
    results: list[tuple[Method, Result]] = []
    try:
        for method in METHODS:
            out = base / "run"
            out.mkdir()
            results.append((method, method.run(out, episodes, method.codec)))
            shutil.rmtree(out)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(
        f"{args.episodes} episodes x {args.steps} steps x {len(CAMERAS)} cameras at "
        f"{args.size}x{args.size}: {raw / 1e6:.1f} MB of frames ({frames} frames)"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    png = next(r for m, r in results if m.run is run_png).nbytes
    header = (
        f"{'method':<42} {'bytes on disk':>13} {'% raw':>6} {'x PNG':>6} "
        f"{'write s':>8} {'frames/s':>8} {'PSNR dB':>8}"
    )
    print(header)
    print("-" * len(header))
    for method, r in results:
        quality = "exact" if r.psnr is None else f"{r.psnr:.2f}"
        print(
            f"{method.name:<42} {r.nbytes:13,d} {100 * r.nbytes / raw:6.2f} {r.nbytes / png:6.3f} "
            f"{r.seconds:8.2f} {frames / r.seconds:8.0f} {quality:>8}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
