"""Subcommands this package adds to the ``teamvla`` command."""

from __future__ import annotations

import argparse


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands (none yet)."""
