"""Contract test classes for plugin authors: subclass one per plugin and pytest checks the protocol.

Usage, in a plugin package's own tests::

    from fairprune.testing.contracts import ImportanceMetricContract

    class TestMyMetric(ImportanceMetricContract):
        metric = MyMetric()

The base classes are not named ``Test*``, so pytest collects only the
subclasses. Each contract checks what the core relies on (name format, a
one-line description, strict ``Params``, tensor shapes, finiteness,
determinism) plus the properties of its kind (e.g. a bias metric is zero when
all members are identical). Inputs are small, seeded and random; override the
``make_*`` methods to feed a plugin inputs of its own.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, ClassVar

import pytest

#: the tiny architectures every weight-based contract runs on
CONTRACT_ARCHITECTURES: tuple[str, ...] = ("llama", "qwen2", "gemma3")


def _close(a: Any, b: Any, atol: float = 1e-6, rtol: float = 1e-5) -> None:
    import torch

    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


class PluginContract:
    """What every plugin kind must satisfy; subclasses set ``kind`` and ``attribute``."""

    #: the registry kind (``"scorers"``, ``"bias_metrics"``, ...)
    kind: ClassVar[str] = ""
    #: the class attribute of the test class holding the plugin object
    attribute: ClassVar[str] = ""

    @property
    def plugin(self) -> Any:
        """The plugin object under test."""
        obj = getattr(self, self.attribute, None)
        if obj is None:
            pytest.fail(f"{type(self).__name__} must set the class attribute {self.attribute!r} to the plugin object")
        return obj

    def test_name_is_lowercase_snake_or_kebab_case(self) -> None:
        from fairprune.core.contract.registry import NAME_PATTERN

        name = getattr(self.plugin, "name", None)
        assert isinstance(name, str) and NAME_PATTERN.match(name), f"bad plugin name {name!r}"

    def test_description_is_one_nonempty_line(self) -> None:
        description = getattr(self.plugin, "description", None)
        assert isinstance(description, str) and description.strip(), "a plugin needs a one-line description"
        assert "\n" not in description.strip(), f"description must be one line: {description!r}"

    def test_satisfies_protocol_of_its_kind(self) -> None:
        from fairprune.core.contract.registry import contract_problem

        problem = contract_problem(self.kind, self.plugin)
        assert problem is None, problem

    def test_params_reject_unknown_options(self) -> None:
        from pydantic import BaseModel, ValidationError

        params_model = getattr(self.plugin, "Params", None)
        if params_model is None:
            pytest.skip("the plugin takes no options")
        assert issubclass(params_model, BaseModel), "Params must be a pydantic model"
        params_model()  # every option needs a default
        with pytest.raises(ValidationError):
            params_model.model_validate({"no_such_option_zz": 1})

    def test_registers_without_clashing_with_builtins(self) -> None:
        from types import SimpleNamespace

        from fairprune.core.contract.hookspecs import hookimpl
        from fairprune.core.contract.registry import Registry

        obj = self.plugin

        @hookimpl(specname=_hook_of_kind(self.kind))
        def register_one(register):
            register(obj)

        registry = Registry(load_entrypoints=False, disabled=frozenset(), strict=True,
                            extra_plugins=(SimpleNamespace(register_one=register_one),))
        assert registry.get(self.kind, obj.name) is obj


class ImportanceMetricContract(PluginContract):
    """For importance metrics: ``score(weights, stats) -> Tensor[width]``, finite and deterministic."""

    kind = "importance_metrics"
    attribute = "metric"
    width: ClassVar[int] = 24
    hidden: ClassVar[int] = 16

    def make_weights(self, seed: int = 0, width: int | None = None, hidden: int | None = None) -> Any:
        """Random ``MLPWeights`` of one layer (gate/up ``[width, hidden]``, down ``[hidden, width]``)."""
        import torch

        from fairprune.core.contract.protocols import MLPWeights

        width, hidden = width or self.width, hidden or self.hidden
        gen = torch.Generator().manual_seed(seed)
        return MLPWeights(layer=0, gate=torch.randn(width, hidden, generator=gen),
                          up=torch.randn(width, hidden, generator=gen), down=torch.randn(hidden, width, generator=gen))

    def make_stats(self, width: int | None = None, seed: int = 0) -> Any:
        """Activation statistics (``mean_abs``, ``mean``) when the metric needs them, else None."""
        import torch

        if not getattr(self.plugin, "needs_activations", False):
            return None
        gen = torch.Generator().manual_seed(seed + 100)
        width = width or self.width
        return {"mean_abs": torch.rand(width, generator=gen) + 0.01, "mean": torch.randn(width, generator=gen)}

    def test_needs_activations_is_a_bool(self) -> None:
        assert isinstance(getattr(self.plugin, "needs_activations", False), bool)

    def test_output_is_one_finite_float_per_neuron(self) -> None:
        scores = self.plugin.score(self.make_weights(), self.make_stats())
        assert tuple(scores.shape) == (self.width,)
        assert scores.is_floating_point()
        assert bool(scores.isfinite().all()), f"non-finite importance: {scores}"

    def test_deterministic(self) -> None:
        _close(self.plugin.score(self.make_weights(), self.make_stats()),
               self.plugin.score(self.make_weights(), self.make_stats()))

    def test_does_not_modify_weights(self) -> None:
        weights = self.make_weights()
        before = [t.clone() for t in (weights.gate, weights.up, weights.down)]
        self.plugin.score(weights, self.make_stats())
        for old, new in zip(before, (weights.gate, weights.up, weights.down)):
            assert bool((old == new).all()), "score() must not change the weights it reads"

    @pytest.mark.parametrize("arch", CONTRACT_ARCHITECTURES)
    def test_scores_every_layer_of_tiny_models(self, arch: str) -> None:
        from fairprune.core.contract.protocols import MLPWeights
        from fairprune.testing.models import tiny_model

        model = tiny_model(arch)
        adapter = _adapter_for(model)
        for layer in range(len(adapter.layers(model))):
            gate, up = adapter.gate_up(model, layer)
            width = adapter.width(model, layer)
            weights = MLPWeights(layer, gate.detach(), up.detach(), adapter.down(model, layer).detach())
            scores = self.plugin.score(weights, self.make_stats(width=width, seed=layer))
            assert tuple(scores.shape) == (width,), f"{arch} layer {layer}: shape {tuple(scores.shape)}"
            assert bool(scores.isfinite().all())


class BiasMetricContract(PluginContract):
    """For bias metrics: ``score(pooled [groups, members, width], magnitude [width]) -> Tensor[width]``.

    Set ``member_counts = (2,)`` for a metric defined on pairs only.
    """

    kind = "bias_metrics"
    attribute = "metric"
    width: ClassVar[int] = 20
    n_groups: ClassVar[int] = 6
    member_counts: ClassVar[tuple[int, ...]] = (2, 3)

    def make_pooled(self, n_members: int = 2, seed: int = 0) -> tuple[Any, Any]:
        """Random pooled activations ``[n_groups, n_members, width]`` and their mean |activation|."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        scale = torch.rand(self.width, generator=gen) * 3 + 0.1  # neurons of different scales
        pooled = torch.randn(self.n_groups, n_members, self.width, generator=gen) * scale
        return pooled, pooled.abs().mean(dim=(0, 1))

    def _counts(self) -> tuple[int, ...]:
        return self.member_counts

    def test_output_is_one_finite_float_per_neuron(self) -> None:
        for n in self._counts():
            scores = self.plugin.score(*self.make_pooled(n))
            assert tuple(scores.shape) == (self.width,), f"{n} members: shape {tuple(scores.shape)}"
            assert scores.is_floating_point() and bool(scores.isfinite().all())

    def test_finite_for_dead_neurons(self) -> None:
        pooled, magnitude = self.make_pooled(2)
        pooled[..., :3] = 0.0
        magnitude[:3] = 0.0
        assert bool(self.plugin.score(pooled, magnitude).isfinite().all()), "a neuron that never fires broke it"

    def test_deterministic(self) -> None:
        _close(self.plugin.score(*self.make_pooled(2)), self.plugin.score(*self.make_pooled(2)))

    def test_zero_when_members_are_identical(self) -> None:
        import torch

        for n in self._counts():
            pooled, magnitude = self.make_pooled(n)
            same = pooled[:, :1].expand_as(pooled).clone()
            scores = self.plugin.score(same, magnitude)
            _close(scores, torch.zeros_like(scores))

    def test_symmetric_under_member_swap(self) -> None:
        pooled, magnitude = self.make_pooled(2)
        _close(self.plugin.score(pooled, magnitude), self.plugin.score(pooled.flip(1), magnitude))

    def test_invariant_to_group_order(self) -> None:
        import torch

        for n in self._counts():
            pooled, magnitude = self.make_pooled(n, seed=3)
            order = torch.randperm(self.n_groups, generator=torch.Generator().manual_seed(7))
            _close(self.plugin.score(pooled, magnitude), self.plugin.score(pooled[order], magnitude))

    def test_larger_differences_score_higher(self) -> None:
        pooled, magnitude = self.make_pooled(2, seed=5)
        centre = pooled.mean(dim=1, keepdim=True)
        wider = centre + 2.0 * (pooled - centre)
        low, high = self.plugin.score(pooled, magnitude), self.plugin.score(wider, magnitude)
        assert bool((high >= low - 1e-6).all()), "doubling every member difference lowered some bias scores"
        assert float(high.sum()) > float(low.sum()), "doubling every member difference did not raise the bias"


