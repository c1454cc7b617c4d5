"""Subcommands this package adds to the ``teamvla`` command: ``teamvla train`` (and the eval helper's).

Registration stays cheap: torch and the trainer are imported inside the handler.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("teamvla.train")


def _default_run_dir(output_dir: str, config_path: str) -> Path:
    """``<run.output_dir>/<config stem>-<YYYYmmdd-HHMMSS>``."""
    import time

    return Path(output_dir) / f"{Path(config_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args: argparse.Namespace) -> int:
    """Load and validate the whole config, then train (see :func:`teamvla_train.engine.train`)."""
    from teamvla_schema.config import load_config

    from teamvla_train.config import resolve_train_config

    # Validate everything before importing torch or touching any data.
    loaded = load_config(args.config, args.overrides)
    cfg = resolve_train_config(loaded)
    if args.device:
        import re

        from teamvla_schema.config import ConfigError
        from teamvla_schema.run_config import DEVICE_PATTERN

        if not re.fullmatch(DEVICE_PATTERN, args.device):
            raise ConfigError(
                f"expected 'cpu', 'cuda' or 'cuda:N', received {args.device!r}", key="--device"
            )
    run_dir = Path(args.out) if args.out else None
    if run_dir is None:
        if args.resume and args.resume != "auto":
            from teamvla_train.engine.checkpointing import resolve_checkpoint

            # A checkpoint path: its run directory is three levels up (<run>/checkpoints/<task>/x.ckpt).
            run_dir = resolve_checkpoint(args.resume).parents[2]
        else:
            run_dir = _default_run_dir(cfg.run.output_dir, args.config)
    if args.resume == "auto" and not args.out:
        from teamvla_schema import SchemaError

        raise SchemaError("--resume auto needs --out RUN_DIR (the run directory to continue)")

    from teamvla_train.engine import train

    result = train(
        cfg, run_dir=run_dir, device=args.device, resume=args.resume, progress=not args.no_progress
    )
    print(f"run directory   {result.run_dir}")
    print(f"last checkpoint {result.last_checkpoint}")
    shown = {
        k: v
        for k, v in result.final_metrics.items()
        if k in ("train_loss", "val_loss", "train_samples_per_s")
    }
    for k, v in shown.items():
        print(f"{k:<15} {v:.4f}")
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``teamvla train``."""
    p = subparsers.add_parser(
        "train",
        help="train a behaviour-cloning policy",
        description="Train a bimanual VLA policy with behaviour cloning. "
        "Example: teamvla train --config configs/train_bc.yaml model.name=msg_passing trainer.max_steps=500",
    )
    p.add_argument("--config", required=True, help="config file (YAML), e.g. configs/train_bc.yaml")
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=3e-4"
    )
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (overrides run.device)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="PATH|auto",
        help="continue from a checkpoint, run dir, or 'auto'",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="RUN_DIR",
        help="run directory (default: <run.output_dir>/<config>-<time>)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    # The evaluation commands (eval, plot, demo) live in cli_eval.py.
    from teamvla_train.cli_eval import register_eval_commands

    register_eval_commands(subparsers)
