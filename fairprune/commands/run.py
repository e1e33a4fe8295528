"""``fairprune run CONFIG``: the whole pipeline, then a short summary."""

from __future__ import annotations

import argparse

from ._common import add_config_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="analyze, prune, evaluate and save a model as a config says",
                            description="Run the whole fairness-pruning pipeline from a config file.")
    add_config_arguments(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..core.contract.summary import summary_text
    from ..core.run.pipeline import check, run

    if args.check:
        print(check(args.config, args.overrides))
        return 0

    result = run(args.config, args.overrides, progress=not args.quiet)
    if result.output_dir is not None:  # under torchrun every process has the results; rank 0 alone prints
        print(summary_text(result.metrics, result.output_dir))
    return 0
