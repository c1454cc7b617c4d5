"""``teamvla config show FILE [overrides...]``: print a resolved config.

Registered from :func:`teamvla_schema.cli.register_commands`. Registration
imports nothing heavy; the config machinery is imported by the handler.
"""

from __future__ import annotations

import argparse


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the resolved config as YAML (validated, defaults filled in, unless ``--no-validate``)."""
    from teamvla_schema.config import format_config, load_config, resolved_data, validate_config

    loaded = load_config(args.file, args.overrides)
    data = loaded.data
    if args.validate:
        # A ConfigError propagates to main(), which prints it and exits 2.
        data = resolved_data(loaded, validate_config(loaded))
    if args.sources:
        print(f"# files: {', '.join(loaded.files)}" + (" + overrides" if loaded.overrides else ""))
    print(format_config(data, loaded.sources if args.sources else None), end="")
    return 0


def register_config_command(sub: argparse._SubParsersAction) -> None:
    """Add the ``config`` command with its ``show`` action."""
    p = sub.add_parser("config", help="show a resolved (layered, validated) config")
    actions = p.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    s = actions.add_parser(
        "show",
        help="print the fully resolved config as YAML",
        description="Load FILE with its 'extends' chain, apply dotted overrides (optim.lr=3e-4 "
        "dataset.tasks=[lift,handoff]), validate every section and print the result with defaults "
        "filled in. Exits 2 with the error message on an invalid config.",
    )
    s.add_argument("file", help="config file, e.g. configs/train_bc.yaml")
    s.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted-key overrides, values parsed as YAML",
    )
    s.add_argument(
        "--sources", action="store_true", help="annotate each value with the file that set it"
    )
    s.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="print the merged config as it is, without validating it or filling in defaults",
    )
    s.set_defaults(func=cmd_config_show)


__all__ = ["cmd_config_show", "register_config_command"]
