"""fairprune: fairness pruning of GLU language models.

The public API, loaded lazily so that ``import fairprune`` (and the CLI's
``--help``) does not import torch::

    import fairprune as fp
    model, tok = fp.load_model("smollm2-135m")
    bias = fp.analyze_bias(model, tok, axes=["race"])
    plan = fp.plan_pruning(model, bias, budget=fp.Budget(param_fraction=0.002))
    fp.prune(model, plan)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API: dict[str, str] = {
    "load_model": "fairprune.core.io.sources:load_model",
    "importance": "fairprune.core.method.surgery:importance",
    "prune": "fairprune.core.method.surgery:prune",
    "resolve_adapter": "fairprune.core.model.adapters:resolve_adapter",
    "save_pretrained": "fairprune.core.io.persist:save_pretrained",
    "load_pretrained": "fairprune.core.io.persist:load_pretrained",
    "analyze_bias": "fairprune.core.method.bias:analyze_bias",
    "BiasReport": "fairprune.core.method.bias:BiasReport",
    "plan_pruning": "fairprune.core.method.planning:plan_pruning",
    "Budget": "fairprune.core.method.planning:Budget",
    "Plan": "fairprune.core.method.planning:Plan",
    "evaluate": "fairprune.core.run.evaluation:evaluate",
    "run": "fairprune.core.run.pipeline:run",
    "sweep": "fairprune.core.run.sweep:sweep",
    "summary_text": "fairprune.core.contract.summary:summary_text",
    "RunConfig": "fairprune.core.contract.config:RunConfig",
    "load_config": "fairprune.core.contract.config:load_config",
    "get_registry": "fairprune.core.contract.registry:get_registry",
    "Registry": "fairprune.core.contract.registry:Registry",
    "hookimpl": "fairprune.core.contract.hookspecs:hookimpl",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'fairprune' has no attribute {name!r}")
    module_name, attr = target.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
