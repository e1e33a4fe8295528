"""Signed, iterative neuron selection by attribution, with a capability guard and a measured check.

Each round attributes the bias objective on the analysis groups to every
neuron (``core.attribution``) on the model as pruned so far (removed neurons
ablated exactly as the pruner will leave them), keeps as candidates only the
neurons whose removal is estimated to *lower* the objective, protects the
top-γ neurons of each layer by capability cost, ranks the rest (bias reduction
per unit of capability cost by default) and removes the round's share of the
budget. A round is accepted only when the calibration-text perplexity, measured
with the round's neurons removed, stays within its limit, and the measured
objective improves; selection stops when it no longer improves enough. The
budget is a ceiling, not a quota. The plan records, per neuron, its attribution
and cost, and per round the predicted and measured change of the objective.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..contract.config import AttributionParams, Budget
from ..contract.protocols import PromptGroup
from ..model import memory
from ..model.adapters import count_parameters, resolve_adapter
from . import attribution as attr
from .passes import SelectionPasses
from .planning import Plan, allocate_budget, interleaved, neuron_cost, uniform_quota
from .precision import original, pass_precision

logger = logging.getLogger(__name__)

@dataclass
class Selection:
    """What selection produced: the plan, the calibration means, first-round scores, cost and the round log."""

    plan: Plan
    calibration: dict[int, torch.Tensor]
    scores: dict[int, torch.Tensor]  # −ΔM of round 1 (higher = removal lowers bias more)
    cost: dict[int, torch.Tensor]
    magnitude: dict[int, torch.Tensor]
    rounds: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _State:
    removed: dict[int, list[int]]
    params: int
    objective: float

    @property
    def n_removed(self) -> int:
        return sum(map(len, self.removed.values()))


def _layer_limit(layer: int, caps: Mapping[int, int], widths: Mapping[int, int], min_width: int) -> int:
    """How many neurons ``layer`` may lose in all: its budget cap, keeping at least ``min_width``."""
    return min(caps[layer], widths[layer] - min_width)


def _budget_ceiling(budget: Budget, widths: Mapping[int, int], total_params: int) -> tuple[float, float, dict[int, int]]:
    """(max parameters, max neurons, per-layer caps) of a budget; the unused limits are infinite."""
    caps = {layer: w for layer, w in widths.items()}
    if budget.layer_percent is not None:
        caps = {layer: int(math.floor(w * budget.layer_percent / 100.0)) for layer, w in widths.items()}
        return math.inf, math.inf, caps
    if budget.neurons is not None:
        return math.inf, float(budget.neurons), caps
    return budget.param_fraction * total_params, math.inf, caps


def _guarded(cost: Mapping[int, torch.Tensor], fraction: float) -> dict[int, torch.Tensor]:
    """Per layer, the top ``fraction`` of neurons by capability cost (never removed)."""
    out = {}
    for layer, c in cost.items():
        k = int(math.ceil(fraction * c.numel()))
        mask = torch.zeros(c.numel(), dtype=torch.bool)
        if k:
            mask[torch.topk(c, k).indices] = True
        out[layer] = mask
    return out


def _guard(model: Any, adapter: Any, cost: Mapping[int, torch.Tensor], magnitude: Mapping[int, torch.Tensor],
           settings: AttributionParams) -> dict[int, torch.Tensor]:
    """Per layer, ``Bool[width]``: protected by capability cost (``guard_fraction``) or by the size of the
    neuron's write to the residual stream, mean |h_i| x |down column i| (``magnitude_guard``)."""
    guarded = _guarded(cost, settings.guard_fraction)
    if not settings.magnitude_guard:
        return guarded
    write = {layer: magnitude[layer] * original(adapter.down(model, layer)).detach().float().norm(dim=0).cpu()
             for layer in cost}
    by_write = _guarded(write, settings.magnitude_guard)
    return {layer: mask | by_write[layer] for layer, mask in guarded.items()}


