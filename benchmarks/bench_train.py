"""Training throughput on CPU: both policies side by side, synthetic batches and the real dataloader.

For each model (single_brain, msg_passing) at the config's defaults, prints
optimiser steps/s, samples/s and milliseconds per step for:

  (a) synthetic batches held in memory (model + optimiser only; the ceiling);
  (b) the real pipeline: make_dataloader over a small dataset recorded with the
      simulator (at the config's dataset/world image size), through the
      trainer's prefetch thread, with the time spent waiting for data shown
      next to compute time, as the trainer logs them;

plus a split of one step into vision encoder / rest of forward / backward /
optimiser (synthetic batch), so the cost centre is visible. Every figure
comes from the same process and run, so the rows compare fairly.

    uv run python benchmarks/bench_train.py                       # configs/train_bc.yaml
    uv run python benchmarks/bench_train.py --config configs/demo.yaml
    uv run python benchmarks/bench_train.py --quick               # smoke test
    uv run python benchmarks/bench_train.py --set model.vision_frames=0 --set dataset.batch_size=32

Finally it times the trainer's default thread count (cores - 1) against using
every core, on the same synthetic batches.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from teamvla_schema.config import load_config
from teamvla_train.algos.bc import build_data, build_model, train_step
from teamvla_train.algos.bc_loss import bc_loss
from teamvla_train.config import TrainConfig, resolve_train_config
from teamvla_train.engine.device import default_num_threads
from teamvla_train.engine.optim import build_optimizer, build_scheduler
from teamvla_train.engine.prefetch import Prefetcher
from teamvla_train.synthetic import synthetic_batch

REPO = Path(__file__).resolve().parents[1]
MODELS = ("single_brain", "msg_passing")


def load(config: str, overrides: list[str], model: str, root: Path) -> TrainConfig:
    extra = [f"model.name={model}", f"dataset.roots=[{root}]", "dataset.tasks=null"]
    return resolve_train_config(load_config(config, [*overrides, *extra]))


def time_steps(cfg: TrainConfig, batches, steps: int, warmup: int) -> dict[str, float]:
    """Run ``warmup + steps`` train steps; per-step data wait and compute times of the timed ones."""
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(model, cfg.optim)
    sched = build_scheduler(opt, cfg.scheduler, total_steps=warmup + steps)
    device = torch.device("cpu")
    data_t, comp_t, cpu_t = [], [], []
    for i in range(warmup + steps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        train_step(model=model, optimizer=opt, scheduler=sched, micro_batches=[batch], device=device,
                   grad_clip=cfg.optim.grad_clip)  # fmt: skip
        t2 = time.perf_counter()
        if i >= warmup:
            data_t.append(t1 - t0)
            comp_t.append(t2 - t1)
            cpu_t.append(time.process_time() - c0)
    step = statistics.median(d + c for d, c in zip(data_t, comp_t, strict=True))
    return {
        "ms_step": 1000 * step,
        "steps_s": 1 / step,
        "samples_s": cfg.dataset.batch_size / step,
        "data_ms": 1000 * statistics.median(data_t),
        "data_frac": sum(data_t) / (sum(data_t) + sum(comp_t)),
        # CPU seconds (all threads) per step: unlike wall time, barely inflated by other
        # processes sharing the cores, so rows stay comparable on a busy machine.
        "cpu_ms": 1000 * statistics.median(cpu_t),
        "params": sum(p.numel() for p in model.parameters()),
    }


def split_step(cfg: TrainConfig, batch, reps: int) -> dict[str, float]:
    """Milliseconds of vision encoding, the rest of the forward, backward and optimiser step."""
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(model, cfg.optim)
    out = {"vision": [], "forward_rest": [], "backward": [], "optimizer": []}
    tv = model.vision_frames
    for i in range(reps + 1):
        t0 = time.perf_counter()
        model.cameras(batch["rgb_a"][:, -tv:], batch["rgb_b"][:, -tv:])
        t1 = time.perf_counter()
        loss, _ = bc_loss(model(batch), batch, model.cfg)  # includes vision again: subtract it
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if i:
            out["vision"].append(t1 - t0)
            out["forward_rest"].append(max(0.0, (t2 - t1) - (t1 - t0)))
            out["backward"].append(t3 - t2)
            out["optimizer"].append(t4 - t3)
    return {k: 1000 * statistics.median(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "train_bc.yaml"))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (repeatable)",
    )
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument(
        "--episodes", type=int, default=10, help="episodes per task of the recorded dataset"
    )
    parser.add_argument("--quick", action="store_true", help="few steps, few episodes")
    args = parser.parse_args()
    steps, warmup, episodes = (3, 1, 2) if args.quick else (args.steps, 3, args.episodes)
    threads = default_num_threads()
    torch.set_num_threads(threads)

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        root = tmp / "episodes"
        probe = load(args.config, args.set, MODELS[0], root)
        from teamvla_data.sim import generate_dataset

        size = probe.dataset.image_size[0] if probe.dataset.image_size else probe.model.image_size
        t = time.perf_counter()
        generate_dataset(
            root, episodes_per_task=episodes, image_size=size, workers=1, progress=False
        )
        gen_s = time.perf_counter() - t

        print(f"config {os.path.relpath(args.config)} {' '.join(args.set)}")
        print(f"torch {torch.__version__}, {threads} CPU thread(s), batch {probe.dataset.batch_size}, "
              f"To={probe.dataset.obs_history + 1}, Ha={probe.dataset.action_horizon}, "
              f"images {size}x{size} -> model {probe.model.image_size}, vision_frames {probe.model.vision_frames}")  # fmt: skip
        print(f"recorded {3 * episodes} episodes in {gen_s:.1f} s\n")

        rows = []
        for name in MODELS:
            cfg = load(args.config, args.set, name, root)
            shape = dict(batch_size=cfg.dataset.batch_size, obs_history=cfg.dataset.obs_history,
                         action_horizon=cfg.dataset.action_horizon, num_joints=cfg.model.num_joints,
                         image_size=(size, size))  # fmt: skip
            fixed = synthetic_batch(**shape, seed=1)

            def forever(b=fixed):
                while True:
                    yield b

            syn = time_steps(cfg, forever(), steps, warmup)
            data = build_data(cfg)

            def loader_batches(d=data):
                epoch = 0
                while True:
                    yield from d.train_batches(epoch=epoch)
                    epoch += 1

            # As in the trainer: a background thread loads trainer.prefetch batches ahead.
            source = loader_batches()
            if cfg.trainer.prefetch and not cfg.dataset.num_workers:
                source = Prefetcher(source, depth=cfg.trainer.prefetch)
            real = time_steps(cfg, source, steps, warmup)
            if isinstance(source, Prefetcher):
                source.close()
            parts = split_step(cfg, fixed, max(2, steps // 4))
            rows.append((name, syn, real, parts))

        loadavg = os.getloadavg()[0]
        print(
            f"load average {loadavg:.1f} on {os.cpu_count()} cores"
            + ("  (busy machine: trust the CPU-ms columns)" if loadavg > threads + 0.5 else "")
        )
        print(f"{'model':<13} {'params':>9} | {'synthetic: steps/s':>18} {'samples/s':>9} {'ms/step':>8} {'cpu ms':>7} | "
              f"{'dataloader: steps/s':>19} {'samples/s':>9} {'ms/step':>8} {'cpu ms':>7} {'data ms':>8} {'data %':>7}")  # fmt: skip
        for name, syn, real, _ in rows:
            print(f"{name:<13} {syn['params']:>9,} | {syn['steps_s']:>18.2f} {syn['samples_s']:>9.1f} "
                  f"{syn['ms_step']:>8.1f} {syn['cpu_ms']:>7.0f} | {real['steps_s']:>19.2f} {real['samples_s']:>9.1f} "
                  f"{real['ms_step']:>8.1f} {real['cpu_ms']:>7.0f} {real['data_ms']:>8.1f} {100 * real['data_frac']:>6.1f}%")  # fmt: skip
        print("\none step split (ms, synthetic batch):")
        print(f"{'model':<13} {'vision':>8} {'fwd rest':>8} {'backward':>8} {'optim':>8}")
        for name, _, _, parts in rows:
            print(f"{name:<13} {parts['vision']:>8.1f} {parts['forward_rest']:>8.1f} "
                  f"{parts['backward']:>8.1f} {parts['optimizer']:>8.1f}")  # fmt: skip

        # The trainer's thread default (cores - 1) next to using every core, same batches.
        cores = os.cpu_count() or 1
        if cores != threads:
            print(
                f"\ntorch threads, synthetic batches (trainer default {threads} vs all {cores} cores):"
            )
            for name in MODELS:
                cfg = load(args.config, args.set, name, root)
                fixed = synthetic_batch(batch_size=cfg.dataset.batch_size, obs_history=cfg.dataset.obs_history,
                                        action_horizon=cfg.dataset.action_horizon, num_joints=cfg.model.num_joints,
                                        image_size=(size, size), seed=1)  # fmt: skip
                speeds = []
                for n in (threads, cores):
                    torch.set_num_threads(n)
                    speeds.append(
                        time_steps(cfg, iter(lambda b=fixed: b, None), steps, warmup)["steps_s"]
                    )
                torch.set_num_threads(threads)
                print(
                    f"{name:<13} {threads} thread(s): {speeds[0]:6.2f} steps/s   {cores} threads: {speeds[1]:6.2f} steps/s"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
