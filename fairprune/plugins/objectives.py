"""Built-in bias objectives: output-level measures of how differently a model treats the members of a group.

Attribution (``core.attribution``) differentiates an objective with respect to
every neuron's activation, so each ``value`` must be differentiable and is
computed in float32. Lower is fairer; every objective is zero when all members
of a group produce the same outputs (``js_above_floor`` may go below zero).

- ``next_token_js``: mean Jensen–Shannon divergence (nats) between the members'
  next-token distributions after the prompt, over member pairs;
- ``js_above_floor``: the mean JS between members of different attribute
  groups minus the mean JS between two surface forms of one group (the
  word-swap noise floor), on a template's members in every form;
- ``group_mean_js``: the mean JS between attribute groups, each group's
  next-token distribution the mean over its surface forms;
- ``continuation_gap``: mean over member pairs of |log p(c | member i) − log p(c |
  member j)| (nats) for shared continuations c: given words, or else the group's
  most likely next tokens;
- ``activation_distance``: mean over layers and member pairs of mean |a − b| of
  the mean-pooled residual stream (the ``activation_bias`` evaluator's measure).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ConfigDict, Field

from ..core.contract.errors import ConfigError
from ..core.contract.hookspecs import hookimpl
from ..core.contract.plugin import Plugin, StrictParams
from ..core.model import divergence
from ..core.model.divergence import LOG_FLOOR, member_pairs

if TYPE_CHECKING:
    import torch

    from ..core.contract.protocols import ObjectiveInputs

__all__ = ["LOG_FLOOR", "pair_js", "pairwise_js"]


def _pairs(n: int) -> tuple[Any, Any]:
    if n < 2:
        raise ConfigError(f"a bias objective needs groups of at least 2 members, got one of {n}")
    return member_pairs(n)


def pair_js(logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """JS divergence (nats) of every member pair (``core.divergence.pair_js``; ``ConfigError`` for a group of
    one member)."""
    _pairs(logprobs.shape[0])
    return divergence.pair_js(logprobs)


def pairwise_js(logprobs: torch.Tensor) -> torch.Tensor:
    """Mean JS divergence (nats) over member pairs: ``logprobs`` ``[n_members, vocab]`` -> scalar (float32); the
    figure ``output_bias`` reports for a group."""
    return pair_js(logprobs)[0].mean()


_wide = divergence.widened


def _per_group(inputs: ObjectiveInputs, table: torch.Tensor, fn: Any) -> torch.Tensor:
    """Apply ``fn`` to each group's rows of ``table`` (dim 0 = prompts) and stack: ``[n_groups]``."""
    import torch

    out, start = [], 0
    for size in inputs.sizes:
        out.append(fn(table[start:start + size]))
        start += size
    return _wide(torch.stack(out))


def _per_labelled_group(inputs: ObjectiveInputs, name: str, fn: Any) -> torch.Tensor:
    """``fn(rows, labels)`` on each group's rows of ``inputs.logprobs`` with its members' attribute groups, stacked:
    ``[n_groups]``; ``ConfigError`` when the inputs carry no labels."""
    import torch

    if inputs.labels is None:
        raise ConfigError(f"{name} needs each member's attribute group (inputs.labels)")
    out, start = [], 0
    for size, labels in zip(inputs.sizes, inputs.labels):
        out.append(fn(inputs.logprobs[start:start + size], labels))
        start += size
    return _wide(torch.stack(out))


class NextTokenJS(Plugin):
    """Mean JS divergence between the members' next-token distributions (the ``output_bias`` headline)."""

    name = "next_token_js"
    description = "mean Jensen-Shannon divergence (nats) between group members' next-token distributions"
    uses: ClassVar[tuple[str, ...]] = ("logprobs",)

    def bind(self, tokenizer: Any) -> NextTokenJS:
        return self

    def value(self, inputs: ObjectiveInputs) -> torch.Tensor:
        return _per_group(inputs, inputs.logprobs, pairwise_js)


class JSAboveFloorParams(StrictParams):
    """Options of ``js_above_floor``."""

    model_config = ConfigDict(extra="forbid")
    floor_weight: float = Field(1.0, ge=0.0, description="weight of the within-group (word-swap) JS subtracted; "
                                                         "0: plain between-group JS")


class JSAboveFloor(Plugin):
    """Between-group next-token JS minus the word-swap floor: what the demographic, not the word, changes.

    Each group holds a template's members in every surface form, labelled by
    attribute group. The value is the mean JS (nats) over pairs of members of
    different attribute groups ("Black" vs "white") minus ``floor_weight`` times
    the mean JS over pairs of two forms of one group ("Black" vs "African
    American"), the noise floor of swapping a word (the ``output_bias``
    evaluator's ``js_within``). Lowering it narrows the gap between groups
    rather than making the model deaf to the swapped word, which would lower
    both terms alike. A group with no pair of one kind reads 0 for that term.
    It can be negative; lower is fairer.
    """

    name = "js_above_floor"
    description = "between-group next-token JS minus the within-group (word-swap) JS, nats"
    Params = JSAboveFloorParams
    uses: ClassVar[tuple[str, ...]] = ("logprobs", "labels")

    def bind(self, tokenizer: Any) -> JSAboveFloor:
        return self

    def value(self, inputs: ObjectiveInputs) -> torch.Tensor:
        def above_floor(lp: torch.Tensor, labels: tuple[str, ...]) -> torch.Tensor:
            between, within = divergence.between_within_js(lp, labels)
            return between - self.params.floor_weight * within

        return _per_labelled_group(inputs, self.name, above_floor)


