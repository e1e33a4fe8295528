"""Checks that run before the work they protect, so that bad input fails in one line, early.

- ``check_input_files``: every file a run reads (prompt and axis files, plugin
  parameters named ``path`` or ending in ``_path`` / ``_file``) exists and
  parses, before the model loads; the message names the config field
  (``evaluation.evaluators.2.params.lambada_path``).
- ``check_budget``: right after the model loads (its widths are needed), a
  budget that cannot remove a single neuron is refused before the analysis.
- ``check_plan_removes_neurons``: a plan that removes nothing is refused before pruning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..contract.errors import ConfigError, PromptError

logger = logging.getLogger(__name__)

def is_path_param(key: str) -> bool:
    """Whether a plugin parameter names a file the plugin reads: ``path`` or ``*_path`` / ``*_file``."""
    return key == "path" or key.endswith(("_path", "_file"))


def param_files(params: Any, prefix: str) -> list[tuple[str, str]]:
    """``(config field, path)`` of every path parameter in ``params``, nested mappings and lists included."""
    found: list[tuple[str, str]] = []
    items = params.items() if isinstance(params, Mapping) else enumerate(params) if isinstance(params, list) else ()
    for key, value in items:
        field = f"{prefix}.{key}"
        if isinstance(value, (Mapping, list)):
            found.extend(param_files(value, field))
        elif isinstance(key, str) and is_path_param(key) and isinstance(value, str) and value:
            found.append((field, value))
    return found


def axis_files(axes: Sequence[str], field: str) -> list[tuple[str, str, str]]:
    """``(field.i, path, "axis")`` of the entries of ``axes`` that are files rather than registered names."""
    from ..data.groups import is_axis_name

    return [(f"{field}.{i}", axis, "axis") for i, axis in enumerate(axes) if not is_axis_name(axis)]


def input_files(config: Any) -> list[tuple[str, str, str]]:
    """``(config field, path, kind)`` of every file a run config makes the run read; kind is ``prompts``,
    ``axis`` or ``data`` (read by a plugin)."""
    found = [("bias.prompts", config.bias.prompts, "prompts")] if config.bias.prompts else []
    found += axis_files(config.bias.axes, "bias.axes") + axis_files(config.evaluation.axes or [], "evaluation.axes")
    components = [("method", config.method), ("pruning.pruner", config.pruning.pruner)]
    components += [(f"evaluation.evaluators.{i}", c) for i, c in enumerate(config.evaluation.evaluators)]
    for field, component in components:
        found.extend((f, path, "data") for f, path in param_files(component.params, f"{field}.params"))
    recovery = getattr(config.pruning, "recovery", None)
    if recovery is not None and recovery.text:
        found.append(("pruning.recovery.text", recovery.text, "data"))
    return found


def check_readable(path: str | Path, field: str) -> Path:
    """``ConfigError`` naming ``field`` unless ``path`` exists and can be read."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise ConfigError(f"{field}: file not found: {resolved}")
    try:
        if resolved.is_file():
            with resolved.open("rb") as handle:
                handle.read(1)
        else:
            next(resolved.iterdir(), None)
    except OSError as exc:
        raise ConfigError(f"{field}: cannot read {resolved}: {exc.strerror or exc}") from None
    return resolved


def check_input_files(config: Any) -> None:
    """Every file a run config makes the run read exists, is readable and (prompt and axis files) parses."""
    check_files(input_files(config))


def check_files(files: Sequence[tuple[str, str, str]]) -> None:
    """Check ``(field, path, kind)`` triples before any loading: each file exists and is readable; ``prompts``
    and ``axis`` files also parse.

    Raises:
        ConfigError: a missing or unreadable file, named by its field.
        PromptError: a prompt or axis file that does not parse, with its field and ``file:line``.
    """
    from ..data.prompts import load_axis, load_prompt_groups

    for field, path, kind in files:
        check_readable(path, field)
        try:
            if kind == "prompts":
                load_prompt_groups(path)
            elif kind == "axis":
                load_axis(path)
        except PromptError as exc:
            raise PromptError(f"{field}: {exc}") from None


def check_analysis_prompts(config: Any, registry: Any) -> None:
    """With ``bias.analysis_prompts`` other than ``templates``, every axis of ``bias.axes`` must have generated
    templates; ``PromptError`` naming the field otherwise (before the model loads)."""
    if getattr(config.bias, "analysis_prompts", "templates") == "templates":
        return
    from ..data.groups import run_groups

    try:
        run_groups(config, "analysis", registry)
    except PromptError as exc:
        raise PromptError(f"bias.analysis_prompts: {exc}") from None


