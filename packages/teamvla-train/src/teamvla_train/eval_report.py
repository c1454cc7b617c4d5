"""Reporting evaluations: the success table, JSON results, training-curve pictures, ``teamvla eval``."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from teamvla_schema.atomic import atomic_write_text
from teamvla_schema.errors import SchemaError

from teamvla_train.config import EvalConfig
from teamvla_train.evaluation import EVAL_FILE, RESULTS_VERSION, eval_config_from, evaluate_policy

log = logging.getLogger(__name__)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    cfg: EvalConfig | None = None,
    device: str = "cpu",
    offline: bool = True,
    pictures_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint and evaluate it; ``cfg`` defaults to the checkpoint's ``eval`` section.

    Result keys: ``checkpoint``, ``model``, ``eval_config``, ``offline``
    (``joint_mse``, ``joint_l1``, ``grip_accuracy``, ``samples``, ``per_task``),
    ``closed_loop`` (per task: ``episodes``, ``successes``, ``success_rate``,
    ``swap_episodes``, ``swap_successes``, ``swap_success_rate``, ``seeds``,
    ``mean_steps``, ...), ``mean_success_rate``, ``mean_swap_success_rate``,
    ``world``, ``timing_s`` and, with pictures, ``pictures``.
    """
    from teamvla_train.policy import load_policy

    policy = load_policy(checkpoint, device=device)
    if cfg is None:
        cfg = eval_config_from(policy.config)
    out = {"checkpoint": str(policy.path or checkpoint)}
    out.update(
        evaluate_policy(
            policy,
            cfg,
            checkpoint_config=policy.config,
            offline=offline,
            pictures_dir=pictures_dir,
            progress=progress,
        )
    )
    return out


# =========================================================================== reporting


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}%"


def format_table(results: Sequence[Mapping[str, Any]]) -> str:
    """A text table: one row per task, three columns (success, swapped, episodes) per checkpoint.

    Below the tasks: the mean, then the offline action error when it was measured.
    """
    if not results:
        return "(no results)"
    tasks = list(dict.fromkeys(t for r in results for t in r.get("closed_loop", {})))
    head = ["task"]
    for i, r in enumerate(results):
        name = f"{r.get('model') or '?'}" + (f" #{i + 1}" if len(results) > 1 else "")
        head += [f"{name} success", "swapped", "episodes"]
    body = []
    for t in tasks:
        row = [t]
        for r in results:
            c = r.get("closed_loop", {}).get(t, {})
            row += [
                _pct(c.get("success_rate")),
                _pct(c.get("swap_success_rate")),
                str(c.get("episodes", "-")),
            ]
        body.append(row)
    body.append(
        ["mean"]
        + [
            x
            for r in results
            for x in (_pct(r.get("mean_success_rate")), _pct(r.get("mean_swap_success_rate")), "")
        ]
    )
    extra = []
    if any("joint_mse" in (r.get("offline") or {}) for r in results):
        for key, label in (
            ("joint_mse", "offline joint MSE"),
            ("joint_l1", "offline joint L1"),
            ("grip_accuracy", "offline grip acc"),
        ):
            row = [label]
            for r in results:
                v = (r.get("offline") or {}).get(key)
                text = (
                    "-"
                    if v is None
                    else (f"{100 * v:.1f}%" if key == "grip_accuracy" else f"{v:.5f}")
                )
                row += [text, "", ""]
            extra.append(row)
    widths = [max(len(row[i]) for row in (head, *body, *extra)) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    sep = "  ".join("-" * w for w in widths)
    lines = [line(head), sep, *(line(r) for r in body)]
    if extra:
        lines += [sep, *(line(r) for r in extra)]
    return "\n".join(lines)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    return Path(path)


def run_dir_of(checkpoint: str | os.PathLike[str]) -> Path | None:
    """The run directory a checkpoint belongs to (the one holding ``metrics.jsonl``), if any."""
    from teamvla_train.engine.metrics import METRICS_FILE

    p = Path(checkpoint).resolve()
    for parent in [p, *p.parents][:5]:
        if (parent / METRICS_FILE).is_file():
            return parent
    return None


def plot_run(run_dir: str | os.PathLike[str], *, out: str | os.PathLike[str] | None = None) -> Path:
    """Training-curve PNG of a run directory (or of a metrics JSONL file)."""
    from teamvla_train.engine.metrics import METRICS_FILE
    from teamvla_train.plots import plot_training_curves

    src = Path(run_dir)
    metrics = src if src.is_file() else src / METRICS_FILE
    if not metrics.is_file():
        raise SchemaError(f"no {METRICS_FILE} here: not a training run directory", path=src)
    target = Path(out) if out is not None else metrics.parent / "training_curves.png"
    return plot_training_curves(metrics, target, title=metrics.parent.name)


def run_eval_command(
    *,
    checkpoints: Sequence[str],
    out: str | None = None,
    episodes_per_task: int | None = None,
    tasks: Sequence[str] | None = None,
    device: str = "cpu",
    pictures: bool = False,
    offline: bool = True,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> int:
    """The ``teamvla eval`` command: evaluate, print the table, write ``eval.json``."""
    from teamvla_train.engine.checkpointing import checkpoint_step, resolve_checkpoint
    from teamvla_train.engine.loggers import configured_loggers, log_pictures
    from teamvla_train.policy import load_policy

    if len(checkpoints) > 2:
        raise SchemaError(
            f"--checkpoint may be given at most twice (to compare two), received {len(checkpoints)}"
        )
    paths = [resolve_checkpoint(c) for c in checkpoints]
    out_dir = Path(out) if out is not None else paths[0].parent / "eval"
    results = []
    for i, path in enumerate(paths):
        policy = load_policy(path, device=device)
        cfg = eval_config_from(
            policy.config, overrides=overrides, episodes_per_task=episodes_per_task, tasks=tasks
        )
        pic_dir = None
        if pictures:
            pic_dir = out_dir / (f"pictures_{i + 1}" if len(paths) > 1 else "pictures")
        res: dict[str, Any] = {"checkpoint": str(path)}
        res.update(
            evaluate_policy(
                policy,
                cfg,
                checkpoint_config=policy.config,
                offline=offline,
                pictures_dir=pic_dir,
                progress=progress,
            )
        )
        if pic_dir is not None:
            run_dir = run_dir_of(path)
            if run_dir is not None:
                # Rollout pictures to the training run's TensorBoard / W&B, as its config asks.
                try:
                    step = checkpoint_step(path)
                except SchemaError:
                    step = 0
                log_pictures(
                    run_dir,
                    configured_loggers(policy.config),
                    res.get("pictures", []),
                    step=step,
                    config=policy.config,
                    strict=False,
                )
                res.setdefault("pictures", []).append(
                    str(plot_run(run_dir, out=pic_dir / "training_curves.png"))
                )
        results.append(res)
    payload: dict[str, Any] = {"version": RESULTS_VERSION, "results": results}
    path = write_json(out_dir / EVAL_FILE, payload)
    print(format_table(results))
    print(f"\nwrote {path}")
    for r in results:
        for pic in r.get("pictures", []):
            print(f"wrote {pic}")
    return 0