class GroupMeanJS(Plugin):
    """Mean JS between the attribute groups' next-token distributions, each the mixture over its surface forms.

    Each group holds a template's members in every surface form, labelled by
    attribute group (as for ``js_above_floor``). A group's distribution is the
    mean of its forms' distributions ("Black" and "African American"), and the
    value is the mean JS (nats) over pairs of these mixtures. What one word does
    and the other form does not is averaged down in the mixture, so the
    objective weighs what the forms of a group share (the group) more than what
    a single word does. Zero when every group's mixture is the same, or when a group
    holds one attribute group only.
    """

    name = "group_mean_js"
    description = "mean JS (nats) between attribute groups' next-token distributions, each averaged over its forms"
    uses: ClassVar[tuple[str, ...]] = ("logprobs", "labels")

    def bind(self, tokenizer: Any) -> GroupMeanJS:
        return self

    def value(self, inputs: ObjectiveInputs) -> torch.Tensor:
        return _per_labelled_group(inputs, self.name, _group_mixture_js)


def _group_mixture_js(lp: torch.Tensor, labels: tuple[str, ...]) -> torch.Tensor:
    """Mean JS between the attribute groups' mixtures of ``lp`` ``[members, vocab]`` (0 for one group)."""
    import math

    import torch

    names = list(dict.fromkeys(labels))
    if len(names) < 2:  # one attribute group: nothing to compare (0, still on the graph)
        return _wide(lp).clamp_min(LOG_FLOOR).sum() * 0  # clamped: a -inf log-probability times 0 is NaN
    members = {name: [i for i, label in enumerate(labels) if label == name] for name in names}
    mixtures = torch.stack([torch.logsumexp(_wide(lp[rows]), dim=0) - math.log(len(rows))
                            for rows in members.values()])
    return pairwise_js(mixtures)


class ContinuationGapParams(StrictParams):
    """Options of ``continuation_gap``."""

    model_config = ConfigDict(extra="forbid")
    continuations: list[str] = Field(
        default_factory=list,
        description="shared single-token continuations (e.g. ' was'); empty: the group's top_k most likely next tokens")
    top_k: int = Field(10, ge=1, description="how many of the group's most likely next tokens, when no continuations")


class ContinuationGap(Plugin):
    """Spread across members of the log-probabilities of shared continuations.

    With no ``continuations`` the shared ones are each group's ``top_k`` next
    tokens by mean probability over members (chosen without gradient), so the
    objective follows whatever the prompts make likely rather than fixed words.
    """

    name = "continuation_gap"
    description = "mean |log p(c|member i) - log p(c|member j)| (nats) over shared continuations c and member pairs"
    Params = ContinuationGapParams
    uses: ClassVar[tuple[str, ...]] = ("logprobs",)
    token_ids: tuple[int, ...] = ()

    def bind(self, tokenizer: Any) -> ContinuationGap:
        ids = []
        for text in self.params.continuations:
            encoded = list(tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(encoded) != 1:
                raise ConfigError(f"method.objective.params.continuations: {text!r} encodes to {len(encoded)} tokens; "
                                  "continuation_gap takes single-token continuations (or none, for the top_k)")
            ids.append(int(encoded[0]))
        bound = copy.copy(self)
        bound.token_ids = tuple(ids)
        return bound

    def value(self, inputs: ObjectiveInputs) -> torch.Tensor:
        return _per_group(inputs, inputs.logprobs, self._gap)

    def _gap(self, lp: torch.Tensor) -> torch.Tensor:
        import torch

        if self.token_ids:
            index = torch.tensor(self.token_ids, device=lp.device)
        else:
            k = min(self.params.top_k, lp.shape[-1])
            index = torch.topk(lp.detach().float().exp().mean(0), k).indices
        chosen = _wide(lp).index_select(-1, index)  # [members, C]
        rows, cols = _pairs(chosen.shape[0])
        return (chosen[rows] - chosen[cols]).abs().mean()


class ActivationDistance(Plugin):
    """Mean |a − b| of the mean-pooled residual stream over layers and member pairs (for comparison)."""

    name = "activation_distance"
    description = "mean over layers and member pairs of mean |a - b| of the mean-pooled residual stream"
    uses: ClassVar[tuple[str, ...]] = ("hidden",)

    def bind(self, tokenizer: Any) -> ActivationDistance:
        return self

    def value(self, inputs: ObjectiveInputs) -> torch.Tensor:
        if inputs.hidden is None:
            raise ConfigError("activation_distance needs the residual stream (inputs.hidden)")
        per_prompt = _wide(inputs.hidden).transpose(0, 1)  # [prompts, layers, hidden]

        def distance(x: torch.Tensor) -> torch.Tensor:
            rows, cols = _pairs(x.shape[0])
            return (x[rows] - x[cols]).abs().mean()

        return _per_group(inputs, per_prompt, distance)


@hookimpl
def fairprune_register_bias_objectives(register):
    register(NextTokenJS())
    register(JSAboveFloor())
    register(GroupMeanJS())
    register(ContinuationGap())
    register(ActivationDistance())
