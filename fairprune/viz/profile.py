"""Per-layer bias profile: the mean activation difference between group members at every layer, base vs pruned."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..core.contract.errors import ConfigError
from .base import BASE_COLOUR, CYCLE, as_array, new_figure


def profile_series(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Group table rows ``{layer, base, pruned, [axis], [site]}`` into series: name -> {"base"|"pruned": points}.

    A series is named by its axis, its site, or both when the rows carry several of each.
    """
    axes = {r.get("axis") for r in rows}
    sites = {r.get("site") for r in rows}
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in rows:
        parts = [str(row["axis"])] if len(axes) > 1 or (row.get("axis") and len(sites) <= 1) else []
        if row.get("site") is not None and (len(sites) > 1 or not parts):
            parts.append(str(row["site"]))
        name = " / ".join(parts) or "bias"
        entry = series.setdefault(name, {"base": [], "pruned": []})
        for label in ("base", "pruned"):
            if row.get(label) is not None:
                entry[label].append((int(row["layer"]), float(row[label])))
    return series


def bias_profile_plot(rows: Sequence[Mapping[str, Any]], title: str | None = None,
                      ylabel: str = "mean |a − b| between group members") -> Any:
    """A line per series and model: base solid, pruned dashed in the same colour, layers on x.

    ``rows`` are the ``activation_bias`` evaluator's ``layers`` table (or rows of the
    same shape, e.g. from ``report_profile_rows``); a series without pruned values
    draws only its base line.
    """
    series = profile_series(rows)
    if not series:
        raise ConfigError("bias profile: no per-layer rows to plot")
    fig, ax = new_figure()
    for i, (name, models) in enumerate(sorted(series.items())):
        colour = CYCLE[i % len(CYCLE)] if len(series) > 1 else BASE_COLOUR
        for label, style in (("base", "-"), ("pruned", "--")):
            points = sorted(models[label])
            if not points:
                continue
            layers, values = zip(*points)
            ax.plot(layers, values, style, marker="o" if label == "base" else "s", markersize=3.5,
                    color=colour, label=f"{name} — {label}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "Bias per layer: base (solid) vs pruned (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def report_profile_rows(per_axis: Mapping[str, Mapping[int, Any]]) -> list[dict[str, Any]]:
    """Rows for ``bias_profile_plot`` from a ``BiasReport.per_axis``: the mean neuron bias score per layer (base only)."""
    return [{"axis": axis, "layer": int(layer), "base": float(as_array(scores).mean()), "pruned": None}
            for axis, layers in per_axis.items() for layer, scores in sorted(layers.items())]
