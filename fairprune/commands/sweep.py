"""``fairprune sweep CONFIG``: a grid over budgets (and the activation method's bias weights), the Pareto front, and the best point."""

from __future__ import annotations

import argparse

from ._common import add_config_arguments, parse_percent


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("sweep", help="grid over budget (x bias_weight for the activation method); Pareto front of bias vs capability",
                            description="Share one bias analysis across a grid (config section `sweep`).")
    add_config_arguments(parser)
    parser.add_argument("--max-perplexity-increase", type=parse_percent, default=None, metavar="PCT",
                        help="save the point with the largest bias reduction whose perplexity rises at most PCT")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..core.run.sweep import check_sweep, sweep

    if args.check:
        print(check_sweep(args.config, args.overrides, max_perplexity_increase=args.max_perplexity_increase))
        return 0
    result = sweep(args.config, args.overrides, max_perplexity_increase=args.max_perplexity_increase,
                   progress=not args.quiet)
    if result.output_dir is None:  # a torchrun process other than rank 0: its share of the grid is done
        return 0
    print((result.output_dir / "sweep.md").read_text())
    if result.chosen is None and args.max_perplexity_increase is not None:
        print(f"no point within {args.max_perplexity_increase}% perplexity increase; no model saved")
        return 1
    return 0
