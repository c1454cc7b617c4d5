"""Are the scripted experts good oracles? Completion from states a weak policy visits.

For every task and perturbation of :mod:`teamvla_data.sim.oracle` (a noisy
expert, random joint targets, a dropped block, a half-open drawer, a nudged
block, the wrong block picked), drive the world off the expert's path, then let
a fresh expert finish; print per cell the completion rate within twice the
task's ``max_steps`` ("enough steps left") and within ``max_steps``, the
expert's mean steps to finish, and the experts' success from clean starts.
Target: >= 95% in every cell with enough steps left.

    uv run python benchmarks/bench_expert_oracle.py            # 100 evaluation seeds per cell
    uv run python benchmarks/bench_expert_oracle.py --quick    # 10, for a smoke test
"""

from __future__ import annotations

import argparse
import time

from teamvla_data.sim import TASKS, BimanualEnv, WorldConfig, eval_seeds, run_expert
from teamvla_data.sim.oracle import PERTURBATIONS, completion_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 seeds per cell, for a smoke test")
    parser.add_argument("--episodes", type=int, default=None, help="seeds per cell (default 100)")
    parser.add_argument("--num-joints", type=int, default=7)
    args = parser.parse_args()
    episodes = args.episodes or (10 if args.quick else 100)
    env = BimanualEnv(WorldConfig(render=False, num_joints=args.num_joints))
    start = time.perf_counter()
    print(
        f"expert completion from perturbed states, {episodes} evaluation seeds per cell, N={args.num_joints}"
    )
    print(
        f"  {'task':<8} {'perturbation':<17} {'completed':>10} {'rate':>7} {'<= limit':>9} "
        f"{'steps':>6}  failed seeds"
    )
    worst = 1.0
    for cell in completion_table(env, TASKS, PERTURBATIONS, episodes):
        steps = cell.steps / cell.completed if cell.completed else float("nan")
        failed = ", ".join(str(s) for s in (cell.failed_seeds or [])[:4])
        print(
            f"  {cell.task:<8} {cell.kind:<17} {cell.completed:>4}/{cell.trials:<5} {cell.rate:>7.1%} "
            f"{cell.rate_within_limit:>9.1%} {steps:>6.1f}  {failed}"
        )
        worst = min(worst, cell.rate)
    print(f"  lowest completion rate (2 x max_steps): {worst:.1%} (target >= 95%)")
    print(f"\nexpert success from clean starts, {episodes} evaluation seeds per task")
    for task in TASKS:
        wins = sum(
            list(run_expert(env, task, s))[-1]["success"] for s in eval_seeds(task, episodes)
        )
        print(f"  {task:<8} {wins / episodes:.1%}")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