def _ranked(delta: Mapping[int, torch.Tensor], cost: Mapping[int, torch.Tensor], guarded: Mapping[int, torch.Tensor],
            removed: Mapping[int, list[int]], ranking: str, layers: Sequence[int]) -> list[tuple[float, int, int]]:
    """Candidates (score, layer, neuron), best first: removal lowers the objective in every fold (``delta[layer]``
    is ``Tensor[n_folds, width]``), not guarded, not removed; the gain is the smallest fold's reduction."""
    all_cost = torch.cat([cost[layer][~guarded[layer]] for layer in layers])
    floor = 0.1 * float(all_cost.median()) if all_cost.numel() else 0.0  # near-zero costs must not dominate
    entries = []
    for layer in layers:
        gain = -delta[layer].max(0).values
        ok = (gain > 0) & ~guarded[layer]
        if removed.get(layer):
            ok[torch.tensor(removed[layer])] = False
        score = gain / (cost[layer] + floor + 1e-12) if ranking == "ratio" else gain
        entries.extend((float(score[n]), layer, int(n)) for n in ok.nonzero().flatten().tolist())
    entries.sort(key=lambda e: (-e[0], e[1], e[2]))
    return entries


def _take(entries: list[tuple[float, int, int]], state: _State, quota_params: float, quota_neurons: float,
          caps: Mapping[int, int], widths: Mapping[int, int], costs: Mapping[int, int],
          min_width: int) -> list[tuple[int, int]]:
    """The best candidates that fit this round's quota and every layer's cap."""
    chosen, params, count = [], 0, 0
    per_layer = {layer: len(v) for layer, v in state.removed.items()}
    for _, layer, n in entries:
        if params + costs[layer] > quota_params or count + 1 > quota_neurons:
            continue
        if per_layer.get(layer, 0) + 1 > _layer_limit(layer, caps, widths, min_width):
            continue
        chosen.append((layer, n))
        per_layer[layer] = per_layer.get(layer, 0) + 1
        params += costs[layer]
        count += 1
    return chosen


