"""Batched activation collection with streaming reductions.

Prompts run in padded, length-sorted batches; hooks sit only on the modules a
site needs, reduce each activation to one pooled vector per prompt (plus running
sums for the neuron's magnitude and mean) inside the hook, and are removed in
``finally``. The forward pass stops after the last needed layer, so the LM head
is never computed. All state lives on the run objects, never on modules.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..contract.errors import PromptError
from ..contract.protocols import PromptGroup
from ..contract.registry import default_registry
from ..data.prompts import validate_groups
from ..model.adapters import resolve_adapter
from ..model.devices import all_finite, input_device, non_finite_error
from ..model.lm_scoring import pad_id

logger = logging.getLogger(__name__)

#: ``reducer(site, layer, activation)`` is called from inside the hooks
Reducer = Callable[[str, int, torch.Tensor], None]


class _StopForward(Exception):
    """Raised by the last needed hook to end the forward pass early; never leaves this module."""


@dataclass
class PooledActivations:
    """Pooled activations of prompt groups at one site, per layer.

    ``pooled[layer]`` is ``[n_groups, n_members, width]``; ``magnitude[layer]`` the
    mean |activation| and ``mean[layer]`` the mean activation over all real tokens
    of all prompts (``[width]``); ``n_tokens`` counts those tokens.
    """

    pooled: dict[int, torch.Tensor]
    magnitude: dict[int, torch.Tensor]
    mean: dict[int, torch.Tensor]
    n_tokens: int


@dataclass
class PromptActivations:
    """One pooled vector per prompt (groups flattened in order, members in order), per layer."""

    per_prompt: dict[int, torch.Tensor]  # layer -> [n_prompts, width]
    magnitude: dict[int, torch.Tensor]
    mean: dict[int, torch.Tensor]
    n_tokens: int

    def grouped(self, groups: Sequence[PromptGroup]) -> PooledActivations:
        """Reshape to ``[n_groups, n_members, width]``; all groups must have as many members."""
        sizes = {len(g.prompts) for g in groups}
        if len(sizes) != 1:
            raise PromptError(f"groups have different numbers of members ({sorted(sizes)}); "
                              "collect groups of one size together, or use collect_prompts")
        n_members = sizes.pop()
        pooled = {layer: t.reshape(len(groups), n_members, t.shape[-1]) for layer, t in self.per_prompt.items()}
        return PooledActivations(pooled, self.magnitude, self.mean, self.n_tokens)


@dataclass
class CaptureRun:
    """The handle of an active ``capture``: run forwards through it, read nothing off modules."""

    model: nn.Module
    last_layer: int
    n_last_hooks: int
    stop_early: bool = True
    _fired: int = field(default=0, init=False)
    _active: bool = field(default=False, init=False)

    def forward(self, **inputs: Any) -> None:
        """Run the model on ``inputs``; with ``stop_early`` it stops after the last needed layer."""
        self._fired = 0
        self._active = self.stop_early
        try:
            self.model(**inputs)
        except _StopForward:
            # accelerate hooks offloaded weights per leaf module, so none is left loaded by the early stop
            pass
        finally:
            self._active = False

    def _after_hook(self, layer: int) -> None:
        if self._active and layer == self.last_layer:
            self._fired += 1
            if self._fired >= self.n_last_hooks:
                raise _StopForward


@contextmanager
def capture(model: nn.Module, adapter: Any, sites: str | Sequence[str], layers: Sequence[int],
            reducer: Reducer, *, registry: Any = None, stop_early: bool = True) -> Iterator[CaptureRun]:
    """Hook ``sites`` (site plugin names) of ``layers`` and call ``reducer(site, layer, activation)``.

    Hooks are attached only to the modules needed and removed in ``finally``,
    after success or an exception. Use ``run.forward(**inputs)`` inside the block.
    """
    site_names = [sites] if isinstance(sites, str) else list(sites)
    layers = sorted({int(i) for i in layers})
    if not layers or not site_names:
        raise ValueError("capture needs at least one layer and one site")
    registry = default_registry(registry)
    roles = {name: registry.get("sites", name).role for name in site_names}
    run = CaptureRun(model, layers[-1], len(site_names), stop_early)
    handles: list[Any] = []
    try:
        for layer in layers:
            for name in site_names:
                target = adapter.site(model, layer, roles[name])
                handles.append(_attach(target, name, layer, reducer, run))
        yield run
    finally:
        for handle in handles:
            handle.remove()


def _attach(target: Any, site: str, layer: int, reducer: Reducer, run: CaptureRun) -> Any:
    select = target.select

    def emit(tensor: Any) -> None:
        if select is not None:
            tensor = select(tensor)
        elif isinstance(tensor, (tuple, list)):
            tensor = tensor[0]
        reducer(site, layer, tensor)
        run._after_hook(layer)

    if target.use_input:
        return target.module.register_forward_pre_hook(lambda module, args: emit(args[0]))
    return target.module.register_forward_hook(lambda module, args, output: emit(output))


# -- the batched engine ------------------------------------------------------------------------------

@dataclass
class _Batch:
    rows: list[int]  # flat prompt indices, in batch order
    input_ids: torch.Tensor
    mask: torch.Tensor  # Bool[B, T]
    content_pos: torch.Tensor  # Long[B, T]
    diverge_at: torch.Tensor  # Long[B]


class _PooledReducer:
    """Reduces each hooked activation to per-prompt rows, in float32, on the activation's device.

    Per prompt it keeps the pooled vector, the sum of h and the sum of |h| over
    real tokens; totals over prompts are summed later in prompt order, so they
    do not depend on batching or on how prompts are shared among processes.
    """

    def __init__(self, n_prompts: int, label: str | None = None) -> None:
        self.n_prompts = n_prompts
        self.label = label
        self.pooled: dict[tuple[str, int], torch.Tensor] = {}
        self.sum: dict[tuple[str, int], torch.Tensor] = {}
        self.abs_sum: dict[tuple[str, int], torch.Tensor] = {}
        self.rows = torch.empty(0, dtype=torch.long)
        self.stack = torch.empty(0)  # [B, 2, T]: pooling weights, then the real-token mask
        self.scratch: dict[torch.device, torch.Tensor] = {}

    def start(self, rows: list[int], weights: torch.Tensor, mask: torch.Tensor) -> None:
        self.rows = torch.tensor(rows, dtype=torch.long)
        self.mask = mask
        self.stack = torch.stack([weights, mask.float()], dim=1)

    def _scratch(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """A float32 tensor of ``shape`` in one buffer per device that every hook reuses.

        A fresh activation-sized tensor per hook (the float32 copy, then |h|) is
        handed back to the OS between hooks and faulted in again by the next:
        on a CPU that cost as much as a tenth of the layer's forward.
        """
        size = math.prod(shape)
        buffer = self.scratch.get(device)
        if buffer is None or buffer.numel() < size:
            buffer = self.scratch[device] = torch.empty(size, dtype=torch.float32, device=device)
        return buffer[:size].view(shape)

    def _reduce(self, stack: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
        """``[B, 4, W]`` float32: per prompt weights·|h| (unused), weights·h (pooled), mask·|h| and mask·h.

        |h| and h (float32) lie side by side in the scratch buffer, so one batched
        matmul gives all three sums: on a busy CPU every extra small operation in
        a hook costs a wait for the other threads.
        """
        batch, tokens, width = activation.shape
        both = self._scratch((batch, tokens, 2 * width), activation.device)
        both[..., width:].copy_(activation)
        torch.abs(both[..., width:], out=both[..., :width])
        return torch.bmm(stack, both).view(batch, 4, width)

    def __call__(self, site: str, layer: int, activation: torch.Tensor) -> None:
        stack = self.stack.to(activation.device)
        sums = self._reduce(stack, activation)
        if not bool(torch.isfinite(sums.sum())) and not all_finite(sums):  # the sum is one cheap check
            # padded positions may hold garbage (fully masked attention rows); only real tokens must be finite
            mask = self.mask.to(activation.device)[..., None]
            h = torch.where(mask, activation.float(), torch.zeros((), device=activation.device))
            sums = self._reduce(stack, h)
            if not all_finite(sums):
                raise non_finite_error(f"site {site!r}", self.label, layer, activation.dtype)
        key = (site, layer)
        if key not in self.pooled:
            for table in (self.pooled, self.sum, self.abs_sum):
                table[key] = torch.zeros(self.n_prompts, activation.shape[-1], dtype=torch.float32,
                                         device=activation.device)
        rows = self.rows.to(activation.device)
        self.pooled[key][rows] = sums[:, 1]
        self.abs_sum[key][rows] = sums[:, 2]
        self.sum[key][rows] = sums[:, 3]


def collect_prompts(model: nn.Module, tokenizer: Any, groups: Sequence[PromptGroup], *,
                    sites: Sequence[str] = ("neuron",), pooling: str = "suffix",
                    layers: Sequence[int] | None = None, adapter: Any = None, batch_size: int = 16,
                    progress: bool = True, registry: Any = None, label: str | None = None,
                    world: Any = None) -> dict[str, PromptActivations]:
    """Pooled activation of every prompt of ``groups`` at several sites in one pass: site -> result.

    Activations are reduced in float32 whatever the model's dtype. The model may
    be spread over devices (an accelerate device map, offloaded layers): inputs
    go to the device of its input embeddings, each hook reduces on its module's
    device, and results come back on the CPU. With ``world`` (a
    ``distributed.World`` of several processes) each process runs a contiguous
    share of the groups and the per-prompt rows are gathered in group order, so
    every process returns what one process would. Raises ``NonFiniteError``
    naming the site, the layer and ``label`` (``"base"``, ``"pruned"``) when an
    activation is NaN or inf, ``PromptError`` for bad groups.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    registry = default_registry(registry)
    pool = registry.get("poolings", pooling)
    for site in sites:
        registry.get("sites", site)
    adapter = adapter or resolve_adapter(model, registry=registry)
    n_layers = len(adapter.layers(model))
    layers = list(range(n_layers)) if layers is None else sorted({int(i) for i in layers})
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {n_layers} layers")
    validate_groups(groups)
    ids, diverge = tokenize_groups(tokenizer, groups, max_length=_max_positions(model))
    n_tokens = sum(len(x) for x in ids)
    if world is None or world.size == 1:
        rows = _collect_rows(model, tokenizer, ids, diverge, pool, list(sites), layers, adapter, batch_size,
                             progress, registry, label)
    else:
        from ..model.distributed import shard_range

        group_range = shard_range(len(groups), world)
        offsets = [0]
        for g in groups:
            offsets.append(offsets[-1] + len(g.prompts))
        mine = slice(offsets[group_range.start], offsets[group_range.stop])
        with world.failures_stop_all():
            rows = _collect_rows(model, tokenizer, ids[mine], diverge[mine], pool, list(sites), layers, adapter,
                                 batch_size, progress and world.is_main, registry, label)
        rows = world.gather_rows(rows, n_rows=mine.stop - mine.start)
    out: dict[str, PromptActivations] = {}
    for site in sites:
        out[site] = PromptActivations(
            per_prompt={i: rows[("pooled", site, i)] for i in layers},
            magnitude={i: (rows[("abs_sum", site, i)].double().sum(0) / n_tokens).float() for i in layers},
            mean={i: (rows[("sum", site, i)].double().sum(0) / n_tokens).float() for i in layers},
            n_tokens=n_tokens)
    return out


