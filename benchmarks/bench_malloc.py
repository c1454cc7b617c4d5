"""What keeping freed memory in the process (``trainer.retain_freed_memory``) buys a CPU training run.

Records a small dataset with the simulator (the demo's world: 48 px cameras),
then runs ``teamvla train --config configs/demo.yaml`` on it for ``--steps``
optimiser steps twice, in child processes, alternating: glibc's default malloc
thresholds (``trainer.retain_freed_memory=false``, the baseline) and the
retained heap (the default). For each it prints wall time, user and kernel CPU
time, minor page faults (from the child's own resource usage) and peak RSS.

    uv run python benchmarks/bench_malloc.py              # 600 steps, 2 rounds
    uv run python benchmarks/bench_malloc.py --steps 100 --rounds 1

Both runs compute the same numbers (the allocator does not change arithmetic);
only where freed blocks go differs. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_child(root: Path, out: Path, steps: int, retain: bool) -> dict[str, float]:
    cmd = [
        str(Path(sys.executable).with_name("teamvla")), "train", "--config", str(REPO / "configs/demo.yaml"),
        "--no-progress", "--out", str(out), f"dataset.roots=[{root}]", f"trainer.max_steps={steps}",
        "trainer.val_every=0", "trainer.ckpt_every=0", f"trainer.retain_freed_memory={str(retain).lower()}",
    ]  # fmt: skip
    log = out.with_suffix(".log")  # a file, not a pipe: a chatty child never blocks on it
    t0 = time.perf_counter()
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"training child failed:\n{log.read_text(errors='replace')[-2000:]}")
    return {
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "faults": usage.ru_minflt,
        "rss_mb": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="baseline/retained pairs")
    parser.add_argument("--episodes-per-task", type=int, default=20)
    args = parser.parse_args()

    from teamvla_data.sim import generate_dataset

    with tempfile.TemporaryDirectory(prefix="bench-malloc-") as tmp:
        root = Path(tmp) / "data"
        generate_dataset(root, episodes_per_task=args.episodes_per_task, image_size=48,
                         workers=1, progress=False)  # fmt: skip
        rows: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        for r in range(args.rounds):
            for retain in (False, True):
                out = Path(tmp) / f"run-{r}-{retain}"
                rows[retain].append(run_child(root, out, args.steps, retain))
        print(
            f"teamvla train, configs/demo.yaml, {args.steps} steps, {args.rounds} run(s) each (mean)"
        )
        print(
            f"{'malloc':<26} {'wall s':>8} {'user s':>8} {'sys s':>8} {'faults/step':>12} {'peak RSS MB':>12}"
        )
        for retain, label in ((False, "glibc defaults (baseline)"), (True, "retain_freed_memory")):
            runs = rows[retain]
            mean = {k: sum(x[k] for x in runs) / len(runs) for k in runs[0]}
            print(f"{label:<26} {mean['wall']:8.1f} {mean['user']:8.1f} {mean['sys']:8.1f} "
                  f"{mean['faults'] / args.steps:12.0f} {mean['rss_mb']:12.0f}")  # fmt: skip
        base = sum(x["wall"] for x in rows[False]) / sum(x["wall"] for x in rows[True])
        print(f"speed-up (wall): {base:.2f}x")


if __name__ == "__main__":
    main()
