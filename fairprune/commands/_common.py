"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..core.io.outputs import Where

#: how messages about ``--out`` name the flag and the way to allow a replacement
OUT = Where(field="--out", allow="pass --overwrite")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config (YAML, TOML or JSON)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value by dotted key, e.g. --set pruning.budget.param_fraction=0.002 (repeatable)")
    parser.add_argument("--overwrite", dest="overrides", action="append_const", const="output.overwrite=true",
                        help="replace output.dir when it exists and is not empty (same as --set output.overwrite=true)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--check", action="store_true",
                        help="check the config, every plugin it names, its data files, the model source and the "
                             "output directory, print what would run, and stop before the model loads")


def add_overwrite_argument(parser: argparse.ArgumentParser, out: str = "--out") -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {out} when it exists (a non-empty directory, or a file); the old copy stays "
                             "until the new one is complete")


def add_trust_remote_code_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow a model directory's own Python code (auto_map in config.json) to run; "
                             "off by default, as model.trust_remote_code in a config")


def claim_out(args: argparse.Namespace) -> Path:
    """Check and lock ``--out`` before any work (released when the command ends); under torchrun only
    rank 0, the process that writes, claims it."""
    from ..core.io.outputs import claim_output_dir
    from ..core.io.sources import input_paths
    from ..core.model.distributed import is_main_process

    if not is_main_process():
        return Path(args.out).expanduser().absolute()
    return claim_output_dir(args.out, args.overwrite, OUT, reads=input_paths(getattr(args, "model", None)))


def positive_int(text: str) -> int:
    """An integer of at least 1 (batch sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_percent(text: str) -> float:
    """'1%' or '1' -> 1.0 (percent)."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # 'nan' would pass float() and then fail every comparison silently
        raise argparse.ArgumentTypeError(f"expected a percentage like 1% or 0.5, got {text!r}")
    return value
