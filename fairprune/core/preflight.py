"""Checks that run before the work they protect, so that bad input fails in one line, early.

- ``check_input_files``: every file a run reads (prompt and axis files, plugin
  parameters named ``path`` or ending in ``_path`` / ``_file``) exists and
  parses, before the model loads; the message names the config field
  (``evaluation.evaluators.2.params.lambada_path``).
- ``check_budget``: right after the model loads (its widths are needed), a
  budget that cannot remove a single neuron is refused before the analysis.
- ``check_plan_removes_neurons``: a plan that removes nothing is refused before pruning.
- ``plan_data`` / ``check_plan_widths``: a plan file is strict JSON with integer
  layers and indices, and is applied only to a model of the widths it was made for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, PlanError, PromptError

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
    from .groups import is_axis_name

    return [(f"{field}.{i}", axis, "axis") for i, axis in enumerate(axes) if not is_axis_name(axis)]


def input_files(config: Any) -> list[tuple[str, str, str]]:
    """``(config field, path, kind)`` of every file a run config makes the run read; kind is ``prompts``,
    ``axis`` or ``data`` (read by a plugin)."""
    found = [("bias.prompts", config.bias.prompts, "prompts")] if config.bias.prompts else []
    found += axis_files(config.bias.axes, "bias.axes") + axis_files(config.evaluation.axes or [], "evaluation.axes")
    components = [("bias.metric", config.bias.metric), ("scoring.scorer", config.scoring.scorer),
                  ("scoring.importance", config.scoring.importance), ("pruning.pruner", config.pruning.pruner)]
    components += [(f"evaluation.evaluators.{i}", c) for i, c in enumerate(config.evaluation.evaluators)]
    for field, component in components:
        found.extend((f, path, "data") for f, path in param_files(component.params, f"{field}.params"))
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
    from .prompts import load_axis, load_prompt_groups

    for field, path, kind in files:
        check_readable(path, field)
        try:
            if kind == "prompts":
                load_prompt_groups(path)
            elif kind == "axis":
                load_axis(path)
        except PromptError as exc:
            raise PromptError(f"{field}: {exc}") from None


# -- budgets -------------------------------------------------------------------------------------------
def check_budget(config: Any, model: Any, adapter: Any) -> None:
    """``ConfigError`` when ``config.pruning`` cannot remove a single neuron of ``model``.

    Checked before the analysis: layers out of range, a budget worth less than one
    neuron, a ``round_to`` no layer can shrink by, a ``min_width`` no layer is above.
    """
    from .planning import allocate_budget, neuron_cost
    from .surgery import count_parameters

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
        raise ConfigError(f"pruning.budget: {pruning.budget.describe()} is less than one neuron of this model "
                          f"(a neuron holds {min(costs.values()):,} of {count_parameters(model):,} parameters); "
                          "raise the budget")
    if not any(w > pruning.min_width for w in widths.values()):
        raise ConfigError(f"pruning.min_width: {pruning.min_width} leaves no neuron to remove (layer widths "
                          f"{sorted(set(widths.values()))})")
    if pruning.round_to:
        floor = math.ceil(pruning.min_width / pruning.round_to) * pruning.round_to
        if not any(w > floor for w in widths.values()):
            raise ConfigError(f"pruning.round_to: {pruning.round_to} is wider than what any layer can shrink by "
                              f"(layer widths {sorted(set(widths.values()))}); choose a smaller multiple")


def check_plan_removes_neurons(plan: Any, config: Any) -> None:
    """``ConfigError`` before pruning when the plan chose no neuron (say which setting to change)."""
    if plan.n_neurons:
        return
    pruning = config.pruning
    hint = (f"round_to={pruning.round_to} rounds every layer back to its full width; lower it or raise the budget"
            if pruning.round_to else "every candidate neuron is guarded or at min_width; relax "
            "pruning.guard_magnitude_ratio or pruning.min_width")
    raise ConfigError(f"pruning.budget: the plan removes no neuron ({pruning.budget.describe()}): {hint}")


# -- plan files ----------------------------------------------------------------------------------------
def read_plan_file(path: str | Path) -> dict[str, Any]:
    """The validated content of a plan JSON file (see ``plan_data``); ``PlanError`` naming the file."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PlanError(f"plan file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read plan file {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    return plan_data(data, str(path))


def plan_data(data: Any, source: str = "plan") -> dict[str, Any]:
    """Check a plan's plain data: ``removed`` maps integer layers to lists of integer neuron indices, and
    ``widths_before`` (when present) lists positive integers. Returns it with integer layer keys."""
    if not isinstance(data, Mapping):
        raise PlanError(f"{source}: a plan must be a JSON object with 'removed', got {type(data).__name__}")
    if "removed" not in data:
        raise PlanError(f"{source}: no 'removed' field (layer -> neuron indices to remove)")
    if not isinstance(data["removed"], Mapping):
        raise PlanError(f"{source}: 'removed' must map layers to lists of neuron indices")
    removed: dict[int, list[int]] = {}
    for key, indices in data["removed"].items():
        layer = _integer(key)
        if layer is None:
            raise PlanError(f"{source}: layer key {key!r} in 'removed' is not an integer")
        if not isinstance(indices, list):
            raise PlanError(f"{source}: removed.{key} must be a list of neuron indices, got {indices!r:.40}")
        bad = [i for i in indices if _integer(i) is None or isinstance(i, str)]
        if bad:
            raise PlanError(f"{source}: removed.{key} holds {bad[0]!r}, which is not an integer neuron index")
        removed[layer] = [int(i) for i in indices]
    widths = data.get("widths_before") or []
    if not isinstance(widths, list) or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0
                                                 for w in widths):
        raise PlanError(f"{source}: 'widths_before' must list positive integer layer widths, got {widths!r:.60}")
    return {**data, "removed": removed, "widths_before": list(widths)}


def _integer(value: Any) -> int | None:
    """``value`` as an int when it is one exactly (an int, or a string of digits); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def check_plan_widths(widths_before: Sequence[int], widths: Sequence[int]) -> None:
    """``PlanError`` unless the model has the widths the plan was made for (a plan without them is not checked)."""
    if widths_before and list(widths_before) != list(widths):
        changed = [i for i, (a, b) in enumerate(zip(widths_before, widths)) if a != b]
        where = f"layer {changed[0]}: {widths_before[changed[0]]} in the plan, {widths[changed[0]]} in the model" \
            if changed else f"{len(widths_before)} layers in the plan, {len(widths)} in the model"
        raise PlanError(f"the plan was made for MLP widths {list(widths_before)} but the model has {list(widths)} "
                        f"({where}); apply a plan to the model it was made from")
