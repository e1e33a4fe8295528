"""The protocol of each plugin kind: what a registered object must provide.

Every plugin has a ``name`` (lowercase snake_case or kebab-case, unique within
its kind) and a one-line ``description``; it may declare a pydantic ``Params``
model for its options (see ``core.plugin``). Tensor contracts are stated per
method; the core checks shapes and finiteness of what plugins return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch stays out of import time for `fairprune --help`
    import torch
    from torch import nn


@runtime_checkable
class Named(Protocol):
    name: str
    description: str


@dataclass(frozen=True)
class SiteTarget:
    """Where one layer's activation for a site is read.

    ``module`` is hooked; ``use_input`` reads its first positional input (a
    forward pre-hook) instead of its output; ``select`` optionally slices the
    tensor (e.g. the gate half of a fused ``gate_up_proj`` output).
    """

    module: "nn.Module"
    use_input: bool = False
    select: Any = None  # Callable[[Tensor], Tensor] | None


@runtime_checkable
class ArchitectureAdapter(Protocol):
    """Knows one family of GLU models.

    Contract: ``layers(model)`` returns the decoder layers in order;
    ``gate_up(model, i)`` returns views ``(gate [width, hidden], up [width, hidden])``;
    ``down(model, i)`` returns ``[hidden, width]``; ``site(model, i, role)`` returns a
    ``SiteTarget`` for role in {"neuron", "gate", "up", "mlp_out", "residual"};
    ``keep(model, i, indices)`` keeps exactly those neurons (in that order);
    ``set_widths(model, widths)`` records per-layer widths in ``model.config``.
    """

    name: str
    description: str

    def matches(self, model: "nn.Module") -> bool: ...
    def layers(self, model: "nn.Module") -> Sequence["nn.Module"]: ...
    def width(self, model: "nn.Module", layer: int) -> int: ...
    def gate_up(self, model: "nn.Module", layer: int) -> tuple["torch.Tensor", "torch.Tensor"]: ...
    def down(self, model: "nn.Module", layer: int) -> "torch.Tensor": ...
    def site(self, model: "nn.Module", layer: int, role: str) -> SiteTarget: ...
    def keep(self, model: "nn.Module", layer: int, indices: "torch.Tensor") -> None: ...
    def set_widths(self, model: "nn.Module", widths: Sequence[int]) -> None: ...


@dataclass
class MLPWeights:
    """One layer's GLU weights, as views: gate/up ``[width, hidden]``, down ``[hidden, width]``."""

    layer: int
    gate: "torch.Tensor"
    up: "torch.Tensor"
    down: "torch.Tensor"


@runtime_checkable
class ImportanceMetric(Protocol):
    """Scores how much the model needs each neuron of one layer (higher = more needed).

    Contract: ``score(weights, stats) -> Tensor[width]`` float, finite.
    ``stats`` is ``None`` unless ``needs_activations`` is true, in which case it
    maps ``"mean_abs"`` (and ``"mean"``) to ``Tensor[width]`` of the neuron's
    activation over calibration prompts.
    """

    name: str
    description: str
    needs_activations: bool

    def score(self, weights: MLPWeights, stats: Mapping[str, "torch.Tensor"] | None) -> "torch.Tensor": ...


@runtime_checkable
class BiasMetric(Protocol):
    """Turns pooled activations of prompt groups into one bias score per neuron.

    Contract: ``score(pooled, magnitude) -> Tensor[width]`` where ``pooled`` is
    ``[n_groups, n_members, width]`` (member j of every group carries the same
    attribute group) and ``magnitude`` is ``Tensor[width]``, the neuron's mean
    |activation| over all real tokens (for scale-free metrics). Higher = more biased;
    invariant to permuting groups, and to permuting members for pair metrics.
    """

    name: str
    description: str

    def score(self, pooled: "torch.Tensor", magnitude: "torch.Tensor") -> "torch.Tensor": ...


@dataclass(frozen=True)
class PromptGroup:
    """Prompts that differ only in the attribute span; one per attribute group.

    ``prompts[j]`` fills the template with ``attributes[j]``. ``template_id``
    identifies the template (splits are by template). ``register`` (``"dialogue"``,
    ``"news"``, ...) and ``family`` (a template's context, or the situation a
    generated template was built from) are optional; folds of the attribution
    method can keep either together (the attribution method's ``fold_by``).
    """

    axis: str
    template_id: str
    attributes: tuple[str, ...]
    prompts: tuple[str, ...]
    register: str = ""
    family: str = ""


@runtime_checkable
class BiasAxis(Protocol):
    """A demographic axis: attribute groups with surface forms, and templates.

    Contract: ``prompt_groups(split)`` with split in {"analysis", "heldout", "all"}
    returns ``list[PromptGroup]``; the split is deterministic and by template.
    ``attribute_groups()`` maps each attribute group name to its surface forms
    (``{"Black": ("Black", "African American"), ...}``); members of prompt groups
    carry one of those forms. Optional: ``transfer_splits()`` names the transfer
    splits the axis answers in ``prompt_groups`` (``"transfer_registers"``,
    ``"transfer_names"``; evaluation only) and ``name_groups()`` maps each group to
    the first names that stand for it there (``core/data/transfer.py``).
    """

    name: str
    description: str

    def prompt_groups(self, split: str = "all") -> list[PromptGroup]: ...
    def attribute_groups(self) -> Mapping[str, Sequence[str]]: ...


