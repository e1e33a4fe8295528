"""Structured removal of GLU neurons through an architecture adapter, and per-neuron importance.

``prune`` validates a plan completely before touching the model, applies the
named pruner plugin, and restores the model exactly if anything fails half-way.
``importance`` runs an importance metric on every layer and checks its output.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..contract.errors import ConfigError, PlanError, PluginContractError
from ..contract.protocols import PruneResult
from ..contract.registry import default_registry
from ..model.adapters import count_parameters, mlp_weights, resolve_adapter, widths
from .plan_files import check_plan_widths

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..contract.registry import Registry

logger = logging.getLogger(__name__)


def plan_mapping(plan: Any) -> Mapping[Any, Any]:
    """A plan as ``{layer: indices}``: a Mapping, or any object with ``to_mapping()``."""
    if hasattr(plan, "to_mapping") and not isinstance(plan, Mapping):
        plan = plan.to_mapping()
    if not isinstance(plan, Mapping):
        raise PlanError(f"a plan must be a mapping {{layer: [neuron indices]}} or have to_mapping(); "
                        f"got {type(plan).__name__}")
    return plan


def _as_int(value: Any) -> int | None:
    """``value`` as an int when it is an integer (Python, numpy or a 0-d integer tensor), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    dtype = str(getattr(value, "dtype", "")).removeprefix("torch.")
    if getattr(value, "ndim", None) == 0 and dtype.startswith(("int", "uint", "long", "short")):
        return int(value.item())
    return None


def _indices_list(layer: int, raw: Any) -> list[Any]:
    if hasattr(raw, "tolist") and hasattr(raw, "dtype"):
        dtype = str(raw.dtype)
        if "float" in dtype or "bool" in dtype or "complex" in dtype:
            raise PlanError(f"layer {layer}: neuron indices must be integers, got a tensor of {dtype}")
        return [int(v) for v in raw.reshape(-1).tolist()]
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence | set | frozenset):
        try:
            return list(raw)
        except TypeError:
            raise PlanError(f"layer {layer}: neuron indices must be a sequence of integers, "
                            f"got {type(raw).__name__}") from None
    return list(raw)


def validate_plan(model: nn.Module, adapter: Any, plan: Any) -> dict[int, torch.Tensor]:
    """Check a plan against the model and return ``{layer: LongTensor of sorted indices}``.

    Every check runs before anything is touched: a plan that records the widths
    it was made for (``Plan.widths_before``) matches the model's, layer and neuron
    indices are integers in range, no index repeats, and every layer keeps at
    least one neuron. Layers with an empty index list are dropped from the result.
    """
    import torch

    check_plan_widths(getattr(plan, "widths_before", None) or [], widths(model, adapter))
    mapping = plan_mapping(plan)
    n_layers = len(adapter.layers(model))
    result: dict[int, torch.Tensor] = {}
    for raw_layer, raw_indices in mapping.items():
        layer = _as_int(raw_layer)
        if layer is None:
            raise PlanError(f"layer keys must be integers, got {raw_layer!r} ({type(raw_layer).__name__})")
        if not 0 <= layer < n_layers:
            raise PlanError(f"layer {layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})")
        if layer in result:
            raise PlanError(f"layer {layer} appears twice in the plan")
        width = int(adapter.width(model, layer))
        seen: set[int] = set()
        for raw in _indices_list(layer, raw_indices):
            index = _as_int(raw)
            if index is None:
                raise PlanError(f"layer {layer}: neuron index {raw!r} is not an integer")
            if not 0 <= index < width:
                raise PlanError(f"layer {layer}: neuron index {index} is out of range (width {width})")
            if index in seen:
                raise PlanError(f"layer {layer}: neuron index {index} is listed twice")
            seen.add(index)
        if len(seen) >= width:
            raise PlanError(f"layer {layer}: the plan removes all {width} neurons; at least one must remain")
        if seen:
            result[layer] = torch.tensor(sorted(seen), dtype=torch.long)
    return dict(sorted(result.items()))


def _validate_calibration(plan: Mapping[int, torch.Tensor], calibration: Any, model: nn.Module, adapter: Any,
                          pruner_name: str) -> dict[int, torch.Tensor]:
    import torch

    if calibration is None:
        raise PlanError(f"pruner {pruner_name!r} needs calibration: {{layer: Tensor[width]}} of mean neuron "
                        "activations E[h_i] (the mean of the 'neuron' site over real tokens)")
    checked: dict[int, torch.Tensor] = {}
    for layer in plan:
        value = calibration.get(layer, calibration.get(str(layer))) if isinstance(calibration, Mapping) else None
        width = int(adapter.width(model, layer))
        if value is None:
            raise PlanError(f"pruner {pruner_name!r}: calibration has no entry for layer {layer}")
        value = torch.as_tensor(value)
        if tuple(value.shape) != (width,) or not value.is_floating_point() or not torch.isfinite(value).all():
            raise PlanError(f"pruner {pruner_name!r}: calibration of layer {layer} must be a finite float "
                            f"tensor of shape [{width}], got {tuple(value.shape)} {value.dtype}")
        checked[layer] = value
    return checked


def _configs(model: nn.Module) -> list[Any]:
    config = getattr(model, "config", None)
    if config is None:
        return []
    text = getattr(config, "text_config", None)
    return [config] + ([text] if text is not None and text is not config else [])


def snapshot_layers(model: nn.Module, adapter: Any, plan: Mapping[int, Sequence[int]], *,
                    only_planned: bool = True) -> Any:
    """A ``Snapshot`` of the MLPs a plan ``{layer: [indices]}`` touches and of the model config:
    ``restore()`` undoes a prune of them. ``only_planned`` saves just the planned slices of gate/up/down
    (for pruners that promise to change nothing else; see ``core.snapshot``)."""
    from .snapshot import Snapshot, mlp_slices

    return Snapshot(mlp_slices(model, adapter, plan), _configs(model), only_planned=only_planned)


