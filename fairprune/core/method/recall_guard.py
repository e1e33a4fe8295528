"""The recall guard of the attribution method: pruning must not make the model deaf to the group it was told.

Recall prompts state an attribute group and ask it back ("My grandfather was
{attribute}, so my family is"); they come in the axis file format (groups with
surface forms, templates with an ``{attribute}`` slot). For a prompt stating
group s, the model's score of group g is the logsumexp of the next-token
log-probabilities of the first token of each of g's surface forms (as written
and capitalised, with a leading space); tokens that two groups share are
dropped. The **recall loss** of the prompt is −log of s's share of those scores
(softmax over groups), and its **recall** is that share (the probability of the
stated group among the axis' groups).

The guard does two things in selection (``core.method.selection``):

- a cost: the same first-order estimate as the capability cost, ΔL_i ≈ Σ (r_i − h_i)·∂L/∂h_i on the
  recall loss; the ``guard_fraction`` of each layer with the largest estimated *increase* is never removed;
- a measured check: every round's neurons are removed (ablated) and the mean recall measured; a round that
  lowers it by more than ``max_drop_pts`` percentage points from the unpruned model is halved until it fits,
  or rejected. The recall of the unpruned model is read from the cost's own forwards (``measure`` right
  after ``cost`` with the same removed set and fill costs no forward).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..contract.errors import ConfigError
from ..data.groups import SEP
from . import attribution as attr

logger = logging.getLogger(__name__)

#: bundled recall prompts, one file per axis name
RECALL_DIR = Path(__file__).resolve().parents[2] / "data" / "recall"


def bundled_recall_file(axis: str) -> Path:
    """The bundled recall prompts of axis ``axis``; ``ConfigError`` when there are none."""
    path = RECALL_DIR / f"{axis}.yaml"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in RECALL_DIR.glob("*.yaml"))) or "none"
        raise ConfigError(f"method.recall: no bundled recall prompts for axis {axis!r} (bundled: {have}); "
                          "give recall.prompts, a file in the axis format")
    return path


def recall_prompts_file(config: Any, prompts: str | Path | None) -> Path:
    """The recall prompts a run reads: ``prompts``, or the bundled ones of the first bias axis when None;
    ``ConfigError`` naming ``method.recall.prompts`` when there are none or the file is missing."""
    from ..data.groups import is_axis_name

    if prompts is not None:
        path = Path(prompts)
        if not path.is_file():
            raise ConfigError(f"method.recall.prompts: file not found: {path}")
        return path
    first = config.bias.axes[0] if config.bias.axes else None
    if first is None or not is_axis_name(first):
        raise ConfigError("method.recall.prompts: the first bias axis is not a bundled axis name; name recall "
                          "prompts (a file in the axis format)")
    return bundled_recall_file(first)


def answer_tokens(tokenizer: Any, forms: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    """Per attribute group, the first token ids of " form" and " Form" for each surface form (the first that
    is not whitespace alone), without ids that another group also has. ``ConfigError`` when a group is left with none."""
    ids: dict[str, set[int]] = {}
    for group, group_forms in forms.items():
        for form in group_forms:
            for text in {f" {form}", f" {form[:1].upper()}{form[1:]}"}:
                encoded = list(tokenizer(text, add_special_tokens=False)["input_ids"])
                # the first token that is not only the space (character-level tokenizers split it off)
                first = next((i for i in encoded if tokenizer.decode([i]).strip()), None)
                if first is not None:
                    ids.setdefault(group, set()).add(int(first))
    out = {}
    for group, mine in ids.items():
        others = set().union(*(v for g, v in ids.items() if g != group))
        out[group] = sorted(mine - others)
        if not out[group]:
            raise ConfigError(f"method.recall: every answer token of group {group!r} is shared with "
                              "another group")
    return out


class RecallLoss:
    """−log p(stated group) among the axis' groups, per merged template group (mean over members); with
    ``share=True`` the probability itself (recall, what the check measures). Differentiable; float32."""

    uses: ClassVar[tuple[str, ...]] = ("logprobs", "labels")

    def __init__(self, answers: Mapping[str, Sequence[int]], share: bool = False) -> None:
        self.groups = list(answers)
        self.index = [torch.tensor(list(answers[g]), dtype=torch.long) for g in self.groups]
        self.share = share
        self.name = "recall" if share else "recall_loss"

    def per_member(self, logprobs: torch.Tensor, labels: Sequence[str]) -> torch.Tensor:
        """``logprobs`` ``[n, vocab]``, labels = each member's stated group -> log-share of it, ``[n]``."""
        lp = attr.wide(logprobs)
        scores = torch.stack([torch.logsumexp(lp.index_select(-1, i.to(lp.device)), -1) for i in self.index], -1)
        norm = scores - torch.logsumexp(scores, -1, keepdim=True)
        truth = torch.tensor([self.groups.index(label) for label in labels], device=lp.device)
        return norm.gather(-1, truth[:, None])[:, 0]

    def value(self, inputs: Any) -> torch.Tensor:
        if inputs.labels is None:
            raise ConfigError("the recall loss needs each member's stated group (labels)")
        out, start = [], 0
        for size, labels in zip(inputs.sizes, inputs.labels):
            logshare = self.per_member(inputs.logprobs[start:start + size], labels)
            start += size
            out.append(logshare.exp().mean() if self.share else -logshare.mean())
        return torch.stack(out)


