"""The capability cost streamed: per-neuron Σ_windows |ΔL_window| folded batch by batch, no per-window tables.

``attribution.capability_attribution`` keeps ``[n_windows, width]`` float32 per
layer so that the cost can be taken for any fill afterwards (about 285 MB at the
1B shape with windows of 8 positions, about 1 GB at 8B). Selection knows the fill
before the pass (zero for ``structural``; the calibration mean for
``compensated``, which one forward-only pass over the same chunks gives first),
so here each batch's windows are reduced to ``Σ |r·Σg − Σh·g|`` per neuron at once.
The result equals ``capability_attribution(...).cost(fill)`` up to float32
summation order (the windows are summed per batch, then the batches in order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..model.distributed import share
from .attribution import (
    NeuronSums,
    OrderedSum,
    TextChunks,
    _chunk_losses,
    _window_sums,
    flat_sums,
    frozen,
    gathered,
    layer_widths,
    neuron_hooks,
    stop_together,
)
from .precision import forward


@dataclass
class CapabilityEstimate:
    """What selection needs of the calibration text, per layer ``Tensor[width]`` (float32, CPU): ``cost`` (mean
    over chunks of Σ_windows |ΔL| in nats per token, for the fill it was made for), ``mean`` (E[h_i]) and
    ``magnitude`` (E|h_i|) over the text's tokens; ``loss`` is the text's mean next-token NLL (nats)."""

    cost: dict[int, torch.Tensor]
    mean: dict[int, torch.Tensor]
    magnitude: dict[int, torch.Tensor]
    loss: float


def _batch_starts(text: TextChunks, batch_size: int) -> list[int]:
    return list(range(0, len(text.chunks), batch_size))


#: chunks per batch on the CPU at most (bigger batches do not run faster there)
CPU_CHUNKS = 4
#: on the CPU, a batch's activations, graph and logits may take this fraction of the weights' bytes
CPU_SHARE_OF_WEIGHTS = 0.25


def chunk_batch(model: nn.Module, text: TextChunks, adapter: Any, world: Any = None) -> int:
    """Chunks per batch for a forward/backward over ``text``, by an upper estimate of one chunk's activations,
    graph and float32 logits: on a GPU as many as fill half its free memory; on the CPU (memory shared with
    the weights and everything else) as many as fit in ``CPU_SHARE_OF_WEIGHTS`` of the weights' bytes, at
    most ``CPU_CHUNKS``, at least one. Under ``world`` every process takes the smallest answer, so all cut
    the same batches."""
    from ..model.memory import batch_for_memory, free_device_bytes, weight_bytes

    config = getattr(model, "config", None)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    element = next((p.element_size() for p in model.parameters() if p.is_floating_point()), 4)
    widths = layer_widths(model, adapter)
    tokens = len(text.chunks[0]) if text.chunks else 1
    per_token = sum(12 * hidden * element + 6 * width * 4 for _, width in widths) + vocab * (element + 12)
    free = free_device_bytes(_device(model))
    if free is None:  # the CPU
        size = min(CPU_CHUNKS, batch_for_memory(int(CPU_SHARE_OF_WEIGHTS * weight_bytes(model)), tokens * per_token,
                                                len(text.chunks), CPU_CHUNKS, fraction=1.0))
    else:
        size = batch_for_memory(free, tokens * per_token, len(text.chunks), CPU_CHUNKS)
    return size if world is None else min(world.gather_objects([size]))


@torch.no_grad()
def activation_means(model: nn.Module, text: TextChunks, adapter: Any, *, batch_size: int = CPU_CHUNKS,
                     world: Any = None) -> dict[int, torch.Tensor]:
    """E[h_i] over the text's tokens per layer, forward only (batches shared among ``world``'s processes)."""
    widths = layer_widths(model, adapter)
    totals = OrderedSum(1 + 2 * sum(w for _, w in widths), world)
    starts = _batch_starts(text, batch_size)
    with stop_together(world), frozen(model), neuron_hooks(model, adapter) as hooks:
        hooks.track = True  # keep h (no graph: grad mode is off)
        for k in share(len(starts), world):
            batch = text.chunks[starts[k]:starts[k] + batch_size]
            hooks.kept = {}
            forward(model, input_ids=torch.tensor([list(c) for c in batch], device=_device(model)), use_cache=False)
            totals.add(flat_sums(widths, hooks.kept, {}, torch.ones(len(batch), len(batch[0]), dtype=torch.bool),
                                 with_grads=False))
            hooks.kept = {}
    return NeuronSums.from_stats(totals.total(), widths).mean()


def capability_estimate(model: nn.Module, text: TextChunks, adapter: Any, *, compensated: bool = False,
                        batch_size: int | None = None, progress: bool = False,
                        world: Any = None) -> CapabilityEstimate:
    """The capability cost for removal to zero (``compensated=False``) or to the text's mean activation, in
    one forward/backward per batch of chunks (plus one forward-only pass for the mean when compensated);
    ``batch_size`` chunks per batch (None: ``chunk_batch``, from the device's free memory).

    With ``world`` (several processes, all calling this) each runs a contiguous share of the batches and
    every process gets the one-process result (batch vectors folded in batch order).
    """
    widths = layer_widths(model, adapter)
    total_width = sum(w for _, w in widths)
    batch_size = batch_size or chunk_batch(model, text, adapter, world)
    fill = activation_means(model, text, adapter, batch_size=batch_size, world=world) if compensated else None
    acc = OrderedSum(1 + 3 * total_width, world)  # [n_tokens, Σh and Σ|h| per layer, then Σ|ΔL| per layer]
    losses: list[float] = []
    starts = _batch_starts(text, batch_size)
    with stop_together(world), frozen(model), neuron_hooks(model, adapter) as hooks:
        hooks.track = True
        for k in tqdm(share(len(starts), world), desc="capability cost", disable=not progress, leave=False):
            batch = text.chunks[starts[k]:starts[k] + batch_size]
            hooks.kept = {}
            with torch.enable_grad():
                loss = _chunk_losses(model, batch, text.n_prefix)
                layers = sorted(hooks.kept)
                got = dict(zip(layers, torch.autograd.grad(loss.sum(), [hooks.kept[i] for i in layers],
                                                           allow_unused=True)))
            mask = torch.ones(len(batch), len(batch[0]), dtype=torch.bool)
            stats = flat_sums(widths, hooks.kept, {}, mask, with_grads=False)
            acc.add(torch.cat([stats, _window_cost(widths, hooks.kept, got, fill, text.window)]))
            losses.extend(loss.detach().cpu().tolist())
            hooks.kept = {}
    total = acc.total()
    losses = gathered(losses, world)
    stats = NeuronSums.from_stats(total[:1 + 2 * total_width], widths)
    cost, at = {}, 1 + 2 * total_width
    for layer, width in widths:
        cost[layer] = total[at:at + width] / max(len(text.chunks), 1)
        at += width
    return CapabilityEstimate(cost, fill if fill is not None else stats.mean(), stats.magnitude(),
                              float(sum(losses) / len(losses)))


def _window_cost(widths: Sequence[tuple[int, int]], kept: Mapping[int, torch.Tensor],
                 grads: Mapping[int, torch.Tensor | None], fill: Mapping[int, torch.Tensor] | None,
                 window: int | None) -> torch.Tensor:
    """One batch's Σ_windows |r·Σg − Σh·g| per neuron, all layers concatenated (float32, CPU)."""
    parts = []
    for layer, _ in widths:
        h = kept[layer].detach().float()
        g = grads.get(layer)
        g = torch.zeros_like(h) if g is None else g.float()
        delta = -_window_sums(h * g, window)
        if fill is not None:
            delta = fill[layer].float().to(h.device)[None] * _window_sums(g, window) + delta
        parts.append(delta.abs().sum(0))
    return torch.cat(parts).cpu()


def _device(model: nn.Module) -> Any:
    from .collect import input_device

    return input_device(model)
