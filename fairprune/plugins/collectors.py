"""Built-in collectors plugins."""

from __future__ import annotations

from ..core.hookspecs import hookimpl  # noqa: F401
