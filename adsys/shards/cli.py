"""`adsys shards ...` subcommands."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``adsys shards`` on the top-level subparsers."""
