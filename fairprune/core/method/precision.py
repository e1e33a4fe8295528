"""The precision selection's passes run in (``method.pass_dtype``): float32, or bfloat16 autocast.

With ``bfloat16`` every model forward of a selection (the attribution and
capability passes, and the measured checks: objective, calibration loss,
recall) runs under ``torch.autocast(dtype=torch.bfloat16)`` on each device type
the model computes on, so the matrix products take bf16 inputs (on CPUs with AMX
and on GPUs, much faster) while what autocast keeps wide stays float32 (norms,
softmax, the residual stream of a float32 model). Two things make that pay on
the CPU: attention runs in transformers' eager implementation for the block
(torch's fused CPU attention has a slow bf16 backward), and float32 linear
weights are swapped for bf16 copies for the block (``_low_weights``; half their
bytes again while selection runs), so autocast does not cast them at every call.
Everything read from a pass is widened before it is used: per-neuron sums are
accumulated in float32 (``attribution.flat_sums``), and objectives and losses
are computed in float32 from widened logits, outside autocast, so an objective's
own products never run in bf16. Backward passes replay the dtypes of their
forward. The default, ``float32``, changes nothing.

What changes: the measured checks run in bf16 too, so the objective, the
calibration loss and the recall a selection measures are those of the model in
bf16 autocast, not of the float32 model that is pruned and evaluated. Rounding
adds divergence between members' next-token distributions. On SmolLM2 with the
demo config (``benchmarks/selection_time.py``, a 2-core machine loaded by other
work, load average 5-7) the bf16 selection measured the objective 8% above the
float32 one before any removal and 13-16% above after each round, did not reach
the 60% target within the budget, and removed 155 neurons against float32's 131
(114 of them the same); it took 4.6-8.6x the bias analysis' time in its process
(4 runs, median 5.4x) against 7.8-11.8x for float32 (9 runs, median 8.3x). Use
it where speed matters more than the exact plan; the float32 default is the
reference.

The setting is a context (``pass_precision``) that the model calls of
``attribution`` and ``capability`` read through ``forward``; it is one
``ContextVar``, so threads and nested selections do not see each other's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

from ..contract.errors import ConfigError

#: ``method.pass_dtype`` values and the autocast dtype each means (None: no autocast)
PASS_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}

_AUTOCAST: ContextVar[torch.dtype | None] = ContextVar("fairprune_pass_autocast", default=None)


def current() -> str:
    """The pass dtype in force (``"float32"`` outside ``pass_precision``): part of a memoized pass's key."""
    dtype = _AUTOCAST.get()
    return next(name for name, value in PASS_DTYPES.items() if value == dtype)


def device_types(model: nn.Module) -> list[str]:
    """The device types ``model`` computes on (``cpu``, ``cuda``, ...), from its parameters and accelerate's
    execution devices; offloaded weights (``meta``) count where they execute."""
    from ..model.devices import execution_device

    kinds = {p.device.type for p in model.parameters() if p.device.type != "meta"}
    kinds |= {execution_device(m).type for m in model.modules() if getattr(m, "_hf_hook", None) is not None}
    return sorted(kinds or {"cpu"})


def check_pass_dtype(model: nn.Module, name: str) -> None:
    """``ConfigError`` (one line, naming ``method.pass_dtype``) when passes in ``name`` cannot run on ``model``:
    an unknown name, a float64 model (autocast would silently lose its precision), or a device type without
    bfloat16 autocast (a GPU without bf16, MPS on torch versions that lack it)."""
    if name not in PASS_DTYPES:
        raise ConfigError(f"method.pass_dtype must be one of {', '.join(PASS_DTYPES)}, got {name!r}")
    if PASS_DTYPES[name] is None:
        return
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if torch.float64 in dtypes:
        raise ConfigError(f"method.pass_dtype: {name} passes need a float32, float16 or bfloat16 model; this one "
                          "is float64 (set method.pass_dtype=float32 or load the model in float32)")
    for kind in device_types(model):
        if not torch.amp.is_autocast_available(kind):
            raise ConfigError(f"method.pass_dtype: torch has no {name} autocast on {kind!r} devices; set "
                              "method.pass_dtype=float32")
        if kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"method.pass_dtype: this GPU has no {name} support; set method.pass_dtype=float32")