@dataclass
class _Selector:
    """What every round of one selection reads: the model and its groups, the budget's limits, the guard and the
    target. Its methods are the loop's passes (``attribute``, ``measure``) and its decisions (``propose``,
    ``measure_round``, ``stop_after``)."""

    model: Any
    adapter: Any
    folds: list[Any]
    objective: Any
    settings: AttributionParams
    layers: list[int]
    widths: dict[int, int]
    costs: dict[int, int]
    caps: dict[int, int]
    total_params: int
    max_params: float
    max_neurons: float
    min_width: int
    check_text: Any
    check_loss: float
    fill: Any
    cost: dict[int, torch.Tensor]
    guarded: dict[int, torch.Tensor]
    progress: bool
    passes: SelectionPasses
    size: float = 1.0  # the starting objective's magnitude: percentages are of it
    target: float | None = None
    recall: Any = None  # a recall_guard.RecallGuard, or None
    recall_base: float | None = None  # its measured recall before any removal (percent)
    recall_after: float | None = None  # the recall the last proposed round leaves
    uniform: bool = False  # pruning.uniform_widths: candidates by rank within their layer, one quota per layer
    floor: Any = None  # a floor_guard.FloorGuard, or None
    cloze: Any = None  # a cloze_check.ClozeCheck, or None
    cloze_after: float | None = None  # its last-word perplexity rise (%) for the round as last proposed
    floor_after: tuple[float, float] | None = None  # (between-group JS, floor) with the last round removed

    def protect(self, masks: Mapping[int, torch.Tensor]) -> None:
        """Add a guard's per-layer ``Bool[width]`` masks to the neurons never removed."""
        self.guarded = {layer: mask | masks[layer] for layer, mask in self.guarded.items()}

    def attribute(self, removed: Mapping[int, Sequence[int]] | None = None) -> attr.FoldedAttribution:
        """Forward and backward passes over every fold with ``removed`` ablated (``SelectionPasses``: shared
        under torchrun; the first round's kept for later budgets)."""
        return self.passes.attribute(self.folds, self.objective, removed, self.fill)

    def measure(self, removed: Mapping[int, Sequence[int]]) -> float:
        """The objective over all analysis groups with ``removed`` ablated (forward passes only, once per set)."""
        return self.passes.measure(self.folds, self.objective, removed, self.fill)

    def propose(self, state: _State, current: attr.FoldedAttribution,
                round_index: int) -> tuple[list[tuple[int, int]], dict[int, torch.Tensor], float | None, str]:
        """The round's additions, best first, within its share of the budget and the perplexity limit; the
        blended estimates, the calibration loss measured with them, and why there are none (or "")."""
        left = self.settings.rounds - round_index
        quota_params = (self.max_params - state.params) / left if math.isfinite(self.max_params) else math.inf
        quota_neurons = (self.max_neurons - state.n_removed) / left if math.isfinite(self.max_neurons) else math.inf
        per_fold = current.fold_delta(self.fill)
        delta = current.blend(per_fold)
        entries = _ranked(per_fold, self.cost, self.guarded, state.removed, self.settings.ranking, self.layers)
        if self.uniform:
            entries = interleaved(entries)
        add = _take(entries, state, quota_params, quota_neurons, self.caps, self.widths, self.costs, self.min_width)
        if not add:
            return [], delta, None, ("no candidate lowers the objective within the budget" if entries
                                     else "no candidates left")
        add, loss = _capability_check(self.model, self.check_text, self.adapter, state, add, self.fill,
                                      self.check_loss, self.settings, passes=self.passes)
        if not add:
            return [], delta, None, (f"perplexity on the calibration text would rise more than "
                                     f"{self.settings.max_perplexity_increase_pct}%")
        if self.cloze is not None:
            add, self.cloze_after = self.cloze.fit(self.model, self.adapter, state.removed, add, self.fill)
            if not add:
                return [], delta, None, (f"last-word perplexity on the cloze passages would rise more than "
                                         f"{self.cloze.max_increase_pct}%")
        if self.recall is not None:
            add, self.recall_after = self.recall.fit(self.model, self.adapter, state.removed, add, self.fill,
                                                     self.recall_base)
            if not add:
                return [], delta, None, (f"recall of the stated group would fall more than "
                                         f"{self.recall.max_drop_pts} points")
        if self.floor is not None:
            add, self.floor_after = self.floor.fit(self.passes, state.removed, add, self.fill)
            if not add:
                return [], delta, None, ("the round would lower the word-swap floor by as large a share as the "
                                         "between-group JS")
        return add, delta, loss, ""

    def measure_round(self, state: _State, add: list[tuple[int, int]], estimates: Sequence[float], last: bool,
                      scale: float | None) -> tuple[list[tuple[int, int]], float, attr.FoldedAttribution | None]:
        """The round's additions (cut to the shortest prefix reaching the target, if any), the objective measured
        with them, and the next round's attribution when it was computed on the way (its pass measures too)."""
        target, nxt = self.target, None
        if target is not None and _expects(state.objective, estimates, target, scale):
            # the estimates say the round reaches the target: look for its prefix first (forward passes only)
            add, measured = _shortest_reaching(add, state.removed, target, state.objective, estimates, self.measure,
                                               scale=scale)
        else:
            removed = attr.merged_removed(state.removed, add)
            nxt = None if last else self.attribute(removed)
            measured = nxt.objective if nxt is not None else self.measure(removed)
            if target is not None and measured <= target:
                add, measured = _shortest_reaching(add, state.removed, target, state.objective, estimates,
                                                   self.measure, value=measured)
        if target is not None and measured > target and nxt is None and not last and measured < state.objective:
            nxt = self.attribute(attr.merged_removed(state.removed, add))
        return add, measured, nxt

    def stop_after(self, before: float, measured: float) -> str:
        """Why selection stops after an accepted round that took the objective from ``before`` to ``measured``
        (or "" to go on)."""
        if self.target is not None and measured <= self.target:
            return f"the objective fell by the target {self.settings.target_reduction_pct}%"
        gain_pct = 100.0 * (before - measured) / self.size
        if gain_pct < self.settings.min_improvement_pct:
            return f"a round improved the objective by {gain_pct:.2f}% (< {self.settings.min_improvement_pct}%)"
        return ""


