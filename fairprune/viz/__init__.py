"""Pictures of a fairness-pruning run and its self-contained HTML report (needs the ``viz`` extra: matplotlib).

Each plot function returns a matplotlib ``Figure`` (Agg backend); ``save_figure``
writes PNG or SVG. ``build_report(run_dir)`` writes ``report.html``.
"""

from __future__ import annotations

import importlib
from typing import Any

_API: dict[str, str] = {
    "bias_profile_plot": "profile", "neuron_map_plot": "neurons", "bias_importance_plot": "neurons",
    "pca_plot": "activations", "token_distances": "activations", "token_heatmap_plot": "activations",
    "pareto_plot": "sweep", "save_figure": "base", "build_report": "html", "write_analysis_plots": "analysis",
    "figure_for": "run_plots", "load_run": "rundata",
}

__all__ = [
    "bias_importance_plot", "bias_profile_plot", "build_report", "figure_for", "load_run", "neuron_map_plot",
    "pareto_plot", "pca_plot", "save_figure", "token_distances", "token_heatmap_plot", "write_analysis_plots",
]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'fairprune.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
