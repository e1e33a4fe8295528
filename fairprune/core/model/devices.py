"""Where tensors go when a model is spread over devices, and what to say when its numbers overflow.

A model loaded with a device map (accelerate) may have layers on several GPUs,
on the CPU, or offloaded to disk (weights on the ``meta`` device until their
layer runs). Code that feeds a model or reads from hooks uses these helpers:
inputs go to the device of the input embeddings, tensors made inside a hook go
to the hooked activation's device, results are gathered on the CPU.
Non-finite values (float16 overflow, mostly) are errors that say where they
first appeared and which dtype to use instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..contract.errors import NonFiniteError


def execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes: its accelerate hook's execution device, else its first non-meta parameter's.

    Inside a forward hook the activation's own ``.device`` is the surest answer;
    this is for code that must place tensors before a forward (inputs, masks).
    """
    hook = getattr(module, "_hf_hook", None)
    for one in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        device = getattr(one, "execution_device", None)
        if device is not None:
            return _as_device(device)
    for tensor in module.parameters():
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


def input_device(model: nn.Module) -> torch.device:
    """Where a model's input ids go: the device its input embeddings run on (any placement)."""
    device_map = getattr(model, "hf_device_map", None)
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if device_map and embeddings is not None:
        name = next((n for n, m in model.named_modules() if m is embeddings), "")
        real = [d for d in device_map.values() if d not in ("cpu", "disk")]
        main = _as_device(real[0]) if real else torch.device("cpu")
        for key in sorted(device_map, key=len, reverse=True):
            if key == "" or name == key or name.startswith(key + "."):
                placed = device_map[key]
                # accelerate runs cpu/disk-offloaded modules on the main device
                return main if placed in ("cpu", "disk") else _as_device(placed)
    return execution_device(embeddings if embeddings is not None else model)


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (nested tuples, lists, dicts) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def offloaded_modules(roots: Any) -> list[nn.Module]:
    """The modules under ``roots`` whose weights accelerate keeps offloaded (CPU or disk) between forwards."""
    found: dict[int, nn.Module] = {}
    for root in roots:
        for module in root.modules():
            hook = getattr(module, "_hf_hook", None)
            if any(getattr(one, "offload", False) for one in getattr(hook, "hooks", None) or [hook]):
                found[id(module)] = module
    return list(found.values())


@contextmanager
def onloaded(roots: Any) -> Iterator[None]:
    """Offloaded weights under ``roots`` in CPU memory for an edit (surgery); afterwards the edited
    tensors, new shapes included, go back where accelerate keeps them and are offloaded again.

    Modules that are not offloaded are left alone. All offloaded weights under
    ``roots`` are in memory together inside the block.
    """
    modules = offloaded_modules(roots)
    hooks = [_offload_hook(m) for m in modules]
    saved = [hook.execution_device for hook in hooks]
    try:
        for module, hook in zip(modules, hooks):
            hook.execution_device = torch.device("cpu")
            hook.pre_forward(module)
        yield
    finally:
        for module, hook, device in zip(modules, hooks, saved):
            _write_back(module, hook)
            hook.post_forward(module, None)
            hook.execution_device = device


def _offload_hook(module: nn.Module) -> Any:
    hook = module._hf_hook
    return next(one for one in getattr(hook, "hooks", None) or [hook] if getattr(one, "offload", False))


def _write_back(module: nn.Module, hook: Any) -> None:
    """Store ``module``'s current tensors in its hook's weights map: in memory, or on disk when they came from there."""
    from accelerate.utils import OffloadedWeightsLoader, PrefixedDataset, offload_weight

    tensors = dict(module.named_parameters(recurse=False))
    if getattr(hook, "offload_buffers", False):
        tensors.update(module.named_buffers(recurse=False))
    weights = hook.weights_map
    store, prefix = (weights.dataset, weights.prefix) if isinstance(weights, PrefixedDataset) else (weights, "")
    for name, tensor in tensors.items():
        key, value = prefix + name, tensor.detach().to("cpu")
        if isinstance(store, OffloadedWeightsLoader):
            if key in store.state_dict or store.save_folder is None:
                store.state_dict[key] = value
            else:  # a disk-offloaded weight: rewrite its file, so memory stays free
                offload_weight(value, key, store.save_folder, index=store.index)
        else:
            store[key] = value


def _as_device(device: Any) -> torch.device:
    return torch.device(f"cuda:{device}") if isinstance(device, int) else torch.device(device)


# -- non-finite values ---------------------------------------------------------------------------------

def non_finite_error(where: str, label: str | None, layer: int | None, dtype: Any) -> NonFiniteError:
    """The error for a NaN/inf at ``where`` (a site, logits) of layer ``layer`` of the ``label`` model.

    The message names the place and says what to do: a wider dtype for
    float16/bfloat16; for float32, that the weights themselves are broken.
    """
    model = f"the {label} model" if label else "the model"
    at = f" of layer {layer}" if layer is not None else ""
    dtype = str(dtype).removeprefix("torch.")
    advice = {"float16": "float16 overflows: load the model in a wider dtype (model.dtype: float32, or bfloat16)",
              "bfloat16": "load the model in float32 (model.dtype: float32)"}.get(
        dtype, "this is not the overflow of a narrow dtype: check the model's weights")
    error = NonFiniteError(f"{where}{at} of {model} produced non-finite values (NaN or inf) in {dtype}; {advice}")
    error.where, error.label, error.layer, error.dtype = where, label, layer, dtype
    return error


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value of a floating-point ``tensor`` is finite, without a tensor-sized temporary.

    ``isfinite(t).all()`` widens a bfloat16 tensor first (2.5x its size at a 128k
    vocabulary's logits); its minimum and maximum are NaN when any value is NaN
    and ±inf when any is infinite.
    """
    if tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def check_finite_logits(model: nn.Module, logits: torch.Tensor, inputs: Mapping[str, Any]) -> None:
    """Raise ``NonFiniteError`` when ``logits`` hold a NaN/inf, naming the first decoder layer whose
    output already did (found by running ``inputs`` once more)."""
    if all_finite(logits):
        return
    from .adapters import resolve_adapter

    layer = first_non_finite_layer(model, resolve_adapter(model).layers(model), **inputs)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), logits.dtype)
    raise non_finite_error("the output" if layer is not None else "the logits", None, layer, dtype)


def first_non_finite_layer(model: nn.Module, layers: Any, **inputs: Any) -> int | None:
    """The first of ``layers`` (decoder layer modules, in order) whose output is NaN/inf at a real token.

    Runs one more forward of ``inputs`` with a hook per layer; ``None`` when every
    layer's output is finite (the LM head or the final norm overflowed).
    """
    mask = inputs.get("attention_mask")
    found: list[int] = []

    def check(index: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            real = hidden if mask is None else hidden[mask.to(hidden.device).bool()]
            if not found and not bool(torch.isfinite(real).all()):
                found.append(index)
        return hook

    handles = [layer.register_forward_hook(check(i)) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None
