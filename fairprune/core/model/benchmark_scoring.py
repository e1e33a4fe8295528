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

import torch
from tqdm.auto import tqdm

from .lm_scoring import (
    LOGITS_BUDGET,
    _accepts_logits_to_keep,
    _vocab_size,
    cache_argument,
    contiguous_head,
    encode,
    length_batches,
    pad_id,
    score_continuations,
)


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
    list of ``Scored`` per prompt, in the order of its choices. A model that takes
    a key/value cache (every Hugging Face causal LM) runs each prompt once and
    continues every choice from its cache (``_shared_prompt_scores``); any other
    model scores each prompt + choice sequence whole. Raises ``ValueError`` when a
    choice encodes to no tokens.
    """
    prefix = sentence_prefix(tokenizer)
    contexts, targets = [], []
    for prompt, options in zip(prompts, choices, strict=True):
        context = prefix + encode(tokenizer, prompt, special=False)
        encoded = [encode(tokenizer, " " + option.strip(), special=False) for option in options]
        if not context or not all(encoded):
            raise ValueError(f"nothing to score for a choice of {prompt[:60]!r}")
        contexts.append(context)
        targets.append(encoded)
    if _takes_cache(model):
        try:
            return _shared_prompt_scores(model, contexts, targets, batch_size, pad_id(tokenizer), progress, desc)
        except _NoCache:
            pass  # the model takes a cache argument but returns none: score each sequence whole
    requests = [(context, target) for context, options in zip(contexts, targets) for target in options]
    scores = iter(score_continuations(model, requests, batch_size, pad_id(tokenizer), progress=progress, desc=desc))
    return [[Scored(s.logprob, s.n_tokens) for s in islice(scores, len(options))] for options in targets]


class _NoCache(Exception):
    """A model's forward returned no key/value cache to continue from."""


def _takes_cache(model) -> bool:
    return cache_argument(model) is not None


def _shared_prompt_scores(model, contexts: list[list[int]], targets: list[list[list[int]]], batch_size: int,
                          pad: int, progress: bool, desc: str) -> list[list[Scored]]:
    """Choice scores with each prompt run once: BBQ's three short answers then cost one prompt, not three.

    Under ``distributed.sharing`` each process runs a contiguous share of the batches; every process gets
    every prompt's scores. ``_NoCache`` (in every process) when the model returned no cache in any of them.
    """
    from .distributed import map_shared, shows_progress

    vocab = _vocab_size(model)
    batches = list(length_batches([len(c) for c in contexts], batch_size))
    show = shows_progress(progress)

    def score_share(mine: range) -> list[tuple[int, list[Scored]] | None]:
        out: list[tuple[int, list[Scored]] | None] = []
        try:
            for k in tqdm(mine, desc=desc, disable=not show, leave=False):
                batch = batches[k]
                # the choices' logits ([prompts x choices, longest choice, vocab]) stay within the scoring budget
                cells = max(len(options) * max(len(t) for t in options) for options in (targets[i] for i in batch))
                rows = max(1, LOGITS_BUDGET // (cells * vocab)) if vocab else len(batch)
                for start in range(0, len(batch), rows):
                    part = batch[start:start + rows]
                    out.extend(zip(part, _score_batch(model, [contexts[i] for i in part],
                                                      [targets[i] for i in part], pad)))
        except _NoCache:
            return [None]  # told to every process, which then all score each sequence whole
        return out

    scored = map_shared(len(batches), score_share)
    if any(item is None for item in scored):
        raise _NoCache
    result: list[list[Scored]] = [[] for _ in contexts]
    for i, scores in scored:  # type: ignore[misc]
        result[i] = scores
    return result


@torch.no_grad()
def _score_batch(model, contexts: list[list[int]], targets: list[list[list[int]]], pad: int) -> list[list[Scored]]:
    """Left-padded prompts with a cache, then their choices right-padded after it, one row per choice."""
    device = next(model.parameters()).device
    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for row, context in enumerate(contexts):
        ids[row, width - len(context):] = torch.as_tensor(context)
        mask[row, width - len(context):] = 1
    keep = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}  # the LM head on the last position only
    with contiguous_head(model):  # one matmul over the last positions, not a batch-expanded one
        first = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                      position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device), use_cache=True, **keep)
    # predicts each choice's first token
    first_lp = torch.log_softmax(first.logits[:, -1, :], dim=-1, dtype=torch.float32)
    owner = torch.as_tensor([row for row, options in enumerate(targets) for _ in options])
    flat = [target for options in targets for target in options]
    argument = cache_argument(model)
    cache = first.get(argument) if hasattr(first, "get") else None
    if not hasattr(cache, "batch_select_indices"):
        raise _NoCache
    cache.batch_select_indices(owner)  # one copy of the prompt's cache per choice (a CPU index suits any device)
    length = max(len(t) for t in flat)
    cids = torch.full((len(flat), length), pad, dtype=torch.long)
    cmask = torch.zeros((len(flat), length), dtype=torch.long)
    for row, target in enumerate(flat):
        cids[row, :len(target)] = torch.as_tensor(target)
        cmask[row, :len(target)] = 1
    positions = mask.sum(-1)[owner][:, None] + torch.arange(length)[None, :]
    second = model(input_ids=cids.to(device), attention_mask=torch.cat([mask[owner], cmask], 1).to(device),
                   position_ids=positions.to(device), use_cache=True, **{argument: cache})
    # one float32 copy (the log-softmax of the model-dtype logits); position i predicts token i + 1
    lp = torch.log_softmax(second.logits[:, :-1, :], dim=-1, dtype=torch.float32).cpu()
    later = lp.gather(2, cids[:, 1:, None]).squeeze(-1)
    later = torch.where(cmask[:, 1:].bool(), later, torch.zeros((), dtype=later.dtype))  # padded rows may be NaN
    totals = first_lp.cpu()[owner, cids[:, 0]] + later.sum(-1)
    scores = [Scored(float(t), len(target)) for t, target in zip(totals, flat)]
    it = iter(scores)
    return [list(islice(it, len(options))) for options in targets]
