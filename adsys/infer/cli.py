"""`adsys infer` and `adsys evaluate` subcommands."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``adsys infer`` and ``adsys evaluate`` on the top-level subparsers."""
