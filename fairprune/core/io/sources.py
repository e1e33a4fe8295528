"""Turn a model spec (a source name, a Hugging Face id, a local directory, a .gguf path) into a model.

The model-source plugins do the loading; this module picks one (a source whose
name is the spec first, then the highest-priority source whose ``matches``
accepts it) and puts the result in place: the requested dtype, the requested
devices (accelerate), eval mode.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.errors import ModelSourceError
from ..contract.placement import DEVICE_MAP_STRATEGIES, is_device

if TYPE_CHECKING:
    from ..contract.registry import Registry

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
    if spec.startswith((".", "/", "~")) or spec.endswith(".gguf"):  # written as a path: say what is wrong with it
        path = Path(spec).expanduser()
        if path.is_dir():
            raise ModelSourceError(f"{spec!r} is a directory without a config.json, so not a model directory "
                                   "(a saved model holds config.json and its weights)")
        if path.exists():
            raise ModelSourceError(f"{spec!r} is a file but not a .gguf file; give a model directory or a .gguf file")
        raise ModelSourceError(f"no such model directory or file: {spec!r}")
    raise ModelSourceError(f"no model source understands {spec!r}. Named sources: {', '.join(names) or '(none)'}; "
                           "otherwise give a Hugging Face id, a local model directory or a .gguf path")


#: ``model.dtype`` values and their torch names; ``auto`` keeps the checkpoint's dtype
DTYPES = ("auto", "float32", "bfloat16", "float16")

#: files of a model directory whose ``auto_map`` points at the directory's own Python code
CODE_MAPPING_FILES = ("config.json", "tokenizer_config.json")
TRUST_SETTING = "model.trust_remote_code: true (--trust-remote-code on the command line)"


def custom_code_file(directory: Path) -> Path | None:
    """The first file of ``directory`` with an ``auto_map`` (the model or tokenizer ships its own code), or None."""
    for name in CODE_MAPPING_FILES:
        file = directory / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):  # a broken file gets its own error from the loader
            continue
        if isinstance(data, dict) and data.get("auto_map"):
            return file
    return None


def input_paths(spec: str | None, registry: Registry | None = None) -> list[str]:
    """``[spec]`` when a model spec is read from disk, ``[]`` for none or a named source (a bundled model's name
    is never a path, even where a directory of that name exists): what an output must not replace."""
    from ..contract.registry import default_registry

    if not spec:
        return []
    return [] if spec in default_registry(registry).names("model_sources") else [spec]


def refuse_custom_code(spec: str | Path, trust_remote_code: bool) -> None:
    """``ModelSourceError`` when local model directory ``spec`` ships its own code and it is not trusted."""
    directory = Path(spec).expanduser()
    if trust_remote_code or not directory.is_dir():
        return
    file = custom_code_file(directory)
    if file is not None:
        raise ModelSourceError(f"{file} maps to Python code shipped with the model (auto_map); fairprune never runs "
                               f"it unless {TRUST_SETTING}")


#: files of which a model directory with a tokenizer has at least one
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")
NO_TOKENIZER = "{spec}: no tokenizer found (tokenizer.json or tokenizer_config.json); save the tokenizer beside the model"


def refuse_directory_without_tokenizer(spec: str | Path) -> None:
    """``ModelSourceError`` before loading when local model directory ``spec`` holds no tokenizer file."""
    directory = Path(spec).expanduser()
    if directory.is_dir() and not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ModelSourceError(NO_TOKENIZER.format(spec=spec))


def load_model(spec: str, *, registry: Registry | None = None, cache_dir: str | Path | None = None,
               dtype: str = "auto", device_map: str | dict[str, Any] | None = None,
               max_memory: dict[Any, Any] | None = None, offload_folder: str | Path | None = None,
               trust_remote_code: bool = False, require_tokenizer: bool = True) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for ``spec`` in eval mode.

    ``dtype`` is ``auto`` (the checkpoint's dtype; GGUF files dequantize to
    float32), ``float32``, ``bfloat16`` or ``float16``. ``device_map`` (``auto``,
    ``balanced``, ``sequential`` or ``{module name: device}``) spreads the model
    over devices with accelerate, as ``from_pretrained(device_map=...)`` does;
    ``max_memory`` limits each device and ``offload_folder`` receives layers
    mapped to ``disk``. Sources that accept these keywords load directly into
    place; others load on the CPU and are cast and dispatched here.
    ``model.config.fairprune_base_model`` and ``fairprune_license`` are set when
    the source knows them (for model cards). Code shipped with a model or
    tokenizer (``auto_map``) runs only with ``trust_remote_code``.

    Raises:
        ConfigError: an unknown dtype.
        ModelSourceError: no source understands ``spec``, the model cannot be
            loaded, it ships code that is not trusted, or it has no tokenizer
            (unless ``require_tokenizer`` is False).
    """
    if dtype not in DTYPES:
        from ..contract.errors import ConfigError

        raise ConfigError(f"model.dtype: unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    from ..contract.registry import default_registry

    registry = default_registry(registry)
    refuse_custom_code(spec, trust_remote_code)
    if require_tokenizer:
        refuse_directory_without_tokenizer(spec)
    source = pick_source(str(spec), registry)
    placement = {"dtype": dtype, "device_map": device_map, "max_memory": normalise_max_memory(max_memory),
                 "offload_folder": str(offload_folder) if offload_folder else None}
    kwargs = {"cache_dir": cache_root(cache_dir)} if _accepts(source.load, "cache_dir") else {}
    kwargs.update({k: v for k, v in placement.items() if v is not None and _accepts(source.load, k)})
    if _accepts(source.load, "trust_remote_code"):
        kwargs["trust_remote_code"] = trust_remote_code
    start = time.perf_counter()
    model, tokenizer = source.load(str(spec), **kwargs)
    if tokenizer is None and require_tokenizer:
        raise ModelSourceError(NO_TOKENIZER.format(spec=spec))
    model = place_model(model, **placement).eval()
    logger.info("loaded %r with source %r in %.1f s (%s)", spec, source.name, time.perf_counter() - start,
                model_dtype(model))
    return model, tokenizer


def model_dtype(model: Any) -> Any:
    """The dtype of the model's floating-point weights (the first one found; float32 when none)."""
    import torch

    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def normalise_max_memory(max_memory: dict[Any, Any] | None) -> dict[Any, Any] | None:
    """accelerate's form: GPU indices as ints (``"0"`` from a YAML/CLI string becomes ``0``)."""
    if not max_memory:
        return None
    return {int(k) if isinstance(k, str) and k.isdigit() else k: v for k, v in max_memory.items()}


def place_model(model: Any, dtype: str = "auto", device_map: str | dict[str, Any] | None = None,
                max_memory: dict[Any, Any] | None = None, offload_folder: str | None = None) -> Any:
    """Cast ``model`` to ``dtype`` and dispatch it over ``device_map``, unless the source already did."""
    import torch

    want = None if dtype == "auto" else getattr(torch, dtype)
    dispatched = bool(getattr(model, "hf_device_map", None))
    if want is not None and model_dtype(model) != want:
        if dispatched:
            raise ModelSourceError(f"the source placed the model over devices in {model_dtype(model)}; it cannot be "
                                   f"cast to {dtype} afterwards")
        model = model.to(want)
    if device_map is not None and not dispatched:
        model = dispatch(model, device_map, max_memory, offload_folder)
    return model


def dispatch(model: Any, device_map: str | dict[str, Any], max_memory: dict[Any, Any] | None = None,
             offload_folder: str | None = None) -> Any:
    """Spread a loaded model over devices with accelerate (``auto``/``balanced``/``sequential`` or a map).

    Layers mapped to ``disk`` are written to ``offload_folder`` (``ModelSourceError`` without one).
    """
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    if isinstance(device_map, str) and is_device(device_map):  # the whole model on one device
        device_map = {"": device_map}
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise ModelSourceError(f"model.device_map: unknown strategy {device_map!r}; use "
                                   f"{', '.join(DEVICE_MAP_STRATEGIES)} or a {{module: device}} mapping")
        if device_map != "sequential":
            max_memory = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split,
                                             low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split)
    if "disk" in set(device_map.values()) and not offload_folder:
        raise ModelSourceError("model.device_map puts layers on disk: give model.offload_folder")
    tied = getattr(model, "tie_weights", None)
    if tied is not None:
        tied()
    model = dispatch_model(model, device_map=device_map, offload_dir=offload_folder)
    model.hf_device_map = dict(device_map)
    return model


def _accepts(func: Any, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
