"""The built-in selection methods: ``activation`` and ``attribution``, registered like third-party ones."""

from __future__ import annotations

from fairprune.core.contract.hookspecs import hookimpl


@hookimpl
def fairprune_register_methods(register):
    from .activation import ActivationMethod
    from .attribution import AttributionMethod

    register(ActivationMethod())
    register(AttributionMethod())
