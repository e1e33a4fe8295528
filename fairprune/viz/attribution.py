"""The attribution method's neuron picture: estimated bias reduction against capability cost, with the guard.

On a run made with ``bias.method: attribution`` no scorer and no bias weight were used, so the activation
method's decision line would be a fiction. What selection did use is drawn instead: every neuron's first-round
estimate of how much its removal lowers the bias objective (−ΔM; only positive values are candidates), its
capability cost as a rank within its layer, and the capability guard (the costliest ``guard_fraction`` of each
layer, never removed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.contract.errors import ConfigError
from .base import KEPT_COLOUR, SELECTED_COLOUR, as_array, new_figure
from .neurons import normalise

GUARDED_COLOUR = "#8172B3"


def cost_guard(cost: Any, guard_fraction: float) -> np.ndarray:
    """``Bool[width]``: the costliest ``ceil(guard_fraction * width)`` neurons of one layer, as selection guards
    them (ties, rare between float costs, go to the lower index)."""
    values = as_array(cost)
    k = int(np.ceil(guard_fraction * values.size))
    mask = np.zeros(values.size, dtype=bool)
    if k:
        mask[np.argsort(-values, kind="stable")[:k]] = True
    return mask


def attribution_points(gain: Mapping[int, Any], cost: Mapping[int, Any], removed: Mapping[int, Sequence[int]],
                       guard_fraction: float, layer: int | None = None) -> dict[str, np.ndarray]:
    """Per neuron shown: ``x`` the estimated reduction of the objective (−ΔM, objective units), ``y`` the
    capability cost's rank within its layer in [0, 1], masks ``selected`` and ``guarded``, and ``layer``.

    ``ConfigError`` when a layer has no cost or its gain and cost differ in length.
    """
    layers = sorted(int(k) for k in gain) if layer is None else [layer]
    missing = [k for k in layers if k not in gain or k not in cost]
    if missing:
        raise ConfigError(f"attribution plot: layers {missing} have no attribution or capability cost")
    xs, ys, sel, guard, lay = [], [], [], [], []
    for k in layers:
        g, c = as_array(gain[k]), as_array(cost[k])
        if g.shape != c.shape:
            raise ConfigError(f"attribution plot: layer {k} has {g.size} attributions but {c.size} costs")
        mask = np.zeros(g.size, dtype=bool)
        mask[[int(n) for n in removed.get(k, ())]] = True
        xs.append(g), ys.append(normalise(c, "rank")), sel.append(mask), guard.append(cost_guard(c, guard_fraction))
        lay.append(np.full(g.size, k))
    return {"x": np.concatenate(xs), "y": np.concatenate(ys), "selected": np.concatenate(sel),
            "guarded": np.concatenate(guard), "layer": np.concatenate(lay)}


def attribution_cost_plot(gain: Mapping[int, Any], cost: Mapping[int, Any], removed: Mapping[int, Sequence[int]],
                          guard_fraction: float, layer: int | None = None, objective: str = "objective",
                          magnitude_guard: float = 0.0) -> Any:
    """Scatter of estimated bias reduction (x, symmetric-log scale) against capability-cost rank within the
    layer (y): guarded neurons in purple above the guard line, removed neurons in red, the rest grey.

    ``gain`` is ``{layer: Tensor[width]}`` of −ΔM (higher: removal lowers ``objective`` more), ``cost`` the same
    shape of capability costs. Neurons left of x = 0 were never candidates. A ``magnitude_guard`` (the run's
    ``bias.attribution.magnitude_guard``) needs the model's weights and is only named in the title.
    """
    if not 0.0 <= guard_fraction < 1.0:
        raise ConfigError(f"attribution plot: guard_fraction must lie in [0, 1), got {guard_fraction}")
    pts = attribution_points(gain, cost, removed, guard_fraction, layer)
    fig, ax = new_figure(6.6, 5.0)
    sel, guarded = pts["selected"], pts["guarded"] & ~pts["selected"]
    rest = ~sel & ~guarded
    ax.scatter(pts["x"][rest], pts["y"][rest], s=6, alpha=0.45, color=KEPT_COLOUR, label=f"kept ({int(rest.sum())})")
    ax.scatter(pts["x"][guarded], pts["y"][guarded], s=6, alpha=0.45, color=GUARDED_COLOUR,
               label=f"guarded by capability cost ({int(guarded.sum())})")
    ax.scatter(pts["x"][sel], pts["y"][sel], s=22, color=SELECTED_COLOUR, edgecolors="black", linewidths=0.4,
               label=f"removed ({int(sel.sum())})")
    if guard_fraction > 0:
        ax.axhline(1.0 - guard_fraction, linestyle="--", color="black", linewidth=1.2,
                   label=f"guard: costliest {guard_fraction:.0%} of each layer")
    ax.axvline(0.0, linestyle=":", color="black", linewidth=1.0)
    span = np.abs(pts["x"][np.isfinite(pts["x"])])
    # linear within a decade of the median |estimate|, logarithmic beyond: both signs and the tails readable
    median = float(np.quantile(span[span > 0], 0.5)) if (span > 0).any() else 1.0
    ax.set_xscale("symlog", linthresh=10.0 ** np.floor(np.log10(median)), linscale=1.5)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(f"estimated reduction of {objective} by removal (round 1; symlog)")
    ax.set_ylabel("capability cost (rank within layer)")
    where = f"layer {layer}" if layer is not None else "all layers"
    extra = f"; magnitude guard {magnitude_guard:.0%} not drawn" if magnitude_guard else ""
    ax.set_title(f"Attribution vs capability cost, {where}{extra}")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return fig
