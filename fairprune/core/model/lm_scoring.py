"""Batched language-model scoring shared by the evaluators: next-token distributions and continuation log-probs.

Batches are left-padded with explicit position ids, so every sequence ends at the
last column and the LM head only runs on the few positions that are scored
(``logits_to_keep``). Requests are sorted by length to keep padding small.
Continuations that share a context (answer words after one prompt) run the
context once and continue from its key/value cache (``score_continuations``).
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContinuationScore:
    """Log-likelihood of a continuation: summed NLL (nats), its token count, and whether greedy decoding gets it all."""

    nll: float
    n_tokens: int
    greedy: bool

    @property
    def logprob(self) -> float:
        return -self.nll


#: logits one scoring forward may produce (2**25: 64 MiB in bfloat16, 128 MiB in float32): with a 128k
#: vocabulary about 260 positions
LOGITS_BUDGET = 2**25

#: rows one forward may continue from a shared context's cache, in multiples of the batch size: the copies of the
#: context rows then hold at most this many times the key/value positions of a pass over ``batch_size`` contexts
#: (on a CPU a forward of a few rows costs about as much as one of many: reading the weights dominates)
CONTINUATION_ROWS = 4

#: positions whose float32 log-probabilities exist at once while a continuation is scored (4 MiB at a 128k
#: vocabulary; the log-softmax's temporaries are ~3x that): the logits stay in the model's dtype, one chunk of
#: positions is widened at a time
SCORE_POSITIONS = 8


def encode(tokenizer, text: str, special: bool = True) -> list[int]:
    """Token ids of ``text``; ``special`` adds the tokenizer's special tokens (e.g. BOS)."""
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def pad_id(tokenizer) -> int:
    """A valid token id for padding (masked out anyway): pad, else eos, else 0."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
        if isinstance(value, (list, tuple)) and value:
            return int(value[0])
    return 0


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    """The output head's input made contiguous: with ``logits_to_keep`` it is a strided slice of the last
    positions, for which torch multiplies by a batch-expanded vocabulary matrix (bmm); contiguous, it is one
    plain matmul over the kept positions only, with the same values up to rounding."""
    return (args[0].contiguous(), *args[1:])


@contextmanager
def contiguous_head(model: nn.Module) -> Iterator[None]:
    """Within the block, the model's output head (``get_output_embeddings``) gets a contiguous input, so it runs
    as one matmul over the positions ``logits_to_keep`` keeps; the hook is removed in ``finally``. A model
    without an output head is left alone."""
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    handle = head.register_forward_pre_hook(_contiguous_input) if isinstance(head, nn.Module) else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def forward_left_padded(model: nn.Module, sequences: Sequence[Sequence[int]], keep: int, pad: int,
                        widen: bool = True) -> torch.Tensor:
    """Logits ``[B, keep, vocab]`` of the last ``keep`` positions of each left-padded sequence: float32 with
    ``widen``, else in the model's dtype.

    Inputs go to the device of the model's input embeddings (any device map).
    Raises ``NonFiniteError`` naming the first layer whose output is NaN/inf.
    """
    from .devices import check_finite_logits, input_device

    device = input_device(model)
    ids, mask = _left_padded(sequences, pad)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
              "position_ids": position_ids.to(device), "use_cache": False}
    kwargs = {"logits_to_keep": keep} if _accepts_logits_to_keep(model) else {}
    with contiguous_head(model):
        logits = model(**inputs, **kwargs).logits[:, -keep:, :]
    check_finite_logits(model, logits, inputs)
    return logits.float() if widen else logits


@torch.no_grad()
def last_token_logprobs(model: nn.Module, tokenizer, prompts: Sequence[str], batch_size: int = 16,
                        progress: bool = False, desc: str = "next-token") -> torch.Tensor:
    """Log-softmax of the next-token distribution after each prompt: float32 ``[n_prompts, vocab]`` on the CPU.

    Under ``distributed.sharing`` each process scores a contiguous share of the batches and every process
    gets the whole table (the same values: each batch is the one a single process would run); the gather then
    holds up to about three tables at once, against one in a single process.
    """
    from .distributed import map_shared_rows, sharing_world, shows_progress

    encoded = [encode(tokenizer, p) for p in prompts]
    if any(len(e) == 0 for e in encoded):
        raise ValueError("cannot score an empty prompt")
    pad = pad_id(tokenizer)
    batches = list(length_batches([len(e) for e in encoded], batch_size))
    show = shows_progress(progress)

    def batch_logprobs(batch: list[int]) -> torch.Tensor:
        logits = forward_left_padded(model, [encoded[i] for i in batch], 1, pad, widen=False)[:, -1, :]
        return torch.log_softmax(logits, dim=-1, dtype=torch.float32).cpu()

    if sharing_world() is None:  # one process: fill the table in place, no second [n_prompts, vocab] copy
        out: torch.Tensor | None = None
        for batch in tqdm(batches, desc=desc, disable=not show, leave=False):
            logprobs = batch_logprobs(batch)
            if out is None:
                out = torch.empty(len(encoded), logprobs.shape[-1], dtype=torch.float32)
            out[torch.as_tensor(batch)] = logprobs
        return out  # type: ignore[return-value]

    def share_rows(mine: range) -> torch.Tensor | None:
        rows = [batch_logprobs(batches[k]) for k in tqdm(mine, desc=desc, disable=not show, leave=False)]
        return torch.cat(rows) if rows else None

    gathered = map_shared_rows(len(batches), share_rows)  # rows in batch order
    if gathered is None:
        return None  # type: ignore[return-value]  # no prompt, as in one process
    out = torch.empty_like(gathered)
    out[torch.as_tensor([i for batch in batches for i in batch], dtype=torch.long)] = gathered
    return out


@torch.no_grad()
def score_continuations(model: nn.Module, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                        batch_size: int = 16, pad: int = 0, max_length: int | None = None,
                        progress: bool = False, desc: str = "scoring") -> list[ContinuationScore]:
    """NLL (nats) of each ``(context_ids, target_ids)`` request's target given its context: one
    ``ContinuationScore`` per request, in request order.

    Requests whose context others share run that context once (``shared_context_groups``): a forward over
    the contexts, ``batch_size`` at a time, returns their key/value cache, and each request then runs only its
    own target tokens on a copy of its context's rows (``CONTINUATION_ROWS * batch_size`` rows per forward).
    Every other request is scored as one sequence ``context + target``, ``batch_size`` sequences per forward.
    Both give the same figures up to float rounding (tested within 1e-4 nats). A model whose forward takes no
    cache argument (``cache_argument``), or returns no cache with a ``batch_select_indices`` method (a
    transformers ``DynamicCache``), scores every request whole.

    Sequences longer than ``max_length`` lose tokens from the left of the context (and are scored whole).
    Under ``distributed.sharing`` each process scores a contiguous share of the batches and every process gets
    every request's score, in request order. Raises ``ValueError`` for an empty target, a request with no
    context token, or a target longer than ``max_length``.
    """
    from .distributed import map_shared, shows_progress

    seqs: list[list[int]] = []
    for context, target in requests:
        if not target:
            raise ValueError("a continuation must have at least one token")
        seq = list(context) + list(target)
        if len(seq) < 2 or len(target) >= len(seq):
            raise ValueError("a continuation needs at least one context token before it")
        if max_length is not None and len(seq) > max_length:
            if len(target) >= max_length:
                raise ValueError(f"a continuation of {len(target)} tokens does not fit max_length={max_length}")
            seq = seq[-max_length:]
        seqs.append(seq)
    untruncated = [i for i, (s, (c, t)) in enumerate(zip(seqs, requests)) if len(s) == len(c) + len(t)]
    argument = cache_argument(model)
    groups = shared_context_groups(requests, untruncated) if argument else []
    cached = {i for group in groups for i in group}
    alone = [i for i in range(len(seqs)) if i not in cached]
    # a work unit: ("whole", request indices) or ("cached", one list of request indices per context)
    units: list[tuple[str, list]] = [("whole", [alone[j] for j in batch])
                                     for batch in length_batches([len(seqs[i]) for i in alone], batch_size)]
    by_length = sorted(groups, key=lambda group: -len(requests[group[0]][0]))
    vocab = _vocab_size(model)
    contexts_per_pass = min(batch_size, max(1, LOGITS_BUDGET // vocab)) if vocab else batch_size  # one logit row each
    units += [("cached", by_length[k:k + contexts_per_pass]) for k in range(0, len(by_length), contexts_per_pass)]
    show = shows_progress(progress)
    targets = [list(target) for _, target in requests]

    def score_share(mine: range) -> list[tuple[int, ContinuationScore]]:
        out: list[tuple[int, ContinuationScore]] = []
        for k in tqdm(mine, desc=desc, disable=not show, leave=False):
            kind, items = units[k]
            scored = None
            if kind == "cached":
                scored = _score_from_context_cache(model, seqs, targets, items, argument, batch_size, pad, vocab)
                if scored is None:  # the model returned no cache: these requests are scored whole
                    logger.debug("the model returned no key/value cache; scoring %d requests whole",
                                 sum(len(group) for group in items))
                    flat = [i for group in items for i in group]
                    scored = [pair for batch in length_batches([len(seqs[i]) for i in flat], batch_size)
                              for pair in _score_whole(model, seqs, targets, [flat[j] for j in batch], pad, vocab)]
            else:
                scored = list(_score_whole(model, seqs, targets, items, pad, vocab))
            out.extend(scored)
        return out

    results: list[ContinuationScore | None] = [None] * len(seqs)
    for i, score in map_shared(len(units), score_share):
        results[i] = score
    return results  # type: ignore[return-value]


def _score_whole(model: nn.Module, seqs: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                 batch: list[int], pad: int, vocab: int | None) -> Iterator[tuple[int, ContinuationScore]]:
    """``(index, score)`` of the requests ``batch`` (indices into ``seqs``, each sequence ending with its
    target ``targets[i]``), the sequences run whole and left-padded."""
    most = max(len(targets[i]) for i in batch) + 1
    rows = max(1, LOGITS_BUDGET // (most * vocab)) if vocab else len(batch)
    for start in range(0, len(batch), rows):  # a large vocabulary scores fewer sequences per forward
        part = batch[start:start + rows]
        # the positions kept are the part's own: a part of shorter sequences (sorted longest first) may be
        # narrower than the longest target of the whole batch
        keep = max(len(targets[i]) for i in part) + 1
        logits = forward_left_padded(model, [seqs[i] for i in part], keep, pad, widen=False)
        if logits.shape[1] != keep:
            raise RuntimeError(f"the model returned {logits.shape[1]} positions of logits, not the {keep} asked")
        for row, i in enumerate(part):
            n = len(targets[i])
            yield i, _continuation_score(logits[row, keep - 1 - n:keep - 1, :], targets[i])


def _continuation_score(logits: torch.Tensor, target: Sequence[int]) -> ContinuationScore:
    """The score of ``target`` from the logits ``[len(target), vocab]`` that predict its tokens."""
    ids = torch.as_tensor(list(target), dtype=torch.long, device=logits.device)
    logprob, hit = target_logprobs(logits, ids)
    return ContinuationScore(nll=float(-logprob.sum().item()), n_tokens=int(ids.numel()),
                             greedy=bool(hit.all().item()))


def cache_argument(model: nn.Module) -> str | None:
    """The name under which ``model.forward`` takes a key/value cache (``cache`` in transformers 5,
    ``past_key_values`` before), or None."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def shared_context_groups(requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                          candidates: Sequence[int]) -> list[list[int]]:
    """The requests (indices among ``candidates``, in order) grouped by identical context, for each context
    worth running once: shared by m >= 2 requests whose targets together are no longer than the
    ``(m - 1) * len(context)`` positions that running it once saves. A context of one token shared by long
    targets (whole sentences after BOS) is not worth it, a prompt shared by a few answer words is."""
    by_context: dict[tuple[int, ...], list[int]] = {}
    for i in candidates:
        by_context.setdefault(tuple(requests[i][0]), []).append(i)
    return [group for context, group in by_context.items()
            if len(group) >= 2 and sum(len(requests[i][1]) for i in group) <= (len(group) - 1) * len(context)]


