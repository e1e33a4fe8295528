"""Recovery distillation: after pruning, nudge the kept MLP weights back towards the base model on general text.

Removing neurons moves the model's next-token distributions on ordinary text a
little (the LAMBADA cost of a plan). Recovery trains the kept MLP weights
(gate, up and down projections of every layer; nothing is added) to bring the
pruned model's distributions back to the base model's on a calibration text,
with the KL divergence KL(base ‖ pruned) per position as the loss.

The base model's side is read once, before pruning, and kept small: at every
position of the text, the ids and log-probabilities of its ``top_k`` most likely
next tokens; the rest of the vocabulary is one "other" bucket. The loss is the
exact KL between the two distributions coarsened to those ``top_k + 1`` outcomes
(a lower bound of the full KL), so no second copy of the model is held and the
targets take ``tokens × top_k × 12`` bytes.

The last ``held_out_tokens`` of the text are never trained on; the KL there is
measured before and after. A recovery that does not lower it is undone (the
weights it changed are put back), so recovery can only bring the model closer
to the base on text it did not train on.

The general text rarely names a demographic group, so this pulls capability
back without showing the model the analysis prompts; whether it gives back some
of the fairness change is measured, not assumed (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..contract.errors import ConfigError, NonFiniteError
from .attribution import TextChunks, frozen, text_chunks
from .collect import input_device
from .precision import forward

logger = logging.getLogger(__name__)


@dataclass
class DistillationTargets:
    """The base model's next-token distributions on the recovery text, truncated to its ``top_k`` tokens.

    ``train`` and ``held`` are chunk id tensors ``[n_chunks, n_prefix + chunk_tokens]`` (int64);
    ``*_ids`` / ``*_logprobs`` are ``[n_chunks, positions, top_k]`` (int64 / float32 nats), positions being the
    chunk's predicted positions (``chunk length − 1``).
    """

    train: torch.Tensor
    train_ids: torch.Tensor
    train_logprobs: torch.Tensor
    held: torch.Tensor
    held_ids: torch.Tensor
    held_logprobs: torch.Tensor
    n_prefix: int


@torch.no_grad()
def _top_k(model: nn.Module, chunks: torch.Tensor, top_k: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, logprobs = [], []
    device = input_device(model)
    for start in range(0, len(chunks), batch_size):
        logits = forward(model, input_ids=chunks[start:start + batch_size].to(device), use_cache=False).logits
        lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        top = torch.topk(lp, min(top_k, lp.shape[-1]), dim=-1)
        ids.append(top.indices.cpu())
        logprobs.append(top.values.cpu())
    return torch.cat(ids), torch.cat(logprobs)


def distillation_targets(model: nn.Module, tokenizer: Any, *, text: str | None = None, tokens: int = 4096,
                         held_out_tokens: int = 512, chunk_tokens: int = 128, top_k: int = 64,
                         batch_size: int = 4) -> DistillationTargets:
    """Read the (unpruned) model's top-``top_k`` next-token log-probabilities on the recovery text.

    The text is ``text`` (a path; None: the bundled general English): its first ``tokens`` tokens are trained
    on, the ``held_out_tokens`` after them are only measured. ``ConfigError`` when the file is missing or too
    short for one chunk of each.
    """
    train: TextChunks = text_chunks(tokenizer, text, chunk_tokens, tokens)
    held: TextChunks = text_chunks(tokenizer, text, chunk_tokens, held_out_tokens, start=tokens)
    train_t = torch.tensor(train.chunks, dtype=torch.long)
    held_t = torch.tensor(held.chunks, dtype=torch.long)
    with frozen(model):
        train_ids, train_lp = _top_k(model, train_t, top_k, batch_size)
        held_ids, held_lp = _top_k(model, held_t, top_k, batch_size)
    return DistillationTargets(train_t, train_ids, train_lp, held_t, held_ids, held_lp, train.n_prefix)


def coarse_kl(logits: torch.Tensor, top_ids: torch.Tensor, top_logprobs: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(base ‖ model) on the base's ``top_k`` tokens plus one bucket for the rest (nats).

    ``logits`` ``[..., vocab]`` (the model's), ``top_ids`` / ``top_logprobs`` ``[..., top_k]`` (the base's).
    Exact for the coarsened distributions, so never above the full KL; zero when the model matches the base.
    """
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, top_ids)
    p = top_logprobs.exp()
    rest_p = (1.0 - p.sum(-1)).clamp_min(1e-12)
    rest_q = (1.0 - lp.exp().sum(-1)).clamp_min(1e-12)
    kl = (p * (top_logprobs - lp)).sum(-1) + rest_p * (rest_p.log() - rest_q.log())
    return kl.mean()