# -- budgets -------------------------------------------------------------------------------------------
def check_budget(config: Any, model: Any, adapter: Any) -> None:
    """``ConfigError`` when ``config.pruning`` cannot remove a single neuron of ``model``.

    Checked before the analysis: layers out of range, a budget worth less than one
    neuron, a ``round_to`` no layer can shrink by, a ``min_width`` no layer is above,
    and a budget of more neurons than the layers hold above ``min_width``.
    """
    from ..method.planning import allocate_budget, neuron_cost
    from ..model.adapters import count_parameters

    pruning = config.pruning
    n_layers = len(adapter.layers(model))
    layers = list(range(n_layers)) if pruning.layers is None else list(pruning.layers)
    for i, layer in enumerate(layers):
        if not 0 <= layer < n_layers:
            raise ConfigError(f"pruning.layers.{i}: layer {layer} does not exist; the model has layers 0..{n_layers - 1}")
    widths = {layer: adapter.width(model, layer) for layer in layers}
    costs = {layer: neuron_cost(model, adapter, layer) for layer in layers}
    total, per_layer = allocate_budget(pruning.budget, widths, costs, count_parameters(model))
    if (per_layer is not None and not any(per_layer.values())) or (per_layer is None and not total):
        raise ConfigError(f"pruning.budget: {budget_text(pruning.budget)} is less than one neuron of this model "
                          f"(a neuron holds {min(costs.values()):,} of {count_parameters(model):,} parameters); "
                          "raise the budget")
    neurons = total if per_layer is None else sum(per_layer.values())
    if getattr(pruning, "uniform_widths", False):
        from ..method.planning import uniform_quota

        if not any(uniform_quota(widths, neurons, round_to=pruning.round_to, min_width=pruning.min_width).values()):
            raise ConfigError(f"pruning.uniform_widths: {budget_text(pruning.budget)} ({neurons} neurons) leaves no "
                              f"neuron for each of the {len(widths)} layers"
                              + (f" at a width that is a multiple of round_to={pruning.round_to}"
                                 if pruning.round_to else "") + "; raise the budget")
    if not any(w > pruning.min_width for w in widths.values()):
        raise ConfigError(f"pruning.min_width: {pruning.min_width} leaves no neuron to remove (layer widths "
                          f"{sorted(set(widths.values()))})")
    if pruning.round_to:
        floor = math.ceil(pruning.min_width / pruning.round_to) * pruning.round_to
        if not any(w > floor for w in widths.values()):
            raise ConfigError(f"pruning.round_to: {pruning.round_to} is wider than what any layer can shrink by "
                              f"(layer widths {sorted(set(widths.values()))}); choose a smaller multiple")
    removable = sum(max(w - pruning.min_width, 0) for w in widths.values())
    if neurons > removable:  # the plan would stop short of what was asked, with a warning easy to miss
        raise ConfigError(f"pruning.budget: {budget_text(pruning.budget)} asks for {neurons:,} neurons, but only "
                          f"{removable:,} can be removed (layer widths {sorted(set(widths.values()))}, min_width "
                          f"{pruning.min_width}); lower the budget")


def check_plan_removes_neurons(plan: Any, config: Any) -> None:
    """``ConfigError`` before pruning when the budget's plan chose no neuron (say which setting to change).

    The attribution method may find that no removal lowers the bias objective:
    a finding, reported by its verification, so it only logs a warning here.
    """
    if plan.n_neurons:
        return
    if config.method.name != "activation":
        logger.warning("the %s method removes no neuron (%s)", config.method.name,
                       plan.settings.get("stop_reason", "no candidate lowered its objective"))
        return
    pruning = config.pruning
    hint = (f"round_to={pruning.round_to} rounds every layer back to its full width; lower it or raise the budget"
            if pruning.round_to else "every candidate neuron is guarded or at min_width; relax "
            "method.guard_magnitude_ratio or pruning.min_width")
    raise ConfigError(f"pruning.budget: the plan removes no neuron ({budget_text(pruning.budget)}): {hint}")


def budget_text(budget: Any) -> str:
    """``param_fraction=1e-09``: the budget as its config says it (``describe()`` rounds tiny fractions to 0%)."""
    return ", ".join(f"{key}={value:g}" for key, value in budget.model_dump(exclude_none=True).items())
