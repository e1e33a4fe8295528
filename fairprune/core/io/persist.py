"""Save and load pruned models: a normal Hugging Face directory plus a ``fairprune.json`` sidecar.

The sidecar records per-layer widths, removed neurons, down_proj biases added by
compensation, the base model and the run config with its hash, so that
``load_pretrained`` can rebuild any pruned model (uniform widths or not). Saves
are atomic: everything is written into a temporary directory beside the target
and renamed into place; a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.errors import PersistError
from ..contract.registry import default_registry
from ..model.adapters import count_parameters, down_linear, resolve_adapter, widths

if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

SIDECAR = "fairprune.json"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _fairprune_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fairprune")
    except metadata.PackageNotFoundError:
        return "unknown"


def _run_config_record(run_config: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The run config as JSON data and its hash: the same ``RunConfig.config_hash`` as metrics.json's."""
    if run_config is None:
        return None, None
    from ..contract.config import RunConfig

    config = run_config if isinstance(run_config, RunConfig) else RunConfig.model_validate(run_config)
    return config.model_dump(mode="json"), config.config_hash()


def _removed_mapping(plan: Any) -> dict[str, list[int]] | None:
    if plan is None:
        return None
    from ..method.surgery import plan_mapping

    return {str(int(layer)): sorted(int(i) for i in (idx.tolist() if hasattr(idx, "tolist") else idx))
            for layer, idx in plan_mapping(plan).items()}


def sidecar_for(model: nn.Module, adapter: Any, *, plan: Any = None, run_config: Any = None,
                base_model: str | None = None) -> dict[str, Any]:
    """The ``fairprune.json`` content describing ``model``."""
    layer_widths = widths(model, adapter)
    n_layers = len(layer_widths)
    config = getattr(model, "config", None)
    run, run_hash = _run_config_record(run_config)
    return {
        "format": "fairprune",
        "format_version": FORMAT_VERSION,
        "fairprune_version": _fairprune_version(),
        "architecture": type(model).__name__,
        "adapter": adapter.name,
        "widths": layer_widths,
        "uniform": len(set(layer_widths)) == 1,
        "removed": _removed_mapping(plan),
        "down_bias_layers": [i for i in range(n_layers) if getattr(down_linear(model, adapter, i), "bias", None)
                             is not None],
        "parameters": count_parameters(model),
        "base_model": base_model or getattr(config, "fairprune_base_model", None),
        "license": getattr(config, "fairprune_license", None),
        "run_config": run,
        "run_config_sha256": run_hash,
    }


def save_pretrained(model: nn.Module, tokenizer: Any, path: str | Path, *, plan: Any = None,
                    run_config: Any = None, base_model: str | None = None, card: str | None = None,
                    extra_files: Mapping[str, bytes | str] | None = None, overwrite: bool = False,
                    adapter: Any = None, registry: Any = None) -> Path:
    """Save ``model`` (and ``tokenizer`` when given) as a Hugging Face directory with a sidecar; atomic.

    A non-empty directory at ``path`` is replaced only with ``overwrite=True``,
    and only once the new one is complete. ``run_config`` is a ``RunConfig`` or
    its dict; the sidecar records it and its hash.

    Raises:
        OutputError: ``path`` is a file, not writable, being written by another
            process, or a non-empty directory while ``overwrite`` is False.
    """
    from .outputs import Where, atomic_directory

    target = Path(path).expanduser().resolve()
    with atomic_directory(target, overwrite, Where("save_pretrained path", "pass overwrite=True")) as staging:
        staging.mkdir()
        write_pretrained(model, tokenizer, staging, plan=plan, run_config=run_config, base_model=base_model,
                         card=card, extra_files=extra_files, adapter=adapter, registry=registry)
    return target


def write_pretrained(model: nn.Module, tokenizer: Any, directory: str | Path, *, plan: Any = None,
                     run_config: Any = None, base_model: str | None = None, card: str | None = None,
                     extra_files: Mapping[str, bytes | str] | None = None, adapter: Any = None,
                     registry: Any = None) -> None:
    """Write the model directory's files into ``directory`` (a caller's staging directory, which exists)."""
    directory = Path(directory)
    adapter = adapter or resolve_adapter(model, registry=registry)
    sidecar = sidecar_for(model, adapter, plan=plan, run_config=run_config, base_model=base_model)
    from .outputs import writing

    # a full disk names the weights, whose partial file is gone; no "Writing model shards" bar (run --quiet, and the
    # run logs the save stage itself)
    with writing(directory / WEIGHTS_FILE), _quiet_transformers():
        _savable(model).save_pretrained(directory)
    if tokenizer is not None:
        with writing(directory / "tokenizer.json"):
            tokenizer.save_pretrained(directory)
    (directory / SIDECAR).write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
    if card is not None:
        (directory / "README.md").write_text(card)
    for name, content in (extra_files or {}).items():
        _write_extra(directory, name, content)
    logger.info("saved model (%d parameters, widths %s)", sidecar["parameters"], sidecar["widths"])


