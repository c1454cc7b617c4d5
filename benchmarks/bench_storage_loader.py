#!/usr/bin/env python3
"""Loading from compressed storage with a bounded decode cache, side by side (docs/storage.md).

    uv run python benchmarks/bench_storage_loader.py            # 64 episodes x 100 steps, 96x96
    uv run python benchmarks/bench_storage_loader.py --quick    # 6 x 20 at 48x48 (smoke test)

Data: the camera-like frames of ``bench_codecs.py`` (gradients, texture, lighting drift, a
moving object, Gaussian sensor noise; two cameras, one panning), written three ways with
``EpisodeWriter``: (a) today's format (deflated ``.npy`` members), (b) ``image_codec=
"lossless"``, (c) ``image_codec="video"`` (AV1, crf 30). Samples as in bench_dataloader.py:
obs_history 1 (two frames per camera), action_horizon 8, normalised joints.

Rows, all with batch 64 and 2 workers, in one run:

* ``make_dataloader`` with ``cache_max_bytes`` = 100%, 25% and 5% of the raw decoded size of
  the images (the cache-aware sampler is on below 100%), for (a), (b) and (c); and, for (a),
  today's column cache (``cache_max_bytes: null``: an uncompressed copy on disk);
* baseline "PNG": a plain per-sample torch ``Dataset`` reading one PNG file per frame and
  camera (Pillow), the layout LeRobot uses for images;
* baseline "AV1": a plain per-sample ``Dataset`` decoding each sample's frames from
  per-episode AV1 streams (the ``video`` codec's ``decode_range``: from the keyframe before),
  once with the ``video`` codec's streams (keyframe every 30 frames) and once with LeRobot's
  settings (svtav1 crf 30, keyframe every 2 frames: little to decode per sample).

samples/s are given for the first epoch (the cache starts empty) and the following epochs
(``--epochs``); ``decodes`` is chunks decoded per epoch (all workers) over the chunks there
are. Baselines run ``--baseline-batches`` batches. Decoders run one thread per context
(``teamvla_schema.codecs``); the loader workers give the parallelism.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_codecs import camera_like_episode, lerobot_av1_encode

try:
    import torch
    from PIL import Image
    from teamvla_data import DatasetConfig, MultiTaskDataset, make_dataloader
    from teamvla_schema import EpisodeWriter
    from teamvla_schema.codecs import get_codec
except ImportError as exc:  # pragma: no cover
    sys.exit(f"bench_storage_loader needs torch, PyAV and Pillow ({exc})")


TASKS = ("lift", "handoff", "drawer")
N_JOINTS = 7
OBS_HISTORY = 1
ACTION_HORIZON = 8
BATCH = 64
WORKERS = 2
BUDGETS = (1.0, 0.25, 0.05)


# --------------------------------------------------------------------------- data


def make_episodes(count: int, steps: int, size: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        rgb_a, _ = camera_like_episode(rng, steps, size, pan=True)
        rgb_b, _ = camera_like_episode(rng, steps, size, pan=False)
        q_a = np.cumsum(rng.normal(0, 0.02, (steps, N_JOINTS)), 0).astype(np.float32)
        q_b = np.cumsum(rng.normal(0, 0.02, (steps, N_JOINTS)), 0).astype(np.float32)
        out.append(
            {
                "rgb_a": rgb_a, "rgb_b": rgb_b, "q_a": q_a, "q_b": q_b,
                "action_a": q_a + np.float32(0.01), "action_b": q_b - np.float32(0.01),
                "grip_a": (np.arange(steps) > steps // 2).astype(np.float32),
                "grip_b": (np.arange(steps) > steps // 3).astype(np.float32),
                "task": np.array(TASKS[i % len(TASKS)]),
            }
        )  # fmt: skip
    return out


def write_root(root: Path, episodes: list[dict[str, np.ndarray]], codec: str | None) -> float:
    t0 = time.perf_counter()
    with EpisodeWriter(root, image_codec=codec) as writer:
        for i, arrays in enumerate(episodes):
            task = str(arrays["task"])
            writer.start_episode({"task": task, "episode_id": f"{task}-{i:05d}"})
            steps = len(arrays["q_a"])
            for t in range(steps):
                step = {k: v[t] for k, v in arrays.items() if k != "task"}
                writer.add_step(
                    {
                        **step,
                        "instruction": f"{task} the object",
                        "task": task,
                        "success": t == steps - 1,
                    }
                )
            writer.end_episode()
    return time.perf_counter() - t0


def disk_bytes(root: Path) -> int:
    return sum(
        p.stat().st_size for p in root.rglob("*") if p.is_file() and ".teamvla" not in p.parts
    )


# --------------------------------------------------------------------------- baselines


class PerSample(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """One sample per ``__getitem__`` (the same sample as the batch contract), images from ``frames``."""

    def __init__(
        self, ds: MultiTaskDataset, episodes: list[dict[str, np.ndarray]], frames: Any
    ) -> None:
        stats = ds.stats
        assert stats is not None
        self.stats = stats
        self.ep, self.t = ds.locate(np.arange(len(ds)))
        # Dataset order -> generated episode (episode ids hold the generation index).
        self.src = [int(e.episode_id.rsplit("-", 1)[1]) for e in ds.episodes]
        self.episodes = episodes
        self.frames = frames

    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e, t = int(self.ep[i]), int(self.t[i])
        src = self.src[e]
        arr = self.episodes[src]
        n = len(arr["q_a"])
        obs_t = np.arange(t - OBS_HISTORY, t + 1)
        act_t = np.arange(t, t + ACTION_HORIZON)
        obs = np.maximum(obs_t, 0)
        act = np.minimum(act_t, n - 1)
        rgb_a, rgb_b = self.frames(src, int(obs[0]), int(obs[-1]) + 1, obs)
        s = self.stats
        return {
            "rgb_a": torch.from_numpy(rgb_a), "rgb_b": torch.from_numpy(rgb_b),
            "q_a": torch.from_numpy(s.normalize("q_a", arr["q_a"][obs])),
            "q_b": torch.from_numpy(s.normalize("q_b", arr["q_b"][obs])),
            "obs_is_pad": torch.from_numpy(obs_t < 0),
            "action_a": torch.from_numpy(s.normalize("action_a", arr["action_a"][act])),
            "action_b": torch.from_numpy(s.normalize("action_b", arr["action_b"][act])),
            "grip_a": torch.from_numpy(arr["grip_a"][act]), "grip_b": torch.from_numpy(arr["grip_b"][act]),
            "action_is_pad": torch.from_numpy(act_t >= n), "episode_index": e, "frame_index": t,
        }  # fmt: skip


class PngFrames:
    """One PNG file per frame and camera (Pillow defaults), read and decoded per sample."""

    def __init__(self, root: Path, episodes: list[dict[str, np.ndarray]]) -> None:
        self.root = root
        for i, arr in enumerate(episodes):
            for cam in ("rgb_a", "rgb_b"):
                d = root / f"{i:05d}" / cam
                d.mkdir(parents=True, exist_ok=True)
                for t, frame in enumerate(arr[cam]):
                    Image.fromarray(frame).save(d / f"{t:05d}.png")

    def __call__(self, src: int, start: int, stop: int, obs: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(
            np.stack([np.asarray(Image.open(self.root / f"{src:05d}" / cam / f"{t:05d}.png")) for t in obs])
            for cam in ("rgb_a", "rgb_b")
        )  # fmt: skip


class Av1Frames:
    """One AV1 stream per episode and camera, decoded per sample from the keyframe before.

    ``lerobot=False``: the ``video`` codec's streams (keyframe every 30 frames);
    ``lerobot=True``: LeRobot's settings (svtav1 crf 30, keyframe every 2 frames), which
    make per-sample decoding cheap at the cost of 2.4x the bytes.
    """

    def __init__(self, root: Path, episodes: list[dict[str, np.ndarray]], *, lerobot: bool) -> None:
        self.root = root
        self.shape = episodes[0]["rgb_a"].shape
        encode = lerobot_av1_encode if lerobot else get_codec("video").encode
        root.mkdir(parents=True, exist_ok=True)
        for i, arr in enumerate(episodes):
            for cam in ("rgb_a", "rgb_b"):
                (root / f"{i:05d}-{cam}.av1").write_bytes(encode(arr[cam]))

    def __call__(self, src: int, start: int, stop: int, obs: np.ndarray) -> tuple[np.ndarray, ...]:
        codec = get_codec("video")
        out = []
        for cam in ("rgb_a", "rgb_b"):
            data = (self.root / f"{src:05d}-{cam}.av1").read_bytes()
            frames = codec.decode_range(data, start, stop, shape=self.shape)
            out.append(frames[obs - start])
        return tuple(out)


def bench_plain(ds: PerSample, batches: int) -> float:
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=BATCH,
        shuffle=True,
        num_workers=WORKERS,
        generator=torch.Generator().manual_seed(0),
    )
    n = 0
    t0 = time.perf_counter()
    for i, batch in enumerate(loader):
        n += len(batch["frame_index"])
        if i + 1 >= batches:
            break
    return n / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- ours


def bench_ours(cfg: DatasetConfig, epochs: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    loader = make_dataloader(cfg)
    open_s = time.perf_counter() - t0
    images = loader.multitask.images
    rates, decodes = [], []
    before = 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        n = 0
        t0 = time.perf_counter()
        for batch in loader:
            n += len(batch["frame_index"])
        rates.append(n / (time.perf_counter() - t0))
        if images is not None:
            c = images.cache.counters()
            decodes.append((c.decodes + c.private - before) / images.num_chunks)
            before = c.decodes + c.private
    out = {
        "open_s": open_s,
        "cold": rates[0],
        "warm": float(np.mean(rates[1:])) if len(rates) > 1 else rates[0],
        "decodes": decodes[1:] or decodes,
        "lanes": loader.epoch_sampler.resident_chunks,
        "chunks": images.num_chunks if images is not None else 0,
        "peak": images.cache.peak_bytes if images is not None else 0,
    }
    del loader, images
    gc.collect()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 episodes x 20 steps at 48x48")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--baseline-batches", type=int, default=20)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.steps, args.size, args.epochs, args.baseline_batches = 6, 20, 48, 2, 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="teamvla-storage-"))
    try:
        episodes = make_episodes(args.episodes, args.steps, args.size, seed=0)
        raw = sum(a["rgb_a"].nbytes + a["rgb_b"].nbytes for a in episodes)
        print(
            f"{args.episodes} episodes x {args.steps} steps x 2 cameras at {args.size}x{args.size} "
            f"(camera-like frames of bench_codecs.py): raw images {raw / 1e6:.1f} MB; batch {BATCH}, "
            f"{WORKERS} workers, obs_history {OBS_HISTORY}, action_horizon {ACTION_HORIZON}"
        )
        roots = {}
        for label, codec in (
            ("(a) today's format", None),
            ("(b) lossless", "lossless"),
            ("(c) video", "video"),
        ):
            root = work / (codec or "plain")
            seconds = write_root(root, episodes, codec)
            roots[label] = root
            print(
                f"{label:<20} {disk_bytes(root) / 1e6:8.1f} MB on disk, written in {seconds:.1f} s"
            )

        base_cfg: dict[str, Any] = {
            "val_fraction": 0.0, "obs_history": OBS_HISTORY, "action_horizon": ACTION_HORIZON,
            "batch_size": BATCH, "num_workers": WORKERS, "drop_last": False, "seed": 0,
        }  # fmt: skip
        rows = []
        plain_root = roots["(a) today's format"]
        t0 = time.perf_counter()
        ref_ds = MultiTaskDataset.from_config(DatasetConfig(roots=[str(plain_root)], **base_cfg))
        print(f"column cache build (today, (a)): {time.perf_counter() - t0:.1f} s")
        rows.append(
            (
                "(a) today's format, column cache (null)",
                bench_ours(DatasetConfig(roots=[str(plain_root)], **base_cfg), args.epochs),
            )
        )
        # 100% must also cover the rounding of each episode's frames up to whole pages (none at
        # 96x96 x 100 steps; a little in --quick).
        whole = sum(-(-(a["rgb_a"].nbytes + a["rgb_b"].nbytes) // 4096) * 4096 for a in episodes)
        for label, root in roots.items():
            for frac in BUDGETS:
                budget = max(whole, raw) if frac == 1.0 else int(raw * frac)
                cfg = DatasetConfig(roots=[str(root)], cache_max_bytes=budget, **base_cfg)
                rows.append(
                    (
                        f"{label}, cache {frac:.0%}",
                        {**bench_ours(cfg, args.epochs), "budget": budget},
                    )
                )
                print(f"  measured {rows[-1][0]}", flush=True)

        png = PngFrames(work / "png", episodes)
        png_bytes = disk_bytes(work / "png")
        av1 = Av1Frames(work / "av1", episodes, lerobot=False)
        av1_bytes = disk_bytes(work / "av1")
        lr = Av1Frames(work / "av1-lerobot", episodes, lerobot=True)
        lr_bytes = disk_bytes(work / "av1-lerobot")
        png_rate = bench_plain(PerSample(ref_ds, episodes, png), args.baseline_batches)
        av1_rate = bench_plain(PerSample(ref_ds, episodes, av1), args.baseline_batches)
        lr_rate = bench_plain(PerSample(ref_ds, episodes, lr), args.baseline_batches)
        print(
            f"baseline PNG: {png_bytes / 1e6:.1f} MB of per-frame PNG files; baseline AV1: "
            f"{av1_bytes / 1e6:.1f} MB of streams (g=30), {lr_bytes / 1e6:.1f} MB (LeRobot's g=2)"
        )

        print()
        print(
            f"{'loader':<44} {'first epoch':>11} {'later':>8} {'x PNG':>7} {'x AV1':>7} "
            f"{'x AV1 g2':>8} {'decodes':>8} {'lanes':>6}"
        )

        def ratios(rate: float) -> str:
            return f"{rate / png_rate:>6.1f}x {rate / av1_rate:>6.1f}x {rate / lr_rate:>7.1f}x"

        for name, r in rows:
            dec = f"{np.mean(r['decodes']):.2f}" if r["chunks"] else "-"
            print(
                f"{name:<44} {r['cold']:>11.0f} {r['warm']:>8.0f} {ratios(r['warm'])} "
                f"{dec:>8} {r['lanes'] or '-':>6}"
            )
        for name, rate in (
            ("baseline: per-sample PNG files (Pillow)", png_rate),
            ("baseline: per-sample AV1 decode_range", av1_rate),
            ("baseline: per-sample AV1, LeRobot g=2", lr_rate),
        ):
            print(f"{name:<44} {rate:>11.0f} {rate:>8.0f} {ratios(rate)}")
        over = [name for name, r in rows if r["chunks"] and r["peak"] > r["budget"]]
        print(f"cache peak within budget: {'yes' if not over else 'NO: ' + ', '.join(over)}")
        if args.quick:
            print("(--quick: sizes too small for the figures to mean anything)")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
