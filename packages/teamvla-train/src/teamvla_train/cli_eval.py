"""The ``teamvla eval``, ``teamvla plot`` and ``teamvla demo`` subcommands.

Registration is cheap: torch and the evaluation modules are imported inside
the handlers only.
"""

from __future__ import annotations

import argparse

from teamvla_schema.codecs import add_image_codec_arguments


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate one or more checkpoints; print the table, write JSON (and pictures)."""
    from teamvla_train.eval_report import run_eval_command

    return run_eval_command(
        checkpoints=args.checkpoint,
        out=args.out,
        episodes_per_task=args.episodes_per_task,
        tasks=args.tasks,
        device=args.device,
        pictures=args.pictures,
        offline=not args.no_offline,
        overrides=args.overrides,
        progress=not args.no_progress,
    )


def cmd_plot(args: argparse.Namespace) -> int:
    """Plot a run directory's training curves."""
    from teamvla_train.eval_report import plot_run

    path = plot_run(args.run_dir, out=args.output)
    print(f"wrote {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Record (if needed), train, evaluate and print the success table."""
    from teamvla_train.demo import run_demo

    run_demo(
        out=args.out,
        model=args.model,
        quick=args.quick,
        device=args.device,
        config=args.config,
        overrides=args.overrides,
        progress=not args.no_progress,
        algo=args.algo,
        image_codec=args.image_codec,
        video_crf=args.video_crf,
    )
    return 0


def register_eval_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``eval``, ``plot`` and ``demo`` to the ``teamvla`` command."""
    p = sub.add_parser(
        "eval",
        help="offline action error + closed-loop success of checkpoint(s) in the simulator",
        description="Evaluate checkpoint(s): offline action error on the validation split and closed-loop "
        "success per task on held-out seeds, with and without language swap. Dotted overrides set "
        "eval.* fields, e.g. eval.replan_every=2.",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="PATH",
        help="checkpoint to evaluate (give twice to compare two)",
    )
    p.add_argument(
        "--episodes-per-task",
        type=int,
        default=None,
        metavar="N",
        help="closed-loop episodes per task",
    )
    p.add_argument(
        "--tasks", nargs="+", default=None, help="tasks to evaluate (default: the eval config's)"
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="write eval.json (and pictures) here (default: <checkpoint dir>/eval)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument(
        "--pictures",
        action="store_true",
        help="also write a rollout GIF + PNG strip per task and the run's training curves",
    )
    p.add_argument("--no-offline", action="store_true", help="skip the offline action error")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="eval.KEY=VALUE", help="eval config overrides")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plot", help="PNG of a training run's curves (from its JSONL metrics)")
    p.add_argument("run_dir", help="run directory (holding metrics.jsonl) or the JSONL file itself")
    p.add_argument(
        "-o", "--output", default=None, help="PNG path (default: RUN_DIR/training_curves.png)"
    )
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "demo",
        help="the whole pipeline: record a dataset, train on CPU, evaluate, print the success table",
        description="Record expert demonstrations (if DIR/data has none), train the default model, evaluate it "
        "in closed loop and print the per-task success table. Everything goes under --out.",
    )
    p.add_argument(
        "--out",
        default="teamvla-demo",
        metavar="DIR",
        help="where data, checkpoints, logs, pictures and results.json go (default: ./teamvla-demo)",
    )
    p.add_argument(
        "--model",
        choices=["single_brain", "msg_passing"],
        default=None,
        help="policy architecture (default: the demo config's)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny dataset/training/eval (about a minute; for tests)",
    )
    p.add_argument(
        "--algo",
        choices=["bc", "dagger"],
        default=None,
        help="training algorithm (default: the demo config's, behaviour cloning)",
    )
    p.add_argument("--device", default=None, help="cpu (default) | cuda | cuda:N")
    add_image_codec_arguments(
        p,
        what="how recorded episodes store their camera fields (data already in DIR/data is "
        "reused as stored)",
        codec_default="the config's eval.demo_image_codec / dagger.image_codec, else none",
        crf_default=None,
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="demo config (default: the demo.yaml shipped in teamvla_train/default_configs)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="SECTION.KEY=VALUE",
        help="config overrides, e.g. trainer.max_steps=500",
    )
    p.set_defaults(func=cmd_demo)