def _held_kl(model: nn.Module, targets: DistillationTargets, batch_size: int) -> float:
    device = input_device(model)
    total, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(targets.held), batch_size):
            rows = slice(start, start + batch_size)
            logits = forward(model, input_ids=targets.held[rows].to(device), use_cache=False).logits[:, :-1]
            kl = coarse_kl(logits, targets.held_ids[rows].to(logits.device), targets.held_logprobs[rows].to(logits.device))
            count = targets.held[rows].shape[0]
            total, n = total + float(kl) * count, n + count
    return total / max(n, 1)


def trainable_mlp_parameters(model: nn.Module, adapter: Any) -> list[nn.Parameter]:
    """The floating-point parameters of every layer's MLP, which recovery trains; ``ConfigError`` when there are
    none or some are offloaded (accelerate leaves them on the meta device and keeps the values elsewhere)."""
    params: list[nn.Parameter] = []
    for layer in range(len(adapter.layers(model))):
        params.extend(p for p in adapter.mlp(model, layer).parameters() if p.is_floating_point())
    if not params:
        raise ConfigError("pruning.recovery: the model has no MLP weights to train")
    if any(p.device.type == "meta" for p in params):
        raise ConfigError("pruning.recovery: some MLP weights are offloaded (model.device_map / max_memory put them "
                          "on disk or in CPU memory outside the model); recovery trains weights in place, so load "
                          "the model without offloading or drop pruning.recovery")
    return params


def recover(model: nn.Module, adapter: Any, targets: DistillationTargets, *, epochs: int = 2, lr: float = 2e-5,
            batch_size: int = 4, seed: int = 0) -> dict[str, Any]:
    """Train the pruned ``model``'s MLP weights (in place) towards the base's ``targets``; returns a record.

    AdamW (no weight decay) over ``epochs`` passes of the training chunks in a seeded order, ``batch_size``
    chunks per step. The record: ``held_out_kl_before`` / ``held_out_kl_after`` (nats per position, on the held
    out chunks), ``steps``, ``kept`` (False when the held-out KL did not fall and the weights were
    put back). Raises ``NonFiniteError`` (weights put back first) when a step's loss is not finite.
    """
    params = trainable_mlp_parameters(model, adapter)
    saved = [p.detach().clone() for p in params]
    start_time = time.perf_counter()
    before = _held_kl(model, targets, batch_size)
    generator = torch.Generator().manual_seed(seed)
    device = input_device(model)
    steps = 0
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    model.eval()  # no dropout: the base's targets were read in eval mode
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    try:
        for _ in range(epochs):
            order = torch.randperm(len(targets.train), generator=generator)
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                logits = forward(model, input_ids=targets.train[rows].to(device), use_cache=False).logits[:, :-1]
                loss = coarse_kl(logits, targets.train_ids[rows].to(logits.device),
                                 targets.train_logprobs[rows].to(logits.device))
                if not math.isfinite(float(loss.detach())):
                    raise NonFiniteError(f"pruning.recovery: the distillation loss became {float(loss.detach())} at step "
                                         f"{steps + 1}; lower pruning.recovery.lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
    except BaseException:
        _put_back(params, saved)
        raise
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
            p.grad = None
        model.train(was_training)
        del optimizer
    after = _held_kl(model, targets, batch_size)
    kept = after < before
    if not kept:
        logger.warning("recovery did not lower the held-out KL to the base (%.5f -> %.5f nats); its weight changes "
                       "were undone", before, after)
        _put_back(params, saved)
    record = {"held_out_kl_before": before, "held_out_kl_after": after if kept else before, "kept": kept,
              "steps": steps}
    logger.info("recovery: held-out KL to the base %.5f -> %.5f nats per position in %d steps, %.1f s (%s)",
                before, record["held_out_kl_after"], steps, time.perf_counter() - start_time,
                "kept" if kept else "undone")
    return record


def _put_back(params: Sequence[nn.Parameter], saved: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, value in zip(params, saved):
            p.copy_(value)