def _score_from_context_cache(model: nn.Module, seqs: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                              groups: list[list[int]], argument: str, batch_size: int, pad: int,
                              vocab: int | None) -> list[tuple[int, ContinuationScore]] | None:
    """``(index, score)`` of the requests of ``groups`` (indices into ``seqs``, each group sharing one
    context: ``seqs[i]`` is that context followed by ``targets[i]``).

    The contexts run once, left-padded, returning their key/value cache and the logits of their last position
    (which predict each target's first token). The targets' other tokens then run after a copy of their
    context's cache rows, right-padded: the attention mask covers the padded context and the target, the
    position ids go on from each context's length; ``CONTINUATION_ROWS * batch_size`` rows per forward, fewer
    when their logits would pass ``LOGITS_BUDGET``. None when the model returned no cache (nothing is scored then).
    Raises ``NonFiniteError`` naming the first layer whose output is NaN/inf (a non-finite continuation is
    scored whole, which names it).
    """
    from .devices import all_finite, check_finite_logits, input_device

    device = input_device(model)
    owner = {i: row for row, group in enumerate(groups) for i in group}
    contexts = [seqs[group[0]][:len(seqs[group[0]]) - len(targets[group[0]])] for group in groups]
    ids, mask = _left_padded(contexts, pad)
    inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
              "position_ids": (mask.cumsum(-1) - 1).clamp(min=0).to(device)}
    keep = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    with contiguous_head(model):
        output = model(**inputs, use_cache=True, **keep)
    first = output.logits[:, -1, :]  # [contexts, vocab], the model's dtype
    check_finite_logits(model, first, {**inputs, "use_cache": False})
    cache = output.get(argument) if hasattr(output, "get") else getattr(output, argument, None)
    if cache is None or not hasattr(cache, "batch_select_indices"):
        return None
    del output
    out = [(i, _continuation_score(first[owner[i]][None], targets[i]))
           for group in groups for i in group if len(targets[i]) == 1]
    longer = sorted((i for group in groups for i in group if len(targets[i]) > 1), key=lambda i: -len(targets[i]))
    start = 0
    while start < len(longer):
        width = len(targets[longer[start]]) - 1  # the part's longest: sorted longest first
        rows = CONTINUATION_ROWS * batch_size
        rows = min(rows, max(1, LOGITS_BUDGET // (width * vocab))) if vocab else rows
        part = longer[start:start + rows]
        start += len(part)
        index = torch.as_tensor([owner[i] for i in part], dtype=torch.long)
        # one copy of a context's cache rows per request; the last part may consume the contexts' own cache
        part_cache = cache if start >= len(longer) else copy.deepcopy(cache)
        part_cache.batch_select_indices(index)
        tids = torch.full((len(part), width), pad, dtype=torch.long)
        tmask = torch.zeros((len(part), width), dtype=torch.long)
        for row, i in enumerate(part):
            tids[row, :len(targets[i]) - 1] = torch.as_tensor(list(targets[i])[:-1], dtype=torch.long)
            tmask[row, :len(targets[i]) - 1] = 1
        positions = mask.sum(-1)[index][:, None] + torch.arange(width)[None, :]
        with contiguous_head(model):
            logits = model(input_ids=tids.to(device), attention_mask=torch.cat([mask[index], tmask], 1).to(device),
                           position_ids=positions.to(device), use_cache=True, **{argument: part_cache}).logits
        del part_cache
        later = [logits[row, :len(targets[i]) - 1] for row, i in enumerate(part)]  # right padding is not read
        if not all(all_finite(x) for x in later):
            out.extend(_score_whole(model, seqs, targets, part, pad, vocab))
            continue
        for row, i in enumerate(part):
            out.append((i, _continuation_score(torch.cat([first[owner[i]][None], later[row]]), targets[i])))
    return out


def _left_padded(sequences: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask, both ``Long[len(sequences), longest]`` on the CPU: each sequence at the
    right end of its row, ``pad`` (masked out, 0 in the mask) before it."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask


def target_logprobs(logits: torch.Tensor, target: torch.Tensor,
                    chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability (nats) of each target token, ``Tensor[n]``, and whether it is the most likely one,
    ``Bool[n]``, from ``logits`` ``[n, vocab]`` (any dtype).

    The log-softmax is computed in float32, ``chunk`` positions at a time (default
    ``SCORE_POSITIONS``), so only one chunk's float32 copy of a large vocabulary
    exists at once. The figures are those of a whole ``log_softmax(logits.float())``:
    each position's log-softmax is its own.
    """
    chunk = chunk or SCORE_POSITIONS
    logprob = torch.empty(target.numel(), dtype=torch.float32, device=logits.device)
    hit = torch.empty(target.numel(), dtype=torch.bool, device=logits.device)
    for start in range(0, target.numel(), chunk):
        part = slice(start, start + chunk)
        lp = torch.log_softmax(logits[part], dim=-1, dtype=torch.float32)
        logprob[part] = lp.gather(1, target[part, None])[:, 0]
        hit[part] = lp.argmax(-1) == target[part]
    return logprob, hit


def _vocab_size(model: nn.Module) -> int | None:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(head.weight.shape[0]) if head is not None and hasattr(head, "weight") else None


def word_requests(tokenizer, texts: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """LAMBADA-style requests: context = text up to the last space, target = ``" " + last word``."""
    requests = []
    for text in texts:
        context, sep, word = text.rstrip().rpartition(" ")
        if not sep or not word:
            raise ValueError(f"text has no last word after a space: {text[:60]!r}")
        requests.append((encode(tokenizer, context), encode(tokenizer, " " + word, special=False)))
    return requests


def window_requests(ids: Sequence[int], window: int, stride: int) -> list[tuple[list[int], list[int]]]:
    """Sliding windows over a token stream; each token after the first is scored exactly once.

    Window k covers ``ids[k*stride : k*stride + window]`` and scores the tokens not
    scored by earlier windows, with everything before them in the window as context.
    """
    if window < 2 or not 0 < stride <= window:
        raise ValueError(f"need window >= 2 and 0 < stride <= window, got window={window}, stride={stride}")
    requests = []
    scored_until = 1  # token 0 has no context
    begin = 0
    while scored_until < len(ids):
        end = min(begin + window, len(ids))
        start = max(scored_until, begin + 1)
        if end > start:
            requests.append((list(ids[begin:start]), list(ids[start:end])))
            scored_until = end
        begin += stride
    return requests


def perplexity(scores: Sequence[ContinuationScore], per: str = "token") -> float:
    """exp(mean NLL): per ``"token"`` (total NLL / total tokens) or per ``"word"`` (mean of per-request NLLs)."""
    if not scores:
        return math.nan
    if per == "token":
        return math.exp(sum(s.nll for s in scores) / sum(s.n_tokens for s in scores))
    if per == "word":
        return math.exp(sum(s.nll for s in scores) / len(scores))
    raise ValueError(f"per must be 'token' or 'word', got {per!r}")
