"""Turn bias scores and importance into a pruning plan: which neurons of which layers to remove.

Prunability comes from a scorer plugin per layer; a budget says how many neurons
go; selection is global (one ranking across layers; scores are normalised per
layer) or per layer. Massive-activation neurons can be guarded, widths can be
rounded to hardware-friendly multiples, and the plan records why each neuron
was chosen.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..contract.config import ActivationParams, Budget, PruningSection
from ..contract.errors import ConfigError, PlanError
from .plan_files import plan_data, read_plan_file

logger = logging.getLogger(__name__)

__all__ = ["Budget", "Plan", "plan_pruning", "neuron_cost", "allocate_budget", "uniform_quota"]


@dataclass
class Plan:
    """Neurons to remove per layer, with the evidence for each choice.

    ``removed`` maps layer -> sorted neuron indices; ``records`` holds one row per
    removed neuron (layer, neuron, bias, importance, score); ``settings`` says how
    the plan was made.
    """

    removed: dict[int, list[int]]
    records: list[dict[str, float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    widths_before: list[int] = field(default_factory=list)
    params_total: int = 0
    params_to_remove: int = 0

    def to_mapping(self) -> dict[int, list[int]]:
        """The plain ``{layer: [indices]}`` that ``fp.prune`` applies."""
        return {layer: list(idx) for layer, idx in self.removed.items() if idx}

    @property
    def n_neurons(self) -> int:
        return sum(len(v) for v in self.removed.values())

    @property
    def fraction_to_remove(self) -> float:
        return self.params_to_remove / self.params_total if self.params_total else 0.0

    def widths_after(self) -> list[int]:
        return [w - len(self.removed.get(i, ())) for i, w in enumerate(self.widths_before)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": {str(k): v for k, v in sorted(self.removed.items())},
            "n_neurons": self.n_neurons,
            "params_total": self.params_total,
            "params_to_remove": self.params_to_remove,
            "fraction_to_remove": self.fraction_to_remove,
            "widths_before": self.widths_before,
            "widths_after": self.widths_after(),
            "settings": self.settings,
            "records": self.records,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        """A plan from its ``to_dict`` form; ``PlanError`` when ``removed`` is missing or holds a non-integer."""
        data = plan_data(data)
        return cls(removed=data["removed"],
                   records=list(data.get("records", [])), settings=dict(data.get("settings", {})),
                   widths_before=list(data.get("widths_before", [])), params_total=int(data.get("params_total", 0)),
                   params_to_remove=int(data.get("params_to_remove", 0)))

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        """Read ``plan.json``; a missing file, broken JSON or bad content is one ``PlanError`` naming the file."""
        return cls.from_dict(read_plan_file(path))


def neuron_cost(model: torch.nn.Module, adapter: Any, layer: int) -> int:
    """Parameters removed with one neuron of ``layer``: its gate row, up row, down column and biases."""
    gate, up = adapter.gate_up(model, layer)
    down = adapter.down(model, layer)
    cost = gate.shape[1] + up.shape[1] + down.shape[0]
    mlp_site = adapter.site(model, layer, "gate").module
    if getattr(mlp_site, "bias", None) is not None:
        cost += 2  # one gate bias and one up bias entry
    return int(cost)


def allocate_budget(budget: Budget, widths: Mapping[int, int], costs: Mapping[int, int],
                    total_params: int) -> tuple[int | None, dict[int, int] | None]:
    """Translate a budget into a global neuron count, or per-layer counts for ``layer_percent``."""
    if budget.layer_percent is not None:
        return None, {layer: int(math.floor(w * budget.layer_percent / 100.0)) for layer, w in widths.items()}
    if budget.neurons is not None:
        return budget.neurons, None
    mean_cost = sum(costs.values()) / max(len(costs), 1)
    return int(math.floor(budget.param_fraction * total_params / mean_cost)), None


def uniform_quota(widths: Mapping[int, int], neurons: int, *, round_to: int | None = None, min_width: int = 1,
                  available: Mapping[int, int] | None = None) -> dict[int, int]:
    """Per layer, how many neurons to remove so that every layer ends with one common width.

    ``widths`` are the layers' current widths, ``neurons`` the budget as a neuron count (all layers
    together); the common width is the narrowest that stays within it, rounded up to a multiple of
    ``round_to`` when given (the budget is never exceeded), never below ``min_width`` nor above the
    narrowest layer. ``available`` caps a layer's removals (neurons a guard leaves removable): the common
    width then rises until every layer can reach it. Returns ``{layer: count}``; all counts are 0 when the
    budget is less than one neuron per layer.
    """
    if not widths:
        return {}
    narrowest = min(widths.values())
    target = max(math.ceil((sum(widths.values()) - neurons) / len(widths)), min_width)
    if available is not None:
        target = max(target, max(widths[layer] - available.get(layer, 0) for layer in widths))
    if round_to:
        target = math.ceil(target / round_to) * round_to
    target = min(target, narrowest)
    return {layer: w - target for layer, w in widths.items()}


def interleaved(entries: Sequence[tuple[float, int, int]]) -> list[tuple[float, int, int]]:
    """Ranked ``(score, layer, neuron)`` entries (best first) reordered by rank within their layer: every
    layer's best, then every layer's second best, ... (ties by score, then layer), so that taking any
    prefix removes nearly the same number of neurons from each layer."""
    seen: dict[int, int] = {}
    keyed = []
    for entry in entries:
        rank = seen.get(entry[1], 0)
        seen[entry[1]] = rank + 1
        keyed.append(((rank, -entry[0], entry[1], entry[2]), entry))
    return [entry for _, entry in sorted(keyed, key=lambda k: k[0])]


def _split_proportionally(total: int, widths: Mapping[int, int]) -> dict[int, int]:
    """Distribute ``total`` neurons over layers in proportion to width (largest remainder)."""
    all_width = sum(widths.values())
    exact = {layer: total * w / all_width for layer, w in widths.items()}
    counts = {layer: int(math.floor(x)) for layer, x in exact.items()}
    leftover = total - sum(counts.values())
    for layer in sorted(exact, key=lambda k: (-(exact[k] - counts[k]), k))[:leftover]:
        counts[layer] += 1
    return counts


def _round_width(width: int, removed: int, multiple: int, min_width: int) -> int:
    """How many neurons to remove so the remaining width is the nearest multiple (never below min_width)."""
    target = int(round((width - removed) / multiple)) * multiple
    floor = int(math.ceil(min_width / multiple)) * multiple
    target = min(max(target, floor), width)
    return width - target


class _Default:
    """Marks a keyword of ``plan_pruning`` left to the config default (``None`` is a real value for some)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