@runtime_checkable
class Site(Protocol):
    """An activation site (``collector_kind = "site"``); ``role`` is passed to the adapter.

    ``fixed_width`` is true when the site has the hidden size (comparable before and
    after pruning), false when it has the MLP width.
    """

    name: str
    description: str
    collector_kind: str
    role: str
    fixed_width: bool


@runtime_checkable
class Pooling(Protocol):
    """Chooses the token positions averaged into one vector per prompt (``collector_kind = "pooling"``).

    Contract: ``weights(mask, content_pos, diverge_at) -> Tensor[B, T]`` float,
    rows summing to 1, zero on padding. ``mask`` is ``Bool[B, T]`` (real tokens),
    ``content_pos`` ``Long[B, T]`` the index of each token among the prompt's real
    tokens (independent of padding side), ``diverge_at`` ``Long[B]`` the content
    index of the first token where the prompt differs from its group's other members.
    """

    name: str
    description: str
    collector_kind: str

    def weights(self, mask: "torch.Tensor", content_pos: "torch.Tensor", diverge_at: "torch.Tensor") -> "torch.Tensor": ...


@runtime_checkable
class Scorer(Protocol):
    """Blends one layer's bias and importance into prunability (higher = remove first).

    Contract: ``score(bias, importance, bias_weight) -> Tensor[width]``, finite.
    """

    name: str
    description: str

    def score(self, bias: "torch.Tensor", importance: "torch.Tensor", bias_weight: float) -> "torch.Tensor": ...


@dataclass
class PruneResult:
    """What a pruner did: parameter counts, widths, and the removed neurons per layer."""

    params_before: int
    params_after: int
    widths_before: list[int]
    widths_after: list[int]
    removed: dict[int, list[int]] = field(default_factory=dict)
    #: what recovery distillation did after the pruner (``core.method.recovery.recover``'s record), or None
    recovery: dict[str, Any] | None = None

    @property
    def params_removed(self) -> int:
        return self.params_before - self.params_after

    @property
    def fraction_removed(self) -> float:
        return self.params_removed / self.params_before if self.params_before else 0.0


@runtime_checkable
class Pruner(Protocol):
    """Applies a plan ``{layer: [neuron indices]}`` to a model, in place.

    Contract: ``apply(model, adapter, plan, calibration) -> PruneResult``. The plan
    has been validated by the core. ``calibration`` is ``None`` or maps layer to
    ``Tensor[width]`` mean activation ``E[h_i]`` (for compensating pruners, which set
    ``needs_calibration = True``). A pruner that changes nothing but the planned
    neurons' gate/up rows and down columns (removed or changed in place) and small
    MLP tensors (a down bias) may set ``changes_only_planned = True``: the core's
    all-or-nothing snapshot then copies only those slices instead of every MLP weight.
    """

    name: str
    description: str
    needs_calibration: bool

    def apply(self, model: "nn.Module", adapter: ArchitectureAdapter, plan: Mapping[int, Sequence[int]],
              calibration: Mapping[int, "torch.Tensor"] | None) -> PruneResult: ...


@runtime_checkable
class ModelSource(Protocol):
    """Turns a model spec (a name, a path, a hub id) into ``(model, tokenizer)``.

    Contract: ``matches(spec) -> bool`` is cheap (no loading); ``load(spec) ->
    (model, tokenizer_or_None)`` returns a float32 model in eval mode. Sources
    with a ``priority`` are tried highest first.
    """

    name: str
    description: str
    priority: int

    def matches(self, spec: str) -> bool: ...
    def load(self, spec: str) -> tuple[Any, Any]: ...


@dataclass(frozen=True)
class Headline:
    """One figure an evaluator wants shown in the summary, the report, the model card and the sweep.

    ``key`` names a metric of the evaluator's ``EvalResult.metrics``; ``unit`` is
    appended to the value (``"%"``, ``" pts"``); ``better`` is ``"higher"``,
    ``"lower"`` or ``"closer_to_50"`` (benchmarks whose ideal is 50%);
    ``role`` is ``"bias"`` for a bias-reduction figure a sweep may maximise,
    ``"capability"`` for a capability-loss figure (percent, lower is better) a
    sweep may keep under a limit, and ``"info"`` otherwise. ``kind`` is
    ``"change"`` (base to pruned; shown with its sign) or ``"level"`` (one
    model's figure, such as a benchmark score; shown without a sign).
    ``dataset`` names the data the figure was measured on and ``split`` its split
    where one applies (the model card's ``model-index`` states both); an empty
    ``dataset`` means the run's held-out prompt groups.
    """

    key: str
    label: str
    unit: str = ""
    better: str = "higher"
    role: str = "info"
    kind: str = "change"
    dataset: str = ""
    split: str = ""


