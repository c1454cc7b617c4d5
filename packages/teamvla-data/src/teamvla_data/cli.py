"""Subcommands this package adds to the ``teamvla`` command.

Registration stays cheap: handlers import what they need when they run.
"""

from __future__ import annotations

import argparse


def cmd_index(args: argparse.Namespace) -> int:
    """Build or refresh the manifest of each root and print a summary."""
    import time
    from collections import Counter

    from teamvla_data.index import EpisodeIndex
    from teamvla_data.manifest import manifest_path

    t0 = time.perf_counter()
    index = EpisodeIndex.open(args.roots, write=not args.dry_run)
    elapsed = time.perf_counter() - t0
    for root, upd in index.updates.items():
        state = "written" if upd.written else ("unchanged" if not upd.dirty else "not written")
        print(
            f"{root}: {upd.reused} reused, {len(upd.added)} added, {len(upd.changed)} changed, "
            f"{len(upd.removed)} removed; manifest {state} ({manifest_path(root)})"
        )
    episodes = Counter(r.task for r in index.records)
    steps: Counter[str] = Counter()
    successes: Counter[str] = Counter()
    for r in index.records:
        steps[r.task] += r.num_steps
        successes[r.task] += r.success
    print(f"{'task':<16} {'episodes':>8} {'steps':>9} {'success':>8}")
    for task in index.tasks:
        print(
            f"{task:<16} {episodes[task]:>8} {steps[task]:>9} {successes[task] / episodes[task]:>8.0%}"
        )
    print(f"{'total':<16} {len(index.records):>8} {index.num_steps:>9}")
    for rec in index.bad:
        print(f"BAD  {rec.error}")
    print(
        f"{len(index.records)} episode(s), {len(index.bad)} unreadable, indexed in {elapsed:.2f} s"
    )
    if args.build_cache and index.records:
        from teamvla_data.dataset import MultiTaskDataset

        t0 = time.perf_counter()
        ds = MultiTaskDataset(args.roots, on_error="skip", cache_dir=args.cache_dir)
        print(ds.summary())
        print(
            f"cache ready in {time.perf_counter() - t0:.2f} s ({ds.store.nbytes / 2**20:.1f} MiB)"
        )
    return 1 if index.bad else 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands."""
    p = subparsers.add_parser(
        "index", help="build/refresh the episode manifest of dataset roots and summarise them"
    )
    p.add_argument(
        "roots", nargs="+", metavar="ROOT", help="episode root(s) holding <task>/<episode_id>.npz"
    )
    p.add_argument("--dry-run", action="store_true", help="do not write the manifest")
    p.add_argument(
        "--build-cache", action="store_true", help="also build the memory-mapped column cache"
    )
    p.add_argument(
        "--cache-dir", default=None, help="cache directory (default: ROOT/.teamvla/cache)"
    )
    p.set_defaults(func=cmd_index)

    # The simulator's commands (synth, render-episode) live with the simulator.
    from teamvla_data.sim.cli import register_sim_commands

    register_sim_commands(subparsers)
