"""Dataloader throughput, side by side with the seed's layout and an in-memory baseline, in one run.

Prints samples/s for:
  (a) the seed's layout read naively: an npz holding an object array of per-step
      dicts, np.load(..., allow_pickle=True) per sample. Pickle is used ONLY here,
      on files this script has just written, to measure the old design;
  (b) teamvla-data's make_dataloader, batch 64, with 0 and 2 workers (memory-mapped cache);
  (c) an in-memory per-sample torch Dataset of the same samples (windows and
      normalisation included) with a DataLoader, batch 64, 2 workers;
plus the cache build time, the open time of a 10,000-episode dataset (real tiny
episode files: 2 steps of 8x8 images) and peak memory.

    uv run python benchmarks/bench_dataloader.py            # full run
    uv run python benchmarks/bench_dataloader.py --quick    # small, for a smoke test
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from teamvla_data import DatasetConfig, MultiTaskDataset, make_dataloader
from teamvla_data.index import EpisodeIndex
from teamvla_schema import EpisodeWriter

TASKS = ("lift", "handoff", "drawer")
N_JOINTS = 7
OBS_HISTORY = 1
ACTION_HORIZON = 8
BATCH = 64


# --------------------------------------------------------------------------- synthetic data


def smooth_frames(rng: np.random.Generator, steps: int, size: int) -> np.ndarray:
    """Rendered-looking frames: lit, gently textured background and two soft moving objects."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    texture = 0.05 * np.sin(40 * x + 7 * y) * np.sin(31 * y)
    base = (
        np.stack([0.5 + 0.3 * x + texture, 0.4 + 0.2 * y + texture, 0.3 + 0.2 * (1 - x)], -1) * 255
    )
    centres = rng.uniform(0.2, 0.8, (2, 2))
    velocity = rng.uniform(-0.004, 0.004, (2, 2))
    colours = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    frames = np.empty((steps, size, size, 3), np.uint8)
    for t in range(steps):
        img = base.copy()
        for c, v, col in zip(centres, velocity, colours, strict=True):
            cy, cx = c + v * t
            w = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 0.01)[..., None]
            img = img * (1 - w) + col * w
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def episode_arrays(seed: int, steps: int, size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    q_a = np.cumsum(rng.normal(0, 0.02, (steps, N_JOINTS)), 0).astype(np.float32)
    q_b = np.cumsum(rng.normal(0, 0.02, (steps, N_JOINTS)), 0).astype(np.float32)
    return {
        "rgb_a": smooth_frames(rng, steps, size),
        "rgb_b": smooth_frames(rng, steps, size),
        "q_a": q_a,
        "q_b": q_b,
        "action_a": (q_a + 0.01).astype(np.float32),
        "action_b": (q_b - 0.01).astype(np.float32),
        "grip_a": (np.arange(steps) > steps // 2).astype(np.float32),
        "grip_b": (np.arange(steps) > steps // 3).astype(np.float32),
    }


def write_dataset(
    root: Path, episodes: int, steps: int, size: int
) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """Write episodes with EpisodeWriter; return (task, id, arrays) for the baselines."""
    out = []
    with EpisodeWriter(root) as writer:
        for i in range(episodes):
            task = TASKS[i % len(TASKS)]
            eid = f"{task}-{i:05d}"
            arrays = episode_arrays(i, steps, size)
            writer.start_episode({"task": task, "episode_id": eid})
            for t in range(steps):
                step = {k: v[t] for k, v in arrays.items()}
                step.update(instruction=f"{task} the object", task=task, success=t == steps - 1)
                writer.add_step(step)
            writer.end_episode()
            out.append((task, eid, arrays))
    return out


def write_tiny_episodes(root: Path, count: int) -> None:
    """``count`` real episode files of 2 steps with 8x8 images, written by EpisodeWriter.

    fsync is skipped while generating them (benchmark set-up only: 10,000 fsyncs
    would take minutes and say nothing about reading).
    """
    arrays = episode_arrays(0, 2, 8)
    real_fsync = os.fsync
    os.fsync = lambda fd: None  # type: ignore[assignment]
    try:
        with EpisodeWriter(root, compress=False) as writer:
            for i in range(count):
                task = TASKS[i % len(TASKS)]
                writer.start_episode({"task": task, "episode_id": f"t{i:06d}"})
                for t in range(2):
                    step = {k: v[t] for k, v in arrays.items()}
                    writer.add_step({**step, "instruction": "x", "task": task, "success": False})
                writer.end_episode()
    finally:
        os.fsync = real_fsync


# --------------------------------------------------------------------------- (a) the seed's layout


def write_seed_layout(
    root: Path, episodes: list[tuple[str, str, dict[str, np.ndarray]]]
) -> list[Path]:
    """The seed's files: object arrays of per-step dicts (pickled). Benchmark-only."""
    paths = []
    for task, eid, arrays in episodes:
        steps = [
            {k: v[t] for k, v in arrays.items()}
            | {"instruction": f"{task} the object", "task": task}
            for t in range(len(arrays["q_a"]))
        ]
        obj = np.empty(len(steps), dtype=object)
        obj[:] = steps
        meta = np.empty(1, dtype=object)
        meta[0] = {"task": task, "episode_id": eid}
        path = root / task / f"{eid}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, steps=obj, meta=meta)
        paths.append(path)
    return paths


def naive_sample(path: Path, t: int) -> dict[str, Any]:
    """One sample the seed's way: open the episode file, unpickle every step, take a window."""
    with np.load(path, allow_pickle=True) as z:  # benchmark-only, on files written above
        steps = z["steps"]
    n = len(steps)
    obs = [steps[max(t - k, 0)] for k in range(OBS_HISTORY, -1, -1)]
    act = [steps[min(t + k, n - 1)] for k in range(ACTION_HORIZON)]
    return {
        "rgb_a": np.stack([s["rgb_a"] for s in obs]),
        "rgb_b": np.stack([s["rgb_b"] for s in obs]),
        "q_a": np.stack([s["q_a"] for s in obs]),
        "action_a": np.stack([s["action_a"] for s in act]),
        "instruction": obs[-1]["instruction"],
    }


def bench_naive(paths: list[Path], steps: int, samples: int) -> float:
    rng = np.random.default_rng(0)
    picks = [(paths[rng.integers(len(paths))], int(rng.integers(steps))) for _ in range(samples)]
    t0 = time.perf_counter()
    for path, t in picks:
        naive_sample(path, t)
    return samples / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- (b) and (c)


def bench_loader(loader: Any, epochs: int) -> float:
    n = 0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            n += len(batch["frame_index"])
    return n / (time.perf_counter() - t0)


def make_in_memory_dataset(ds: MultiTaskDataset) -> Any:
    """(c): the same samples from RAM arrays, one sample per __getitem__, default collation."""
    import torch

    stats = ds.stats
    assert stats is not None

    class InMemory(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.cols = {
                name: np.array(ds.store.column(name))
                for name in (
                    "rgb_a",
                    "rgb_b",
                    "q_a",
                    "q_b",
                    "action_a",
                    "action_b",
                    "grip_a",
                    "grip_b",
                    "instruction_id",
                )
            }
            self.instructions = ds.store.instructions
            ep, t = ds.locate(np.arange(len(ds)))
            self.ep, self.t = ep, t
            self.row0 = ds._ep_row
            self.length = ds._ep_len
            self.tasks = [ds.episodes[e].task for e in range(len(ds.episodes))]

        def __len__(self) -> int:
            return len(self.t)

        def __getitem__(self, i: int) -> dict[str, Any]:
            e, t = int(self.ep[i]), int(self.t[i])
            n, r0 = int(self.length[e]), int(self.row0[e])
            obs_t = np.arange(t - OBS_HISTORY, t + 1)
            act_t = np.arange(t, t + ACTION_HORIZON)
            obs = r0 + np.maximum(obs_t, 0)
            act = r0 + np.minimum(act_t, n - 1)
            c = self.cols
            return {
                "rgb_a": torch.from_numpy(c["rgb_a"][obs]),
                "rgb_b": torch.from_numpy(c["rgb_b"][obs]),
                "q_a": torch.from_numpy(stats.normalize("q_a", c["q_a"][obs])),
                "q_b": torch.from_numpy(stats.normalize("q_b", c["q_b"][obs])),
                "obs_is_pad": torch.from_numpy(obs_t < 0),
                "action_a": torch.from_numpy(stats.normalize("action_a", c["action_a"][act])),
                "action_b": torch.from_numpy(stats.normalize("action_b", c["action_b"][act])),
                "grip_a": torch.from_numpy(c["grip_a"][act]),
                "grip_b": torch.from_numpy(c["grip_b"][act]),
                "action_is_pad": torch.from_numpy(act_t >= n),
                "instruction": self.instructions[int(c["instruction_id"][r0 + t])],
                "task": self.tasks[e],
                "episode_index": e,
                "frame_index": t,
            }

    return InMemory()


def proc_memory(pid: int | str = "self") -> str:
    """RSS of a process and the part only it holds (private pages; Linux smaps_rollup)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return "n/a"
    kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in lines[1:] if ln.endswith("kB")}
    private = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return f"RSS {kb.get('Rss', 0) / 1024:.0f} MiB of which private {private / 1024:.0f} MiB"


def peak_rss_mib() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks that the script runs"
    )
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--image", type=int, default=96)
    parser.add_argument(
        "--open-episodes", type=int, default=10_000, help="episodes in the open-time test"
    )
    parser.add_argument("--naive-samples", type=int, default=150)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--workdir", default=None, help="where to write data (default: a temporary directory)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.steps, args.image = 6, 20, 32
        args.open_episodes, args.naive_samples, args.epochs = 300, 10, 1

    import torch

    work = Path(args.workdir or tempfile.mkdtemp(prefix="teamvla-bench-"))
    try:
        root = work / "episodes"
        t0 = time.perf_counter()
        episodes = write_dataset(root, args.episodes, args.steps, args.image)
        write_s = time.perf_counter() - t0
        size_mib = sum(p.stat().st_size for p in root.rglob("*.npz")) / 2**20
        samples = args.episodes * args.steps
        print(
            f"dataset: {args.episodes} episodes x {args.steps} steps, two {args.image}x{args.image} cameras, "
            f"N={N_JOINTS}; {size_mib:.1f} MiB compressed npz, written in {write_s:.1f} s"
        )
        print(
            f"samples: obs_history={OBS_HISTORY} (To={OBS_HISTORY + 1}), action_horizon={ACTION_HORIZON}, "
            f"batch {BATCH}, normalised q/actions, uint8 images"
        )

        seed_paths = write_seed_layout(work / "seed-layout", episodes)
        del episodes
        gc.collect()

        cfg = DatasetConfig(
            roots=[str(root)],
            val_fraction=0.0,
            obs_history=OBS_HISTORY,
            action_horizon=ACTION_HORIZON,
            batch_size=BATCH,
            drop_last=False,
            seed=0,
        )
        t0 = time.perf_counter()
        ds = MultiTaskDataset.from_config(cfg, "train")
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        MultiTaskDataset.from_config(cfg, "train")
        reopen_s = time.perf_counter() - t0
        cache_mib = ds.store.nbytes / 2**20

        naive = bench_naive(seed_paths, args.steps, args.naive_samples)
        ours0 = bench_loader(make_dataloader(cfg, dataset=ds), args.epochs)
        cfg2 = DatasetConfig(**{**cfg.__dict__, "num_workers": 2})
        ours2 = bench_loader(make_dataloader(cfg2, dataset=ds), args.epochs)
        cfg2p = DatasetConfig(**{**cfg.__dict__, "num_workers": 2, "persistent_workers": True})
        loader2p = make_dataloader(cfg2p, dataset=ds)
        ours2p = bench_loader(loader2p, args.epochs)
        mem_main = proc_memory()
        workers = getattr(
            getattr(loader2p, "_iterator", None), "_workers", []
        )  # benchmark-only peek
        mem_workers = [proc_memory(w.pid) for w in workers]
        del loader2p
        mem_ds = make_in_memory_dataset(ds)
        mem_loader = torch.utils.data.DataLoader(
            mem_ds,
            batch_size=BATCH,
            shuffle=True,
            num_workers=2,
            generator=torch.Generator().manual_seed(0),
        )
        n = 0
        t0 = time.perf_counter()
        for _ in range(args.epochs):
            for batch in mem_loader:
                n += len(batch["frame_index"])
        inmem = n / (time.perf_counter() - t0)
        del mem_ds, mem_loader

        print()
        print(f"{'loader':<62} {'samples/s':>10} {'vs (a)':>8} {'vs (c)':>7}")
        rows = [
            ("(a) seed layout: pickled per-step dicts, np.load per sample", naive),
            ("(b) make_dataloader, column cache, 0 workers", ours0),
            ("(b) make_dataloader, column cache, 2 workers", ours2),
            ("(b) make_dataloader, column cache, 2 persistent workers", ours2p),
            ("(c) in-memory per-sample Dataset + DataLoader, 2 workers", inmem),
        ]
        for name, rate in rows:
            print(f"{name:<62} {rate:>10.0f} {rate / naive:>7.0f}x {rate / inmem:>6.2f}x")
        if args.quick:
            print("(--quick: sizes too small for the figures to mean anything; targets not judged)")
        for label, rate in () if args.quick else (("0 workers", ours0), ("2 workers", ours2)):
            print(
                f"targets, (b) {label}: >= 150x (a) {'met' if rate >= 150 * naive else 'NOT met'} "
                f"({rate / naive:.0f}x); >= 2x (c) {'met' if rate >= 2 * inmem else 'NOT met'} ({rate / inmem:.2f}x)"
            )
        print()
        print(
            f"cache build (manifest + {samples} steps into {cache_mib:.1f} MiB of .npy + stats): {build_s:.2f} s; "
            f"reopen with cache: {reopen_s * 1000:.0f} ms"
        )

        # Open time of a large dataset: real tiny files, so the stat pass is real too.
        big = work / "many"
        t0 = time.perf_counter()
        write_tiny_episodes(big, args.open_episodes)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        EpisodeIndex.open(big)
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        index = EpisodeIndex.open(big)
        warm_s = time.perf_counter() - t0
        assert len(index.records) == args.open_episodes
        t0 = time.perf_counter()
        MultiTaskDataset(big)
        first_ds_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        MultiTaskDataset(big)
        warm_ds_s = time.perf_counter() - t0
        print(
            f"open {args.open_episodes} episodes (real files, 2 steps of 8x8, written in {gen_s:.1f} s): "
            f"first index (reads every file's metadata) {cold_s:.2f} s; "
            f"from the manifest (stat pass, no episode file opened) {warm_s * 1000:.0f} ms; "
            f"MultiTaskDataset first open incl. cache build {first_ds_s:.2f} s, reopen {warm_ds_s * 1000:.0f} ms"
        )
        own, children = peak_rss_mib()
        print(
            f"memory after (b) with 2 persistent workers: main {mem_main}; "
            + "; ".join(f"worker {i} {m}" for i, m in enumerate(mem_workers))
        )
        print(
            "  (private = pages no other process shares; the rest of RSS is shared: libraries, pages inherited\n"
            "   from the main process, and memory-mapped cache pages, which are reclaimable OS page cache)"
        )
        print(
            f"peak RSS (getrusage, whole run incl. data generation and baseline (c) holding all columns in RAM): "
            f"this process {own:.0f} MiB, largest child {children:.0f} MiB"
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