def select_by_attribution(model: torch.nn.Module, tokenizer: Any, groups: Sequence[PromptGroup], *,
                          objective: Any, capability: Any, budget: Budget, compensated: bool = False,
                          settings: AttributionParams | None = None, min_width: int = 1,
                          layers: Sequence[int] | None = None, batch_size: int = 16, adapter: Any = None,
                          registry: Any = None, progress: bool = True,
                          forms: Mapping[str, str] | None = None, recall: Any = None, world: Any = None,
                          passes: SelectionPasses | None = None, uniform_widths: bool = False,
                          round_to: int | None = None, cloze: Any = None) -> Selection:
    """Choose neurons to remove so that ``objective`` (a bound ``bias_objectives`` plugin) falls on ``groups``.

    ``capability`` is the configured ``capability_cost`` importance metric (its
    params name the calibration text). ``compensated`` says removed neurons are
    replaced by their calibration mean (the ``compensated`` pruner) rather than zero. ``settings`` are the
    method's params (``config.AttributionParams``; its ``objective`` and ``capability`` fields name the plugins
    given here); ``layers`` limits which layers may lose neurons, ``min_width`` how narrow one may get;
    ``uniform_widths`` gives every layer one quota (``planning.uniform_quota``, a common width that is a
    multiple of ``round_to`` when given), takes candidates by rank within their layer, and evens the layers
    at the end (``pruning.uniform_widths``).
    ``forms`` (``GroupSet.form_to_group``) names each surface form's attribute
    group for objectives that use labels; their groups are merged by template.
    ``recall`` (a ``recall_guard.RecallGuard``, optional) protects the neurons whose removal is estimated
    to raise the recall loss most and halves or rejects a round that lowers measured recall beyond its limit.
    ``cloze`` (a ``cloze_check.ClozeCheck``, optional) halves or rejects a round that raises the last-word
    perplexity of its passages beyond its limit.
    With ``world`` (a ``distributed.World`` of several processes, every one calling this) each pass and each
    measured check is shared among the processes and reduced in a fixed order, so all reach the plan of one
    process; a failure on one process stops all with its message. ``passes`` (a ``passes.SelectionPasses`` of
    this model, kept across calls) remembers what earlier selections on the same model computed.
    Raises ``ConfigError`` for bad groups before any model work.
    """
    settings = settings or AttributionParams()
    start = time.perf_counter()
    adapter = adapter or resolve_adapter(model, registry=registry)
    # ConfigError before any pass when the precision cannot run; each pass's freed activations leave the
    # resident set at once (the heap fragmented by the passes set the peak at the Llama-3.2-1B shape); on models
    # smaller than memory.MAPPED_MIN_MODEL_BYTES the extra page faults cost time for no memory that matters
    large = memory.weight_bytes(model) >= memory.MAPPED_MIN_MODEL_BYTES
    with pass_precision(model, settings.pass_dtype), memory.large_blocks_mapped(enabled=large):
        return _select(model, tokenizer, groups, objective, capability, budget, compensated, settings, min_width,
                       layers, batch_size, adapter, registry, progress, forms, recall, world, passes,
                       uniform_widths, round_to, start, cloze)


