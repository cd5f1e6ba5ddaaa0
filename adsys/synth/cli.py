"""`adsys synth ...` subcommands (placeholder until the fluid generator lands)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``adsys synth`` on the top-level subparsers."""
