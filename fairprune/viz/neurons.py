"""Neuron-level pictures: the layer × neuron bias map, and bias vs importance with the scorer's decision boundary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.contract.errors import ConfigError
from .base import KEPT_COLOUR, SELECTED_COLOUR, as_array, new_figure

#: scorer name -> (normalisation, weight of bias, weight of (1 − importance)) as functions of bias_weight
SCORER_FORMS: dict[str, tuple[str, Any]] = {
    "linear": ("minmax", lambda w: (w, 1.0 - w)),
    "rank": ("rank", lambda w: (w, 1.0 - w)),
    "bias_only": ("minmax", lambda w: (1.0, 0.0)),
    "importance_only": ("minmax", lambda w: (0.0, 1.0)),
}


def normalise(values: np.ndarray, how: str) -> np.ndarray:
    """Per-layer scaling to [0, 1], as the scorers do: ``minmax`` or ``rank`` (ties broken by index)."""
    values = np.asarray(values, dtype=np.float64)
    if how == "rank":
        ranks = np.empty(values.size)
        ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
        return ranks / max(values.size - 1, 1)
    span = values.max() - values.min() if values.size else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def score_matrix(scores: Mapping[int, Any], normalise_layers: bool = True) -> tuple[list[int], np.ndarray]:
    """Layers (sorted) and a ``[n_layers, max_width]`` matrix of scores, NaN past a narrower layer's width."""
    layers = sorted(int(k) for k in scores)
    if not layers:
        raise ConfigError("neuron map: no layers with scores")
    rows = [as_array(scores[k] if k in scores else scores[str(k)]) for k in layers]
    matrix = np.full((len(layers), max(r.size for r in rows)), np.nan)
    for i, row in enumerate(rows):
        matrix[i, :row.size] = normalise(row, "minmax") if normalise_layers else row
    return layers, matrix


def neuron_map_plot(scores: Mapping[int, Any], removed: Mapping[int, Sequence[int]] | None = None,
                    normalise_layers: bool = True, title: str | None = None) -> Any:
    """Heatmap of bias scores (rows = layers, columns = neurons), removed neurons marked by white ticks.

    With ``normalise_layers`` each row is min-max scaled, as the planner compares within a layer.
    """
    layers, matrix = score_matrix(scores, normalise_layers)
    fig, ax = new_figure(9.0, max(2.6, 0.28 * len(layers) + 1.6))
    image = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap="viridis", origin="lower",
                      extent=(-0.5, matrix.shape[1] - 0.5, -0.5, len(layers) - 0.5))
    fig.colorbar(image, ax=ax, label="bias score" + (" (min-max within layer)" if normalise_layers else ""))
    xs, ys = [], []
    for row, layer in enumerate(layers):
        picked = (removed or {}).get(layer, (removed or {}).get(str(layer), ()))
        xs += [int(n) for n in picked]
        ys += [row] * len(picked)
    if xs:
        ax.scatter(xs, ys, marker="|", s=60, linewidths=1.2, color="white", label=f"removed ({len(xs)})")
        ax.legend(loc="upper right", fontsize=8, facecolor="#333333", labelcolor="white")
    ax.set_yticks(range(len(layers)), [str(k) for k in layers] if len(layers) <= 40 else None)
    ax.set_xlabel("neuron")
    ax.set_ylabel("layer")
    ax.set_title(title or "Bias score of every MLP neuron; ticks mark the removed ones")
    return fig


def decision_points(bias: Mapping[int, Any], importance: Mapping[int, Any], removed: Mapping[int, Sequence[int]],
                    scorer: str = "linear", bias_weight: float = 0.8,
                    layer: int | None = None) -> dict[str, np.ndarray]:
    """Normalised bias ``x``, normalised importance ``y``, scores and a selected mask for the neurons shown."""
    if scorer not in SCORER_FORMS:
        raise ConfigError(f"bias-importance plot: no decision boundary known for scorer {scorer!r}; "
                          f"known: {', '.join(SCORER_FORMS)}")
    how, weights = SCORER_FORMS[scorer]
    a, c = weights(bias_weight)
    layers = sorted(int(k) for k in bias) if layer is None else [layer]
    missing = [k for k in layers if k not in bias or k not in importance]
    if missing:
        have = sorted(k for k in bias if k in importance)
        raise ConfigError(f"bias-importance plot: layers {missing} have no bias or importance scores"
                          + (f"; the run has layers {have[0]}..{have[-1]}" if have else ""))
    xs, ys, sel, lay = [], [], [], []
    for k in layers:
        x, y = normalise(as_array(bias[k]), how), normalise(as_array(importance[k]), how)
        mask = np.zeros(x.size, dtype=bool)
        mask[[int(n) for n in removed.get(k, ())]] = True
        xs.append(x), ys.append(y), sel.append(mask), lay.append(np.full(x.size, k))
    x, y = np.concatenate(xs), np.concatenate(ys)
    return {"x": x, "y": y, "score": a * x + c * (1.0 - y), "selected": np.concatenate(sel),
            "layer": np.concatenate(lay), "weights": np.array([a, c])}


def bias_importance_plot(bias: Mapping[int, Any], importance: Mapping[int, Any],
                         removed: Mapping[int, Sequence[int]], scorer: str = "linear", bias_weight: float = 0.8,
                         layer: int | None = None, threshold: float | None = None) -> Any:
    """Scatter of normalised bias vs normalised importance, selected neurons in red, the decision line dashed.

    The line is ``a·x + c·(1 − y) = threshold`` (``a = w, c = 1 − w`` for the linear
    and rank scorers); ``threshold`` defaults to the smallest score of a selected neuron.
    """
    pts = decision_points(bias, importance, removed, scorer, bias_weight, layer)
    how = SCORER_FORMS[scorer][0]
    fig, ax = new_figure(6.2, 5.0)
    keep = ~pts["selected"]
    ax.scatter(pts["x"][keep], pts["y"][keep], s=6, alpha=0.45, color=KEPT_COLOUR, label=f"kept ({int(keep.sum())})")
    ax.scatter(pts["x"][~keep], pts["y"][~keep], s=22, color=SELECTED_COLOUR, edgecolors="black", linewidths=0.4,
               label=f"removed ({int((~keep).sum())})")
    if threshold is None and pts["selected"].any():
        threshold = float(pts["score"][pts["selected"]].min())
    if threshold is not None:
        _boundary(ax, pts["weights"], threshold)
    unit = "rank within layer" if how == "rank" else "min-max within layer"
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(f"bias score ({unit})")
    ax.set_ylabel(f"importance ({unit})")
    where = f"layer {layer}" if layer is not None else "all layers"
    ax.set_title(f"Bias vs importance, {where} ({scorer}, bias_weight {bias_weight:g})")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return fig


def _boundary(ax: Any, weights: np.ndarray, threshold: float) -> None:
    """Draw ``a·x + c·(1 − y) = t``; neurons below/right of it score above ``t``."""
    a, c = (float(v) for v in weights)
    label = f"score = {threshold:.3f}"
    if c > 0:
        x = np.linspace(0.0, 1.0, 101)
        ax.plot(x, 1.0 - (threshold - a * x) / c, "--", color="black", linewidth=1.2, label=label)
    elif a > 0:
        ax.axvline(threshold / a, linestyle="--", color="black", linewidth=1.2, label=label)
