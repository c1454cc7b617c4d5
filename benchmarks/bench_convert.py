#!/usr/bin/env python3
"""Conversion speed of `teamvla convert` on the demo dataset, both directions, both formats.

    python benchmarks/bench_convert.py            # the demo's dataset: 100 episodes per task, 48x48
    python benchmarks/bench_convert.py --quick    # 5 episodes per task (smoke test)

The dataset is recorded first with the simulator (``teamvla_data.sim.generate_dataset``,
the same call ``teamvla demo`` makes), then converted:

* teamvla -> LeRobot with PNG images, and back;
* teamvla -> LeRobot with H.264 video (PSNR measured on every episode), and back;
* teamvla -> LeRobot with lossless H.264 (RGB, crf 0), and back (both video runs are
  skipped when PyAV is not installed);
* teamvla -> robomimic HDF5, and back.

Each line gives episodes/s and steps/s (wall clock), episodes per CPU-second (all threads
of the process; steadier than wall clock on a shared machine) and the output's size. The recording rate the sim
does not store is given as 10 fps (it does not affect speed). One process, one run each.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _size(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="5 episodes per task")
    parser.add_argument("--episodes-per-task", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=48, help="the demo's (configs/demo.yaml)")
    parser.add_argument(
        "--workers", type=int, default=min(2, os.cpu_count() or 1), help="for recording"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep the outputs under this folder"
    )
    args = parser.parse_args(argv)
    per_task = args.episodes_per_task or (5 if args.quick else 100)

    from teamvla_data.interop import convert
    from teamvla_data.interop.media import video_encoder_available
    from teamvla_data.sim import generate_dataset

    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-convert-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        src = base / "episodes"
        t0 = time.perf_counter()
        if not src.exists():
            generate_dataset(src, episodes_per_task=per_task, seed=0, workers=args.workers,
                             image_size=args.image_size, progress=False)  # fmt: skip
        print(f"recorded {3 * per_task} episodes ({args.image_size}x{args.image_size}) in "
              f"{time.perf_counter() - t0:.1f} s: {_size(src):.1f} MiB")  # fmt: skip
        print(f"python {platform.python_version()}, {os.cpu_count()} CPU(s), {platform.machine()}")
        print(
            f"{'conversion':<34} {'episodes/s':>10} {'steps/s':>9} {'seconds':>8} "
            f"{'episodes/cpu-s':>14} {'output MiB':>10}"
        )
        runs = [("lerobot", "png", base / "lerobot-png"), ("robomimic", None, base / "demos.hdf5")]
        if video_encoder_available():
            runs[1:1] = [("lerobot", "video", base / "lerobot-video"),
                         ("lerobot", "video-lossless", base / "lerobot-lossless")]  # fmt: skip
        else:
            print("(PyAV not installed: no video run)")
        for fmt, cameras, out in runs:
            label = f"{fmt}{f' ({cameras})' if cameras else ''}"
            for a, b in ((src, out), (out, base / f"back-{out.name}")):
                if b.is_dir():
                    shutil.rmtree(b)
                elif b.exists():
                    b.unlink()
                opts = (
                    {"dst_format": fmt, "fps": 10, "cameras": cameras or "auto"} if a is src else {}
                )
                cpu = time.process_time()
                r = convert(a, b, **opts)
                cpu = time.process_time() - cpu
                name = f"teamvla -> {label}" if a is src else f"{label} -> teamvla"
                print(f"{name:<34} {r.episodes_per_second:>10.1f} {r.steps / r.seconds:>9.0f} "
                      f"{r.seconds:>8.2f} {r.episodes / cpu:>14.1f} {_size(b):>10.1f}")  # fmt: skip
                for cam, (low, mean) in r.psnr.items():
                    print(f"{'':<4}PSNR {cam}: lowest {low:.1f} dB, mean {mean:.1f} dB")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