def plan_sections(params: ActivationParams | None = None, pruning: PruningSection | None = None,
                  **overrides: Any) -> tuple[ActivationParams, PruningSection]:
    """The activation method's params and the pruning section of a plan: the given (or default) ones with
    ``overrides`` applied; names are those of ``plan_pruning``. ``ConfigError`` naming the field for a bad value."""
    from pydantic import ValidationError

    from ..contract.config import Component, format_validation_error

    params = params or ActivationParams()
    pruning = pruning or PruningSection()
    given = {k: v for k, v in overrides.items() if v is not DEFAULT}
    update: dict[str, Any] = {}
    for key, params_key in (("importance", "importance_params"), ("scorer", "scorer_params")):
        if key in given or params_key in given:
            current = getattr(params, key)
            name = given.get(key, current.name)
            options = given.get(params_key, current.params if name == current.name else {})
            update[key] = Component(name=name, params=dict(options or {}))
    update.update({k: given[k] for k in ("bias_weight", "selection", "guard_magnitude_ratio") if k in given})
    prune_update = {k: given[k] for k in ("budget", "layers", "min_width", "round_to", "uniform_widths") if k in given}
    try:
        params = ActivationParams.model_validate({**params.model_dump(), **_dumped(update)})
        pruning = PruningSection.model_validate({**pruning.model_dump(), **_dumped(prune_update)})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="method")) from None
    return params, pruning


