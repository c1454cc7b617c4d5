"""The ``teamvla`` command. Each installed TeamVLA package adds its subcommands.

Packages register a function under the ``teamvla.commands`` entry-point group;
it receives the argparse sub-parsers object and adds its commands, each with a
``func(args) -> int`` default. Registration must stay cheap (no torch import):
heavy imports belong inside the command functions.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import math
import re
import sys
from collections.abc import Sequence
from importlib.metadata import distributions, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from teamvla_schema.errors import SchemaError

if TYPE_CHECKING:
    from teamvla_schema.episode_codec import FieldEncoding

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
    encodings = ep.header.encodings
    for name, lay in ep.header.fields.items():
        shape = ",".join(str(d) for d in (meta.num_steps, *lay.shape))
        how = f"  {encodings[name].codec} stream" if name in encodings else ""
        print(f"  {name:<14} {lay.dtype:<8} [{shape}]{how}")
    if encodings:
        print("encodings:")
        for name, enc in encodings.items():
            print(f"  {name:<14} {_describe_encoding(enc)}")


def _describe_encoding(enc: FieldEncoding) -> str:
    """One ``FieldEncoding`` on a line: codec, params, stream bytes (and share of raw), quality."""
    import numpy as np

    params = " ".join(f"{k}={v}" for k, v in sorted(enc.params.items()))
    raw = math.prod(enc.shape) * np.dtype(enc.dtype).itemsize
    share = f" ({100 * enc.nbytes / raw:.2f}% of {_human_bytes(raw)} raw)" if raw else ""
    if enc.lossless:
        quality = "lossless (bit-exact)"
    elif enc.psnr is None or math.isinf(enc.psnr):
        quality = "PSNR inf dB (exact)"
    else:
        quality = f"PSNR {enc.psnr:.2f} dB"
    return f"{enc.codec:<9} {params:<28} {enc.nbytes:,} bytes{share}  {quality}"


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
    from teamvla_schema.atomic import open_regular

    path = Path(args.path)
    try:
        fh, _ = open_regular(path)  # a FIFO or a device is refused, not read forever
    except FileNotFoundError:
        raise SchemaError("no such file", path=path) from None
    except IsADirectoryError:
        raise SchemaError("is a directory, expected a file", path=path) from None
    except OSError as exc:
        raise SchemaError(f"cannot open: {exc.strerror}", path=path) from None
    with fh:
        magic = fh.read(4)
    if magic == b"PK\x03\x04" and path.suffix == ".npz":
        _inspect_episode(path)
    else:
        _inspect_checkpoint(path)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check every episode under ROOT; exit 1 when any is bad."""
    from teamvla_schema.episode import find_episodes, validate_episode_file

    unreadable: list[SchemaError] = []

    def report(exc: SchemaError) -> None:  # a directory that cannot be listed: say so, go on
        unreadable.append(exc)
        print(f"BAD  {exc}")

    paths = find_episodes(args.root, on_error=report)
    bad = 0
    for path in paths:
        try:
            # Codec streams are decoded and checked too; a missing PyAV is no verdict on the
            # file: its ImportError (naming the file and the extra) ends the command.
            header = validate_episode_file(path)
        except SchemaError as exc:
            bad += 1
            print(f"BAD  {exc}")
        else:
            if args.verbose:
                codecs = ", ".join(f"{n}: {e.codec}" for n, e in header.encodings.items())
                print(f"ok   {path}" + (f"  ({codecs})" if codecs else ""))
    summary = f"{len(paths)} episode file(s) checked, {len(paths) - bad} ok, {bad} bad"
    if unreadable:
        n = len(unreadable)
        summary += f", {n} unreadable director{'y' if n == 1 else 'ies'} (not checked)"
    print(summary)
    return 1 if bad or unreadable else 0


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


# `section.key=value`: a dotted config override (also accepted as `--section.key=value`).
_OVERRIDE = re.compile(r"[A-Za-z_][\w\-]*(\.[\w\-]+)*=.*", re.DOTALL)
_DASHED_OVERRIDE = re.compile(r"--([A-Za-z_][\w\-]*(\.[\w\-]+)+=.*)", re.DOTALL)
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def _closest_hint(message: str) -> str:
    """`` (did you mean 'lift'?)`` for an argparse "invalid choice" message, else ''."""
    m = _INVALID_CHOICE.search(message)
    if not m:
        return ""
    choices = [c.strip().strip("'") for c in m.group(2).split(",")]
    close = difflib.get_close_matches(m.group(1), choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``teamvla train: error: ...`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}{_closest_hint(message)}\n")


class _VersionAction(argparse.Action):
    """``teamvla --version``: every installed teamvla package and its version, one per line."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help=kwargs.get("help"))

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print("\n".join(f"{name} {version}" for name, version in installed_packages()))
        parser.exit(0)


def installed_packages() -> list[tuple[str, str]]:
    """(name, version) of every installed ``teamvla-*`` distribution, sorted by name."""
    found = {}
    for dist in distributions():
        name = str(dist.metadata["Name"] or "")
        if name.lower().replace("_", "-").startswith("teamvla-"):
            found[name.lower().replace("_", "-")] = dist.version
    return sorted(found.items())


def build_parser() -> argparse.ArgumentParser:
    """The ``teamvla`` parser with every installed package's subcommands."""
    parser = _Parser(prog="teamvla", description="TeamVLA: bimanual VLA data and training stack.")
    parser.add_argument("--version", action=_VersionAction, help="installed teamvla packages")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="logging level (default INFO)",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (anywhere on the line)"
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


def _subparser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def parse_args(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[argparse.Namespace, bool]:
    """Parse ``argv`` the way people type it; return (namespace, debug).

    ``key=value`` overrides may stand anywhere after the subcommand, before or
    after options, and ``--section.key=value`` means ``section.key=value``.
    ``--debug`` is accepted anywhere.
    """
    debug = "--debug" in argv
    tokens = [t for t in argv if t != "--debug"]
    tokens = [m.group(1) if (m := _DASHED_OVERRIDE.fullmatch(t)) else t for t in tokens]
    args, extras = parser.parse_known_args(tokens)
    if extras:
        target = _subparser(parser, getattr(args, "command", None))
        if hasattr(args, "overrides"):
            overrides = [t for t in extras if _OVERRIDE.fullmatch(t)]
            unknown = [t for t in extras if not _OVERRIDE.fullmatch(t)]
            args.overrides = [*(args.overrides or []), *overrides]
        else:
            unknown = extras
        if unknown:
            target.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args, debug


def _user_error(exc: BaseException) -> str:
    """One line for an error the user can fix (bad path, value, config, missing extra)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror.lower()}"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    return text


# Errors a user causes and can fix; anything else is a bug of ours and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (SchemaError, ValueError, OSError, ImportError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``teamvla`` command."""
    parser = build_parser()
    args, debug = parse_args(parser, list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"error: {_user_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
