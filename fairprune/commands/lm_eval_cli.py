"""``fairprune lm-eval ARGS...``: lm-evaluation-harness's command line with the ``fairprune`` model type added.

``fairprune lm-eval run --model fairprune --model_args pretrained=runs/fair-smollm2 --tasks lambada_openai``
evaluates a pruned directory whose layers have different widths, which ``lm_eval --model hf`` cannot load
(``AutoModelForCausalLM.from_pretrained`` refuses them: ``config.intermediate_size`` holds one width). The
``fairprune`` model type is lm_eval's own ``HFLM`` given the model ``fairprune.load_pretrained`` rebuilt, so
tokenisation, batching and scoring are exactly lm_eval's; lm-evaluation-harness is the ``lm_eval`` extra.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..core.contract.errors import FairpruneError

logger = logging.getLogger(__name__)

#: the name given to ``--model``
MODEL_NAME = "fairprune"


def register() -> type:
    """Register (once) and return the lm_eval ``LM`` class ``fairprune``; ``FairpruneError`` naming the extra
    when lm-evaluation-harness or its ``HFLM`` cannot be imported."""
    try:
        from lm_eval.api.registry import get_model, register_model
        from lm_eval.models.huggingface import HFLM
    except ImportError as exc:
        raise FairpruneError(f"the lm_eval model type needs lm-evaluation-harness: pip install 'fairprune[lm_eval]' "
                             f"({exc})") from exc
    try:
        return get_model(MODEL_NAME)
    except ValueError:
        pass

    class FairpruneLM(HFLM):
        """``HFLM`` over a fairprune directory: ``--model_args pretrained=DIR`` (any width layout); other
        ``HFLM`` arguments (``batch_size``, ``max_length``...) pass through."""

        def __init__(self, pretrained: str, **kwargs: Any) -> None:
            from ..core.io.persist import load_pretrained

            model, tokenizer = load_pretrained(pretrained)
            kwargs.pop("tokenizer", None)
            super().__init__(pretrained=model.eval(), tokenizer=tokenizer, **kwargs)

    register_model(MODEL_NAME)(FairpruneLM)
    return FairpruneLM



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
    register()
    from lm_eval._cli import HarnessCLI  # lm_eval's own parser reads sys.argv

    saved = sys.argv
    sys.argv = ["lm-eval", *args.lm_eval_args]
    try:
        cli = HarnessCLI()
        cli.execute(cli.parse_args())
    except FairpruneError:  # fairprune's own errors (loading the directory) say what they are already
        raise
    except ValueError as exc:  # lm_eval's refusals (unknown tasks, bad model_args) are ValueErrors: one line
        logger.debug("lm_eval raised", exc_info=True)
        raise FairpruneError(f"lm-eval: {' '.join(str(exc).split())}") from None
    finally:
        sys.argv = saved
    return 0