def _dumped(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in values.items()}


def plan_pruning(model: torch.nn.Module, bias: Any, *, params: ActivationParams | None = None,
                 pruning: PruningSection | None = None, importance: Any = DEFAULT, importance_params: Any = DEFAULT,
                 scorer: Any = DEFAULT, scorer_params: Any = DEFAULT, bias_weight: Any = DEFAULT,
                 budget: Any = DEFAULT, selection: Any = DEFAULT, layers: Any = DEFAULT, min_width: Any = DEFAULT,
                 round_to: Any = DEFAULT, guard_magnitude_ratio: Any = DEFAULT, importance_name: str | None = None,
                 uniform_widths: Any = DEFAULT, adapter: Any = None, registry: Any = None) -> Plan:
    """Choose the neurons to remove from ``model`` given a ``BiasReport`` (or ``{layer: Tensor[width]}``): the
    activation method's planner.

    Settings come from the activation method's ``params`` (``config.ActivationParams``) and the ``pruning``
    section (default: their defaults, importance ``max_abs_weight``); any keyword given overrides its field.
    ``importance`` is a metric name or precomputed ``{layer: Tensor[width]}`` (``importance_name`` then says
    which metric it came from, for the plan's record); activation-aware metrics need a neuron-site report;
    ``guard_magnitude_ratio`` protects neurons whose mean |activation| exceeds that multiple of their layer's
    median (``None``: no guard); ``uniform_widths`` removes the same number from every layer
    (``uniform_quota``, ranked within each layer), so the result loads with plain transformers. Raises
    ``ConfigError`` for bad settings and ``PlanError`` when scores do not fit the model.
    """
    from ..contract.registry import default_registry
    from ..model.adapters import count_parameters, resolve_adapter

    precomputed = importance if isinstance(importance, Mapping) else None
    params, pruning = plan_sections(
        params, pruning, importance=DEFAULT if precomputed is not None else importance,
        importance_params=importance_params, scorer=scorer, scorer_params=scorer_params, bias_weight=bias_weight,
        budget=budget, selection=selection, layers=layers, min_width=min_width, round_to=round_to,
        guard_magnitude_ratio=guard_magnitude_ratio, uniform_widths=uniform_widths)
    registry = default_registry(registry)
    adapter = adapter or resolve_adapter(model, registry=registry)
    bias_scores: Mapping[int, torch.Tensor] = getattr(bias, "scores", bias)
    n_layers = len(adapter.layers(model))
    layers = sorted(set(pruning.layers)) if pruning.layers is not None else sorted(bias_scores)
    bad = [layer for layer in layers if not 0 <= layer < n_layers or layer not in bias_scores]
    if bad:
        raise PlanError(f"layers {bad} are out of range (0..{n_layers - 1}) or have no bias scores")
    if pruning.uniform_widths and layers != list(range(n_layers)):
        raise PlanError(f"uniform_widths needs bias scores for every layer 0..{n_layers - 1}; "
                        f"the report has layers {layers}")

    imp = precomputed if precomputed is not None else layer_importance(model, params.importance, bias, adapter,
                                                                       registry)
    scores = _prunability(params, registry, bias_scores, imp, {layer: adapter.width(model, layer) for layer in layers})
    widths = {layer: adapter.width(model, layer) for layer in layers}
    costs = {layer: neuron_cost(model, adapter, layer) for layer in layers}
    total_params = count_parameters(model)
    guarded = _guarded(bias, layers, params.guard_magnitude_ratio)
    total, per_layer = allocate_budget(pruning.budget, widths, costs, total_params)
    if per_layer is None and params.selection == "per_layer":
        per_layer = _split_proportionally(total, widths)
    caps = {layer: widths[layer] - pruning.min_width for layer in layers}
    if pruning.uniform_widths:
        removable = {layer: int(torch.isfinite(_masked(scores[layer], guarded[layer])).sum()) for layer in layers}
        per_layer = uniform_quota(widths, total if per_layer is None else sum(per_layer.values()),
                                  round_to=pruning.round_to, min_width=pruning.min_width, available=removable)
    removed = _select(scores, guarded, caps, total, per_layer)
    if pruning.round_to and not pruning.uniform_widths:
        removed = _apply_rounding(removed, scores, guarded, widths, pruning.round_to, pruning.min_width)

    records = [{"layer": layer, "neuron": n, "bias": float(bias_scores[layer][n]), "importance": float(imp[layer][n]),
                "score": float(scores[layer][n])} for layer in sorted(removed) for n in removed[layer]]
    settings = {"method": "activation",
                "importance": params.importance.name if precomputed is None else importance_name or "precomputed",
                "importance_params": params.importance.params, "scorer": params.scorer.name,
                "scorer_params": params.scorer.params, "bias_weight": params.bias_weight,
                "selection": params.selection, "guard_magnitude_ratio": params.guard_magnitude_ratio,
                **pruning.model_dump(mode="json", exclude={"pruner"}), "layers": layers,
                "budget": pruning.budget.model_dump(exclude_none=True),
                "guarded_neurons": int(sum(g.sum() for g in guarded.values())), "adapter": adapter.name}
    plan = Plan(removed={k: v for k, v in removed.items() if v}, records=records, settings=settings,
                widths_before=[adapter.width(model, layer) for layer in range(n_layers)], params_total=total_params,
                params_to_remove=sum(costs[layer] * len(v) for layer, v in removed.items()))
    logger.info("plan: %d neurons in %d layers, %.4f%% of parameters", plan.n_neurons, len(plan.removed),
                100 * plan.fraction_to_remove)
    return plan


