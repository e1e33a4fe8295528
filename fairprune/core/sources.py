"""Turn a model spec (a source name, a Hugging Face id, a local directory, a .gguf path) into a model.

The model-source plugins do the loading; this module picks one (a source whose
name is the spec first, then the highest-priority source whose ``matches``
accepts it) and normalises the result: float32, eval mode.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelSourceError

if TYPE_CHECKING:
    from .registry import Registry

logger = logging.getLogger(__name__)

CACHE_ENV = "FAIRPRUNE_CACHE"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where dequantized models are cached: ``cache_dir``, else ``$FAIRPRUNE_CACHE``, else ``~/.cache/fairprune``."""
    root = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fairprune"
    return Path(root).expanduser()


def pick_source(spec: str, registry: Registry) -> Any:
    """The model source for ``spec``: one named ``spec``, else the highest-priority one that matches."""
    names = registry.names("model_sources")
    if spec in names:
        return registry.get("model_sources", spec)
    entries = sorted(registry.items("model_sources"), key=lambda e: -int(getattr(e.obj, "priority", 0)))
    for entry in entries:
        if entry.obj.matches(spec):
            return entry.obj
    raise ModelSourceError(f"no model source understands {spec!r}. Named sources: {', '.join(names) or '(none)'}; "
                           "otherwise give a Hugging Face id, a local model directory or a .gguf path")


def load_model(spec: str, *, registry: Registry | None = None,
               cache_dir: str | Path | None = None) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for ``spec``; the model is float32 and in eval mode.

    ``model.config.fairprune_base_model`` and ``fairprune_license`` are set when
    the source knows them (for model cards).
    """
    if registry is None:
        from .registry import get_registry

        registry = get_registry()
    source = pick_source(str(spec), registry)
    kwargs = {"cache_dir": cache_root(cache_dir)} if _accepts(source.load, "cache_dir") else {}
    start = time.perf_counter()
    model, tokenizer = source.load(str(spec), **kwargs)
    model = model.float().eval()
    logger.info("loaded %r with source %r in %.1f s", spec, source.name, time.perf_counter() - start)
    return model, tokenizer


def _accepts(func: Any, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
