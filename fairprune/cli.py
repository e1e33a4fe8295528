"""The ``fairprune`` command. Each subcommand lives in its own module under ``fairprune.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .core.contract.errors import FairpruneError
from .core.io.outputs import releasing_claims
from .core.model.distributed import env_world_size, run_command

#: subcommand modules; each defines ``add_parser(subparsers)`` which sets ``func`` on its parser
COMMANDS: tuple[str, ...] = (
    "run", "sweep", "analyze", "prune", "evaluate", "plugins", "axes", "demo", "report", "plot", "serve", "export",
    "lm_eval_cli",
)


_VERBOSE_HELP = "more log output (-vv for debug)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairprune", description="Fairness pruning of GLU language models.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=_VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"fairprune.commands.{name}").add_parser(sub)
    for command in sub.choices.values():  # `fairprune run cfg.yaml -v` works as `fairprune -v run cfg.yaml` does
        command.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=_VERBOSE_HELP)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose + 1, 2),
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if env_world_size() > 1:  # started by torchrun: share the analysis among the processes
            return run_command(releasing_claims(args.func), args)
        return int(releasing_claims(args.func)(args) or 0)
    except FairpruneError as exc:  # a user error: one line (config problems list one line per field)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: outputs are written atomically, so there is nothing to report but that
        print("error: interrupted; an output directory being written is left as it was", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