def prune(model: nn.Module, plan: Any, *, pruner: str = "structural", adapter: Any = None,
          calibration: Mapping[int, torch.Tensor] | None = None, registry: Registry | None = None) -> PruneResult:
    """Remove the neurons of ``plan`` (``{layer: [indices]}``) from ``model`` in place; all or nothing.

    The plan is validated first (``PlanError``, model untouched); the pruner
    plugin then edits the model, the config records the new widths, and the
    ``fairprune_layer_pruned`` hook is called per layer. On any failure the
    model and its config are restored bit for bit and the error re-raised.
    """
    import torch

    reg = default_registry(registry)
    adapter = adapter if adapter is not None else resolve_adapter(model, registry=reg)
    pruner_obj = reg.get("pruners", pruner) if isinstance(pruner, str) else pruner
    checked = validate_plan(model, adapter, plan)
    pruner_name = getattr(pruner_obj, "name", str(pruner))
    if getattr(pruner_obj, "needs_calibration", False) and checked:
        calibration = _validate_calibration(checked, calibration, model, adapter, pruner_name)
    widths_before = widths(model, adapter)
    params_before = count_parameters(model)
    removed = {layer: idx.tolist() for layer, idx in checked.items()}
    if not checked:
        return PruneResult(params_before, params_before, widths_before, list(widths_before), {})
    from ..model.devices import onloaded
    from .snapshot import mlp_slices

    mlps = [module for module, _, _ in mlp_slices(model, adapter, removed)]
    with onloaded(mlps):  # weights offloaded by a device map are edited in CPU memory, then offloaded again
        snapshot = snapshot_layers(model, adapter, removed,
                                   only_planned=bool(getattr(pruner_obj, "changes_only_planned", False)))
        try:
            with torch.no_grad():
                pruner_obj.apply(model, adapter, removed, calibration)
            widths_after = widths(model, adapter)
            adapter.set_widths(model, widths_after)
        except BaseException:
            snapshot.restore()
            logger.error("pruner %r failed; the model was restored to its state before pruning", pruner_name)
            raise
        del snapshot
    result = PruneResult(params_before, count_parameters(model), widths_before, widths_after, removed)
    for layer, indices in removed.items():
        reg.hook.fairprune_layer_pruned(layer=layer, removed=list(indices), width_before=widths_before[layer],
                                        width_after=widths_after[layer])
    logger.info("pruned %d neurons in %d layers with %r: %d -> %d parameters (%.4f%% removed)",
                sum(map(len, removed.values())), len(removed), pruner_name, result.params_before,
                result.params_after, 100 * result.fraction_removed)
    return result


def importance(model: nn.Module, metric: str = "max_abs_weight", *, adapter: Any = None,
               stats: Mapping[int, Mapping[str, torch.Tensor]] | None = None, registry: Registry | None = None,
               params: dict[str, Any] | None = None) -> dict[int, torch.Tensor]:
    """Importance of every neuron of every layer: ``{layer: Tensor[width]}`` (higher = more needed).

    Metrics with ``needs_activations`` read ``stats[layer]["mean_abs"]`` (and ``"mean"``).
    Each result is checked to be a finite float tensor of shape ``[width]``.
    """
    import torch

    reg = default_registry(registry)
    adapter = adapter if adapter is not None else resolve_adapter(model, registry=reg)
    scorer = reg.create("importance_metrics", metric, params) if isinstance(metric, str) else metric
    name = getattr(scorer, "name", str(metric))
    needs = bool(getattr(scorer, "needs_activations", False))
    result: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for layer in range(len(adapter.layers(model))):
            width = int(adapter.width(model, layer))
            layer_stats = _layer_stats(stats, layer, width, name) if needs else None
            score = scorer.score(mlp_weights(model, adapter, layer), layer_stats)
            if not isinstance(score, torch.Tensor) or not score.is_floating_point():
                raise PluginContractError(f"importance metric {name!r} returned {type(score).__name__} "
                                          f"{getattr(score, 'dtype', '')} for layer {layer}; expected a float tensor")
            if tuple(score.shape) != (width,):
                raise PluginContractError(f"importance metric {name!r} returned shape {tuple(score.shape)} for "
                                          f"layer {layer}; expected [{width}]")
            if not torch.isfinite(score).all():
                raise PluginContractError(f"importance metric {name!r} returned non-finite values for layer {layer}")
            result[layer] = score.detach().float().cpu()
    return result


def _layer_stats(stats: Any, layer: int, width: int, metric: str) -> dict[str, torch.Tensor]:
    import torch

    if stats is None:
        raise ConfigError(f"importance metric {metric!r} needs activation statistics: pass "
                          "stats={layer: {'mean_abs': Tensor[width], 'mean': Tensor[width]}}")
    entry = stats.get(layer, stats.get(str(layer))) if isinstance(stats, Mapping) else None
    if entry is None or "mean_abs" not in entry:
        raise ConfigError(f"importance metric {metric!r}: stats has no 'mean_abs' for layer {layer}")
    out: dict[str, torch.Tensor] = {}
    for key, value in entry.items():
        value = torch.as_tensor(value)
        if tuple(value.shape) != (width,):
            raise ConfigError(f"importance metric {metric!r}: stats[{layer}][{key!r}] has shape "
                              f"{tuple(value.shape)}, expected [{width}]")
        out[key] = value.float()
    return out
