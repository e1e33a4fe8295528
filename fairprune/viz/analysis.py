"""Plots of a bias analysis alone (no pruning yet), for ``fairprune analyze --plots``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .base import save_figure

logger = logging.getLogger(__name__)


def write_analysis_plots(report: Any, out_dir: str | Path, fmt: str = "png") -> list[Path]:
    """Write the plots a ``BiasReport`` supports into ``out_dir``: bias per layer per axis and the neuron map.

    Returns the written paths. ``fmt`` is ``png`` or ``svg``.
    """
    from .neurons import neuron_map_plot
    from .profile import bias_profile_plot, report_profile_rows

    out_dir = Path(out_dir)
    written = []
    per_axis = getattr(report, "per_axis", None) or {"bias": report.scores}
    fig = bias_profile_plot(report_profile_rows(per_axis), ylabel="mean neuron bias score",
                            title="Bias score per layer and axis (analysis prompts)")
    written.append(save_figure(fig, out_dir / f"bias-profile.{fmt}"))
    written.append(save_figure(neuron_map_plot(report.scores), out_dir / f"neuron-map.{fmt}"))
    logger.info("analysis plots written: %s", ", ".join(map(str, written)))
    return written