def _prunability(params: ActivationParams, registry: Any, bias_scores: Mapping[int, torch.Tensor],
                 imp: Mapping[int, torch.Tensor], widths: Mapping[int, int]) -> dict[int, torch.Tensor]:
    """Per layer, the scorer's blend of bias and importance (``PlanError`` on shape or finiteness)."""
    from ..contract.config import resolve_component

    scorer = resolve_component(registry, "scorers", params.scorer, "method.scorer")
    scores: dict[int, torch.Tensor] = {}
    for layer, width in widths.items():
        b, i = bias_scores[layer].float().cpu(), imp[layer].float().cpu()
        if b.shape != (width,) or i.shape != (width,):
            raise PlanError(f"layer {layer}: bias {tuple(b.shape)} / importance {tuple(i.shape)} do not match "
                            f"the layer width {width} (was the model already pruned?)")
        s = scorer.score(b, i, params.bias_weight).float()
        if s.shape != b.shape or not torch.isfinite(s).all():
            raise PlanError(f"scorer {params.scorer.name!r} returned a bad score for layer {layer} "
                            "(shape or non-finite values)")
        scores[layer] = s
    return scores


def layer_importance(model: torch.nn.Module, importance: Any, bias: Any, adapter: Any,
                     registry: Any) -> dict[int, torch.Tensor]:
    """``{layer: Tensor[width]}`` of the configured importance metric (a ``Component``); activation-aware
    metrics read the neuron statistics of the bias report (``ConfigError`` when it has none)."""
    from ..contract.config import resolve_component
    from .surgery import importance as compute

    metric = resolve_component(registry, "importance_metrics", importance, "method.importance")
    stats = None
    if getattr(metric, "needs_activations", False):
        settings = getattr(bias, "settings", {})
        if settings.get("site") != "neuron" or not getattr(bias, "magnitude", None):
            raise ConfigError(f"importance metric {importance.name!r} needs neuron activations: analyze bias with "
                              "site='neuron' so the report carries them, or choose a weight-only importance "
                              "such as 'max_abs_weight'")
        stats = {layer: {"mean_abs": bias.magnitude[layer], "mean": bias.mean[layer]} for layer in bias.magnitude}
    return compute(model, metric, adapter=adapter, stats=stats, registry=registry)


