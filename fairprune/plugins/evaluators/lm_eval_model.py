"""An lm-evaluation-harness model type ``fairprune`` that loads a fairprune directory, uneven widths included.

``lm_eval --model hf`` loads through ``AutoModelForCausalLM.from_pretrained``, which refuses a model whose layers
end with different MLP widths (``config.intermediate_size`` holds one). The ``fairprune`` model type is lm_eval's
own ``HFLM`` given the model that ``fairprune.load_pretrained`` rebuilt, so tokenisation, batching and scoring
are exactly lm_eval's. ``register()`` adds it to lm_eval's model registry (``fairprune lm-eval`` calls it before
handing its arguments to lm_eval's command line); lm-evaluation-harness is the optional ``lm_eval`` extra.
"""

from __future__ import annotations

from typing import Any

from ...core.errors import FairpruneError

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
            from ...core.persist import load_pretrained

            model, tokenizer = load_pretrained(pretrained)
            kwargs.pop("tokenizer", None)
            super().__init__(pretrained=model.eval(), tokenizer=tokenizer, **kwargs)

    register_model(MODEL_NAME)(FairpruneLM)
    return FairpruneLM
