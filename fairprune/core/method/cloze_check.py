"""The name cloze check: a round check (and an optional guard) on passages whose last word is a name.

Why: perplexity on running text (the calibration check) does not see what several recipes cost on LAMBADA,
and neither do passages in LAMBADA's form in general: over saved SmolLM2 plans whose LAMBADA-1000 perplexity
rose by +0.5% to +16.9%, the calibration text's change ranked them with Spearman's rho +0.32 (7 plans) and
the last word of 400 passages written for fairprune (``benchmarks/data/long_range_passages.jsonl``) at +0.41
(10 plans). The plans that break LAMBADA remove the carrying of a person's name to where it is used again: on
the 336 bundled passages whose last word is a name met earlier in the passage (``data/cloze/name_passages.jsonl``,
written for fairprune) the three plans that cost LAMBADA +15-17% cost +16-21%, and no other of 14 plans more
than +10%. Below that the passages do not rank plans as LAMBADA does (rho +0.52 on the 300 written after the
finding), so the check is a guard against the large failures, not a LAMBADA estimate
(benchmarks/RESULTS.md, "passages that end in a name").

Every round, with its neurons ablated, the per-token perplexity of the passages' last words is measured; a
round is halved (its lowest-ranked half dropped) until the rise over the unpruned model is at most
``max_increase_pct``, or rejected. With ``guard_fraction`` the neurons whose removal is estimated (first
order, ``cost``) to raise that loss most are never removed; the unpruned model's last-word NLL is then read
from that pass's forwards. With ``check_rows`` the measured check reads only those passages (a seeded sample)
while the guard reads them all: the check is there to catch large failures (+15% and more), which a sample
shows as well, and its forwards were the larger part of a selection's time. Every measurement is recorded for
``plan.json``.
With a ``world`` (torchrun; selection sets it) the guard's batches and every check's batches are shared among
the processes and the per-batch figures gathered and summed in batch order, so every process reaches the
one-process figures bit for bit at a share of the cost.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..contract.errors import ConfigError
from ..data.benchmark_files import sample_indices
from ..data.jsonl_texts import read_jsonl_texts
from ..model.distributed import share, sharing
from ..model.lm_scoring import pad_id, score_continuations, word_requests
from . import attribution as attr
from .collect import _batches, input_device
from .precision import forward

logger = logging.getLogger(__name__)

#: the bundled passages: each ends with a name it used before (written for fairprune; not LAMBADA's)
BUNDLED_PASSAGES = Path(__file__).resolve().parents[2] / "data" / "cloze" / "name_passages.jsonl"


@dataclass
class ClozeCheck:
    """Last-word perplexity of passages, measured with neurons ablated (see the module docstring).

    ``requests`` are ``(context_ids, last_word_ids)`` pairs; ``check_rows`` the indices of those the measured
    check reads (None: all); ``base_nll`` is the unpruned model's mean NLL per last-word token (nats) over
    them, set by ``measure_base`` or ``guard``.
    """

    requests: list[tuple[list[int], list[int]]]
    max_increase_pct: float | None
    pad: int
    batch_size: int = 16
    source: str = ""
    guard_fraction: float = 0.0
    base_nll: float | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    world: Any = None  # a distributed.World whose processes share every pass (all must call), or None
    check_rows: list[int] | None = None
    check_source: str = ""

    def checked_indices(self) -> Sequence[int]:
        """The indices of the requests the measured check reads, in file order."""
        return range(len(self.requests)) if self.check_rows is None else self.check_rows

    def checked(self) -> list[tuple[list[int], list[int]]]:
        """The requests the measured check reads, in file order."""
        return [self.requests[i] for i in self.checked_indices()]

    def nll(self, model: torch.nn.Module, adapter: Any, removed: Mapping[int, Sequence[int]] | None = None,
            fill: Any = None) -> float:
        """Mean NLL per last-word token (nats) of the checked requests with ``removed`` ablated to ``fill`` (None:
        zero)."""
        # every process gets every request's score, in request order: the sums are the one-process sums
        with torch.no_grad(), attr.neuron_hooks(model, adapter, removed, fill), sharing(self.world):
            scores = score_continuations(model, self.checked(), batch_size=self.batch_size, pad=self.pad)
        return sum(s.nll for s in scores) / sum(s.n_tokens for s in scores)

    def measure_base(self, model: torch.nn.Module, adapter: Any) -> float:
        """Set and return ``base_nll``, the unpruned model's mean NLL per last-word token (nats)."""
        self.base_nll = self.nll(model, adapter)
        return self.base_nll

    def increase_pct(self, nll: float) -> float:
        """Rise of the last-word perplexity over the unpruned model's, in percent."""
        if self.base_nll is None:
            raise RuntimeError("ClozeCheck.measure_base must run before a round is checked")
        return 100.0 * (math.exp(nll - self.base_nll) - 1.0)

    def fit(self, model: torch.nn.Module, adapter: Any, removed: Mapping[int, Sequence[int]],
            add: list[tuple[int, int]], fill: Any = None) -> tuple[list[tuple[int, int]], float | None]:
        """The longest best-first half-prefix of ``add`` whose last-word perplexity rise, with ``removed`` and
        it ablated, is within ``max_increase_pct``, and that rise (percent); ``([], None)`` when none is.
        Without a limit ``add`` is returned unmeasured, with None."""
        if self.max_increase_pct is None:
            return add, None
        while add:
            rise = self.increase_pct(self.nll(model, adapter, attr.merged_removed(removed, add), fill))
            self.checks.append({"neurons": len(add), "increase_pct": rise, "kept": rise <= self.max_increase_pct})
            if rise <= self.max_increase_pct:
                return add, rise
            logger.info("cloze check: %d neurons raise last-word perplexity by %.2f%% (> %.2f%%); halving",
                        len(add), rise, self.max_increase_pct)
            add = add[:len(add) // 2]
        return [], None

    def cost(self, model: torch.nn.Module, adapter: Any, fill: Mapping[int, torch.Tensor] | None = None,
             removed: Mapping[int, Sequence[int]] | None = None) -> dict[int, torch.Tensor]:
        """Per layer ``Tensor[width]``: the first-order change of the mean last-word NLL per token (nats) when
        each neuron is removed (set to ``fill``; None = zero), Σ (r − h)·∂L/∂h over every position, from one
        forward and backward per batch of passages with ``removed`` ablated. Positive: removal raises it."""
        return self.cost_and_nll(model, adapter, fill, removed)[0]

    def guard(self, model: torch.nn.Module, adapter: Any,
              fill: Mapping[int, torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
        """``protected(cost(...))`` on the unpruned model; ``base_nll`` is set from the same forwards when unset
        (the cost pass reads every last-word log-probability, so measuring the base again would repeat it)."""
        cost, nll = self.cost_and_nll(model, adapter, fill)
        if self.base_nll is None:
            self.base_nll = nll
        return self.protected(cost)

    def cost_and_nll(self, model: torch.nn.Module, adapter: Any, fill: Mapping[int, torch.Tensor] | None = None,
                     removed: Mapping[int, Sequence[int]] | None = None) -> tuple[dict[int, torch.Tensor], float]:
        """``cost`` and the mean last-word NLL per token (nats) of the checked requests (``check_rows``), read
        from the same forwards, with ``removed`` ablated."""
        widths = attr.layer_widths(model, adapter)
        total = {layer: torch.zeros(width, dtype=torch.float64) for layer, width in widths}
        n_tokens = sum(len(target) for _, target in self.requests)
        ids = [list(context) + list(target) for context, target in self.requests]
        device = input_device(model)
        batches = list(_batches(ids, [0] * len(ids), self.batch_size, self.pad, "left"))
        mine: list[tuple[dict[int, torch.Tensor], float]] = []  # per batch of this process's share, in order
        with attr.stop_together(self.world), attr.frozen(model), \
                attr.neuron_hooks(model, adapter, removed, fill) as hooks:
            hooks.track = True
            for k in share(len(batches), self.world):
                batch = batches[k]
                hooks.kept = {}
                # left-padded, so every row's last word sits in the last positions: the output head runs on
                # those only (with Gemma's 262k-token vocabulary it costs more than the layers at every position)
                keep = 1 + max(len(self.requests[i][1]) for i in batch.rows)
                with torch.enable_grad():
                    logits = forward(model, input_ids=batch.input_ids.to(device),
                                     attention_mask=batch.mask.to(device).long(),
                                     position_ids=batch.content_pos.to(device), use_cache=False,
                                     logits_to_keep=keep).logits[:, -keep:]
                    loss = logits.new_zeros((), dtype=torch.float32)
                    row_nll = {}  # request index -> its last word's NLL (nats, summed over its tokens)
                    for r, i in enumerate(batch.rows):
                        target = self.requests[i][1]
                        at = torch.arange(keep - len(target) - 1, keep - 1, device=logits.device)
                        logprobs = torch.log_softmax(attr.wide(logits[r, at]), dim=-1)
                        word_nll = -logprobs[torch.arange(len(target)), torch.tensor(target)].sum()
                        row_nll[i] = float(word_nll.detach())
                        loss = loss + word_nll
                    layers = sorted(hooks.kept)
                    grads = torch.autograd.grad(loss / n_tokens, [hooks.kept[i] for i in layers], allow_unused=True)
                sums = {}
                for layer, grad in zip(layers, grads):
                    if grad is None:
                        continue
                    h = hooks.kept[layer].detach().float()
                    r = fill[layer].float().to(h.device) if fill is not None else torch.zeros(h.shape[-1], device=h.device)
                    sums[layer] = ((r - h) * grad.float()).sum((0, 1)).double().cpu()
                mine.append((sums, row_nll))
                hooks.kept = {}
        nll: dict[int, float] = {}
        for sums, row_nll in attr.gathered(mine, self.world):  # batch order, as one process adds them
            nll.update(row_nll)
            for layer, value in sums.items():
                total[layer] += value
        rows = self.checked_indices()
        checked_nll = sum(nll[i] for i in rows) / sum(len(self.requests[i][1]) for i in rows)
        return {layer: value.float() for layer, value in total.items()}, checked_nll

    def protected(self, cost: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Per layer ``Bool[width]``: the ``guard_fraction`` of neurons whose removal raises the last-word NLL
        most (only neurons with a positive estimate)."""
        return attr.top_positive(cost, self.guard_fraction)

    def record(self) -> dict[str, Any]:
        """What ``plan.json`` keeps: the passages, the guard, the limit, the base and every measurement."""
        return {"passages": self.source, "n_passages": len(self.requests), "guard_fraction": self.guard_fraction,
                "max_increase_pct": self.max_increase_pct, "checked_passages": len(self.checked()),
                "check_sample": self.check_source or None, "base_nll": self.base_nll, "checks": list(self.checks)}


def read_passages(path: str | Path) -> list[str]:
    """The ``text`` of every non-empty line of a JSONL file; ``ConfigError`` naming the file and line."""
    return read_jsonl_texts(path, what="method.cloze_check.passages")


def check_samples(n_passages: int, passages: str | Path | None, *, limit: int | None,
                  check_limit: int | None) -> None:
    """``ConfigError`` naming the field when ``limit`` or ``check_limit`` is not below the ``n_passages`` of
    ``passages`` (None: the bundled file): such a sample would sample nothing."""
    for key, value in (("limit", limit), ("check_limit", check_limit)):
        if value is not None and value >= n_passages:
            raise ConfigError(f"method.cloze_check.{key}: {value} is not below the {n_passages} passages of "
                              f"{'the bundled file' if passages is None else passages}, so it samples nothing; "
                              "lower it or remove it")


def cloze_check(tokenizer: Any, *, passages: str | Path | None, max_increase_pct: float | None,
                guard_fraction: float = 0.0, batch_size: int = 16, limit: int | None = None,
                sample_seed: int = 0, check_limit: int | None = None) -> ClozeCheck:
    """A ``ClozeCheck`` on ``passages`` (a JSONL of ``{"text": ...}``; None: the bundled ones), or on a seeded
    sample of ``limit`` of them (file order kept), whose measured check reads a seeded sample of ``check_limit``
    of those (None: all); ``ConfigError`` on a missing or malformed file. Call ``measure_base`` (or ``guard``)
    on the unpruned model before use."""
    path = Path(passages) if passages is not None else BUNDLED_PASSAGES
    texts = read_passages(path)
    source = "bundled" if passages is None else str(path)
    check_samples(len(texts), passages, limit=limit, check_limit=check_limit)
    if limit is not None:
        texts = [texts[i] for i in sample_indices(len(texts), limit, sample_seed)]
        source += f" (a sample of {limit}, seed {sample_seed})"
    check_rows, check_source = None, ""
    if check_limit is not None:
        check_rows = sample_indices(len(texts), check_limit, sample_seed)
        check_source = f"a sample of {check_limit}, seed {sample_seed}"
    return ClozeCheck(word_requests(tokenizer, texts), max_increase_pct, pad_id(tokenizer), batch_size,
                      source=source, guard_fraction=guard_fraction, check_rows=check_rows,
                      check_source=check_source)