def _collect_rows(model: nn.Module, tokenizer: Any, ids: list[list[int]], diverge: list[int], pool: Any,
                  sites: list[str], layers: list[int], adapter: Any, batch_size: int, progress: bool,
                  registry: Any, label: str | None) -> dict[tuple[str, str, int], torch.Tensor]:
    """Per-prompt rows on the CPU: ``(kind, site, layer) -> Tensor[n_prompts, width]``, kind in pooled/sum/abs_sum."""
    reducer = _PooledReducer(len(ids), label)
    device = input_device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), capture(model, adapter, sites, layers, reducer, registry=registry) as run:
            bar = tqdm(total=len(ids), desc=f"collecting {','.join(sites)}/{pool.name}", unit="prompt",
                       disable=not progress)
            for batch in _batches(ids, diverge, batch_size, pad_id(tokenizer), _padding_side(tokenizer)):
                weights = pool.weights(batch.mask, batch.content_pos, batch.diverge_at)
                reducer.start(batch.rows, weights, batch.mask)
                run.forward(input_ids=batch.input_ids.to(device), attention_mask=batch.mask.long().to(device),
                            position_ids=batch.content_pos.to(device), use_cache=False)
                bar.update(len(batch.rows))
            bar.close()
    finally:
        model.train(was_training)
    rows: dict[tuple[str, str, int], torch.Tensor] = {}
    for kind, table in (("pooled", reducer.pooled), ("sum", reducer.sum), ("abs_sum", reducer.abs_sum)):
        for (site, layer), tensor in table.items():
            rows[(kind, site, layer)] = tensor.cpu()
    return rows


