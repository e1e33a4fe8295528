"""Registers the built-in GLU adapters."""

from __future__ import annotations

from ..core.hookspecs import hookimpl


@hookimpl
def fairprune_register_architectures(register):
    from .base import FusedGateUpAdapter, GLUAdapter

    register(GLUAdapter())
    register(FusedGateUpAdapter())
