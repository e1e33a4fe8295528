"""The floor guard of the attribution method: never remove a neuron whose removal would mostly make the model deaf.

A neuron can lower the between-group next-token divergence in two ways: by making
the model treat the groups alike, or by making it hear the swapped word less. The
second lowers the divergence between two words for the *same* group (the
word-swap floor, "Black" vs "African American") by as large a share. The guard
reads both from one first-order estimate on the unpruned model, on the analysis
templates with every surface form of every group:

- ``B``: mean JS (nats) between the next-token distributions of members of
  different groups; ``W``: the same between two forms of one group;
- per neuron, ΔB_i and ΔW_i ≈ Σ (r_i − h_i)·∂/∂h_i, the estimated changes when it
  is removed (``r`` the fill: zero, or its mean for the compensated pruner);
- the relative change it is allowed: ``ΔB_i / B − min(ΔW_i, 0) / W < 0``, i.e. the
  between-group divergence falls by a larger share than the floor does (a removal
  that raises the floor earns nothing for it: an objective rewarding a higher
  floor finds neurons that pull synonyms apart). Every other neuron is guarded.

Selection then runs as before (its own objective, rounds, checks and target) on
the neurons the guard leaves, and the guard measures what the estimates
predicted: every round, after the perplexity and recall checks, both figures are
measured with the round's neurons removed (forward passes), and a round that
lowers the floor by as large a share as the between-group JS is halved, lowest
ranked first, until it does not (``FloorGuard.fit``; every check is kept in the
plan). Measured on prompts written outside the repository:
``benchmarks/RESULTS.md`` ("The floor guard").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..contract.errors import ConfigError
from ..contract.protocols import ObjectiveInputs, PromptGroup
from ..model.divergence import between_within_js, widened
from . import attribution as attr

logger = logging.getLogger(__name__)


class _PairJS:
    """Mean JS over the member pairs of one kind, per group: between groups (``same=False``) or within one."""

    uses: ClassVar[tuple[str, ...]] = ("logprobs", "labels")

    def __init__(self, same: bool) -> None:
        self.same = same
        self.name = "within_group_js" if same else "between_group_js"

    def value(self, inputs: ObjectiveInputs) -> torch.Tensor:
        out, start = [], 0
        for size, labels in zip(inputs.sizes, inputs.labels or ()):
            between, within = between_within_js(inputs.logprobs[start:start + size], labels)
            start += size
            out.append(within if self.same else between)
        return widened(torch.stack(out))


def narrows(before: tuple[float, float], after: tuple[float, float]) -> bool:
    """Whether going from ``before`` to ``after`` (between-group JS, word-swap floor; nats) lowers the between-group
    JS by a larger share than the floor: ``ΔB/B − min(ΔW, 0)/W < 0`` (a higher floor earns nothing)."""
    (b0, w0), (b1, w1) = before, after
    return (b1 - b0) / b0 - min(w1 - w0, 0.0) / w0 < 0


@dataclass
class FloorGuard:
    """What the guard read: the base divergences (nats), per layer ``[width]`` masks of guarded neurons, and what
    it measures each round with (the analysis groups merged by template, the two pair objectives)."""

    between: float
    within: float
    guarded: dict[int, torch.Tensor]
    batches: Any = None
    objectives: tuple[Any, ...] = ()
    checks: list[dict[str, Any]] = field(default_factory=list)

    def measured(self, passes: Any, removed: Mapping[int, Sequence[int]],
                 fill: Mapping[int, torch.Tensor] | None) -> tuple[float, float]:
        """(between-group JS, word-swap floor) in nats, measured with ``removed`` ablated (forward passes of
        ``passes``, a ``SelectionPasses``: shared under torchrun, never run twice for one removed set); with
        nothing removed, the figures the guard's attribution pass read from the same groups."""
        if not any(len(v) for v in removed.values()):
            return self.between, self.within
        between, within = passes.measure_all([self.batches], self.objectives, removed, fill)  # one forward per batch
        return between, within

    def fit(self, passes: Any, removed: Mapping[int, Sequence[int]], add: list[tuple[int, int]],
            fill: Mapping[int, torch.Tensor] | None) -> tuple[list[tuple[int, int]], tuple[float, float] | None]:
        """Halve ``add`` (a round's ranked additions; the lowest ranked go first) until, measured, the round lowers
        the between-group JS by a larger share than the word-swap floor (``narrows``); the additions kept
        ([] = the round is rejected) and the two figures they leave."""
        before = self.measured(passes, removed, fill)
        while add:
            after = self.measured(passes, attr.merged_removed(removed, add), fill)
            self.checks.append({"neurons": len(add), "between_before": before[0], "within_before": before[1],
                                "between_after": after[0], "within_after": after[1], "passed": narrows(before, after)})
            if narrows(before, after):
                return add, after
            logger.info("floor guard: %d neurons take the between-group JS %.4g -> %.4g and the floor %.4g -> %.4g "
                        "(a larger share); halving", len(add), before[0], after[0], before[1], after[1])
            add = add[:len(add) // 2]
        return [], None

    def record(self) -> dict[str, Any]:
        """The plan's ``settings["floor_guard"]``: the base figures, how many neurons were guarded and every
        measured round check."""
        total = sum(int(m.numel()) for m in self.guarded.values())
        n = sum(int(m.sum()) for m in self.guarded.values())
        return {"between_js": self.between, "within_js": self.within, "floor_share_pct": 100 * self.within / self.between,
                "guarded": n, "of": total, "checks": list(self.checks)}


def floor_guard(model: Any, tokenizer: Any, groups: Sequence[PromptGroup], forms: Mapping[str, str], adapter: Any, *,
                batch_size: int, fill: Mapping[int, torch.Tensor] | None = None, world: Any = None,
                progress: bool = False) -> FloorGuard:
    """One attribution pass of two figures (between- and within-group JS at the prompts' last position: one
    forward per batch, a backward each) over ``groups`` merged by template; the guard as the module says.
    ``forms`` maps surface forms to attribute groups (``GroupSet.form_to_group``). ``ConfigError`` when no
    template has two forms of one group (no floor to read). Under torchrun (``world``) the passes are shared
    and every process gets the same guard."""
    batches = attr.group_batches(model, tokenizer, groups, batch_size, positions="last", labels=forms)
    if not any(len(set(labels)) < len(labels) for labels in batches.labels or ()):
        raise ConfigError("method.floor_guard: no analysis template has two surface forms of one group, so there is "
                          "no word-swap floor to read; give the axis groups several forms (Black: [Black, African "
                          "American])")
    pair_objectives = (_PairJS(same=False), _PairJS(same=True))
    # one forward per batch, one backward per figure
    between, within = attr.attribute_objectives(model, batches, pair_objectives, adapter, fill=fill, world=world,
                                                progress=progress)
    b0, w0 = between.objective, within.objective
    if not (b0 > 0 and w0 > 0):
        raise ConfigError(f"method.floor_guard: the unpruned model's between-group JS ({b0:.3g}) and word-swap floor "
                          f"({w0:.3g}) must both be positive")
    d_between, d_within = between.sums.delta(fill), within.sums.delta(fill)
    guarded = {layer: (d_between[layer] / b0 - d_within[layer].clamp(max=0) / w0) >= 0 for layer in d_between}
    guard = FloorGuard(b0, w0, guarded, batches, pair_objectives)
    record = guard.record()
    logger.info("floor guard: between-group JS %.4g, word-swap floor %.4g (%.0f%%); %d of %d neurons guarded",
                b0, w0, record["floor_share_pct"], record["guarded"], record["of"])
    return guard