@contextmanager
def pass_precision(model: nn.Module, name: str = "float32") -> Iterator[None]:
    """Run the block's selection passes on ``model`` in ``name`` (``PASS_DTYPES``); checked first
    (``check_pass_dtype``)."""
    check_pass_dtype(model, name)
    dtype = PASS_DTYPES[name]
    token = _AUTOCAST.set(dtype)
    try:
        with _eager_attention(model) if dtype is not None else nullcontext(), \
                _low_weights(model, dtype) if dtype is not None else nullcontext():
            yield
    finally:
        _AUTOCAST.reset(token)


_ORIGINALS: ContextVar[dict[int, torch.Tensor] | None] = ContextVar("fairprune_pass_originals", default=None)


def original(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as the model holds it outside ``pass_precision``: the float32 values of a linear weight that a
    bf16 block swapped for its bf16 copy (for code inside the block that reads weights, not passes)."""
    return (_ORIGINALS.get() or {}).get(id(weight), weight)


@contextmanager
def _low_weights(model: nn.Module, dtype: torch.dtype) -> Iterator[None]:
    """Every float32 ``nn.Linear`` weight of ``model`` replaced by a ``dtype`` copy for the block and put back
    (the same tensors) in ``finally``: autocast would otherwise cast each weight at every call (on SmolLM2 about
    as long as the bf16 product itself). Left alone: weights another module shares (tied embeddings), weights
    on the meta device or under an accelerate hook (offloaded), and non-float32 ones. Costs a copy of the
    swapped weights in ``dtype`` (half their float32 bytes) while the block runs."""
    shared: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        shared[id(param)] = shared.get(id(param), 0) + 1
    swapped: list[tuple[nn.Parameter, torch.Tensor]] = []
    originals: dict[int, torch.Tensor] = {}
    token = _ORIGINALS.set(originals)
    try:
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if (not isinstance(module, nn.Linear) or not isinstance(weight, nn.Parameter)
                    or weight.dtype != torch.float32 or weight.device.type == "meta" or shared[id(weight)] > 1
                    or getattr(module, "_hf_hook", None) is not None):
                continue
            swapped.append((weight, weight.data))
            originals[id(weight)] = weight.data
            weight.data = weight.data.to(dtype)
        yield
    finally:
        for weight, data in swapped:
            weight.data = data
        _ORIGINALS.reset(token)


@contextmanager
def _eager_attention(model: nn.Module) -> Iterator[None]:
    """The model's attention switched to transformers' eager implementation for the block, then back: in
    bf16 on the CPU, torch's fused attention kernel runs its backward about ten times slower than in float32,
    while eager attention is matrix products that autocast runs in bf16 (SmolLM2, 1 thread: a bf16
    forward+backward took about half the time with eager attention). Models that cannot switch keep theirs."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = getattr(model, "set_attn_implementation", None)
    if not callable(switch) or before in (None, "eager"):
        yield
        return
    switch("eager")
    try:
        yield
    finally:
        switch(before)


def forward(model: nn.Module, **inputs: Any) -> Any:
    """``model(**inputs)``, under bf16 autocast on every device type the model computes on when a
    ``pass_precision`` block asks for it. Callers widen what they read (``attribution.wide``)."""
    dtype = _AUTOCAST.get()
    if dtype is None:
        return model(**inputs)
    with ExitStack() as stack:
        for kind in device_types(model):
            stack.enter_context(torch.autocast(kind, dtype=dtype))
        return model(**inputs)