def _write_extra(root: Path, name: str, content: bytes | str) -> None:
    dest = (root / name).resolve()
    if root.resolve() not in dest.parents:
        raise PersistError(f"extra file {name!r} would be written outside the model directory")
    if not isinstance(content, (bytes, str)):
        raise PersistError(f"extra file {name!r}: content must be bytes or str, got {type(content).__name__}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        dest.write_bytes(content)
    else:
        dest.write_text(content)


def _savable(model: nn.Module) -> nn.Module:
    """``model``, or a plain copy of it when it carries a quantization config (a GGUF load refuses to save)."""
    config = model.config
    if getattr(model, "hf_quantizer", None) is None and getattr(config, "quantization_config", None) is None:
        return model
    import copy

    from transformers import AutoModelForCausalLM

    plain_config = copy.deepcopy(config)
    if hasattr(plain_config, "quantization_config"):
        del plain_config.quantization_config
    fresh = build_from_config(AutoModelForCausalLM, plain_config)
    state = model.state_dict()
    _missing, unexpected = fresh.load_state_dict(state, strict=False)
    if unexpected:
        raise PersistError(f"cannot save a quantized model: packed tensors such as {unexpected[0]!r} have no plain "
                           "equivalent; load it dequantized (fairprune.load_model does)")
    fresh.tie_weights()
    return fresh.to(next(model.parameters()).dtype)


def build_from_config(auto_cls: Any, config: Any) -> nn.Module:
    """A model built from ``config`` without spending time on random initialisation."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        return auto_cls.from_config(config)


# -- loading -------------------------------------------------------------------------------------
def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The parsed ``fairprune.json`` of a directory, or None when it has none."""
    file = Path(path) / SIDECAR
    if not file.exists():
        return None
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise PersistError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("widths"), list) or not data["widths"] or not all(
            isinstance(w, int) and w > 0 for w in data["widths"]):
        raise PersistError(f"{file} has no valid 'widths' list of positive integers")
    return data


def check_weights(path: str | Path) -> list[Path]:
    """The safetensors files of a directory (one file, or the shards of an index), each opened to check it.

    Raises:
        PersistError: no weights, a missing shard, or a file that is not readable safetensors (truncated).
    """
    root = Path(path)
    if (root / WEIGHTS_FILE).exists():
        files = [root / WEIGHTS_FILE]
    elif (root / WEIGHTS_INDEX).exists():
        try:
            weight_map = json.loads((root / WEIGHTS_INDEX).read_text()).get("weight_map", {})
        except (ValueError, AttributeError) as exc:
            raise PersistError(f"{root / WEIGHTS_INDEX} is not a valid index ({exc})") from None
        files = [root / shard for shard in sorted(set(weight_map.values()))]
    else:
        raise PersistError(f"{root} has no weights: neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX}")
    for file in files:
        if not file.exists():
            raise PersistError(f"{root}: weight shard {file.name} listed in {WEIGHTS_INDEX} is missing")
        _open_weights(file)
    return files


