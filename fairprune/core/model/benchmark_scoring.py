"""Log-probabilities of whole sentences and of answer choices, batched, for the benchmark evaluators.

A causal LM gives no probability to a sequence's first token unless something
comes before it. Sentences are therefore conditioned on the tokenizer's BOS
token when it has one; else on its EOS token (the document separator GPT-2-style
models are trained with, as lm-evaluation-harness does); a tokenizer with
neither leaves the first token of each sentence unscored, so two sentences that
differ only in their first token then score the same (``sentence_prefix``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice


from .lm_scoring import encode, pad_id, score_continuations


@dataclass(frozen=True)
class Scored:
    """Summed log-probability (nats) of a text's scored tokens, and how many tokens were scored."""

    logprob: float
    n_tokens: int

    def value(self, per_token: bool) -> float:
        """The summed log-probability, or its mean per scored token."""
        return self.logprob / self.n_tokens if per_token else self.logprob


def sentence_prefix(tokenizer) -> list[int]:
    """The token every sentence is conditioned on: ``[bos]``, else ``[eos]``, else nothing."""
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return [value]
    return []


def sentence_logprobs(model, tokenizer, sentences: Sequence[str], batch_size: int = 16, progress: bool = False,
                      desc: str = "sentences") -> list[Scored]:
    """log p(sentence) of each sentence: every token given the ones before it and the prefix token.

    Returns one ``Scored`` per sentence (summed nats, scored token count).
    Raises ``ValueError`` for a sentence with nothing to score.
    """
    prefix = sentence_prefix(tokenizer)
    requests = []
    for text in sentences:
        ids = encode(tokenizer, text, special=False)
        context, target = (prefix, ids) if prefix else (ids[:1], ids[1:])
        if not target:
            raise ValueError(f"nothing to score in the sentence {text[:60]!r}")
        requests.append((context, target))
    scores = score_continuations(model, requests, batch_size, pad_id(tokenizer), progress=progress, desc=desc)
    return [Scored(s.logprob, s.n_tokens) for s in scores]


def choice_logprobs(model, tokenizer, prompts: Sequence[str], choices: Sequence[Sequence[str]],
                    batch_size: int = 16, progress: bool = False, desc: str = "choices") -> list[list[Scored]]:
    """log p(choice | prompt) for each prompt's choices; a choice is scored as ``" " + choice`` after the prompt.

    The prompt is conditioned on the sentence prefix (BOS, else EOS). Returns one
    list of ``Scored`` per prompt, in the order of its choices. The requests go to
    ``lm_scoring.score_continuations``, which runs a prompt shared by short choices
    once and continues each choice from its key/value cache (BBQ's three short
    answers then cost one prompt, not three). Raises ``ValueError`` when a choice
    encodes to no tokens.
    """
    prefix = sentence_prefix(tokenizer)
    requests, counts = [], []
    for prompt, options in zip(prompts, choices, strict=True):
        context = prefix + encode(tokenizer, prompt, special=False)
        encoded = [encode(tokenizer, " " + option.strip(), special=False) for option in options]
        if not context or not all(encoded):
            raise ValueError(f"nothing to score for a choice of {prompt[:60]!r}")
        requests.extend((context, target) for target in encoded)
        counts.append(len(encoded))
    scores = iter(score_continuations(model, requests, batch_size, pad_id(tokenizer), progress=progress, desc=desc))
    return [[Scored(s.logprob, s.n_tokens) for s in islice(scores, n)] for n in counts]

