"""The long-range cloze check: a round check on passages whose last word needs the whole passage.

Why: perplexity on running text (the calibration check) does not see a cost that LAMBADA sees. Over seven
saved SmolLM2 plans whose LAMBADA-1000 perplexity rose by +1.4% to +16.9%, the calibration text's change
ranked them with Spearman's rho +0.32, while the last word of 120 passages in LAMBADA's form (a few sentences
of fiction whose last word is guessable from the passage, not from its last sentence alone; written for
fairprune, ``data/cloze/long_range_passages.jsonl``) ranked them at +0.79 (benchmarks/RESULTS.md, "which
capability check sees LAMBADA"). Objectives read at several positions (``method.positions``) remove neurons
that carry an earlier word to a later prediction, which is what such passages test.

Every round, with its neurons ablated, the per-token perplexity of the passages' last words is measured; a
round is halved (its lowest-ranked half dropped) until the rise over the unpruned model is at most
``max_increase_pct``, or rejected. Every measurement is recorded for ``plan.json``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.jsonl_texts import read_jsonl_texts
from ..model.lm_scoring import pad_id, score_continuations, word_requests
from . import attribution as attr

logger = logging.getLogger(__name__)

#: the bundled passages (written for fairprune; not LAMBADA's)
BUNDLED_PASSAGES = Path(__file__).resolve().parents[2] / "data" / "cloze" / "long_range_passages.jsonl"


@dataclass
class ClozeCheck:
    """Last-word perplexity of passages, measured with neurons ablated (see the module docstring).

    ``requests`` are ``(context_ids, last_word_ids)`` pairs; ``base_nll`` is the
    unpruned model's mean NLL per last-word token (nats), set by ``measure_base``.
    """

    requests: list[tuple[list[int], list[int]]]
    max_increase_pct: float
    pad: int
    batch_size: int = 16
    source: str = ""
    base_nll: float | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)

    def nll(self, model: torch.nn.Module, adapter: Any, removed: Mapping[int, Sequence[int]] | None = None,
            fill: Any = None) -> float:
        """Mean NLL per last-word token (nats) with ``removed`` ablated to ``fill`` (None: zero)."""
        with torch.no_grad(), attr.neuron_hooks(model, adapter, removed, fill):
            scores = score_continuations(model, self.requests, batch_size=self.batch_size, pad=self.pad)
        return sum(s.nll for s in scores) / sum(s.n_tokens for s in scores)

    def measure_base(self, model: torch.nn.Module, adapter: Any) -> float:
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
        it ablated, is within ``max_increase_pct``, and that rise (percent); ``([], None)`` when none is."""
        while add:
            rise = self.increase_pct(self.nll(model, adapter, attr.merged_removed(removed, add), fill))
            self.checks.append({"neurons": len(add), "increase_pct": rise, "kept": rise <= self.max_increase_pct})
            if rise <= self.max_increase_pct:
                return add, rise
            logger.info("cloze check: %d neurons raise last-word perplexity by %.2f%% (> %.2f%%); halving",
                        len(add), rise, self.max_increase_pct)
            add = add[:len(add) // 2]
        return [], None

    def record(self) -> dict[str, Any]:
        """What ``plan.json`` keeps: the passages, the limit, the base and every measurement."""
        return {"passages": self.source, "n_passages": len(self.requests), "max_increase_pct": self.max_increase_pct,
                "base_nll": self.base_nll, "checks": list(self.checks)}


def read_passages(path: str | Path) -> list[str]:
    """The ``text`` of every non-empty line of a JSONL file; ``ConfigError`` naming the file and line."""
    return read_jsonl_texts(path, what="method.cloze_check.passages")


def cloze_check(tokenizer: Any, *, passages: str | Path | None, max_increase_pct: float,
                batch_size: int = 16) -> ClozeCheck:
    """A ``ClozeCheck`` on ``passages`` (a JSONL of ``{"text": ...}``; None: the bundled ones);
    ``ConfigError`` on a missing or malformed file. Call ``measure_base`` on the unpruned model before use."""
    path = Path(passages) if passages is not None else BUNDLED_PASSAGES
    requests = word_requests(tokenizer, read_passages(path))
    return ClozeCheck(requests, max_increase_pct, pad_id(tokenizer), batch_size,
                      source="bundled" if passages is None else str(path))