def _open_weights(file: Path) -> None:
    """Open a safetensors file (its header, checked against the file size); PersistError when it is damaged."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, "pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as exc:
        raise PersistError(f"{file}: not a readable safetensors file (truncated or damaged?): "
                           f"{' '.join(str(exc).split())}") from exc


def load_pretrained(path: str | Path, *, registry: Any = None) -> tuple[nn.Module, Any]:
    """Rebuild a model saved by ``save_pretrained`` (any per-layer widths); returns ``(model, tokenizer or None)``.

    transformers' own ``from_pretrained`` loads the weights, so its key mapping
    applies (a multimodal checkpoint's ``language_model.model.*`` keys, older
    layouts); the model class it instantiates is cut to the sidecar's per-layer
    widths (and given the recorded down biases) before the weights arrive.
    Weights load in the checkpoint's dtype. Any tensor missing, unexpected or
    misshapen is a ``PersistError``; nothing is left randomly initialised.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    root = Path(path).expanduser()
    if not (root / "config.json").exists():
        raise PersistError(f"{root} is not a saved model directory: config.json is missing")
    sidecar = read_sidecar(root)
    check_weights(root)
    config = AutoConfig.from_pretrained(root, trust_remote_code=False)
    base = _model_class(AutoModelForCausalLM, config)
    adapter = None
    if sidecar is not None:
        reg = default_registry(registry)
        adapter = reg.get("architectures", sidecar["adapter"]) if sidecar.get("adapter") else None
        base_cls, base = base, sized_class(base, sidecar, adapter, reg, root)
    try:
        with _quiet_transformers():
            model, info = base.from_pretrained(root, config=config, dtype="auto", output_loading_info=True,
                                               ignore_mismatched_sizes=True, trust_remote_code=False)
    except OSError as exc:
        raise PersistError(f"{root}: transformers cannot load it: {' '.join(str(exc).split())}") from exc
    _refuse_incomplete_load(info, root)
    if sidecar is not None:
        model.__class__ = base_cls  # the plain transformers class again (pickling, isinstance by name)
        (adapter or resolve_adapter(model, registry=registry)).set_widths(model, sidecar["widths"])
    model.eval()
    return model, _load_tokenizer(root)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" or "Writing model shards" progress bar and no load report: fairprune checks the load
    itself and logs its save stage."""
    from transformers.utils import logging as hf_logging

    bar, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def _model_class(auto_cls: Any, config: Any) -> type:
    """The class ``auto_cls`` builds for ``config`` (found by building it on the meta device: no memory)."""
    import torch

    with torch.device("meta"):
        return type(build_from_config(auto_cls, config))


def sized_class(base: type, sidecar: dict[str, Any], adapter: Any, registry: Any, root: Path) -> type:
    """A subclass of ``base`` whose instances are cut to the sidecar's widths (and get its down biases) right
    after ``base.__init__``, so ``from_pretrained`` finds parameters of the saved shapes. It carries ``base``'s
    name and module, so transformers treats it as ``base`` (its key mappings, not custom code)."""

    def __init__(self: nn.Module, config: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, config, *args, **kwargs)
        _shape_like_sidecar(self, sidecar, root, adapter or resolve_adapter(self, registry=registry))

    return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__,
                                         "__qualname__": base.__qualname__, "__doc__": base.__doc__})


def _refuse_incomplete_load(info: dict[str, Any], root: Path) -> None:
    """PersistError when from_pretrained left a tensor misshapen, unloaded or unused."""
    mismatched = info.get("mismatched_keys") or []
    if mismatched:
        key, saved, expected = next(iter(mismatched))
        raise PersistError(f"{root}: tensor {key} has shape {tuple(saved)} in the weights but {SIDECAR} and "
                           f"config.json imply {tuple(expected)}")
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        raise PersistError(f"{root}: weights hold tensors the model does not have, e.g. {unexpected[:3]} "
                           f"(does {SIDECAR} match the weights?)")
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise PersistError(f"{root}: the weights lack tensors the model needs, e.g. {missing[:3]}")


def _shape_like_sidecar(model: nn.Module, sidecar: dict[str, Any], root: Path, adapter: Any) -> None:
    """Cut each layer of a freshly built model to its recorded width and add the recorded down biases."""
    import torch

    recorded = sidecar["widths"]
    current = widths(model, adapter)
    if len(recorded) != len(current):
        raise PersistError(f"{root / SIDECAR} records {len(recorded)} layer widths but the config builds "
                           f"{len(current)} layers")
    for layer, (want, have) in enumerate(zip(recorded, current)):
        if want > have:
            raise PersistError(f"{root / SIDECAR}: layer {layer} width {want} exceeds the config's {have}")
        if want < have:
            adapter.keep(model, layer, torch.arange(want))
    for layer in sidecar.get("down_bias_layers") or []:
        if not 0 <= int(layer) < len(recorded):
            raise PersistError(f"{root / SIDECAR}: down_bias_layers lists layer {layer}, out of range")
        linear = down_linear(model, adapter, int(layer))
        if linear.bias is None:
            linear.bias = torch.nn.Parameter(torch.zeros(linear.out_features, dtype=linear.weight.dtype,
                                                         device=linear.weight.device))


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], root: Path | str) -> None:
    """Load ``state`` into ``model``; any extra, missing (other than tied aliases) or misshapen tensor is a PersistError."""
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise PersistError(f"{root}: weights hold tensors the model does not have, e.g. {unexpected[:3]} "
                           f"(does {SIDECAR} match the weights?)")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise PersistError(f"{root}: tensor {key} has shape {tuple(tensor.shape)} in the weights but "
                               f"{SIDECAR} and config.json imply {tuple(expected[key].shape)}")
    dtypes = {t.dtype for t in expected.values() if t.is_floating_point()}
    # assign (no copy) when the dtypes agree: half the memory traffic of a 135M-parameter load
    model.load_state_dict(state, strict=False, assign=all(t.dtype in dtypes for t in state.values()))
    model.tie_weights()
    owners: dict[int, set[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), set()).add(name)
    missing = [k for k in expected if k not in state
               and not any(alias in state for alias in owners.get(id(_get_tensor(model, k)), ()))]
    missing = [k for k in missing if k in dict(model.named_parameters(remove_duplicate=False))]
    if missing:
        raise PersistError(f"{root}: the weights lack tensors the model needs, e.g. {missing[:3]}")


def _get_tensor(model: nn.Module, name: str) -> Any:
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    return getattr(module, attr)


def _load_tokenizer(root: Path) -> Any:
    if not any((root / f).exists() for f in TOKENIZER_FILES):
        return None
    import transformers

    # the saved class, not the one AutoTokenizer guesses from config.json's model_type
    saved = {}
    if (root / "tokenizer_config.json").exists():
        saved = json.loads((root / "tokenizer_config.json").read_text())
    cls = getattr(transformers, str(saved.get("tokenizer_class", "")), None)
    if cls is not None and hasattr(cls, "from_pretrained"):
        return cls.from_pretrained(root)
    return transformers.AutoTokenizer.from_pretrained(root, trust_remote_code=False)
