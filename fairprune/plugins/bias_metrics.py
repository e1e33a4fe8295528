"""Built-in bias_metrics plugins."""

from __future__ import annotations

from ..core.hookspecs import hookimpl  # noqa: F401
