"""``fairprune lm-eval ARGS...``: lm-evaluation-harness's command line with the ``fairprune`` model type added.

``fairprune lm-eval run --model fairprune --model_args pretrained=runs/fair-smollm2 --tasks lambada_openai``
evaluates a pruned directory whose layers have different widths, which ``lm_eval --model hf`` cannot load.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "lm-eval", help="run lm-evaluation-harness with --model fairprune (loads any fairprune directory)",
        description="Every argument goes to lm-evaluation-harness's command line (`lm-eval run ...`), with the "
                    "model type `fairprune` registered: --model fairprune --model_args pretrained=DIR loads DIR "
                    "with fairprune.load_pretrained, so layers of different widths work. Needs the lm_eval extra.")
    parser.add_argument("lm_eval_args", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="lm-eval arguments, e.g. run --model fairprune --model_args pretrained=DIR --tasks T")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..plugins.evaluators.lm_eval_model import register

    register()
    from lm_eval._cli import HarnessCLI  # lm_eval's own parser reads sys.argv

    saved = sys.argv
    sys.argv = ["lm-eval", *args.lm_eval_args]
    try:
        cli = HarnessCLI()
        cli.execute(cli.parse_args())
    finally:
        sys.argv = saved
    return 0
