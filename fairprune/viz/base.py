"""Shared plumbing of the plots: a lazily imported Agg matplotlib, figure creation and saving.

matplotlib is an optional dependency (the ``viz`` extra); it is imported inside
functions so that ``import fairprune`` and the CLI stay fast without it.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from ..core.contract.errors import ConfigError
from ..core.io.outputs import Where, atomic_file

#: colours used across all plots, so base/pruned and selected/kept read the same everywhere
BASE_COLOUR = "#4C72B0"
PRUNED_COLOUR = "#DD8452"
SELECTED_COLOUR = "#C44E52"
KEPT_COLOUR = "#8C8C8C"
#: one colour per axis or group member, in order
CYCLE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or a clear error naming the ``viz`` extra."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("plots need matplotlib: pip install 'fairprune[viz]'") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def new_figure(width: float = 7.0, height: float = 4.2, ncols: int = 1, **kwargs: Any) -> tuple[Any, Any]:
    """A detached figure (not registered with pyplot's state machine, so nothing leaks between calls)."""
    pyplot()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, **kwargs)
    return fig, axes


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG or SVG, chosen by the file suffix; parent folders are created."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ConfigError(f"plot file {str(path)!r}: the suffix must be .png or .svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, Where("plot", "")) as staging:  # a full disk leaves the old picture, in one line
        fig.savefig(staging, format=fmt, dpi=dpi)
    return path


def png_base64(fig: Any, dpi: int = 110) -> str:
    """The figure as a base64 PNG, for embedding in a self-contained HTML page."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def as_array(values: Any) -> Any:
    """A float64 numpy array from a tensor, array or sequence (tensors are detached and moved to CPU)."""
    import numpy as np

    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64)
