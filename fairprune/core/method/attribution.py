"""Signed, output-grounded neuron scores: batched backward passes through activations only.

For a bias objective M on prompt groups (a ``bias_objectives`` plugin) and every
neuron i (the input of down_proj), the first-order estimate of what removing the
neuron does to M is

    ΔM_i ≈ Σ_{prompts, positions} (r_i − h_i) · ∂M/∂h_i

where r_i is what the pruner leaves in the neuron's place: 0 for ``structural``,
the calibration mean E[h_i] for ``compensated``. The passes accumulate, per
neuron, Σ ∂M/∂h_i and Σ h_i·∂M/∂h_i (float32), so one pass serves any r:
memory is one vector per neuron per layer whatever the number of groups.

The same estimate on the LM loss of a calibration text, taken per chunk and
summed as |·| so that opposite signs across chunks cannot hide a cost, is the
capability cost. Parameters never get gradients (``requires_grad_(False)``);
the graph starts at the first layer's neuron activations. Neurons already
chosen for removal are ablated by the same hooks (set to r), which equals the
pruned model exactly, so selection can iterate without copying the model.

Every pass takes an optional ``world`` (``core.model.distributed``, torchrun):
each process then runs a contiguous share of the batches, and the per-batch
sums (``flat_sums``) are gathered and folded in batch order (``OrderedSum``), so
every process gets the one-process result bit for bit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..contract.errors import ConfigError, PromptError
from ..contract.protocols import ObjectiveInputs, PromptGroup
from ..data.groups import attribute_key
from ..data.prompts import validate_groups
from ..model.adapters import resolve_adapter
from ..model.distributed import share
from ..model.lm_scoring import contiguous_head, pad_id
from .collect import _batches, _max_positions, input_device, non_finite_error, tokenize_groups
from .precision import forward

logger = logging.getLogger(__name__)

#: the bundled calibration text (general English) for the capability cost
DEFAULT_TEXT = Path(__file__).resolve().parents[2] / "data" / "text" / "general_english.txt"

#: layer -> sorted neuron indices that are ablated (set to their fill value)
Removed = Mapping[int, Sequence[int]]


def merged_removed(removed: Removed, add: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    """``removed`` with the ``(layer, neuron)`` pairs of ``add``: sorted neuron lists, no layer left empty (the
    removed set a round's check or pass reads)."""
    out = {layer: set(v) for layer, v in removed.items()}
    for layer, n in add:
        out.setdefault(layer, set()).add(n)
    return {layer: sorted(v) for layer, v in out.items() if v}


@dataclass
class NeuronSums:
    """Per-layer running sums of one attribution pass (float32 ``Tensor[width]`` each).

    ``grad`` = Σ ∂M/∂h_i and ``grad_act`` = Σ h_i·∂M/∂h_i over real tokens;
    ``act`` = Σ h_i and ``abs_act`` = Σ |h_i|; ``n_tokens`` counts the tokens.
    """

    grad: dict[int, torch.Tensor] = field(default_factory=dict)
    grad_act: dict[int, torch.Tensor] = field(default_factory=dict)
    act: dict[int, torch.Tensor] = field(default_factory=dict)
    abs_act: dict[int, torch.Tensor] = field(default_factory=dict)
    n_tokens: int = 0

    def add(self, layer: int, h: torch.Tensor, g: torch.Tensor, mask: torch.Tensor) -> None:
        """Accumulate one batch: ``h``, ``g`` ``[B, T, width]``, ``mask`` ``Bool[B, T]``."""
        m = mask.to(h.device)[..., None].float()
        h, g = h.detach().float() * m, g.float() * m
        for table, value in ((self.grad, g), (self.grad_act, h * g), (self.act, h), (self.abs_act, h.abs())):
            total = value.sum(dim=(0, 1)).cpu()
            table[layer] = table[layer] + total if layer in table else total

    @classmethod
    def from_flat(cls, flat: torch.Tensor, widths: Sequence[tuple[int, int]]) -> NeuronSums:
        """The sums from ``flat_sums``' layout: ``[n_tokens, then per layer grad, grad_act, act, abs_act]``."""
        sums, at = cls(n_tokens=round(float(flat[0]))), 1
        for layer, width in widths:
            for table in (sums.grad, sums.grad_act, sums.act, sums.abs_act):
                table[layer] = flat[at:at + width].clone()
                at += width
        return sums

    @classmethod
    def from_stats(cls, flat: torch.Tensor, widths: Sequence[tuple[int, int]]) -> NeuronSums:
        """The sums from ``flat_sums(..., with_grads=False)``'s layout (the gradient sums are zero)."""
        sums, at = cls(n_tokens=round(float(flat[0]))), 1
        for layer, width in widths:
            sums.grad[layer] = torch.zeros(width)
            sums.grad_act[layer] = torch.zeros(width)
            sums.act[layer] = flat[at:at + width].clone()
            sums.abs_act[layer] = flat[at + width:at + 2 * width].clone()
            at += 2 * width
        return sums

    def delta(self, fill: Mapping[int, torch.Tensor] | None) -> dict[int, torch.Tensor]:
        """ΔM per neuron for removal to ``fill`` (``{layer: Tensor[width]}``; None = zero)."""
        out = {}
        for layer, grad in self.grad.items():
            r = fill[layer].float().cpu() if fill is not None else torch.zeros_like(grad)
            out[layer] = r * grad - self.grad_act[layer]
        return out

    def mean(self) -> dict[int, torch.Tensor]:
        """Mean activation ``E[h_i]`` over the pass's real tokens, per layer."""
        return {layer: s / max(self.n_tokens, 1) for layer, s in self.act.items()}

    def magnitude(self) -> dict[int, torch.Tensor]:
        """Mean |h_i| over the pass's real tokens, per layer."""
        return {layer: s / max(self.n_tokens, 1) for layer, s in self.abs_act.items()}


def top_positive(estimate: Mapping[int, torch.Tensor], fraction: float) -> dict[int, torch.Tensor]:
    """Per layer ``Bool[width]``: the top ``fraction`` of the layer's neurons by ``estimate``, keeping only those
    whose estimate is positive (what a guard protects: removal raises its loss)."""
    out = {}
    for layer, value in estimate.items():
        k = round(fraction * value.numel())
        mask = torch.zeros(value.numel(), dtype=torch.bool)
        if k:
            top = torch.topk(value, k).indices
            mask[top[value[top] > 0]] = True
        out[layer] = mask
    return out


def layer_widths(model: nn.Module, adapter: Any) -> list[tuple[int, int]]:
    """``(layer, width)`` of every layer's neurons, in layer order: the layout of the flat per-batch sums."""
    return [(layer, adapter.width(model, layer)) for layer in range(len(adapter.layers(model)))]


def flat_sums(widths: Sequence[tuple[int, int]], kept: Mapping[int, torch.Tensor],
              grads: Mapping[int, torch.Tensor | None], mask: torch.Tensor, *, with_grads: bool = True) -> torch.Tensor:
    """One batch's per-neuron sums as one float32 CPU vector: ``[n_tokens, per layer (Σg, Σh·g,) Σh, Σ|h|]``
    over the real tokens (``mask`` ``Bool[B, T]``; ``kept``/``grads`` ``[B, T, width]`` per layer, a missing
    gradient counts as zero). Batches summed in order, one process or several, give the same bits."""
    device = next(iter(kept.values())).device if kept else mask.device
    m = mask.to(device)[..., None].float()
    parts = [m.sum().reshape(1)]
    for layer, width in widths:
        h = kept[layer].detach().float() * m
        if with_grads:
            g = grads.get(layer)
            g = torch.zeros_like(h) if g is None else g.float() * m
            parts.extend((g.sum(dim=(0, 1)), (h * g).sum(dim=(0, 1))))
        parts.extend((h.sum(dim=(0, 1)), h.abs().sum(dim=(0, 1))))
    return torch.cat(parts).cpu()


class OrderedSum:
    """Per-batch float32 vectors summed in batch order (a left fold). One process folds them as they come;
    with a ``world`` of several processes, each keeps its share's vectors and ``total`` gathers all of them
    and folds them in batch order, so every process gets the one-process sum bit for bit."""

    def __init__(self, width: int, world: Any = None) -> None:
        self.width, self.world = width, world
        self.rows: list[torch.Tensor] = []
        self.running: torch.Tensor | None = None

    def add(self, row: torch.Tensor) -> None:
        if self.world is None:
            self.running = row if self.running is None else self.running + row
        else:
            self.rows.append(row)

    def total(self) -> torch.Tensor:
        """``Tensor[width]``; a collective under a world (every process calls it once)."""
        if self.world is None:
            return self.running if self.running is not None else torch.zeros(self.width)
        mine = torch.stack(self.rows) if self.rows else torch.zeros(0, self.width)
        return self.world.ordered_sum(mine, self.width)


def stop_together(world: Any) -> AbstractContextManager[None]:
    """``world.failures_stop_all()`` (a failure on one process stops all with its message), or nothing."""
    return nullcontext() if world is None else world.failures_stop_all()


def gathered(items: list[Any], world: Any) -> list[Any]:
    """``items`` of every process in rank order (``items`` itself without a world)."""
    return items if world is None else world.gather_objects(items)


class _NeuronHooks:
    """Pre-hooks on every down_proj: ablate removed neurons to their fill and, with ``track``, keep h for grads."""

    def __init__(self, removed: Removed | None, fill: Mapping[int, torch.Tensor] | None) -> None:
        self.masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer, idx in (removed or {}).items():
            if len(idx):
                self.masks[layer] = (torch.as_tensor(list(idx), dtype=torch.long),
                                     fill[layer].float() if fill is not None else None)
        self.track = False
        self.kept: dict[int, torch.Tensor] = {}

    def hook(self, layer: int) -> Any:
        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            h = args[0]
            if self.track and torch.is_grad_enabled() and not h.requires_grad:
                h = h.detach().requires_grad_(True)  # the graph starts here: no parameter gradients
            if layer in self.masks:
                idx, fill = self.masks[layer]
                keep = torch.ones(h.shape[-1], dtype=h.dtype, device=h.device)
                keep[idx.to(h.device)] = 0
                replace = torch.zeros_like(keep) if fill is None else (1 - keep) * fill.to(h.device, h.dtype)
                h = h * keep + replace
            if self.track:
                self.kept[layer] = h
            return (h, *args[1:])

        return pre_hook


@contextmanager
def neuron_hooks(model: nn.Module, adapter: Any, removed: Removed | None = None,
                 fill: Mapping[int, torch.Tensor] | None = None) -> Iterator[_NeuronHooks]:
    """Hook the input of every layer's down_proj (and make the output head's input contiguous); removed in
    ``finally``. Ablation equals pruning."""
    state = _NeuronHooks(removed, fill)
    handles = []
    try:
        for layer in range(len(adapter.layers(model))):
            target = adapter.site(model, layer, "neuron")
            if not target.use_input or target.select is not None:
                raise ConfigError(f"adapter {adapter.name!r}: the neuron site of layer {layer} is not a module input")
            handles.append(target.module.register_forward_pre_hook(state.hook(layer)))
        with contiguous_head(model):  # the output head runs as one matmul over the kept positions
            yield state
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the block; both restored afterwards."""
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


# -- bias objective passes ---------------------------------------------------------------------------

#: where the objective reads next-token distributions: the prompt's last position; every position of the
#: suffix its members share (the tokens after the attribute), each position a group of its own; or the prompt's
#: last position and the first tokens of the continuation the members share (``consensus_continuation``)
POSITIONS = ("last", "suffix", "continuation")


@dataclass
class GroupBatches:
    """Prompt groups tokenized once and cut into left-padded batches of whole groups.

    ``positions[g]`` is how many trailing positions of group g the objective reads
    (1 for ``last``; for ``suffix`` the length of the token suffix all members
    share, at most ``max_positions``, at least 1; for ``continuation`` one more
    than the continuation tokens appended to every member). ``labels[g]`` names each
    member's attribute group when the batches were made for an objective that
    uses labels (see ``group_batches``), else ``labels`` is None.
    """

    groups: list[PromptGroup]
    ids: list[list[int]]
    diverge: list[int]
    batch_groups: int
    pad: int
    positions: list[int]
    labels: list[tuple[str, ...]] | None = None

    def __iter__(self) -> Iterator[tuple[BatchGroups, Any]]:
        start_group, start_row = 0, 0
        while start_group < len(self.groups):
            chunk = self.groups[start_group:start_group + self.batch_groups]
            end = start_group + len(chunk)
            n = sum(len(g.prompts) for g in chunk)
            rows = list(range(start_row, start_row + n))
            batch = next(_batches([self.ids[r] for r in rows], [self.diverge[r] for r in rows], n, self.pad, "left"))
            labels = None if self.labels is None else self.labels[start_group:end]
            yield BatchGroups([len(g.prompts) for g in chunk], self.positions[start_group:end], labels), batch
            start_group = end
            start_row += n


@dataclass
class BatchGroups:
    """The groups of one batch: members per group, positions read per group, and members' labels (or None)."""

    sizes: list[int]
    positions: list[int]
    labels: list[tuple[str, ...]] | None


def group_batches(model: nn.Module, tokenizer: Any, groups: Sequence[PromptGroup], batch_size: int, *,
                  positions: str = "last", max_positions: int = 16, continuation_tokens: int = 4,
                  labels: Mapping[str, str] | None = None) -> GroupBatches:
    """Validate and tokenize ``groups``; batches hold whole groups, about ``batch_size`` prompts each.

    ``positions`` is one of ``POSITIONS``; ``ConfigError`` otherwise. For
    ``"continuation"`` every group's members get the same ``continuation_tokens``
    greedy tokens appended, chosen once on ``model`` as it is now
    (``consensus_continuation``), and the objective reads the prompt's last
    position and each appended one.
    With ``labels`` (``GroupSet.form_to_group``: surface form -> attribute group)
    the groups of each template are first merged into one (``merge_by_template``)
    and every member carries its attribute group, for objectives that use labels.
    """
    if positions not in POSITIONS:
        raise ConfigError(f"method.positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
    groups = list(groups)
    if not groups:
        raise PromptError("attribution needs at least one prompt group")
    validate_groups(groups)
    if labels is not None:
        groups = merge_by_template(groups)
    if positions == "continuation" and continuation_tokens < 1:
        raise ConfigError(f"method.continuation_tokens must be at least 1, got {continuation_tokens}")
    ids, diverge = tokenize_groups(tokenizer, groups, max_length=_max_positions(model))
    pad = pad_id(tokenizer)
    per_group = max(len(g.prompts) for g in groups)
    if positions == "continuation":
        ids = consensus_continuation(model, ids, [len(g.prompts) for g in groups], continuation_tokens, pad,
                                     batch_size)
    counts, start = [], 0
    for g in groups:
        members = ids[start:start + len(g.prompts)]
        start += len(g.prompts)
        counts.append(1 if positions == "last" else continuation_tokens + 1 if positions == "continuation"
                      else max(1, min(_shared_suffix(members), max_positions)))
    member_labels = None if labels is None else [attribute_key(g, labels) for g in groups]
    return GroupBatches(groups, ids, diverge, max(1, batch_size // per_group), pad, counts, member_labels)


def consensus_continuation(model: nn.Module, ids: Sequence[Sequence[int]], sizes: Sequence[int], tokens: int,
                           pad: int, batch_size: int) -> list[list[int]]:
    """Every prompt's ids (flattened groups of ``sizes`` members) with its group's greedy continuation appended.

    At each of ``tokens`` steps a group's next token is the argmax of its members'
    mean next-token probability, so the continuation is the one the members share
    most rather than any one group's; it is chosen once, without gradients, on
    ``model`` as it is, and every member reads the same tokens after it. Why: a
    difference in how groups are treated often shows a few tokens into the reply
    ("thought he was ..."), which the prompt's last position alone does not see.
    """
    out = [list(x) for x in ids]
    owner = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(list(sizes)))
    device = input_device(model)
    for _ in range(tokens):
        rows_probs: list[torch.Tensor | None] = [None] * len(out)
        with torch.no_grad():
            for batch in _batches(out, [0] * len(out), batch_size, pad, "left"):
                logits = forward(model, input_ids=batch.input_ids.to(device), attention_mask=batch.mask.to(device).long(),
                                 position_ids=batch.content_pos.to(device), use_cache=False, logits_to_keep=1).logits
                p = torch.softmax(wide(logits[:, -1]), dim=-1).cpu()
                for r, i in enumerate(batch.rows):
                    rows_probs[i] = p[r]
        probs = torch.stack([p for p in rows_probs if p is not None])
        mean = torch.zeros(len(sizes), probs.shape[-1], dtype=probs.dtype).index_add_(0, owner, probs)
        chosen = mean.argmax(-1)
        for i, row in enumerate(out):
            row.append(int(chosen[owner[i]]))
    return out


def merge_by_template(groups: Sequence[PromptGroup]) -> list[PromptGroup]:
    """One group per (axis, template) holding the members of all its groups, first appearance first; a
    prompt that two groups share is kept once. The axes' templates give one group per surface-form set, so
    a merged group holds every form of every attribute group (``Black`` and ``African American``)."""
    merged: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for g in groups:
        prompts, attributes = merged.setdefault((g.axis, g.template_id), ([], []))
        for prompt, attribute in zip(g.prompts, g.attributes or ("",) * len(g.prompts)):
            if prompt not in prompts:
                prompts.append(prompt)
                attributes.append(attribute)
    return [PromptGroup(axis, template, tuple(attributes), tuple(prompts))
            for (axis, template), (prompts, attributes) in merged.items()]


def _shared_suffix(members: Sequence[Sequence[int]]) -> int:
    """How many trailing token ids every member shares."""
    n = 0
    shortest = min(len(m) for m in members)
    while n < shortest and all(m[-1 - n] == members[0][-1 - n] for m in members):
        n += 1
    return n


def _objective_inputs(model: nn.Module, groups: BatchGroups, batch: Any,
                      uses: Sequence[str]) -> tuple[ObjectiveInputs, torch.Tensor]:
    """One forward of a left-padded batch: what the objective reads, and each row-group's group index.

    With ``positions[g] > 1`` every one of group g's last ``positions[g]`` positions
    becomes a group of its own (its members' log-probs there), so any objective on
    log-probs reads the suffix unchanged; the second value maps those groups back.
    """
    sizes, positions = groups.sizes, groups.positions
    if "labels" in uses and groups.labels is None:
        raise ConfigError("this bias objective uses members' attribute groups (labels): make the group batches "
                          "with labels (attribution.group_batches(..., labels=form_to_group))")
    device = input_device(model)
    mask = batch.mask.to(device)
    want_hidden = "hidden" in uses
    if want_hidden and max(positions) > 1:
        raise ConfigError("method.positions: suffix and continuation read several positions' next-token "
                          "distributions; an objective on the residual stream (hidden) takes positions: last")
    keep = max(positions)
    out = forward(model, input_ids=batch.input_ids.to(device), attention_mask=mask.long(),
                  position_ids=batch.content_pos.to(device), use_cache=False, logits_to_keep=keep,
                  output_hidden_states=want_hidden)
    # _batches sorts rows by length; put them back in group order
    order = torch.argsort(torch.tensor(batch.rows)).to(device)
    logprobs = torch.log_softmax(wide(out.logits.index_select(0, order)), dim=-1)  # [prompts, keep, vocab]
    rows, new_sizes, owner, new_labels, start = [], [], [], [], 0
    for g, (size, count) in enumerate(zip(sizes, positions)):
        for p in range(keep - count, keep):
            rows.append(torch.arange(start, start + size) * keep + p)
            new_sizes.append(size)
            owner.append(g)
            if groups.labels is not None:
                new_labels.append(groups.labels[g])
        start += size
    flat = logprobs.reshape(-1, logprobs.shape[-1]).index_select(0, torch.cat(rows).to(device))
    hidden = None
    if want_hidden:
        weights = mask.float() / mask.float().sum(1, keepdim=True)
        hidden = torch.stack([torch.einsum("bt,btd->bd", weights.to(wide(h).dtype), wide(h))
                              for h in out.hidden_states[1:]]).index_select(1, order)
    labels = new_labels if "labels" in uses else None
    return ObjectiveInputs(new_sizes, flat, hidden, labels), torch.tensor(owner)


def wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or wider when it already is (float64 models keep float64 for exact checks)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _checked_value(objective: Any, inputs: ObjectiveInputs) -> torch.Tensor:
    value = objective.value(inputs)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != (len(inputs.sizes),):
        raise ConfigError(f"bias objective {objective.name!r} returned "
                          f"{tuple(getattr(value, 'shape', ()))}; expected one value per group ({len(inputs.sizes)})")
    if not bool(torch.isfinite(value).all()):
        raise non_finite_error(f"bias objective {objective.name!r}", None, None, inputs.logprobs.dtype)
    return value


def _group_values(model: nn.Module, objective: Any, groups: BatchGroups, batch: Any) -> torch.Tensor:
    """The objective per group of the batch (``Tensor[n_groups]``): the mean over the positions it reads."""
    return _groups_values(model, (objective,), groups, batch)[0]


def _groups_values(model: nn.Module, objectives: Sequence[Any], groups: BatchGroups,
                   batch: Any, graphs: int = 1) -> list[torch.Tensor]:
    """Each objective per group of the batch from one forward (``Tensor[n_groups]`` each, the mean over the
    positions it reads); the first ``graphs`` keep their graph, the others are computed without one."""
    uses = tuple(dict.fromkeys(u for objective in objectives for u in objective.uses))
    inputs, owner = _objective_inputs(model, groups, batch, uses)
    out = []
    for k, objective in enumerate(objectives):
        with torch.no_grad() if k >= graphs else nullcontext():
            out.append(_per_group(_checked_value(objective, inputs), owner, groups))
    return out


def _per_group(value: torch.Tensor, owner: torch.Tensor, groups: BatchGroups) -> torch.Tensor:
    """Values per position-group (``owner`` maps each to its group) -> their mean per group."""
    sizes, positions = groups.sizes, groups.positions
    if len(owner) == len(sizes):
        return value
    total = torch.zeros(len(sizes), dtype=value.dtype, device=value.device).index_add(0, owner.to(value.device), value)
    return total / torch.tensor(positions, dtype=value.dtype, device=value.device)


@dataclass
class ObjectiveAttribution:
    """One attribution pass: the objective's per-group values and the per-neuron sums; ``also`` holds, per
    group, the values of the objective ``attribute_objective`` was asked to read from the same forwards."""

    values: list[float]
    sums: NeuronSums
    also: list[float] | None = None

    @property
    def objective(self) -> float:
        """Mean of the objective over groups."""
        return float(sum(self.values) / len(self.values))


def attribute_objective(model: nn.Module, batches: GroupBatches, objective: Any, adapter: Any, *,
                        removed: Removed | None = None, fill: Mapping[int, torch.Tensor] | None = None,
                        progress: bool = False, world: Any = None, also: Any = None) -> ObjectiveAttribution:
    """Forward and backward over every batch of groups; ``objective`` is a bound ``bias_objectives`` plugin.

    The objective is the mean over all groups; its gradient w.r.t. every neuron
    activation (with ``removed`` neurons ablated to ``fill``) is folded into
    ``NeuronSums`` batch by batch, in batch order. With ``world`` (a ``distributed.World`` of several
    processes; all must call this) each process runs a contiguous share of the batches and every process
    returns the one-process result (the same batches, summed in the same order); a failure on one process
    stops all with its message. ``also`` (another bound objective, optional) is evaluated on the same forwards,
    without gradients: its per-group values are what ``objective_values`` gives for it, at no extra forward.
    """
    return attribute_objectives(model, batches, (objective,), adapter, removed=removed, fill=fill,
                                progress=progress, world=world, also=also)[0]


def attribute_objectives(model: nn.Module, batches: GroupBatches, objectives: Sequence[Any], adapter: Any, *,
                         removed: Removed | None = None, fill: Mapping[int, torch.Tensor] | None = None,
                         progress: bool = False, world: Any = None, also: Any = None) -> list[ObjectiveAttribution]:
    """``attribute_objective`` for several objectives from one forward per batch and one backward per objective:
    one ``ObjectiveAttribution`` per objective, each equal to its own ``attribute_objective`` (the same values
    and sums); ``also``'s values go with the first."""
    widths = layer_widths(model, adapter)
    size = 1 + 4 * sum(w for _, w in widths)
    accs = [OrderedSum(size, world) for _ in objectives]
    values: list[list[float]] = [[] for _ in objectives]
    extra: list[float] = []
    n_groups, n = len(batches.groups), len(objectives)
    every = list(batches)
    mine = [every[i] for i in share(len(every), world)]
    desc = "attributing " + " + ".join(o.name for o in objectives)
    with stop_together(world), frozen(model), neuron_hooks(model, adapter, removed, fill) as hooks:
        hooks.track = True
        for groups, batch in tqdm(mine, desc=desc, disable=not progress, leave=False):
            hooks.kept = {}
            with torch.enable_grad():
                got = _groups_values(model, tuple(objectives) + (() if also is None else (also,)), groups, batch,
                                     graphs=n)
                layers = sorted(hooks.kept)
                grads = [torch.autograd.grad(got[k].sum() / n_groups, [hooks.kept[i] for i in layers],
                                             allow_unused=True, retain_graph=k < n - 1) for k in range(n)]
            for k in range(n):
                accs[k].add(flat_sums(widths, hooks.kept, dict(zip(layers, grads[k])), batch.mask))
                values[k].extend(got[k].detach().cpu().tolist())
            if also is not None:
                extra.extend(got[n].cpu().tolist())
            hooks.kept = {}
    # collectives in the same order on every process: values, sums, then also's values (with the first)
    return [ObjectiveAttribution(gathered(values[k], world), NeuronSums.from_flat(accs[k].total(), widths),
                                 None if also is None or k else gathered(extra, world)) for k in range(n)]


@dataclass
class FoldedAttribution:
    """Attribution passes over folds of the groups (split by template): each fold's sums, and their blend.

    ``weights[k]`` is fold k's share of the groups, so ``objective`` and ``delta``
    are those of the mean over all groups; ``fold_delta`` keeps the folds apart,
    so that selection can ask that a removal lowers the objective in every fold.
    """

    folds: list[ObjectiveAttribution]
    weights: list[float]

    @property
    def objective(self) -> float:
        """Mean of the objective over all groups."""
        return float(sum(w * f.objective for w, f in zip(self.weights, self.folds)))

    def fold_delta(self, fill: Mapping[int, torch.Tensor] | None) -> dict[int, torch.Tensor]:
        """ΔM of each fold's mean per neuron: ``Tensor[n_folds, width]`` per layer."""
        parts = [f.sums.delta(fill) for f in self.folds]
        return {layer: torch.stack([p[layer] for p in parts]) for layer in parts[0]}

    def blend(self, fold_delta: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """ΔM of the all-group mean per neuron (``Tensor[width]`` per layer) from ``fold_delta``'s output."""
        w = torch.tensor(self.weights)[:, None]
        return {layer: (w * d).sum(0) for layer, d in fold_delta.items()}

    def delta(self, fill: Mapping[int, torch.Tensor] | None) -> dict[int, torch.Tensor]:
        """ΔM of the all-group mean per neuron (``Tensor[width]`` per layer)."""
        return self.blend(self.fold_delta(fill))


def template_folds(groups: Sequence[PromptGroup], n_folds: int, by: str = "template") -> list[list[PromptGroup]]:
    """``groups`` split into ``n_folds`` folds, keeping together the groups of one template (``by="template"``),
    one register (``"register"``) or one family (``"family"``: a template's context); a group without a
    register or family counts as its own template. Units are dealt round-robin in sorted order;
    ``ConfigError`` when there are fewer units than folds, or ``by`` is unknown."""
    if by not in ("template", "register", "family"):
        raise ConfigError(f"method.fold_by must be template, register or family, got {by!r}")

    def unit(g: PromptGroup) -> tuple[str, str]:
        shared = getattr(g, by, "") if by != "template" else ""
        return (g.axis, f"{by}:{shared}") if shared else (g.axis, g.template_id)

    units = sorted({unit(g) for g in groups})
    if n_folds > len(units):
        raise ConfigError(f"method.folds is {n_folds} but the analysis groups come from "
                          f"{len(units)} {by if by != 'template' else 'template'}(s)")
    fold_of = {t: k % n_folds for k, t in enumerate(units)}
    folds: list[list[PromptGroup]] = [[] for _ in range(n_folds)]
    for g in groups:
        folds[fold_of[unit(g)]].append(g)
    return folds


def attribute_folds(model: nn.Module, folds: Sequence[GroupBatches], objective: Any, adapter: Any, *,
                    removed: Removed | None = None, fill: Mapping[int, torch.Tensor] | None = None,
                    progress: bool = False, world: Any = None) -> FoldedAttribution:
    """``attribute_objective`` on every fold of groups (each fold's batches shared among ``world``'s processes)."""
    total = sum(len(b.groups) for b in folds)
    extra = {} if world is None else {"world": world}
    return FoldedAttribution([attribute_objective(model, b, objective, adapter, removed=removed, fill=fill,
                                                  progress=progress, **extra) for b in folds],
                             [len(b.groups) / total for b in folds])


@torch.no_grad()
def objective_values(model: nn.Module, batches: GroupBatches, objective: Any, adapter: Any, *,
                     removed: Removed | None = None, fill: Mapping[int, torch.Tensor] | None = None,
                     world: Any = None) -> list[float]:
    """The objective per group, forward only, with ``removed`` neurons ablated (the measured value); with
    ``world``, each process runs a share of the batches and all get every group's value, in group order."""
    return objectives_values(model, batches, (objective,), adapter, removed=removed, fill=fill, world=world)[0]


def objectives_values(model: nn.Module, batches: GroupBatches, objectives: Sequence[Any], adapter: Any, *,
                      removed: Removed | None = None, fill: Mapping[int, torch.Tensor] | None = None,
                      world: Any = None) -> list[list[float]]:
    """Each objective per group (``[n_objectives][n_groups]``), all read from one forward per batch with
    ``removed`` ablated; ``objective_values`` for several objectives at the cost of one."""
    rows: list[tuple[float, ...]] = []
    every = list(batches)
    with stop_together(world), frozen(model), neuron_hooks(model, adapter, removed, fill), torch.no_grad():
        for i in share(len(every), world):
            groups, batch = every[i]
            values = _groups_values(model, objectives, groups, batch, graphs=0)
            rows.extend(zip(*(v.tolist() for v in values)))
    rows = gathered(rows, world)
    return [[row[k] for row in rows] for k in range(len(objectives))]


# -- capability cost --------------------------------------------------------------------------------

@dataclass
class TextChunks:
    """Equal-length token chunks of a calibration text; each starts with ``n_prefix`` special tokens (e.g. BOS).

    ``window`` is how many consecutive positions the capability cost sums before
    taking |·| (None: the whole chunk).
    """

    chunks: list[list[int]]
    n_prefix: int
    window: int | None = None


def text_chunks(tokenizer: Any, path: str | Path | None = None, chunk_tokens: int = 128,
                max_tokens: int = 2048, start: int = 0, window: int | None = None) -> TextChunks:
    """Chunks of a calibration text file (None: the bundled general English text).

    Each chunk is the tokenizer's special prefix plus ``chunk_tokens`` text tokens;
    at most ``max_tokens`` text tokens from token ``start`` on are used.
    ``ConfigError`` when the file is missing or too short for one chunk there.
    """
    path = Path(path) if path is not None else DEFAULT_TEXT
    if not path.is_file():
        raise ConfigError(f"calibration text not found: {path}")
    ids = list(tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"])
    ids = ids[start:start + max_tokens]
    prefix = list(tokenizer("", add_special_tokens=True)["input_ids"])
    chunks = [prefix + ids[k:k + chunk_tokens] for k in range(0, len(ids) - chunk_tokens + 1, chunk_tokens)]
    if not chunks:
        raise ConfigError(f"calibration text {path} has {len(ids)} tokens from token {start} on, fewer than one "
                          f"chunk of {chunk_tokens}")
    return TextChunks(chunks, len(prefix), window)


def _chunk_losses(model: nn.Module, chunks: Sequence[Sequence[int]], n_prefix: int) -> torch.Tensor:
    """Mean next-token NLL (nats) of each chunk's text tokens: ``[n_chunks]``; chunks have one length."""
    device = input_device(model)
    ids = torch.tensor([list(c) for c in chunks], dtype=torch.long, device=device)
    logits = forward(model, input_ids=ids, use_cache=False).logits[:, :-1]
    targets = ids[:, 1:]
    # one chunk's widened logits (and their log-softmax) at a time: at a 128k vocabulary a batch's float32 copies
    # were several times the model-dtype logits; each row's NLL is bitwise what the whole batch gives
    # (flattened positions, vocab) keeps the softmax on the contiguous last dimension: ~3x faster than (1, V, T)
    nll = torch.stack([torch.nn.functional.cross_entropy(wide(logits[i]), targets[i], reduction="none")
                       for i in range(len(chunks))])
    return nll[:, max(n_prefix - 1, 0):].mean(1)


@dataclass
class CapabilityCost:
    """First-order loss changes per window of positions: ``grad[layer]``/``grad_act[layer]`` are
    ``[n_windows, width]``, ``n_chunks`` chunks of ``n_windows / n_chunks`` windows each."""

    grad: dict[int, torch.Tensor]
    grad_act: dict[int, torch.Tensor]
    mean: dict[int, torch.Tensor]
    magnitude: dict[int, torch.Tensor]
    loss: float
    n_chunks: int = 0

    def cost(self, fill: Mapping[int, torch.Tensor] | None) -> dict[int, torch.Tensor]:
        """Per neuron, the mean over chunks of Σ_windows |ΔL_window| (nats per token) for removal to ``fill``
        (None = zero); with one window per chunk that is the mean over chunks of |ΔL_chunk|."""
        out = {}
        for layer, grad in self.grad.items():
            r = fill[layer].float() if fill is not None else torch.zeros(grad.shape[-1])
            out[layer] = (r[None] * grad - self.grad_act[layer]).abs().sum(0) / max(self.n_chunks, 1)
        return out


def capability_attribution(model: nn.Module, text: TextChunks, adapter: Any = None, *, batch_size: int = 4,
                           progress: bool = False, world: Any = None) -> CapabilityCost:
    """One forward/backward per batch of chunks; per chunk, Σ ∂L/∂h_i and Σ h_i·∂L/∂h_i over positions.

    With ``world`` (several processes, all calling this) each process runs a contiguous share of the batches
    of chunks; the per-window rows are gathered in chunk order and the totals summed in batch order, so every
    process returns the one-process result.
    """
    adapter = adapter or resolve_adapter(model)
    chunks, n_prefix = text.chunks, text.n_prefix
    widths = layer_widths(model, adapter)
    starts = list(range(0, len(chunks), batch_size))
    rows: list[torch.Tensor] = []  # per batch: [chunks * windows, Σg per layer then Σh·g per layer]
    totals, losses = OrderedSum(1 + 2 * sum(w for _, w in widths), world), []
    with stop_together(world), frozen(model), neuron_hooks(model, adapter) as hooks:
        hooks.track = True
        for k in tqdm(share(len(starts), world), desc="capability cost", disable=not progress, leave=False):
            batch = chunks[starts[k]:starts[k] + batch_size]
            hooks.kept = {}
            with torch.enable_grad():
                loss = _chunk_losses(model, batch, n_prefix)
                layers = sorted(hooks.kept)
                got = dict(zip(layers, torch.autograd.grad(loss.sum(), [hooks.kept[i] for i in layers],
                                                           allow_unused=True)))
            mask = torch.ones(len(batch), len(batch[0]), dtype=torch.bool)
            g_parts, ga_parts = [], []
            for layer, _ in widths:
                h = hooks.kept[layer].detach().float()
                g = torch.zeros_like(h) if got.get(layer) is None else got[layer].float()
                g_parts.append(_window_sums(g, text.window))
                ga_parts.append(_window_sums(h * g, text.window))
            rows.append(torch.cat(g_parts + ga_parts, dim=1).cpu())
            totals.add(flat_sums(widths, hooks.kept, {}, mask, with_grads=False))
            losses.extend(loss.detach().cpu().tolist())
            hooks.kept = {}
    total_width = sum(w for _, w in widths)
    table = torch.cat(rows) if rows else torch.zeros(0, 2 * total_width)
    if world is not None:
        table = world.gather_rows({"rows": table}, int(table.shape[0]))["rows"]
    losses = gathered(losses, world)
    split = table.split([w for _, w in widths] * 2, dim=1)
    grads = {layer: split[i] for i, (layer, _) in enumerate(widths)}  # column views of one table
    grad_acts = {layer: split[len(widths) + i] for i, (layer, _) in enumerate(widths)}
    stats = NeuronSums.from_stats(totals.total(), widths)
    return CapabilityCost(grads, grad_acts, stats.mean(), stats.magnitude(), float(sum(losses) / len(losses)),
                          len(chunks))


def _window_sums(x: torch.Tensor, window: int | None) -> torch.Tensor:
    """``x`` ``[B, T, width]`` summed over consecutive windows of positions -> ``[B * n_windows, width]``
    (chunk-major; the last window of a chunk may be shorter); None: one window per chunk."""
    if window is None or window >= x.shape[1]:
        return x.sum(1)
    return torch.stack([part.sum(1) for part in torch.split(x, window, dim=1)], 1).flatten(0, 1)


@torch.no_grad()
def text_loss(model: nn.Module, text: TextChunks, adapter: Any, *, removed: Removed | None = None,
              fill: Mapping[int, torch.Tensor] | None = None, batch_size: int = 4, world: Any = None) -> float:
    """Mean next-token NLL (nats) of the chunks with ``removed`` neurons ablated: the measured capability.
    With ``world``, each process runs a share of the batches of chunks and all get the one-process mean."""
    chunks, n_prefix = text.chunks, text.n_prefix
    losses: list[float] = []
    starts = list(range(0, len(chunks), batch_size))
    with stop_together(world), frozen(model), neuron_hooks(model, adapter, removed, fill):
        for k in share(len(starts), world):
            losses.extend(_chunk_losses(model, chunks[starts[k]:starts[k] + batch_size], n_prefix).tolist())
    losses = gathered(losses, world)
    value = float(sum(losses) / len(losses))
    if not math.isfinite(value):
        raise non_finite_error("the calibration text's loss", None, None, next(model.parameters()).dtype)
    return value
