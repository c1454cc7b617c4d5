"""``teamvla convert``: registered through the ``teamvla.commands`` entry point.

Registration stays cheap: the converters (and pyarrow, PyAV, h5py) are
imported only when the command runs.
"""

from __future__ import annotations

import argparse

from teamvla_schema.codecs import add_image_codec_arguments


def cmd_convert(args: argparse.Namespace) -> int:
    """Convert a dataset and print what was done."""
    from teamvla_data.interop.api import convert

    result = convert(
        args.src,
        args.dst,
        src_format=args.src_format,
        dst_format=args.dst_format,
        renames=args.map,
        state_layout=args.state_layout,
        action_layout=args.action_layout,
        fps=args.fps,
        task=args.task,
        instruction=args.instruction,
        success=args.success,
        cameras=args.cameras,
        crf=args.crf,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        image_codec=None if args.image_codec in (None, "none") else args.image_codec,
        video_crf=args.video_crf,
    )
    print(result.summary())
    return 0


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``teamvla convert``."""
    formats = ("teamvla", "lerobot", "robomimic")
    p = subparsers.add_parser(
        "convert",
        help="convert datasets between TeamVLA, LeRobot v3 and robomimic HDF5",
        description="Convert a dataset episode by episode (see docs/interop.md for the field map). "
        "LeRobot needs teamvla-data[lerobot], robomimic teamvla-data[robomimic].",
    )
    p.add_argument(
        "src", metavar="SRC", help="source: episode root, LeRobot directory or .hdf5 file"
    )
    p.add_argument(
        "dst",
        metavar="DST",
        help="destination: an episode root (episodes are added, never replaced), or a LeRobot directory / .hdf5 file (must not exist unless --overwrite)",
    )
    p.add_argument(
        "--from", dest="src_format", choices=formats, help="source format (default: detected)"
    )
    p.add_argument(
        "--to", dest="dst_format", choices=formats, default="teamvla", help="destination format"
    )
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="THEIR_KEY=OUR_FIELD",
        help="key rename, repeatable (e.g. observation.images.top=rgb_a; state/action name the flat vectors)",
    )
    p.add_argument(
        "--state-layout",
        help="split of the state vector, e.g. q_a:6,grip_state_a:1,q_b:6,grip_state_b:1 (default: ALOHA's)",
    )
    p.add_argument(
        "--action-layout",
        help="split of the action vector, e.g. action_a:6,grip_a:1,action_b:6,grip_b:1 (default: ALOHA's)",
    )
    p.add_argument(
        "--fps",
        type=float,
        help="recording rate where the source has none (overrides it for LeRobot export)",
    )
    p.add_argument(
        "--task", help="task slug for imported episodes (default: from the source's name)"
    )
    p.add_argument(
        "--instruction", help="instruction for robomimic imports (default: env_args' env_name)"
    )
    p.add_argument(
        "--success",
        choices=("auto", "last", "none"),
        default="auto",
        help="per-step success where the source has none (see docs/interop.md)",
    )
    p.add_argument(
        "--cameras",
        choices=("auto", "video", "video-lossless", "png"),
        default="auto",
        help="LeRobot export: lossy MP4 video (PSNR reported), lossless video, or PNG images (auto: video when PyAV is installed)",
    )
    p.add_argument(
        "--crf", type=int, default=18, help="LeRobot export: H.264 quality (0-51, lower is better)"
    )
    add_image_codec_arguments(
        p, what="conversion into teamvla format", codec_default="none", crf_default=30
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing LeRobot directory or robomimic file",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_convert)