def _guarded(bias: Any, layers: Sequence[int], ratio: float | None) -> dict[int, torch.Tensor]:
    """Neurons never to remove: mean |activation| above ``ratio`` x the layer median."""
    magnitude = getattr(bias, "magnitude", None) or {}
    site = getattr(bias, "settings", {}).get("site", "neuron")
    guarded = {}
    for layer in layers:
        mag = magnitude.get(layer)
        if ratio is None or mag is None or site != "neuron":
            guarded[layer] = torch.zeros(0, dtype=torch.bool)
            continue
        mag = mag.float().cpu()
        guarded[layer] = mag > ratio * mag.median()
    return guarded


def magnitude_guard(bias: Any, layers: Sequence[int], ratio: float | None) -> dict[int, torch.Tensor]:
    """Per layer, ``Bool[width]``: the neurons ``guard_magnitude_ratio`` protects (mean |activation| of the
    ``BiasReport`` above ``ratio`` x the layer median); an empty tensor where there is no guard (``ratio`` None,
    no magnitudes, or a site other than the neuron)."""
    return _guarded(bias, layers, ratio)


def _masked(score: torch.Tensor, guard: torch.Tensor) -> torch.Tensor:
    if guard.numel():
        score = score.masked_fill(guard, float("-inf"))
    return score


def _select(scores: Mapping[int, torch.Tensor], guarded: Mapping[int, torch.Tensor], caps: Mapping[int, int],
            total: int | None, per_layer: Mapping[int, int] | None) -> dict[int, list[int]]:
    """Top-scored neurons: per layer (``per_layer`` counts) or one global ranking up to ``total``."""
    removed: dict[int, list[int]] = {layer: [] for layer in scores}
    if per_layer is not None:
        for layer, s in scores.items():
            s = _masked(s, guarded[layer])
            k = min(per_layer.get(layer, 0), caps[layer], int(torch.isfinite(s).sum()))
            removed[layer] = sorted(torch.argsort(-s, stable=True)[:k].tolist())
        return removed
    entries = []
    for layer, s in scores.items():
        s = _masked(s, guarded[layer])
        entries.extend((float(v), layer, n) for n, v in enumerate(s.tolist()) if math.isfinite(v))
    entries.sort(key=lambda e: (-e[0], e[1], e[2]))
    taken = 0
    for _, layer, n in entries:
        if taken >= total:
            break
        if len(removed[layer]) < caps[layer]:
            removed[layer].append(n)
            taken += 1
    if taken < total:
        logger.warning("budget asked for %d neurons but only %d could be removed (min_width / guard)", total, taken)
    return {layer: sorted(v) for layer, v in removed.items()}


def _apply_rounding(removed: dict[int, list[int]], scores: Mapping[int, torch.Tensor],
                    guarded: Mapping[int, torch.Tensor], widths: Mapping[int, int], multiple: int,
                    min_width: int) -> dict[int, list[int]]:
    """Round each touched layer's remaining width to the nearest multiple, re-choosing its top neurons."""
    rounded = {}
    for layer, chosen in removed.items():
        if not chosen:
            rounded[layer] = []
            continue
        k = _round_width(widths[layer], len(chosen), multiple, min_width)
        s = _masked(scores[layer], guarded[layer])
        k = min(k, int(torch.isfinite(s).sum()))
        rounded[layer] = sorted(torch.argsort(-s, stable=True)[:k].tolist())
    return rounded
