"""The ``teamvla`` command. Each installed TeamVLA package adds its subcommands.

Packages register a function under the ``teamvla.commands`` entry-point group;
it receives the argparse sub-parsers object and adds its commands, each with a
``func(args) -> int`` default. Registration must stay cheap (no torch import):
heavy imports belong inside the command functions.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from teamvla_schema.errors import SchemaError

log = logging.getLogger("teamvla")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _inspect_episode(path: Path) -> None:
    from teamvla_schema.episode import read_episode

    ep = read_episode(path, fields=[])  # metadata only: no images decompressed
    meta = ep.meta
    print(f"episode    {path}  ({_human_bytes(ep.header.file_size)})")
    print(f"task       {meta.task}")
    print(f"episode_id {meta.episode_id}")
    print(f"success    {meta.success}")
    print(f"num_steps  {meta.num_steps}")
    print(f"version    {meta.version}")
    if meta.user:
        print(f"user       {json.dumps(meta.user, sort_keys=True)}")
    print("fields:")
    for name, lay in ep.header.fields.items():
        shape = ",".join(str(d) for d in (meta.num_steps, *lay.shape))
        print(f"  {name:<14} {lay.dtype:<8} [{shape}]")


def _inspect_checkpoint(path: Path) -> None:
    from teamvla_schema.checkpoint import read_checkpoint_info

    info = read_checkpoint_info(path)
    print(
        f"checkpoint {path}  ({_human_bytes(info.file_size)}, format {info.metadata.get('format_version')})"
    )
    sections: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, entry in info.tensors.items():
        sections.setdefault(name.split("/", 1)[0], []).append((name, entry))
    structure = info.structure
    for section in structure:
        tensors = sections.get(section, [])
        nparams = sum(int(__import__("math").prod(e["shape"])) for _, e in tensors)
        print(f"{section}: {len(tensors)} tensors, {nparams:,} values")
        if section in ("model",):
            for name, e in tensors:
                print(f"  {name:<50} {e['dtype']:<5} {e['shape']}")
        elif section in ("training_state", "config", "stats"):
            text = json.dumps(structure[section], sort_keys=False)
            print(f"  {text[:400]}{'...' if len(text) > 400 else ''}")


def cmd_inspect(args: argparse.Namespace) -> int:
    """Summarise an episode file or a checkpoint."""
    path = Path(args.path)
    if not path.is_file():
        raise SchemaError("no such file", path=path)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic == b"PK\x03\x04" and path.suffix == ".npz":
        _inspect_episode(path)
    else:
        _inspect_checkpoint(path)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check every episode under ROOT; exit 1 when any is bad."""
    from teamvla_schema.episode import find_episodes, validate_episode_file

    paths = find_episodes(args.root)
    bad = 0
    for path in paths:
        try:
            validate_episode_file(path)
        except SchemaError as exc:
            bad += 1
            print(f"BAD  {exc}")
        else:
            if args.verbose:
                print(f"ok   {path}")
    print(f"{len(paths)} episode file(s) checked, {len(paths) - bad} ok, {bad} bad")
    return 1 if bad else 0


def register_commands(sub: argparse._SubParsersAction) -> None:
    """Register the schema package's subcommands."""
    p = sub.add_parser("inspect", help="summarise an episode (.npz) or a checkpoint")
    p.add_argument("path")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("validate", help="check every episode under a root")
    p.add_argument("root")
    p.add_argument("-v", "--verbose", action="store_true", help="also list good files")
    p.set_defaults(func=cmd_validate)
    from teamvla_schema.config_cli import register_config_command  # argparse only: cheap

    register_config_command(sub)


def build_parser() -> argparse.ArgumentParser:
    """The ``teamvla`` parser with every installed package's subcommands."""
    parser = argparse.ArgumentParser(
        prog="teamvla", description="TeamVLA: bimanual VLA data and training stack."
    )
    parser.add_argument(
        "--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING, ...)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for ep in sorted(
        entry_points(group="teamvla.commands"), key=lambda e: (e.name != "schema", e.name)
    ):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        try:
            register = ep.load()
        except ImportError as exc:  # a package whose optional dependency is missing
            log.debug("skipping teamvla commands from %s: %s", ep.name, exc)
            continue
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``teamvla`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