def _select(model: Any, tokenizer: Any, groups: Sequence[PromptGroup], objective: Any, capability: Any,
            budget: Budget, compensated: bool, settings: AttributionParams, min_width: int,
            layers: Sequence[int] | None, batch_size: int, adapter: Any, registry: Any, progress: bool,
            forms: Mapping[str, str] | None, recall: Any, world: Any, passes: SelectionPasses | None,
            uniform_widths: bool, round_to: int | None, start: float, cloze: Any = None) -> Selection:
    """``select_by_attribution``'s rounds, in the pass precision it set."""
    progress = progress and (world is None or world.is_main)
    passes = (passes or SelectionPasses(model, adapter)).bind(world, progress)
    sel, cap = _selector(model, tokenizer, groups, objective, capability, budget, compensated, settings, min_width,
                         layers, batch_size, adapter, progress, forms, passes, recall, cloze)
    if uniform_widths:  # one quota for every layer (planning.uniform_quota); candidates by rank within their layer
        total, per_layer = allocate_budget(budget, sel.widths, sel.costs, sel.total_params)
        sel.caps = uniform_quota(sel.widths, total if per_layer is None else sum(per_layer.values()),
                                 round_to=round_to, min_width=min_width)
        sel.uniform = True
    current = sel.attribute()
    first = {layer: -d for layer, d in current.delta(sel.fill).items()}
    objective_before = current.objective
    # percentages are of the starting value's size: an objective such as js_above_floor may start below zero
    sel.size = max(abs(objective_before), 1e-12)
    if settings.target_reduction_pct is not None:
        sel.target = objective_before - sel.size * settings.target_reduction_pct / 100.0
    state = _State({}, 0, current.objective)
    scale = None  # measured / predicted change of the last accepted round: how far to trust the estimates
    log: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    stop = ""  # a reason to stop early; none after the last round means the rounds or the budget ran out
    for round_index in range(settings.rounds):
        add, delta, loss_after, why_none = sel.propose(state, current, round_index)
        if not add:
            stop = why_none
            break
        estimates = [float(delta[layer][n]) for layer, n in add]
        proposed = len(add)
        add, measured, nxt = sel.measure_round(state, add, estimates, round_index == settings.rounds - 1, scale)
        if sel.floor_after is not None and len(add) != proposed:  # the target kept a prefix: log what it leaves
            sel.floor_after = sel.floor.measured(sel.passes, attr.merged_removed(state.removed, add), sel.fill)
        predicted = float(sum(delta[layer][n] for layer, n in add))
        entry = {"round": round_index + 1, "neurons": len(add), "objective_before": state.objective,
                 "objective_after": measured, "predicted_change": predicted,
                 "measured_change": measured - state.objective, "calibration_loss": loss_after,
                 "accepted": measured < state.objective}
        if sel.recall is not None:
            entry["recall_pct"] = sel.recall_after
        if sel.cloze is not None:  # measured on the round as proposed; a target's prefix removes fewer
            entry["cloze_increase_pct_proposed"] = sel.cloze_after
        if sel.floor_after is not None:
            entry["between_js"], entry["within_js"] = sel.floor_after
        log.append(entry)
        logger.info("attribution round %d: %d neurons, objective %.6g -> %.6g (predicted %+.3g)", round_index + 1,
                    len(add), state.objective, measured, predicted)
        if not entry["accepted"]:
            stop = "the objective stopped improving"
            break
        records.extend({"layer": layer, "neuron": n, "attribution": float(delta[layer][n]),
                        "cost": float(sel.cost[layer][n]), "round": round_index + 1} for layer, n in add)
        if predicted < 0:
            scale = min(max((measured - state.objective) / predicted, 0.0), 1.0)
        before = state.objective
        state = _State(attr.merged_removed(state.removed, add), state.params + sum(sel.costs[layer] for layer, _ in add),
                       measured)
        stop = sel.stop_after(before, measured)
        if stop:
            break
        if nxt is not None:
            current = nxt
    stop = stop or _ran_out(sel, state, settings.rounds)

    if uniform_widths:
        state, records, evened = _evened(state, records, sel.widths, sel.costs, sel.measure)
        if evened:
            log.append(evened)
            stop += f"; {-evened['neurons']} neuron(s) put back so that every layer loses the same number"
    plan = _plan(state, records, log, stop, objective_before, sel, objective, capability, compensated, budget,
                 time.perf_counter() - start, layers)
    if sel.floor is not None:
        plan.settings["floor_guard"] = sel.floor.record()
    if sel.cloze is not None:
        plan.settings["cloze_check"] = sel.cloze.record()
    if recall is not None:
        plan.settings["recall"] = {"guard_fraction": recall.guard_fraction, "max_drop_pts": recall.max_drop_pts,
                                   "recall_base_pct": sel.recall_base}
    plan.settings["processes"] = 1 if world is None else world.size  # how many shared the passes
    plan.settings.update(uniform_widths=uniform_widths, round_to=round_to)
    return Selection(plan, cap.mean, first, sel.cost, cap.magnitude, log)


