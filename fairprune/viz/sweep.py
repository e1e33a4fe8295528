"""The sweep's trade-off picture: bias reduction against capability loss, Pareto front joined, chosen point starred."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core.contract.errors import ConfigError
from .base import KEPT_COLOUR, PRUNED_COLOUR, SELECTED_COLOUR, new_figure


def _usable(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [p for p in points if p.get("bias_reduction_pct") is not None and p.get("capability_loss_pct") is not None]


def point_label(point: Mapping[str, Any]) -> str:
    """A short label of a sweep point's settings: the method's variant (e.g. the bias weight) and the budget."""
    budget = point.get("budget")
    if isinstance(budget, Mapping):
        budget = ", ".join(f"{k}={v}" for k, v in budget.items())
    variant = point.get("variant", {"bias_weight": point.get("bias_weight")} if "bias_weight" in point else {})
    names = {"bias_weight": "w"}
    return ", ".join([f"{names.get(k, k)}={v}" for k, v in variant.items()] + [str(budget)])


def pareto_plot(points: Sequence[Mapping[str, Any]], title: str | None = None) -> Any:
    """Every sweep point (capability loss % on x, bias reduction % on y); the front is joined, the chosen one starred.

    Points are ``sweep.json``'s ``points``: ``bias_reduction_pct``, ``capability_loss_pct``,
    ``pareto`` and ``chosen`` flags; the best corner is the top left.
    """
    usable = _usable(points)
    if not usable:
        raise ConfigError("Pareto plot: no sweep point has both bias_reduction_pct and capability_loss_pct")
    fig, ax = new_figure(6.4, 4.6)
    others = [p for p in usable if not p.get("pareto")]
    front = sorted((p for p in usable if p.get("pareto")), key=lambda p: p["capability_loss_pct"])
    if others:
        ax.scatter([p["capability_loss_pct"] for p in others], [p["bias_reduction_pct"] for p in others],
                   s=22, color=KEPT_COLOUR, alpha=0.8, label=f"dominated ({len(others)})")
    if front:
        ax.plot([p["capability_loss_pct"] for p in front], [p["bias_reduction_pct"] for p in front], "-o",
                color=PRUNED_COLOUR, markersize=5, label=f"Pareto front ({len(front)})")
    for p in (p for p in usable if p.get("chosen")):
        ax.scatter([p["capability_loss_pct"]], [p["bias_reduction_pct"]], marker="*", s=260, color=SELECTED_COLOUR,
                   edgecolors="black", linewidths=0.6, zorder=5, label="chosen")
        ax.annotate(point_label(p), (p["capability_loss_pct"], p["bias_reduction_pct"]), textcoords="offset points",
                    xytext=(8, -12), fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("capability loss (%)  → worse")
    ax.set_ylabel("bias reduction (%)  ↑ better")
    ax.set_title(title or "Sweep: bias reduction vs capability loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
