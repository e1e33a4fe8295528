"""``fairprune report RUN_DIR``: rebuild the self-contained ``report.html`` of a finished run or sweep."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="rebuild report.html of a finished run or sweep directory",
                            description="Rebuild report.html (plots embedded) from a run or sweep directory's files.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `fairprune run` or `sweep`")
    parser.add_argument("--no-models", action="store_true",
                        help="skip the PCA and token plots of a run that did not store their data "
                             "(drawing them then reloads the base and pruned models)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..viz.html import build_report

    print(build_report(args.run_dir, with_models=not args.no_models))
    return 0