def _selector(model: Any, tokenizer: Any, groups: Sequence[PromptGroup], objective: Any, capability: Any,
              budget: Budget, compensated: bool, settings: AttributionParams, min_width: int,
              layers: Sequence[int] | None, batch_size: int, adapter: Any, progress: bool,
              forms: Mapping[str, str] | None, passes: SelectionPasses,
              recall: Any = None, cloze: Any = None) -> tuple[_Selector, Any]:
    """Everything the rounds share, from one capability pass (streamed: ``passes.capability``) and the group
    batches of every fold; with ``recall``, its guard and the recall before any removal; with ``cloze``, its
    last-word perplexity before any removal."""
    n_layers = len(adapter.layers(model))
    widths = {layer: adapter.width(model, layer) for layer in range(n_layers)}
    costs = {layer: neuron_cost(model, adapter, layer) for layer in range(n_layers)}
    total_params = count_parameters(model)
    max_params, max_neurons, caps = _budget_ceiling(budget, widths, total_params)
    labels = (forms or {}) if "labels" in getattr(objective, "uses", ()) else None
    folds = [attr.group_batches(model, tokenizer, part, batch_size, positions=settings.positions,
                                continuation_tokens=settings.continuation_tokens or 4, labels=labels)
             for part in attr.template_folds(groups, settings.folds, settings.fold_by)]
    text = capability.chunks(tokenizer)
    check_text = capability.check_chunks(tokenizer) if callable(getattr(capability, "check_chunks", None)) else text
    cap = passes.capability(text, compensated=compensated)
    check_loss = cap.loss if check_text is text or settings.max_perplexity_increase_pct is None else \
        passes.text_loss(check_text)
    fill = cap.mean if compensated else None
    cost = cap.cost
    sel = _Selector(model=model, adapter=adapter, folds=folds, objective=objective, settings=settings,
                    layers=sorted(set(layers)) if layers is not None else list(range(n_layers)), widths=widths,
                    costs=costs, caps=caps, total_params=total_params, max_params=max_params, max_neurons=max_neurons, min_width=min_width,
                    check_text=check_text, check_loss=check_loss, fill=fill, cost=cost,
                    guarded=_guard(model, adapter, cost, cap.magnitude, settings), progress=progress, passes=passes,
                    recall=recall, cloze=cloze)
    if cloze is not None:  # long-range prediction: protect what it needs most, and measure it every round
        cloze.world = passes.world  # its passes are shared like selection's own
        if cloze.guard_fraction > 0:
            sel.protect(cloze.guard(model, adapter, fill=fill))  # measures the base on its way
        if cloze.base_nll is None:
            cloze.measure_base(model, adapter)
    if recall is not None:  # the recall guard: protect group identity, and measure it every round
        recall.world = passes.world
        by_recall = recall.protected(recall.cost(model, adapter, fill=fill))
        sel.protect(by_recall)
        sel.recall_base = recall.measure(model, adapter, fill=fill)  # read from the cost pass's forwards
    if settings.floor_guard:  # protect the neurons whose removal would mostly make the model deaf to the word
        from .floor_guard import floor_guard

        sel.floor = floor_guard(model, tokenizer, groups, forms or {}, adapter, batch_size=batch_size, fill=fill,
                                world=passes.world, progress=progress)
        sel.protect(sel.floor.guarded)
    return sel, cap


def _ran_out(sel: _Selector, state: _State, rounds: int) -> str:
    """Why selection ended with no other reason: the budget has no room for another neuron, or every round ran
    (with room left: the checks halved rounds, or candidates ran short)."""
    fewest = min(sel.costs.values()) if sel.costs else 0
    caps_full = all(len(state.removed.get(layer, ())) >= _layer_limit(layer, sel.caps, sel.widths, sel.min_width)
                    for layer in sel.layers)
    if state.params + fewest > sel.max_params or state.n_removed + 1 > sel.max_neurons or caps_full:
        return "budget reached"
    return f"all {rounds} rounds ran ({state.n_removed} neurons, less than the budget allows)"


def _evened(state: _State, records: list[dict[str, Any]], widths: Mapping[int, int], costs: Mapping[int, int],
            measure: Any) -> tuple[_State, list[dict[str, Any]], dict[str, Any] | None]:
    """Every layer cut back to the fewest removals of any layer, keeping its earliest and best-estimated ones
    (round, then attribution), and measured again; the log entry of the change, or None when already even."""
    counts = [len(state.removed.get(layer, ())) for layer in widths]
    keep = min(counts)
    if keep == max(counts):
        return state, records, None
    kept = [r for layer in widths for r in sorted((r for r in records if r["layer"] == layer),
                                                  key=lambda r: (r["round"], r["attribution"]))[:keep]]
    removed = attr.merged_removed({}, [(r["layer"], r["neuron"]) for r in kept])
    measured = measure(removed)
    dropped = [r for r in records if r not in kept]
    entry = {"round": "evened", "neurons": -len(dropped), "objective_before": state.objective,
             "objective_after": measured, "predicted_change": -float(sum(r["attribution"] for r in dropped)),
             "measured_change": measured - state.objective, "accepted": True}
    return _State(removed, sum(costs[r["layer"]] for r in kept), measured), kept, entry


def _expects(start: float, predicted: Sequence[float], target: float, scale: float | None) -> bool:
    """Whether the round's estimates, scaled by the last round's measured/predicted ratio (1 before any
    round), say it reaches ``target`` from ``start``."""
    return start + (1.0 if scale is None else scale) * sum(predicted) <= target


