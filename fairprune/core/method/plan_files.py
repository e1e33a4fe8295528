"""Plan files and their checks: strict JSON with integer layers and neuron indices, and the MLP widths a
plan was made for, so a plan is never applied to another model's neurons."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..contract.errors import PlanError


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
