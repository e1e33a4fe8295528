"""What the explorer computes, without any web framework: the models named at start, a validated prompt pair,
and one comparison (per-layer bias profile, token-aligned hidden states, greedy completions) per request.

Everything is measured with the library's own pieces: the ``activation_bias`` and
``generations`` evaluators (each model observed once, then compared: the same numbers
a run reports), and ``viz.activations.aligned_states`` for the PCA and the token heatmap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.contract.errors import PersistError, PromptError
from ..core.contract.protocols import PromptGroup

logger = logging.getLogger(__name__)

#: called with (fraction done in [0, 1], what is being done)
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Limits:
    """Bounds on one request, so that a client cannot make the server work without end."""

    max_chars: int = 500
    max_tokens: int = 96
    max_new_tokens: int = 64
    #: requests waiting for their turn; more are refused ("queue is full") until some are answered
    max_queue: int = 32


@dataclass
class Comparison:
    """One prompt pair measured on every loaded model; ``labels`` are ``("base",)`` or ``("base", "pruned")``."""

    group: PromptGroup
    labels: tuple[str, ...]
    layer: int
    pooling: str
    profile: list[dict[str, Any]]  # {layer, base, pruned}: mean |a − b| of the pooled residual stream
    states: dict[str, Any]  # label -> AlignedStates (hidden states [n_layers + 1, n_columns, 2, hidden])
    completions: list[dict[str, str]]  # {prompt, base, [pruned]}: greedy continuations

    def figures(self) -> dict[str, Any]:
        """``profile``, ``pca`` and ``tokens`` (the heatmaps of every model), as matplotlib figures."""
        from ..viz.activations import pca_plot, token_heatmap_plot
        from ..viz.profile import bias_profile_plot

        first = self.states[self.labels[0]]
        # the first token is an attention sink with massive activations (hundreds of times the others in SmolLM2):
        # left in, it is the whole first principal axis; it is the same token in both prompts, so nothing is lost
        skip = 1 if first.diverge_at > 0 and len(first.tokens) > 3 else 0
        points = [self.states[label].states[self.layer + 1, skip:] for label in self.labels]  # [n_columns, 2, hidden]
        a, b = self.group.attributes
        figures = {
            "profile": bias_profile_plot(self.profile, ylabel=f"mean |a − b|, {self.pooling}-pooled residual stream",
                                         title="Mean activation difference per layer"),
            "pca": pca_plot(*points, members=[a, b], layer=self.layer, labels=first.tokens[skip:],
                            title=f"Residual stream after layer {self.layer}, one point per token "
                                  f"(the first left out): {a} → {b}"),
        }
        distances = [self.states[label].distances() for label in self.labels]
        figures["tokens"] = token_heatmap_plot(distances[0], pruned=distances[1] if len(distances) > 1 else None,
                                               title="Where the two prompts' hidden states differ, token by token")
        return figures


@dataclass
class Explorer:
    """The base model (and optionally a pruned one) sharing one tokenizer, fixed for the server's lifetime.

    ``compare`` runs one request at a time (a lock), whatever the web layer does.
    """

    base: Any
    tokenizer: Any
    pruned: Any | None = None
    names: dict[str, str] = field(default_factory=dict)  # label -> what was loaded ("smollm2-135m", a path)
    limits: Limits = field(default_factory=Limits)
    registry: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, model: str, pruned: str | Path | None = None, limits: Limits | None = None) -> Explorer:
        """Load the base model by source spec and the pruned model from a directory saved by fairprune."""
        from ..core.io.persist import load_pretrained, read_sidecar
        from ..core.io.sources import load_model

        if pruned is not None and read_sidecar(pruned) is None:
            raise PersistError(f"{str(pruned)!r} is not a model saved by fairprune (no fairprune.json)")
        base, tokenizer = load_model(model)
        names = {"base": model}
        pruned_model = None
        if pruned is not None:
            pruned_model, pruned_tokenizer = load_pretrained(pruned)
            shape = [(m.config.num_hidden_layers, m.config.hidden_size) for m in (base, pruned_model)]
            if pruned_tokenizer.get_vocab() != tokenizer.get_vocab() or shape[0] != shape[1]:
                raise PersistError(f"the model in {str(pruned)!r} (layers, hidden size {shape[1]}, its tokenizer) "
                                   f"does not match {model!r} {shape[0]}; give the base model it was pruned from")
            names["pruned"] = str(pruned)
        return cls(base.eval(), tokenizer, pruned_model.eval() if pruned_model is not None else None, names,
                   limits or Limits())

    @property
    def labels(self) -> tuple[str, ...]:
        return ("base", "pruned") if self.pruned is not None else ("base",)

    @property
    def n_layers(self) -> int:
        return int(self.base.config.num_hidden_layers)

    def pair(self, prompt_a: str, prompt_b: str) -> PromptGroup:
        """A validated pair; ``PromptError`` with a one-line reason otherwise (empty, too long, not one span)."""
        from ..core.data.prompts import make_group

        for name, prompt in (("A", prompt_a), ("B", prompt_b)):
            if not isinstance(prompt, str) or not prompt.strip():
                raise PromptError(f"prompt {name} is empty")
            if len(prompt) > self.limits.max_chars:
                raise PromptError(f"prompt {name} has {len(prompt)} characters; the limit is {self.limits.max_chars}")
        group = make_group((prompt_a.strip(), prompt_b.strip()), axis="explorer", template_id="explorer")
        ids = [self.tokenizer(p)["input_ids"] for p in group.prompts]
        for name, tokens in zip("AB", ids):
            if len(tokens) > self.limits.max_tokens:
                raise PromptError(f"prompt {name} has {len(tokens)} tokens; the limit is {self.limits.max_tokens}")
        if ids[0] == ids[1]:
            raise PromptError("the two prompts tokenize identically; the tokenizer does not tell the words apart")
        return group

    def compare(self, prompt_a: str, prompt_b: str, *, layer: int | None = None, pooling: str = "suffix",
                max_new_tokens: int = 24, progress: Progress | None = None) -> Comparison:
        """Validate, then measure the pair on every model; raises ``PromptError``/``ConfigError`` on bad input."""
        group = self.pair(prompt_a, prompt_b)
        layer = self.n_layers // 2 if layer is None else int(layer)
        if not 0 <= layer < self.n_layers:
            raise PromptError(f"layer {layer} is out of range: the model has {self.n_layers} layers (0-{self.n_layers - 1})")
        if not 1 <= max_new_tokens <= self.limits.max_new_tokens:
            raise PromptError(f"new tokens must be between 1 and {self.limits.max_new_tokens}, got {max_new_tokens}")
        report = progress or (lambda fraction, what: None)
        with self._lock:
            return self._measure(group, layer, pooling, max_new_tokens, report)

    def _measure(self, group: PromptGroup, layer: int, pooling: str, max_new_tokens: int,
                 report: Progress) -> Comparison:
        from ..core.contract.registry import default_registry
        from ..core.contract.results import EvalContext
        from ..core.model.adapters import resolve_adapter
        from ..core.run.evaluation import compare_all, configure_evaluators, observe_all
        from ..viz.activations import aligned_states

        registry = default_registry(self.registry)
        evaluators = configure_evaluators(registry, [
            ("activation_bias", {"sites": ["residual"], "pooling": pooling, "n_boot": 10}),
            ("generations", {"prompts": list(group.prompts), "max_new_tokens": max_new_tokens})], "explorer")
        context = EvalContext(tokenizer=self.tokenizer, groups=[group], registry=registry, progress=False)
        models = {"base": self.base, "pruned": self.pruned}
        observed, states = {}, {}
        for i, label in enumerate(self.labels):
            report(0.05 + 0.9 * i / len(self.labels), f"the {label} model: activations and greedy completions")
            model = models[label]
            observed[label] = observe_all(evaluators, model, context, label, resolve_adapter(model, registry=registry))
            states[label] = aligned_states(model, self.tokenizer, *group.prompts)
        # a base-only page compares the base observation with itself: the same tables, one model's columns kept
        results = compare_all(evaluators, observed["base"], observed.get("pruned", observed["base"]), context)
        report(1.0, "drawing")
        profile = [{"layer": row["layer"], **{label: row[label] for label in self.labels}}
                   for row in results["activation_bias"].tables["layers"]]
        completions = [{"prompt": row["prompt"], **{label: row[label] for label in self.labels}}
                       for row in results["generations"].tables["generations"]]
        return Comparison(group, self.labels, layer, pooling, profile, states, completions)


@dataclass(frozen=True)
class TemplateChoice:
    """The prompts of one axis template, by attribute: what the page's template picker offers."""

    axis: str
    template_id: str
    prompts: dict[str, str]  # attribute -> filled prompt


def template_choices(registry: Any = None) -> dict[str, dict[str, TemplateChoice]]:
    """axis name -> template id -> its prompts by attribute, for every registered bias axis."""
    from ..core.contract.registry import get_registry

    registry = registry or get_registry()
    out: dict[str, dict[str, TemplateChoice]] = {}
    for name in registry.names("bias_axes"):
        templates: dict[str, dict[str, str]] = {}
        for group in registry.get("bias_axes", name).prompt_groups("all"):
            filled = templates.setdefault(group.template_id, {})
            for attribute, prompt in zip(group.attributes, group.prompts):
                filled.setdefault(attribute, prompt)
        out[name] = {tid: TemplateChoice(name, tid, prompts) for tid, prompts in templates.items() if len(prompts) > 1}
    return out
