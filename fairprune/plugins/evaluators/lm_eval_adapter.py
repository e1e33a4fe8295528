"""An lm-evaluation-harness ``LM`` backed by fairprune's batched scorer, for when ``HFLM`` cannot be used.

lm_eval's ``HFLM`` needs the ``accelerate`` package; this adapter needs only
lm_eval itself. lm_eval's ``TemplateLM`` does the context/continuation
tokenization exactly as for ``HFLM``; scoring goes through
``lm_scoring.score_continuations`` (left-padded batches, LM head on scored positions only).
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import TemplateLM

from ...core.model.lm_scoring import pad_id, score_continuations, window_requests


class ScoringLM(TemplateLM):
    """Log-likelihood requests for an in-memory causal LM; generation is not supported."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16, max_length: int | None = None) -> None:
        super().__init__()
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.max_length = max_length or int(getattr(model.config, "max_position_embeddings", 2048) or 2048)

    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return int(eos) if eos is not None else pad_id(self.tokenizer)

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return int(bos) if bos is not None else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        special = True if add_special_tokens is None else add_special_tokens
        return list(self.tokenizer(string, add_special_tokens=special)["input_ids"])

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        pairs = [(context, continuation) for _, context, continuation in requests]
        scores = score_continuations(self.model, pairs, self.batch_size, pad_id(self.tokenizer), self.max_length,
                                     progress=not disable_tqdm, desc="lm_eval loglikelihood")
        return [(s.logprob, s.greedy) for s in scores]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for request in requests:
            ids = [self.prefix_token_id] + self.tok_encode(request.args[0], add_special_tokens=False)
            windows = window_requests(ids, self.max_length, self.max_length)
            scores = score_continuations(self.model, windows, self.batch_size, pad_id(self.tokenizer), self.max_length)
            out.append(sum(s.logprob for s in scores))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError("fairprune's lm_eval adapter scores log-likelihoods only; generation tasks need "
                                  "lm_eval's HFLM (install accelerate)")
