"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config (YAML, TOML or JSON)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted key, e.g. --set scoring.bias_weight=0.6 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def parse_percent(text: str) -> float:
    """'1%' or '1' -> 1.0 (percent)."""
    try:
        return float(text.strip().rstrip("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage like 1% or 0.5, got {text!r}") from None