def collect_pooled(model: nn.Module, tokenizer: Any, groups: Sequence[PromptGroup], *, site: str = "neuron",
                   pooling: str = "suffix", layers: Sequence[int] | None = None, adapter: Any = None,
                   batch_size: int = 16, progress: bool = True, registry: Any = None,
                   world: Any = None) -> PooledActivations:
    """Pooled activations ``[n_groups, n_members, width]`` per layer at ``site``, with magnitude and mean.

    All groups must have the same number of members (member j carries the same
    attribute group in every group). With ``world`` the batches are shared among
    its processes, as in ``collect_prompts``, and every process gets every group.
    """
    if not groups:
        raise PromptError("no prompt groups to collect")
    sizes = {len(g.prompts) for g in groups}
    if len(sizes) != 1:
        raise PromptError(f"groups have different numbers of members ({sorted(sizes)}); "
                          "collect_pooled needs groups of one size")
    result = collect_prompts(model, tokenizer, groups, sites=(site,), pooling=pooling, layers=layers,
                             adapter=adapter, batch_size=batch_size, progress=progress, registry=registry, world=world)
    return result[site].grouped(groups)


# -- tokenization and batching ---------------------------------------------------------------------

def tokenize_groups(tokenizer: Any, groups: Sequence[PromptGroup],
                    max_length: int | None = None) -> tuple[list[list[int]], list[int]]:
    """Token ids of every prompt (flattened) and the index where each first differs from its group.

    All prompts are tokenized alike (the tokenizer's own special-token handling).
    Members that tokenize identically, or prompts longer than ``max_length``, raise ``PromptError``.
    """
    prompts = [p for g in groups for p in g.prompts]
    encoded = tokenizer(prompts)["input_ids"]
    ids = [list(map(int, x)) for x in encoded]
    diverge: list[int] = []
    start = 0
    for group in groups:
        members = ids[start:start + len(group.prompts)]
        for j, mine in enumerate(members):
            if not mine:
                raise PromptError(f"prompt {group.prompts[j]!r} tokenizes to no tokens")
            if max_length is not None and len(mine) > max_length:
                raise PromptError(f"prompt {group.prompts[j]!r} has {len(mine)} tokens, more than the model's "
                                  f"context of {max_length}")
            first = len(mine) - 1
            for k, other in enumerate(members):
                if k == j:
                    continue
                if other == mine:
                    raise PromptError(f"prompts {group.prompts[j]!r} and {group.prompts[k]!r} tokenize to the same "
                                      "token ids; the tokenizer does not tell the attributes apart")
                first = min(first, _first_mismatch(mine, other))
            diverge.append(first)
        start += len(group.prompts)
    return ids, diverge


def _first_mismatch(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _batches(ids: list[list[int]], diverge: list[int], batch_size: int, pad_id: int,
             side: str) -> Iterator[_Batch]:
    """Length-sorted (longest first) padded batches; ``rows`` maps batch rows back to prompts."""
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(ids[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, i in enumerate(rows):
            n = len(ids[i])
            sl = slice(width - n, width) if side == "left" else slice(0, n)
            input_ids[r, sl] = torch.tensor(ids[i], dtype=torch.long)
            mask[r, sl] = True
        content_pos = torch.where(mask, mask.long().cumsum(1) - 1, torch.zeros((), dtype=torch.long))
        yield _Batch(rows, input_ids, mask, content_pos, torch.tensor([diverge[i] for i in rows]))


def _padding_side(tokenizer: Any) -> str:
    return "left" if getattr(tokenizer, "padding_side", "right") == "left" else "right"


def _max_positions(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None