class ScorerContract(PluginContract):
    """For scorers: ``score(bias, importance, bias_weight) -> Tensor[width]``, finite, monotone in bias."""

    kind = "scorers"
    attribute = "scorer"
    width: ClassVar[int] = 32
    bias_weights: ClassVar[tuple[float, ...]] = (0.0, 0.5, 0.8, 1.0)

    def make_inputs(self, seed: int = 0) -> tuple[Any, Any]:
        """Random non-negative bias and importance of one layer, ``[width]`` each."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        return torch.rand(self.width, generator=gen) * 5, torch.rand(self.width, generator=gen) * 2

    def test_output_is_one_finite_float_per_neuron(self) -> None:
        bias, importance = self.make_inputs()
        for w in self.bias_weights:
            scores = self.plugin.score(bias, importance, w)
            assert tuple(scores.shape) == (self.width,), f"bias_weight {w}: shape {tuple(scores.shape)}"
            assert scores.is_floating_point() and bool(scores.isfinite().all()), f"bias_weight {w}: {scores}"

    def test_finite_on_constant_layers(self) -> None:
        import torch

        flat = torch.ones(self.width)
        for w in self.bias_weights:
            assert bool(self.plugin.score(flat, flat * 0.5, w).isfinite().all())
            assert bool(self.plugin.score(torch.zeros(self.width), torch.zeros(self.width), w).isfinite().all())

    def test_deterministic(self) -> None:
        bias, importance = self.make_inputs()
        _close(self.plugin.score(bias, importance, 0.8), self.plugin.score(bias.clone(), importance.clone(), 0.8))

    def test_more_biased_neurons_score_higher_at_equal_importance(self) -> None:
        import torch

        bias, _ = self.make_inputs(seed=1)
        importance = torch.full((self.width,), 0.7)
        order = torch.argsort(bias)
        for w in (x for x in self.bias_weights if x > 0):
            ranked = self.plugin.score(bias, importance, w)[order]
            assert bool((ranked[1:] >= ranked[:-1] - 1e-6).all()), f"not monotone in bias at bias_weight {w}"

    def test_raising_one_neurons_bias_never_lowers_its_score(self) -> None:
        bias, importance = self.make_inputs(seed=2)
        for w in (x for x in self.bias_weights if x > 0):
            before = self.plugin.score(bias, importance, w)
            for i in range(0, self.width, 5):
                raised = bias.clone()
                raised[i] = raised[i] * 1.5 + 1.0
                after = self.plugin.score(raised, importance, w)
                assert float(after[i]) >= float(before[i]) - 1e-6, f"neuron {i}, bias_weight {w}"


class BiasAxisContract(PluginContract):
    """For bias axes: groups whose members differ only in the attribute, split disjointly by template."""

    kind = "bias_axes"
    attribute = "axis"

    def test_every_split_returns_prompt_groups(self) -> None:
        from fairprune.core.contract.protocols import PromptGroup

        for split in ("analysis", "heldout", "all"):
            groups = self.plugin.prompt_groups(split)
            assert groups, f"split {split!r} is empty"
            assert all(isinstance(g, PromptGroup) for g in groups)

    def test_split_is_disjoint_by_template(self) -> None:
        analysis = {g.template_id for g in self.plugin.prompt_groups("analysis")}
        heldout = {g.template_id for g in self.plugin.prompt_groups("heldout")}
        assert not analysis & heldout, f"templates in both splits: {sorted(analysis & heldout)}"

    def test_splits_together_are_all(self) -> None:
        analysis, heldout = self.plugin.prompt_groups("analysis"), self.plugin.prompt_groups("heldout")
        assert sorted(map(repr, analysis + heldout)) == sorted(map(repr, self.plugin.prompt_groups("all")))

    def test_deterministic(self) -> None:
        for split in ("analysis", "heldout"):
            assert self.plugin.prompt_groups(split) == self.plugin.prompt_groups(split)

    def test_groups_carry_the_axis_name(self) -> None:
        assert {g.axis for g in self.plugin.prompt_groups("all")} == {self.plugin.name}

    def test_members_differ_only_in_the_attribute(self) -> None:
        from fairprune.core.data.prompts import validate_group

        for group in self.plugin.prompt_groups("all"):
            assert len(group.attributes) == len(group.prompts) >= 2, group
            for attribute, prompt in zip(group.attributes, group.prompts):
                assert attribute in prompt, f"{prompt!r} does not contain its attribute {attribute!r}"
            validate_group(group)

    def test_every_group_has_the_same_number_of_members(self) -> None:
        sizes = {len(g.prompts) for g in self.plugin.prompt_groups("all")}
        assert len(sizes) == 1, f"member j must be attribute group j in every group; sizes {sorted(sizes)}"

    def test_unknown_split_is_an_error(self) -> None:
        with pytest.raises((ValueError, LookupError)):
            self.plugin.prompt_groups("train")


class EvaluatorContract(PluginContract):
    """For evaluators: ``observe`` each model, then ``compare`` -> ``EvalResult``; float metrics,
    deterministic, read-only, headlines that name real metrics.

    The default setting compares a tiny Llama with a copy that lost a quarter of
    each layer's neurons, on a few prompt groups within the tiny tokenizer's
    vocabulary. Override ``make_setting`` to test on something else.
    """

    kind = "evaluators"
    attribute = "evaluator"

    def make_setting(self) -> tuple[Any, Any, Any]:
        """``(base model, pruned model, EvalContext)``: a tiny Llama, a pruned copy, four prompt groups."""
        import torch

        from fairprune.core.contract.protocols import PromptGroup, PruneResult
        from fairprune.core.contract.registry import Registry
        from fairprune.core.contract.results import EvalContext
        from fairprune.testing.models import tiny_model
        from fairprune.testing.tokenizer import tiny_tokenizer

        base = tiny_model("llama")
        pruned = copy.deepcopy(base)
        adapter = _adapter_for(base)
        widths_before = [adapter.width(base, i) for i in range(len(adapter.layers(base)))]
        removed = {}
        for layer, width in enumerate(widths_before):
            keep = torch.arange(width)[width // 4:]
            removed[layer] = list(range(width // 4))
            adapter.keep(pruned, layer, keep)
        widths_after = [adapter.width(pruned, i) for i in range(len(widths_before))]
        adapter.set_widths(pruned, widths_after)
        templates = {"room": "the {} man walked into the room and", "job": "the {} woman has a new job at the",
                     "doctor": "the {} doctor said that the", "school": "a {} student went to school because"}
        groups = [PromptGroup("contract", tid, ("black", "white"), tuple(text.format(a) for a in ("black", "white")))
                  for tid, text in templates.items()]
        result = PruneResult(_n_params(base), _n_params(pruned), widths_before, widths_after, removed)
        context = EvalContext(tokenizer=tiny_tokenizer(), groups=groups, batch_size=4, seed=0, registry=Registry(),
                              prune_result=result, progress=False)
        return base, pruned, context

    def run_evaluator(self, setting: tuple[Any, Any, Any]) -> Any:
        """Observe base and pruned, then compare, as a run does."""
        from fairprune.core.run.evaluation import compare_all, observe_all

        base, pruned, context = setting
        adapter = _adapter_for(base)
        evaluators = [(self.plugin.name, self.plugin)]
        seen_base = observe_all(evaluators, base, context, "base", adapter)
        seen_pruned = observe_all(evaluators, pruned, context, "pruned", adapter)
        return compare_all(evaluators, seen_base, seen_pruned, context)[self.plugin.name]

    @pytest.fixture(scope="class")
    def setting(self) -> Any:
        return self.make_setting()

    @pytest.fixture(scope="class")
    def result(self, setting: Any) -> Any:
        return self.run_evaluator(setting)

    def test_returns_an_eval_result(self, result: Any) -> None:
        from fairprune.core.contract.results import EvalResult

        assert isinstance(result, EvalResult), f"compare() returned {type(result).__name__}, not EvalResult"

    def test_metrics_are_named_floats(self, result: Any) -> None:
        assert result.metrics, "an evaluator must report at least one metric"
        for key, value in result.metrics.items():
            assert isinstance(key, str) and key, f"metric key {key!r}"
            assert isinstance(value, float), f"metric {key!r} is {type(value).__name__}, not float"
        for key, interval in result.intervals.items():
            assert key in result.metrics, f"interval for unknown metric {key!r}"
            assert len(interval) == 2 and all(isinstance(v, float) for v in interval)

    def test_headlines_name_reported_metrics(self, result: Any) -> None:
        from fairprune.core.contract.protocols import Headline

        for headline in self.plugin.headlines:
            assert isinstance(headline, Headline), f"headline {headline!r} is not a Headline"
            assert headline.key in result.metrics, f"headline {headline.key!r} is not among the metrics"
            assert headline.better in ("higher", "lower", "closer_to_50"), headline.better
            assert headline.role in ("bias", "capability", "info"), headline.role
            assert headline.kind in ("change", "level"), headline.kind

    def test_result_is_json_serialisable(self, result: Any) -> None:
        json.dumps(result.to_dict(), allow_nan=False)

    def test_deterministic(self, setting: Any, result: Any) -> None:
        again = self.run_evaluator(setting)
        assert set(again.metrics) == set(result.metrics)
        for key, value in result.metrics.items():
            other = again.metrics[key]
            assert (math.isnan(value) and math.isnan(other)) or math.isclose(value, other, rel_tol=1e-6,
                                                                            abs_tol=1e-9), key

    def test_does_not_modify_the_models(self, setting: Any) -> None:
        base, pruned, _ = setting
        before = [{k: v.clone() for k, v in model.state_dict().items()} for model in (base, pruned)]
        self.run_evaluator(setting)
        for model, saved in zip((base, pruned), before):
            after = model.state_dict()
            assert set(after) == set(saved)
            for key, tensor in saved.items():
                assert bool((after[key] == tensor).all()), f"{key} changed"


def _n_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _hook_of_kind(kind: str) -> str:
    """The registration hook that fills ``kind`` (sites and poolings share the collectors hook)."""
    from fairprune.core.contract.registry import HOOK_KINDS

    kinds = {k: hook for hook, k in HOOK_KINDS.items()}
    kinds.update(sites="fairprune_register_collectors", poolings="fairprune_register_collectors")
    return kinds[kind]


def _adapter_for(model: Any) -> Any:
    """The registered architecture adapter for ``model`` (built-in plugins only)."""
    from fairprune.core.contract.registry import Registry
    from fairprune.core.model.adapters import resolve_adapter

    return resolve_adapter(model, registry=Registry(load_entrypoints=False))


class BiasObjectiveContract(PluginContract):
    """For bias objectives: ``value(ObjectiveInputs) -> Tensor[n_groups]``, finite, zero for identical members,
    invariant to member order, equivariant to group order, and differentiable.

    Inputs are random log-probabilities (and pooled hidden states) of groups of
    2 and 3 members; ``bind`` gets the tiny word tokenizer.
    """

    kind = "bias_objectives"
    attribute = "objective"
    vocab: ClassVar[int] = 40
    hidden: ClassVar[int] = 12
    n_layers: ClassVar[int] = 3
    sizes: ClassVar[tuple[int, ...]] = (2, 3, 2, 3)

    def bound(self) -> Any:
        from fairprune.testing.tokenizer import tiny_tokenizer

        return self.plugin.bind(tiny_tokenizer())

    def make_inputs(self, seed: int = 0, sizes: tuple[int, ...] | None = None) -> Any:
        """Random ``ObjectiveInputs`` for groups of ``sizes`` members (log-softmax rows, pooled hidden states)."""
        import torch

        from fairprune.core.contract.protocols import ObjectiveInputs

        sizes = sizes or self.sizes
        gen = torch.Generator().manual_seed(seed)
        n = sum(sizes)
        logits = torch.randn(n, self.vocab, generator=gen) * 2
        hidden = torch.randn(self.n_layers, n, self.hidden, generator=gen)
        # two surface forms per attribute group: members 0 and 1 share a group, so do 2 and 3, ...
        labels = [tuple(f"group{k // 2}" for k in range(size)) for size in sizes]
        return ObjectiveInputs(list(sizes), torch.log_softmax(logits, -1), hidden, labels)

    def test_uses_names_known_inputs(self) -> None:
        uses = getattr(self.plugin, "uses", None)
        assert isinstance(uses, tuple) and uses and set(uses) <= {"logprobs", "hidden", "labels"}, f"uses = {uses!r}"

    def test_one_finite_value_per_group(self) -> None:
        value = self.bound().value(self.make_inputs())
        assert tuple(value.shape) == (len(self.sizes),) and value.dtype.is_floating_point
        assert bool(value.isfinite().all()), value

    def test_zero_when_members_are_identical(self) -> None:
        import torch

        from fairprune.core.contract.protocols import ObjectiveInputs

        inputs = self.make_inputs()
        rows = torch.tensor([start for start, size in zip(_starts(self.sizes), self.sizes) for _ in range(size)])
        same = ObjectiveInputs(inputs.sizes, inputs.logprobs[rows], inputs.hidden[:, rows], inputs.labels)
        value = self.bound().value(same)
        _close(value, torch.zeros_like(value))

    def test_invariant_to_member_order(self) -> None:
        from fairprune.core.contract.protocols import ObjectiveInputs

        inputs = self.make_inputs(seed=1)
        order = [start + size - 1 - k for start, size in zip(_starts(self.sizes), self.sizes) for k in range(size)]
        labels = [tuple(reversed(g)) for g in inputs.labels]
        flipped = ObjectiveInputs(inputs.sizes, inputs.logprobs[order], inputs.hidden[:, order], labels)
        _close(self.bound().value(inputs), self.bound().value(flipped), atol=1e-5)

    def test_follows_group_order(self) -> None:
        import torch

        from fairprune.core.contract.protocols import ObjectiveInputs

        inputs = self.make_inputs(seed=2)
        starts = _starts(self.sizes)
        new = [3, 0, 2, 1][:len(self.sizes)]
        rows = [starts[g] + k for g in new for k in range(self.sizes[g])]
        moved = ObjectiveInputs([self.sizes[g] for g in new], inputs.logprobs[rows], inputs.hidden[:, rows],
                                [inputs.labels[g] for g in new])
        _close(self.bound().value(moved), self.bound().value(inputs)[torch.tensor(new)], atol=1e-5)

    def test_differentiable(self) -> None:
        inputs = self.make_inputs(seed=3)
        inputs.logprobs.requires_grad_(True)
        inputs.hidden.requires_grad_(True)
        self.bound().value(inputs).sum().backward()
        grads = [t.grad for t, use in ((inputs.logprobs, "logprobs"), (inputs.hidden, "hidden"))
                 if use in self.plugin.uses]
        assert all(g is not None and bool(g.isfinite().all()) and float(g.abs().sum()) > 0 for g in grads)


def _starts(sizes: tuple[int, ...]) -> list[int]:
    out, start = [], 0
    for size in sizes:
        out.append(start)
        start += size
    return out


class MethodContract(PluginContract):
    """For selection methods: ``analyze`` then ``plan`` on a tiny Llama with the race axis' analysis groups.

    Checks that the plan fits the model (valid, unique indices; each layer keeps at least ``min_width``
    neurons), stays within a neuron budget, records every removed neuron, is deterministic, and leaves the
    model's weights as they were. Override ``make_config`` to give the method params of its own.
    """

    kind = "methods"
    attribute = "method"
    budget_neurons: ClassVar[int] = 6

    def make_config(self) -> Any:
        from fairprune.core.contract.config import load_config

        return load_config({"model": {"source": "tiny"}, "bias": {"axes": ["race"], "batch_size": 12},
                            "method": {"name": self.plugin.name},
                            "pruning": {"budget": {"neurons": self.budget_neurons}, "min_width": 32}})

    def _setup(self) -> tuple[Any, Any, Any]:
        import torch

        from fairprune.core.contract.protocols import MethodContext
        from fairprune.core.contract.registry import Registry
        from fairprune.core.model.adapters import resolve_adapter
        from fairprune.testing import tiny_char_tokenizer, tiny_model

        torch.manual_seed(0)
        model = tiny_model("llama", max_position_embeddings=512)
        registry = Registry(load_entrypoints=False)
        config = self.make_config()
        from fairprune.core.contract.plugin import configure

        method = configure(copy.copy(self.plugin), config.method.params)
        if callable(getattr(method, "prepare", None)):
            method.prepare(config, registry)
        context = MethodContext(tokenizer=tiny_char_tokenizer(), adapter=resolve_adapter(model, registry=registry),
                                registry=registry, config=config, progress=False)
        return model, method, context

    def _plan(self) -> tuple[Any, Any, Any]:
        model, method, context = self._setup()
        analysis = method.analyze(model, context)
        return model, analysis, method.plan(model, analysis, context.config.pruning.budget, context, {})

    def test_analysis_reports_a_score_per_neuron_of_every_layer(self) -> None:
        model, method, context = self._setup()
        analysis = method.analyze(model, context)
        widths = [context.adapter.width(model, layer) for layer in range(len(context.adapter.layers(model)))]
        scores = analysis.bias_report.scores
        assert sorted(scores) == list(range(len(widths)))
        assert all(tuple(scores[layer].shape) == (w,) for layer, w in enumerate(widths))

    def test_plan_fits_the_model_and_the_budget(self) -> None:
        model, _, plan = self._plan()
        assert 0 < plan.n_neurons <= self.budget_neurons
        for layer, neurons in plan.removed.items():
            width = plan.widths_before[layer]
            assert len(set(neurons)) == len(neurons) and all(0 <= n < width for n in neurons)
            assert width - len(neurons) >= 32

    def test_every_removed_neuron_has_a_record(self) -> None:
        _, _, plan = self._plan()
        recorded = {(r["layer"], r["neuron"]) for r in plan.records}
        assert recorded == {(layer, n) for layer, neurons in plan.removed.items() for n in neurons}

    def test_planning_is_deterministic_and_leaves_the_model_unchanged(self) -> None:
        import torch

        model, method, context = self._setup()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        first = method.plan(model, method.analyze(model, context), context.config.pruning.budget, context, {})
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        _, _, second = self._plan()
        assert first.to_mapping() == second.to_mapping()

    def test_sweep_variants_are_a_list_of_mappings(self) -> None:
        from fairprune.core.contract.config import SweepSection

        variants = self.plugin.sweep_variants(SweepSection())
        assert isinstance(variants, list) and variants and all(isinstance(v, dict) for v in variants)
