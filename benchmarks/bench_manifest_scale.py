#!/usr/bin/env python3
"""Opening the manifest of a million episodes: time and peak memory (docs/dataset.md, "Scale").

    uv run python benchmarks/bench_manifest_scale.py            # 1,000,000 episodes
    uv run python benchmarks/bench_manifest_scale.py --quick    # 20,000 (smoke test)

Writes a synthetic ``ROOT/.teamvla/manifest.json`` in the real format
(:mod:`teamvla_data.manifest`: one row per file, shared layouts, checksum) for
episodes that do not exist on disk, then, each in a fresh process so that its
peak RSS is its own:

1. parses it the way ``EpisodeIndex`` does today (``load_manifest``: JSON to records);
2. opens it as a :class:`~teamvla_data.manifest_table.ManifestTable` the first
   time (parses the JSON once and writes ``manifest.table``);
3. opens the table again (memory-mapped, checksum verified), selects one task
   and one rank's share (1 of 8) of it, and makes records of that share only.

Each row reports seconds and the process's peak RSS (``VmHWM``), next to
an empty interpreter that imported numpy and teamvla_data.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = ("lift", "handoff", "drawer", "stack", "pour", "wipe", "fold", "sort")

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
from teamvla_data.manifest import load_manifest
from teamvla_data.manifest_table import ManifestTable
from teamvla_data.cache_order import assign_episodes
root, what = sys.argv[1], sys.argv[2]
t1 = time.perf_counter()
extra = {}
if what == "json":
    records = load_manifest(root)
    extra["episodes"] = len(records)
elif what in ("table-first", "table"):
    table = ManifestTable.open(root)
    extra["episodes"] = len(table)
    if what == "table":
        t2 = time.perf_counter()
        rows = table.select(["lift"])
        ranks = assign_episodes(np.zeros(len(rows), np.int64), 8, seed=0)
        mine = table.records(rows[ranks == 3])
        extra["shard_records"] = len(mine)
        extra["shard_s"] = time.perf_counter() - t2
        t_end = t2
elif what != "baseline":
    raise SystemExit(what)
t_open = (t_end if what == "table" else time.perf_counter()) - t1
# VmHWM: this process's own peak (ru_maxrss keeps the parent's across exec on Linux).
status = dict(ln.split(":", 1) for ln in open("/proc/self/status").read().splitlines() if ":" in ln)
peak = int(status["VmHWM"].split()[0]) / 1024 if "VmHWM" in status else (
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps({"open_s": t_open, "import_s": t1 - t0, "peak_rss_mib": peak, **extra}))
"""


def write_manifest(root: Path, count: int) -> float:
    """A synthetic manifest of ``count`` episodes of 100 steps (two 96x96 cameras); returns MB."""
    from teamvla_data.manifest import (
        MANIFEST_FORMAT,
        MANIFEST_VERSION,
        manifest_path,
        with_checksum,
    )

    layout = {
        "rgb_a": {"dtype": "uint8", "shape": [96, 96, 3]},
        "rgb_b": {"dtype": "uint8", "shape": [96, 96, 3]},
        **{k: {"dtype": "float32", "shape": [7]} for k in ("q_a", "q_b", "action_a", "action_b")},
        "grip_a": {"dtype": "float32", "shape": []},
        "grip_b": {"dtype": "float32", "shape": []},
        "instruction": {"dtype": "str", "shape": []},
        "task": {"dtype": "str", "shape": []},
        "success": {"dtype": "bool", "shape": []},
    }
    base = 1_700_000_000_000_000_000
    rows = []
    for i in range(count):
        task = TASKS[i % len(TASKS)]
        eid = f"{task}-{i:07d}"
        rows.append(
            [f"{task}/{eid}.npz", 40_000 + i % 977, base + i, base + 7 * i, 10_000 + i,
             task, eid, i % 5 != 0, 100, 0, None]
        )  # fmt: skip
    rows.sort(key=lambda r: r[0])
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "layouts": [layout],
        "episodes": rows,
    }
    text = with_checksum(json.dumps(doc, separators=(",", ":")))
    path = manifest_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return len(text) / 1e6


def run_child(root: Path, what: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), what], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise SystemExit(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 episodes")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes = 20_000
    work = Path(args.workdir or tempfile.mkdtemp(prefix="teamvla-manifest-"))
    try:
        root = work / "root"
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        mb = write_manifest(root, args.episodes)
        print(
            f"synthetic manifest: {args.episodes:,} episodes, {mb:.1f} MB of JSON "
            f"(written in {time.perf_counter() - t0:.1f} s)"
        )
        base = run_child(root, "baseline")
        rows = [
            ("empty interpreter (numpy + teamvla_data imported)", base),
            ("(1) manifest.json -> records (today's EpisodeIndex path)", run_child(root, "json")),
            ("(2) ManifestTable.open, first time (parse JSON, write table)", run_child(root, "table-first")),
            ("(3) ManifestTable.open (memory-mapped table)", run_child(root, "table")),
        ]  # fmt: skip
        table_mb = (root / ".teamvla" / "manifest.table").stat().st_size / 1e6
        print(f"manifest.table: {table_mb:.1f} MB")
        print(f"{'open':<64} {'seconds':>8} {'peak RSS MiB':>13}")
        for name, r in rows:
            print(f"{name:<64} {r['open_s']:>8.3f} {r['peak_rss_mib']:>13.0f}")
        shard = rows[3][1]
        print(
            f"(3) then: select task 'lift', one rank's share of 8, records of it: "
            f"{int(shard['shard_records']):,} records in {shard['shard_s']:.3f} s"
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