def _shortest_reaching(add: list[tuple[int, int]], removed: Mapping[int, list[int]], target: float, start: float,
                       predicted: Sequence[float], measure: Any, *, value: float | None = None,
                       scale: float | None = None) -> tuple[list[tuple[int, int]], float]:
    """The shortest prefix of the round's ranked additions whose measured objective is at most ``target``, and
    that objective; the whole round and its objective when even that misses the target.

    ``start`` is the objective before the round, ``predicted`` the additions' first-order estimates,
    ``value`` the whole round's measured objective when known and ``scale`` a measured/predicted ratio to
    trust before it is. The guess scales the estimates' running sum to the change (one forward pass when
    it holds; shorter prefixes are not searched); if it misses, the whole round is measured, a second
    guess uses its own ratio, and bisection finds the prefix.
    """
    n = len(add)
    seen: dict[int, float] = {} if value is None else {n: value}

    def at(k: int) -> float:
        if k not in seen:
            seen[k] = measure(attr.merged_removed(removed, add[:k]))
        return seen[k]

    def guess(ratio: float) -> int:
        running = 0.0
        for k, d in enumerate(predicted, start=1):
            running += d
            if start + ratio * running <= target:
                return k
        return n

    def own_ratio() -> float:
        total = sum(predicted)
        return (at(n) - start) / total if total < 0 else 1.0

    lo = 0  # add[:lo] is known not to reach the target
    for ratio in ((scale,) if scale is not None else ()) + (None,):
        k = guess(own_ratio() if ratio is None else ratio)
        if lo < k < n:
            if at(k) <= target:
                return add[:k], seen[k]
            lo = k
        if at(n) > target:
            return add, seen[n]
    hi = n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid) <= target:
            hi = mid
        else:
            lo = mid
    return add[:hi], seen[hi]


