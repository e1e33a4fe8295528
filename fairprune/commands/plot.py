"""``fairprune plot KIND RUN_DIR [--out FILE]``: one plot of a finished run or sweep as PNG or SVG."""

from __future__ import annotations

import argparse

from ._common import OUT, add_overwrite_argument

#: kept in step with ``fairprune.viz.run_plots.PLOTS`` (listed here so ``--help`` needs no matplotlib)
KINDS = ("profile", "neurons", "scatter", "pca", "tokens", "pareto")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plot", help="draw one plot of a run or sweep directory",
                            description="Draw one plot from a finished run (or sweep) directory: "
                                        "profile (bias per layer, base vs pruned), neurons (bias map with removed "
                                        "neurons), scatter (bias vs importance with the decision line; on an "
                                        "attribution run, estimated bias reduction vs capability cost with the "
                                        "guard), pca and "
                                        "tokens (reload the models), pareto (a sweep's trade-off).")
    parser.add_argument("kind", metavar="KIND", choices=KINDS, help=", ".join(KINDS))
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `fairprune run` or `sweep`")
    parser.add_argument("--out", metavar="FILE", help="output file, .png or .svg (default RUN_DIR/plot-KIND.png, "
                                                      "redrawn each time)")
    add_overwrite_argument(parser)
    parser.add_argument("--layer", type=int, help="layer for scatter (default: all layers) and pca (default: middle)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..core.io.outputs import check_output_file
    from ..viz.base import save_figure
    from ..viz.run_plots import figure_for
    from ..viz.rundata import load_run

    if args.out:  # a file the user names is replaced only when asked
        check_output_file(args.out, args.overwrite, OUT)
    run = load_run(args.run_dir)
    fig = figure_for(args.kind, run, layer=args.layer)
    print(save_figure(fig, Path(args.out) if args.out else run.directory / f"plot-{args.kind}.png"))
    return 0