@dataclass
class RecallGuard:
    """Recall prompts ready for selection: batches, the loss and the share, the guard's settings."""

    batches: attr.GroupBatches
    loss: RecallLoss
    share: RecallLoss
    guard_fraction: float
    max_drop_pts: float | None
    world: Any = None  # a distributed.World whose processes share every pass (all must call), or None
    _read: tuple[Any, float] | None = field(default=None, repr=False, compare=False)

    def cost(self, model: torch.nn.Module, adapter: Any, *, removed: attr.Removed | None = None,
             fill: Mapping[int, torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
        """Per layer ``Tensor[width]``: the estimated increase of the mean recall loss (nats) when each neuron
        is removed (to ``fill``; None = zero), with ``removed`` already ablated. Negative: removal helps."""
        result = attr.attribute_objective(model, self.batches, self.loss, adapter, removed=removed, fill=fill,
                                          also=self.share, world=self.world)
        values = result.also or []
        self._read = (_key(model, removed, fill), 100.0 * float(sum(values) / len(values)))
        return result.sums.delta(fill)

    def measure(self, model: torch.nn.Module, adapter: Any, *, removed: attr.Removed | None = None,
                fill: Mapping[int, torch.Tensor] | None = None) -> float:
        """Mean recall (percent): the probability of the stated group among the axis' groups, with ``removed``
        ablated, averaged over templates."""
        read, self._read = self._read, None
        if read is not None and read[0] == _key(model, removed, fill):
            return read[1]  # the cost pass just before read it from its own forwards: no forward of its own
        values = attr.objective_values(model, self.batches, self.share, adapter, removed=removed, fill=fill,
                                       world=self.world)
        return 100.0 * float(sum(values) / len(values))

    def fit(self, model: torch.nn.Module, adapter: Any, removed: Mapping[int, Sequence[int]],
            add: list[tuple[int, int]], fill: Mapping[int, torch.Tensor] | None,
            base: float) -> tuple[list[tuple[int, int]], float | None]:
        """Halve ``add`` (a round's ranked (layer, neuron) additions; the lowest ranked go first) until the
        measured recall with ``removed`` and them ablated is at most ``max_drop_pts`` below ``base``; the
        additions kept ([] = the round is rejected) and the recall they leave (None without a limit)."""
        if self.max_drop_pts is None:
            return add, None
        while add:
            value = self.measure(model, adapter, removed=attr.merged_removed(removed, add), fill=fill)
            if base - value <= self.max_drop_pts:
                return add, value
            logger.info("recall guard: %d neurons lower recall %.2f -> %.2f%% (limit %.2f points); halving",
                        len(add), base, value, self.max_drop_pts)
            add = add[:len(add) // 2]
        return [], None

    def protected(self, cost: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """Per layer ``Bool[width]``: the ``guard_fraction`` of neurons whose removal raises the recall loss
        most (only neurons with a positive estimate)."""
        return attr.top_positive(cost, self.guard_fraction)


def _key(model: torch.nn.Module, removed: attr.Removed | None, fill: Any) -> tuple[Any, ...]:
    """What a recall measurement reads besides the prompts: the model, the removed set, the fill (by identity)
    and the pass precision."""
    from . import precision
    from .passes import removed_key

    return (id(model), removed_key(removed), id(fill), precision.current())


def recall_guard(model: torch.nn.Module, tokenizer: Any, *, prompts: str | Path, guard_fraction: float,
                 max_drop_pts: float | None, batch_size: int = 16) -> RecallGuard:
    """Load recall prompts (axis file format) and prepare the guard; ``ConfigError``/``PromptError`` on bad input."""
    from ..data.prompts import load_axis

    path = Path(prompts)
    if not path.is_file():
        raise ConfigError(f"method.recall.prompts: file not found: {path}")
    axis = load_axis(path)
    forms = axis.attribute_groups()
    labels = {f"{axis.name}{SEP}{form}": group for group, group_forms in forms.items() for form in group_forms}
    groups = axis.prompt_groups("all")
    batches = attr.group_batches(model, tokenizer, groups, batch_size, labels=labels)
    answers = answer_tokens(tokenizer, forms)
    return RecallGuard(batches, RecallLoss(answers), RecallLoss(answers, share=True), guard_fraction, max_drop_pts)