@runtime_checkable
class Evaluator(Protocol):
    """Measures one model, then compares two measurements (two phases).

    Contract: ``observe(model, context) -> observation`` measures one model and
    returns plain, small data (lists, floats, numpy or CPU tensors; never the
    model). ``context`` is ``core.evaluation.EvalContext``; ``context.label`` is
    ``"base"`` or ``"pruned"`` and ``context.adapter`` is the model's
    architecture adapter. ``compare(base, pruned, context) -> EvalResult`` turns
    two observations into metrics (plain floats, JSON-serialisable) with
    intervals; ``context.prune_result`` is set there when a pruner ran.
    ``needs_groups`` asks for held-out prompt groups in ``context.groups``;
    ``headlines`` declares the figures shown in summaries (see ``Headline``).
    A run observes the base model before pruning, so it never holds two models.
    """

    name: str
    description: str
    needs_groups: bool
    headlines: tuple[Headline, ...]

    def observe(self, model: "nn.Module", context: Any) -> Any: ...
    def compare(self, base: Any, pruned: Any, context: Any) -> Any: ...


@dataclass
class ObjectiveInputs:
    """What a bias objective reads for one batch of whole prompt groups (members of a group are adjacent).

    ``sizes[g]`` is the number of members of group g (rows of group g follow those
    of group g-1). ``logprobs`` is ``Tensor[n_prompts, vocab]``, the float32
    log-softmax of the next-token distribution after each prompt; ``hidden`` is
    ``None`` unless the objective ``uses`` it, else ``Tensor[n_layers, n_prompts,
    hidden]``, the residual stream after each decoder layer mean-pooled over the
    prompt's real tokens (float32). Both carry gradients during attribution.
    ``labels`` is ``None`` unless the objective ``uses`` it, else one tuple per
    group naming each member's attribute group (``"Black"`` for both ``"Black"``
    and ``"African American"``), so that two surface forms of one attribute group
    (a word swap) can be told from members of different groups.
    """

    sizes: list[int]
    logprobs: "torch.Tensor"
    hidden: "torch.Tensor | None" = None
    labels: "list[tuple[str, ...]] | None" = None


@runtime_checkable
class BiasObjective(Protocol):
    """An output-level bias measure on prompt groups that attribution differentiates (lower = fairer).

    Contract: ``value(inputs) -> Tensor[n_groups]``, one finite float32 value per
    group of ``inputs.sizes`` (in order), zero when all members of a group have the
    same outputs, differentiable in ``inputs.logprobs`` / ``inputs.hidden``.
    ``uses`` is a tuple naming what it reads: ``"logprobs"`` and/or ``"hidden"``,
    and ``"labels"`` for an objective that needs members' attribute groups (its
    groups are then a template's members in every surface form).
    ``bind(tokenizer)`` returns the objective ready for that tokenizer (e.g. with
    its continuations encoded); it raises ``ConfigError`` for options the tokenizer
    cannot serve.
    """

    name: str
    description: str
    uses: tuple[str, ...]

    def bind(self, tokenizer: Any) -> "BiasObjective": ...
    def value(self, inputs: ObjectiveInputs) -> "torch.Tensor": ...


@dataclass
class MethodContext:
    """What a selection method may use besides the model: the run's tokenizer, architecture adapter, registry
    and validated ``RunConfig`` (``bias`` for the analysis prompts, ``pruning`` for the shared limits), the
    configured pruner (a compensating pruner needs calibration means) and whether to show progress bars."""

    tokenizer: Any
    adapter: ArchitectureAdapter
    registry: Any
    config: Any
    pruner: Any = None
    progress: bool = True


@dataclass
class MethodAnalysis:
    """What a method's ``analyze`` found: the ``BiasReport`` a run saves and draws (per-neuron scores of the
    analysis split), and the method's own state for ``plan`` (e.g. a selection already made)."""

    bias_report: Any
    state: Any = None


@runtime_checkable
class Method(Protocol):
    """How neurons get chosen: the model, the analysis prompts, a budget -> a ``Plan``.

    Contract: ``analyze(model, context) -> MethodAnalysis`` does the expensive part once (under torchrun every
    process calls it); ``plan(model, analysis, budget, context, variant) -> Plan`` chooses the neurons for one
    budget (a ceiling or a quota, as the method documents) and one sweep ``variant``; it leaves the model as it
    found it. ``sweep_variants(sweep) -> list[dict]`` are the settings a sweep tries per budget besides the
    budget (``[{}]`` when none). ``Params`` (pydantic, ``extra="forbid"``) holds every key of the method and its
    default. ``shared_keys`` names the optional keys of other config sections the method reads (e.g.
    ``"pruning.round_to"``); setting one it does not read is refused before any work. Each plan record says why
    its neuron was chosen (``layer``, ``neuron`` and the method's figures).
    """

    name: str
    description: str
    shared_keys: frozenset[str]

    def sweep_variants(self, sweep: Any) -> list[dict[str, Any]]: ...

    def analyze(self, model: "nn.Module", context: MethodContext) -> MethodAnalysis: ...

    def plan(self, model: "nn.Module", analysis: MethodAnalysis, budget: Any, context: MethodContext,
             variant: Mapping[str, Any]) -> Any: ...
