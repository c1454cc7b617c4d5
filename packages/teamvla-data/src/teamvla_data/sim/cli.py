"""``teamvla synth`` and ``teamvla render-episode``.

Registration imports nothing heavy; the commands import the simulator when they run.
"""

from __future__ import annotations

import argparse

from teamvla_schema.codecs import add_image_codec_arguments

TASK_NAMES = ("lift", "handoff", "drawer")  # kept in step with teamvla_data.sim.config.TASKS


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, received {text}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, received {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, received {text}")
    return value


def cmd_synth(args: argparse.Namespace) -> int:
    """Record scripted-expert episodes with the real EpisodeWriter."""
    from teamvla_schema.config import from_dict, load_config
    from teamvla_schema.episode import read_episode_meta
    from teamvla_schema.errors import SchemaError

    from teamvla_data.sim.config import TaskConfig
    from teamvla_data.sim.record import generate_dataset

    task_cfgs: dict[str, TaskConfig] = {}
    for path in args.config or []:
        loaded = load_config(path)
        cfg = from_dict(TaskConfig, loaded.data.get("task"), key="task", config=loaded)
        task_cfgs[cfg.name] = cfg
    try:
        paths = generate_dataset(
            args.out,
            args.tasks,
            args.episodes_per_task,
            args.seed,
            args.workers,
            args.image_size,
            num_joints=args.num_joints,
            task_cfgs=task_cfgs,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            image_codec=args.image_codec,
            video_crf=args.video_crf,
        )
    except ValueError as exc:
        if isinstance(exc, SchemaError):
            raise
        raise SchemaError(str(exc)) from None
    ok = sum(read_episode_meta(p).meta.success for p in paths)
    print(f"{len(paths)} episode(s) under {args.out}, {ok} successful")
    return 0


def cmd_render_episode(args: argparse.Namespace) -> int:
    """Write a contact sheet (PNG) of both cameras over an episode."""
    from teamvla_data.sim.sheet import render_episode

    out = render_episode(args.path, args.output, frames=args.frames, scale=args.scale)
    print(f"wrote {out}")
    return 0


def register_sim_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``synth`` and ``render-episode`` to the ``teamvla`` command."""
    p = sub.add_parser(
        "synth",
        help="record scripted-expert episodes of the built-in two-arm world",
        description="Record expert demonstrations (lift, handoff, drawer) as episode files under OUT/<task>/.",
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        choices=TASK_NAMES,
        default=list(TASK_NAMES),
        help="tasks to record (default: all)",
    )
    p.add_argument(
        "--episodes-per-task",
        type=_non_negative,
        default=10,
        metavar="N",
        help="episodes per task (default 10)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="ROOT",
        help="dataset root; episodes go to ROOT/<task>/<task>-NNNNNN.npz",
    )
    p.add_argument(
        "--seed", type=_non_negative, default=0, metavar="S", help="base seed (default 0)"
    )
    p.add_argument(
        "--workers", type=_positive, default=1, metavar="K", help="parallel processes (default 1)"
    )
    p.add_argument(
        "--image-size",
        type=_positive,
        default=None,
        metavar="PX",
        help="camera image size (default 96)",
    )
    p.add_argument(
        "--num-joints", type=_positive, default=None, metavar="N", help="joints per arm (default 7)"
    )
    add_image_codec_arguments(
        p,
        what="the recorded episodes",
        codec_default="the config's task.storage.image_codec, else none",
        crf_default=None,
    )
    p.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="config file whose task: section configures its task (repeatable)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing episode files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("render-episode", help="contact sheet (PNG) of both cameras over an episode")
    p.add_argument("path", help="episode file (.npz)")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--frames", type=_positive, default=8, help="frames per camera (default 8)")
    p.add_argument("--scale", type=_positive, default=2, help="integer enlargement (default 2)")
    p.set_defaults(func=cmd_render_episode)