def _capability_check(model: Any, text: Any, adapter: Any, state: _State, add: list[tuple[int, int]], fill: Any,
                      base_loss: float, settings: AttributionParams,
                      passes: SelectionPasses | None = None) -> tuple[list[tuple[int, int]], float | None]:
    """Halve the round's additions (dropping the lowest ranked) until the measured perplexity rise fits the limit."""
    limit = settings.max_perplexity_increase_pct
    if limit is None:
        return add, None
    while add:
        loss = passes.text_loss(text, attr.merged_removed(state.removed, add), fill) if passes is not None else \
            attr.text_loss(model, text, adapter, removed=attr.merged_removed(state.removed, add), fill=fill)
        if 100.0 * (math.exp(loss - base_loss) - 1.0) <= limit:
            return add, loss
        add = add[:len(add) // 2]
    return [], None


def _plan(state: _State, records: list[dict[str, Any]], log: list[dict[str, Any]], stop: str, before: float,
          sel: _Selector, objective: Any, capability: Any, compensated: bool, budget: Budget, seconds: float,
          layers: Sequence[int] | None) -> Plan:
    """The plan of a finished selection: the removed neurons, a record each, the settings and the verification."""
    settings = sel.settings
    predicted = float(sum(r["predicted_change"] for r in log if r.get("accepted")))
    measured = state.objective - before
    agree = (predicted < 0) == (measured < 0) or not state.removed
    if not agree:
        logger.warning("attribution predicted a change of %+.3g in %s but removing the neurons measured %+.3g: "
                       "the signs disagree", predicted, objective.name, measured)
    verification = {"objective": objective.name, "objective_before": before, "objective_after": state.objective,
                    "predicted_change": predicted, "measured_change": measured,
                    "measured_change_pct": 100.0 * measured / before if before else 0.0, "signs_agree": agree}
    settings_out = {
        "method": "attribution", "objective": objective.name, "objective_params": _params(objective),
        "capability": capability.name, "capability_params": _params(capability),
        "fill": "mean" if compensated else "zero", "positions": settings.positions,
        **({"continuation_tokens": settings.continuation_tokens or 4} if settings.positions == "continuation" else {}),
        "folds": settings.folds,
        "fold_by": settings.fold_by,
        "target_reduction_pct": settings.target_reduction_pct,
        "rounds": settings.rounds, "rounds_run": len(log),
        "guard_fraction": settings.guard_fraction, "magnitude_guard": settings.magnitude_guard,
        "ranking": settings.ranking, "min_improvement_pct": settings.min_improvement_pct,
        "pass_dtype": settings.pass_dtype,
        "max_perplexity_increase_pct": settings.max_perplexity_increase_pct, "min_width": sel.min_width,
        "layers": list(layers) if layers is not None else None,
        "budget": budget.model_dump(exclude_none=True), "stop_reason": stop, "selection_seconds": round(seconds, 3),
        "calibration_loss_base": sel.check_loss, "round_log": log, "verification": verification,
        "adapter": sel.adapter.name,
    }
    removed = {layer: v for layer, v in state.removed.items() if v}
    widths, costs = sel.widths, sel.costs
    return Plan(removed=removed, records=sorted(records, key=lambda r: (r["layer"], r["neuron"])),
                settings=settings_out, widths_before=[widths[i] for i in sorted(widths)],
                params_total=sel.total_params,
                params_to_remove=sum(costs[layer] * len(v) for layer, v in removed.items()))


def _params(plugin: Any) -> dict[str, Any]:
    params = getattr(plugin, "params", None)
    return params.model_dump(mode="json") if hasattr(params, "model_dump") else {}


def run_selection(model: Any, context: Any, params: AttributionParams, *, objective: Any, capability: Any,
                  budget: Budget, shard: bool = False, passes: SelectionPasses | None = None) -> tuple[Selection, Any]:
    """Select on the analysis groups of ``context.config`` (a ``MethodContext``) for ``budget``: the selection
    and a ``BiasReport`` of its first-round scores (−ΔM, higher = removal lowers bias more), magnitudes and the
    calibration means the compensated pruner adds back. ``objective`` and ``capability`` are the configured
    plugins ``params`` names. With ``shard`` and a torchrun world of several processes, every process must
    call this; the passes are shared among them and all return the one-process selection. ``passes`` keeps
    what selections for other budgets on the same model computed."""
    from ..data.groups import run_groups
    from ..model.distributed import current

    config = context.config
    found = run_groups(config, "analysis", context.registry)
    groups = found.groups
    passes = passes or SelectionPasses(model, context.adapter)
    selection = select_by_attribution(
        model, context.tokenizer, groups, objective=passes.bound(objective, context.tokenizer), capability=capability,
        budget=budget, compensated=bool(getattr(context.pruner, "needs_calibration", False)), settings=params,
        min_width=config.pruning.min_width, layers=config.pruning.layers, batch_size=config.bias.batch_size,
        adapter=context.adapter, registry=context.registry, progress=context.progress, forms=found.form_to_group,
        recall=_recall_guard(model, context, params), world=current() if shard else None, passes=passes,
        uniform_widths=config.pruning.uniform_widths, round_to=config.pruning.round_to,
        cloze=_cloze_check(context, params))
    return selection, selection_report(selection, groups, model, context.adapter)


def _recall_guard(model: Any, context: Any, params: AttributionParams) -> Any:
    """The configured recall guard (``method.recall``), or None."""
    config = context.config
    section = params.recall
    if section is None:
        return None
    from .recall_guard import recall_guard, recall_prompts_file

    prompts = recall_prompts_file(config, section.prompts)
    return recall_guard(model, context.tokenizer, prompts=prompts, guard_fraction=section.guard_fraction,
                        max_drop_pts=section.max_drop_pts, batch_size=config.bias.batch_size)


def _cloze_check(context: Any, params: AttributionParams) -> Any:
    """The configured cloze check (``method.cloze_check``), read and tokenized before any pass, or None."""
    section = params.cloze_check
    if section is None:
        return None
    from .cloze_check import cloze_check

    return cloze_check(context.tokenizer, passages=section.passages, max_increase_pct=section.max_increase_pct,
                       guard_fraction=section.guard_fraction, batch_size=context.config.bias.batch_size,
                       limit=section.limit, sample_seed=section.sample_seed, check_limit=section.check_limit)


def selection_report(selection: Selection, groups: Sequence[PromptGroup], model: Any, adapter: Any) -> Any:
    """A ``BiasReport`` carrying the attribution scores, so runs save, plot and reload them like any analysis."""
    from .bias import BiasReport

    axes = sorted({g.axis for g in groups})
    settings = {"method": "attribution", "site": "neuron", "pooling": "all", "metric": selection.plan.settings["objective"],
                "axes": axes, "split": "analysis", "n_groups": len(groups),
                "n_prompts": sum(len(g.prompts) for g in groups), "layers": sorted(selection.scores),
                "model_class": type(model).__name__, "adapter": getattr(adapter, "name", "")}
    per_axis = {"+".join(axes): {layer: s.clone() for layer, s in selection.scores.items()}}
    return BiasReport(dict(selection.scores), per_axis, dict(selection.magnitude), dict(selection.calibration),
                      settings, list(groups), extra={"capability_cost": dict(selection.cost)})
