#!/usr/bin/env python3
"""Plot the AWAC and SAC fine-tuning curves of benchmarks/awac_finetune.sh runs.

    python benchmarks/plot_awac_finetune.py [RUNS_DIR] [OUT_PNG]

RUNS_DIR (default runs/awac-finetune) holds one folder per task with the runs
``bc-bern``, ``bc-gauss``, ``awac-bern`` and ``sac-gauss``; OUT_PNG defaults to
docs/images/awac_finetune.png. Each curve starts at its BC actor's success.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: (fine-tuning run, its BC start, its evaluation event, label, line style)
RUNS = (
    ("awac-bern", "bc-bern", "awac_eval", "AWAC (Bernoulli grips)", "-o"),
    ("sac-gauss", "bc-gauss", "sac_eval", "SAC fine-tuning", "--s"),
)


def events(path: Path, name: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("event") == name]


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "runs/awac-finetune")
    out = argv[1] if len(argv) > 1 else "docs/images/awac_finetune.png"
    tasks = [t for t in ("lift", "handoff", "drawer") if (root / t).is_dir()]
    if not tasks:
        sys.exit(f"no task folders under {root}: run benchmarks/awac_finetune.sh first")
    fig, grid = plt.subplots(
        1, len(tasks), figsize=(4.2 * len(tasks), 3.4), sharey=True, squeeze=False
    )
    for ax, task in zip(grid[0], tasks, strict=True):
        key = f"success_{task}"
        for run, start, event, label, style in RUNS:
            bc = events(root / task / start / "metrics.jsonl", "awac_eval")
            online = [
                r
                for r in events(root / task / run / "metrics.jsonl", event)
                if r.get("phase", "online") == "online"
            ]
            xs = [0] + [r["env_steps"] for r in online]
            ys = [bc[-1][key] if bc else 0.0] + [r[key] for r in online]
            ax.plot(xs, [100 * y for y in ys], style, label=label)
        ax.set_title(f"{task}: from BC on 10 demos")
        ax.set_xlabel("online environment steps")
        ax.grid(alpha=0.3)
    grid[0][0].set_ylabel("held-out success, deterministic actor (%)")
    grid[0][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
