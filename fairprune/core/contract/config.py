"""The configuration of a run, as strict pydantic models loadable from YAML, TOML or JSON.

Every plugin is chosen by name as a component ``{name, params}`` (a bare string
is shorthand for ``{name: ...}``). Unknown keys and wrong types are errors that
name the field by its dotted path (``scoring.bias_weight``); plugin ``params``
are validated against the plugin's own ``Params`` model by ``resolve_component``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, yaml_error_line
from .placement import DEVICE_MAP_STRATEGIES, is_device
from .plugin import StrictParams


class Strict(StrictParams):
    """Base of every config section: unknown keys are errors, and so is a bool where a number is expected."""


class Component(Strict):
    """A plugin chosen by name, with its options."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class ModelSection(Strict):
    source: str = Field(description="model source name, local directory, .gguf path or Hugging Face id")
    adapter: str | None = Field(default=None, description="architecture adapter name; None picks one from the model")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="weights and activations; auto = the checkpoint's dtype (GGUF: float32)")
    device_map: str | dict[str, int | str] | None = Field(
        default=None, description="accelerate device map: auto, balanced, balanced_low_0, sequential, one "
                                  "device (cuda:0), or {module: device}")
    max_memory: dict[int | str, int | str] | None = Field(
        default=None, description="per-device memory limits for device_map, e.g. {0: 20GiB, cpu: 60GiB}")
    offload_folder: str | None = Field(default=None, description="where a device map's disk-offloaded layers go")
    trust_remote_code: bool = Field(default=False, description="let a model or tokenizer run Python code shipped "
                                                               "with it (auto_map); never by default")

    @field_validator("device_map")
    @classmethod
    def _known_strategy(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in DEVICE_MAP_STRATEGIES and not is_device(value):
            raise ValueError(f"unknown strategy {value!r}; use {', '.join(DEVICE_MAP_STRATEGIES)}, one device "
                             "(cpu, cuda:0, mps, ...) or a {module: device} mapping")
        return value

    @model_validator(mode="after")
    def _placement_needs_a_map(self) -> ModelSection:
        # transformers reads max_memory and offload_folder only while placing a device map: without one they
        # would be ignored
        unused = [k for k in ("max_memory", "offload_folder") if getattr(self, k) is not None]
        if unused and self.device_map is None:
            raise ValueError(f"{' and '.join(unused)} without device_map does nothing; set model.device_map "
                             "(e.g. auto) or remove it")
        return self


class RecallSection(Strict):
    """The attribution method's recall guard (``method.recall``, ``core.method.recall_guard``): the model must
    still name the group a prompt stated, among the axis' groups."""

    prompts: str | None = Field(
        default=None, description="recall prompts in the axis file format (a sentence states {attribute}, a later "
                                  "clause asks it back); None: the bundled ones of the first bias axis")
    guard_fraction: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="the top fraction of each layer by estimated increase of the "
                                                 "recall loss is never removed; 0: no such guard")
    max_drop_pts: float | None = Field(
        default=1.0, gt=0.0, description="a round is halved until the measured recall (probability of the stated "
                                         "group, percent) is at most this many points below the unpruned model's; "
                                         "None: no check")

    @model_validator(mode="after")
    def _does_something(self) -> RecallSection:
        if self.guard_fraction == 0.0 and self.max_drop_pts is None:
            raise ValueError("recall with guard_fraction 0 and max_drop_pts None does nothing; set one or remove "
                             "recall")
        return self


class ClozeCheckSection(Strict):
    """``method.cloze_check``: every round's last-word perplexity on passages in LAMBADA's form whose last word
    is a name, and an optional guard of the neurons it needs most (``core.method.cloze_check``)."""

    passages: str | None = Field(
        default=None, description="a JSONL file of {\"text\": ...} passages whose last word is scored; None: the "
                                  "bundled ones (data/cloze/name_passages.jsonl: each ends with a name it used "
                                  "before; written for fairprune)")
    guard_fraction: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="the top fraction of each layer by estimated increase of the "
                                                 "passages' last-word loss is never removed; 0: no such guard")
    max_increase_pct: float | None = Field(
        default=10.0, gt=0.0, description="a round is halved until the passages' last-word perplexity, measured "
                                          "with its neurons removed, rises by at most this percent over the "
                                          "unpruned model's (plans within LAMBADA's +2% rose up to +9% on the "
                                          "bundled passages); None: no check")
    limit: int | None = Field(
        default=None, ge=1, description="a seeded sample of N passages instead of all (fewer: a faster, noisier "
                                        "check and guard; 336 are bundled); None: all")
    check_limit: int | None = Field(
        default=None, ge=1, description="each round's measured check reads a seeded sample of N passages (of the "
                                        "limit sample when limit is set) while the guard reads them all; the "
                                        "check is there for large failures, which a sample shows too, in fewer "
                                        "forwards; N must be below the number of passages; None: all")
    sample_seed: int = Field(default=0, description="the seed of both samples (limit and check_limit)")

    @model_validator(mode="after")
    def _does_something(self) -> ClozeCheckSection:
        if self.guard_fraction == 0.0 and self.max_increase_pct is None:
            raise ValueError("cloze_check with guard_fraction 0 and max_increase_pct None does nothing; set one or "
                             "remove cloze_check")
        if "sample_seed" in self.model_fields_set and self.limit is None and self.check_limit is None:
            raise ValueError("cloze_check.sample_seed without limit or check_limit does nothing (every passage is "
                             "read); set one or remove sample_seed")
        if self.check_limit is not None and self.max_increase_pct is None:
            raise ValueError("cloze_check.check_limit with max_increase_pct None does nothing (no check is "
                             "measured); set max_increase_pct or remove check_limit")
        if self.check_limit is not None and self.limit is not None and self.check_limit >= self.limit:
            raise ValueError(f"cloze_check.check_limit {self.check_limit} is not below limit {self.limit}, so it "
                             "does nothing (the check would read every passage of the sample); lower it or remove it")
        return self


class AttributionParams(Strict):
    """The params of the signed attribution method (``method: {name: attribution, ...}``).

    Each round attributes ``bias.objective`` to every neuron on the model as pruned
    so far; candidates are neurons whose removal is estimated to lower it, the
    top ``guard_fraction`` of each layer by capability cost are protected, and a
    round is kept only if the measured calibration-text perplexity stays within
    ``max_perplexity_increase_pct`` and the measured objective falls.
    ``pruning.budget`` is a ceiling shared equally by the rounds.
    """

    objective: Component = Field(default_factory=lambda: Component(name="next_token_js"),
                                 description="output-level bias objective (a bias_objectives plugin)")

    capability: Component = Field(
        default_factory=lambda: Component(name="capability_cost"),
        description="importance metric giving the capability cost and its calibration text (params: text, "
                    "chunk_tokens, max_tokens)")
    positions: Literal["last", "suffix", "continuation"] = Field(
        default="last", description="where the objective reads next-token distributions: last, the prompt's last "
                                    "position; suffix, every position of the tokens after the attribute that all "
                                    "members share (each position weighs equally within its group); continuation, "
                                    "the last position and the first continuation_tokens of the greedy "
                                    "continuation the members share, chosen once on the unpruned model")
    continuation_tokens: int | None = Field(
        default=None, ge=1, le=32, description="with positions: continuation, how many tokens of the shared "
                                              "continuation are appended and read (default 4)")
    folds: int = Field(
        default=1, ge=1, description="split the analysis groups by template into this many folds; a neuron is a "
                                     "candidate only if its removal lowers the objective in every fold, and its "
                                     "gain is the smallest fold's (guards against fitting a few templates)")
    fold_by: Literal["template", "register", "family"] = Field(
        default="template", description="what a fold keeps together: template; register (dialogue, news, ...; "
                                        "groups without one fall back to their template); family (a template's "
                                        "context, or a generated template's situation)")
    rounds: int = Field(default=4, ge=1, description="rounds of removal; attributions are recomputed each round")
    guard_fraction: float = Field(default=0.5, ge=0.0, lt=1.0,
                                  description="gamma: the top fraction of each layer by capability cost is never removed")
    magnitude_guard: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="the top fraction of each layer by mean |h_i| x |down column i| on the calibration text (the "
                    "activation_weight importance) is never removed either; 0: no such guard")
    ranking: Literal["ratio", "reduction"] = Field(
        default="ratio", description="ratio: estimated bias reduction per unit of capability cost; reduction: alone")
    min_improvement_pct: float = Field(
        default=2.0, ge=0.0, description="stop when a round lowers the objective by less than this percent of its "
                                         "starting value")
    target_reduction_pct: float | None = Field(
        default=None, gt=0.0, lt=100.0,
        description="stop once the measured objective on the analysis groups is this percent below its start, "
                    "removing only the best-ranked neurons of the last round that reach it; None: no target")
    max_perplexity_increase_pct: float | None = Field(
        default=1.0, gt=0.0, description="a round is halved until the perplexity on the calibration text, measured "
                                         "with its neurons removed, rises by at most this percent; None: no check")
    recall: RecallSection | None = Field(
        default=None, description="the recall guard: protect and check the model's recall of the stated group; "
                                  "None: off")
    cloze_check: ClozeCheckSection | None = Field(
        default=None, description="the name cloze check: halve a round that raises the last-word perplexity of "
                                  "passages ending in a name they used before beyond its limit (a LAMBADA cost the "
                                  "calibration text does not see), optionally guarding the neurons it needs; None: off")
    floor_guard: bool = Field(
        default=False, description="never remove a neuron whose removal is estimated to lower the word-swap floor "
                                   "(the JS between two forms of one group) by as large a share as the between-group "
                                   "JS: keeps selection from buying fairness with deafness (core.method.floor_guard)")
    pass_dtype: Literal["float32", "bfloat16"] = Field(
        default="float32", description="the precision of selection's passes: float32; or bfloat16, the model's "
                                       "forwards in bf16 autocast (per-neuron sums, objectives and losses still "
                                       "float32, the checks measured in bf16 too), faster on CPUs with AMX and on "
                                       "GPUs, a different plan (core.method.precision); refused for float64 models "
                                       "and devices without bf16 autocast")


    @model_validator(mode="after")
    def _continuation_tokens_need_continuation(self) -> AttributionParams:
        if self.continuation_tokens is not None and self.positions != "continuation":
            raise ValueError(f"continuation_tokens does nothing with positions: {self.positions}; set positions: "
                             "continuation or remove continuation_tokens")
        return self


class ActivationParams(Strict):
    """The params of the activation method (``method: {name: activation, ...}``): a per-neuron bias metric on
    pooled activations, an importance metric, a scorer blending them, and a ranked plan within the budget."""

    metric: Component = Field(default_factory=lambda: Component(name="relative_mean_abs_diff"),
                              description="per-neuron bias metric (a bias_metrics plugin)")
    pooling: str = Field(default="suffix", description="which token positions are averaged (a poolings plugin)")
    scorer: Component = Field(default_factory=lambda: Component(name="linear"),
                              description="blends bias and importance into prunability (a scorers plugin)")
    importance: Component = Field(
        default_factory=lambda: Component(name="max_abs_weight"),
        description="importance metric; max_abs_weight (max|gate_i| + max|up_i|) is the method's default")
    bias_weight: float = Field(default=0.8, ge=0.0, le=1.0, description="w in w*bias + (1-w)*(1-importance)")
    selection: Literal["global", "per_layer"] = Field(
        default="global", description="global: one ranking over all layers; per_layer: the budget split by width")
    guard_magnitude_ratio: float | None = Field(
        default=10.0, gt=0,
        description="never remove neurons whose mean |activation| exceeds this multiple of their layer's median")


class MethodComponent(Component):
    """The selection method, by name, with its params; ``method: {name: attribution, folds: 2}`` (params
    inline) and ``method: {name: attribution, params: {folds: 2}}`` are the same."""

    name: str = "activation"

    @model_validator(mode="before")
    @classmethod
    def _inline_params(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict):
            inline = {k: v for k, v in value.items() if k not in ("name", "params")}
            if inline:
                return {"name": value.get("name", "activation"), "params": {**value.get("params", {}), **inline}}
        return value


class BiasSection(Strict):
    axes: list[str] = Field(default_factory=lambda: ["race"], description="bias axes by name or path to an axis file")
    prompts: str | None = Field(default=None, description="a file of your own prompt pairs/groups (YAML, JSONL, CSV)")
    analysis_prompts: Literal["templates", "generated", "both"] = Field(
        default="templates",
        description="what the analysis reads from each axis: templates, its analysis templates; generated, the "
                    "combinatorial templates of its 'generate' section (registers x contexts x roles); both")
    site: str = Field(default="neuron", description="where activations are read (a sites plugin)")
    batch_size: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _has_prompts(self) -> BiasSection:
        if not self.axes and self.prompts is None:
            raise ValueError("axes is empty and prompts is not set, so there is nothing to analyse; name an axis "
                             "(`fairprune axes` lists them) or a prompts file")
        return self


class Budget(Strict):
    """How much to remove: exactly one of a parameter fraction, a neuron count, or a per-layer percentage."""

    param_fraction: float | None = Field(default=None, gt=0, lt=1, description="fraction of all model parameters")
    neurons: int | None = Field(default=None, ge=1, description="number of neurons in total")
    layer_percent: float | None = Field(default=None, gt=0, lt=100, description="percent of each selected layer's width")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Budget":
        given = [k for k in ("param_fraction", "neurons", "layer_percent") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of param_fraction, neurons, layer_percent"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self

    def describe(self) -> str:
        if self.param_fraction is not None:
            return f"{self.param_fraction:.4%} of parameters"
        if self.neurons is not None:
            return f"{self.neurons} neurons"
        return f"{self.layer_percent}% of each layer's width"


class RecoverySection(Strict):
    """Recovery distillation after pruning (``core.method.recovery``): the kept MLP weights are trained towards the
    unpruned model's next-token distributions on a general text. Off unless this section is given."""

    text: str | None = Field(default=None, description="path of the recovery text; None: the bundled general English")
    tokens: int = Field(default=4096, ge=8, description="text tokens trained on")
    held_out_tokens: int = Field(default=512, ge=8, description="the next tokens, only measured: a recovery that "
                                                               "does not lower the KL there is undone")
    chunk_tokens: int = Field(default=128, ge=8, description="tokens per chunk")
    top_k: int = Field(default=64, ge=1, description="the base's most likely next tokens kept per position")
    epochs: int = Field(default=2, ge=1)
    lr: float = Field(default=2e-5, gt=0.0, description="AdamW learning rate (no weight decay)")
    batch_size: int = Field(default=4, ge=1, description="chunks per step")


class PruningSection(Strict):
    pruner: Component = Field(default_factory=lambda: Component(name="structural"))
    budget: Budget = Field(default_factory=lambda: Budget(param_fraction=0.002))
    layers: list[int] | None = Field(default=None, min_length=1,
                                     description="only these layers may lose neurons (None: all; never empty)")
    min_width: int = Field(default=1, ge=1)
    round_to: int | None = Field(default=None, ge=1, description="round each pruned layer's width to a multiple")
    recovery: RecoverySection | None = Field(
        default=None, description="train the kept MLP weights back towards the unpruned model on general text "
                                  "after pruning (recovery distillation); None: off")
    uniform_widths: bool = Field(
        default=False,
        description="every layer loses the same number of neurons (its share of the budget; with round_to, the "
                    "common width a multiple of it), ranked within each layer; the saved model then loads with "
                    "plain transformers, vLLM and GGUF converters. Costs fairness at the same budget: the demo recipe "
                    "on SmolLM2 lowered held-out next-token JS by 37% instead of 49%, LAMBADA unchanged within its "
                    "interval (benchmarks/RESULTS.md)")

    @model_validator(mode="after")
    def _uniform_needs_every_layer(self) -> "PruningSection":
        if self.uniform_widths and self.layers is not None:
            raise ValueError("uniform_widths: every layer must lose the same number of neurons, so pruning.layers "
                             "cannot restrict them; remove pruning.layers or set uniform_widths: false")
        return self


class EvaluationSection(Strict):
    evaluators: list[Component] = Field(default_factory=lambda: [
        Component(name=n) for n in ("activation_bias", "activation_pictures", "output_bias", "capability",
                                    "generations", "parameters")])
    axes: list[str] | None = Field(default=None, description="held-out axes; defaults to bias.axes")
    batch_size: int = Field(default=16, ge=1)


class OutputSection(Strict):
    dir: str = "runs/fairprune"
    save_model: bool = True
    overwrite: bool = False


class SweepSection(Strict):
    bias_weights: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0])
    budgets: list[Budget] = Field(default_factory=lambda: [Budget(param_fraction=f) for f in (0.001, 0.0025, 0.005)])
    max_perplexity_increase: float | None = Field(default=None, description="percent; pick best point under it")
    bias_metric: str | None = Field(
        default=None, description="'evaluator.metric' a sweep maximises; default: the first headline with role "
                                  "'bias' among evaluation.evaluators")
    capability_metric: str | None = Field(
        default=None, description="'evaluator.metric' (a capability loss in percent) a sweep keeps under "
                                  "max_perplexity_increase; default: the first reported headline with role 'capability'")

    @field_validator("bias_weights")
    @classmethod
    def _weights_in_range(cls, value: list[float]) -> list[float]:
        bad = [w for w in value if not 0.0 <= w <= 1.0]
        if bad:
            raise ValueError(f"bias weights must lie in [0, 1], got {bad}")
        return value


class RunConfig(Strict):
    """A whole fairness-pruning run: load, analyze, score, plan, prune, evaluate, save, report."""

    model: ModelSection
    method: MethodComponent = Field(default_factory=MethodComponent,
                                    description="how neurons get chosen: activation (the default) or attribution, "
                                                "or a registered method plugin, with its params")
    bias: BiasSection = Field(default_factory=BiasSection)
    pruning: PruningSection = Field(default_factory=PruningSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)
    output: OutputSection = Field(default_factory=OutputSection)
    sweep: SweepSection = Field(default_factory=SweepSection)
    seed: int = 0

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of everything that determines the results (not ``output``):
        two runs with the same hash give the same plan and figures."""
        canonical = json.dumps(self.model_dump(mode="json", exclude={"output"}), sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not (isinstance(part, str) and part.startswith("function-")))


def _model_at(model: Any, loc: tuple[Any, ...]) -> Any:
    """The pydantic model class whose field ``loc`` walks to (through optional fields), or None."""
    import types
    import typing

    for part in loc:
        field = getattr(model, "model_fields", {}).get(part) if isinstance(part, str) else None
        if field is None:
            return None
        options = typing.get_args(field.annotation) if isinstance(field.annotation, types.UnionType) or \
            typing.get_origin(field.annotation) is typing.Union else (field.annotation,)
        model = next((o for o in options if isinstance(o, type) and issubclass(o, BaseModel)), None)
    return model


def _suggestion(model: Any, err: Mapping[str, Any]) -> str:
    """" Did you mean 'x'?" for a key no field of ``model`` at that place has, when one is close; else ""."""
    import difflib

    if err["type"] == "list_type" and isinstance(err["input"], str):
        return f"; write a list, e.g. [{err['input']}]"
    if model is None or err["type"] != "extra_forbidden" or not err["loc"] or not isinstance(err["loc"][-1], str):
        return ""
    key = err["loc"][-1]
    if ":" in key:  # YAML reads {neurons:100} as the key 'neurons:100' with no value
        name, _, value = key.partition(":")
        return f"; YAML needs a space after the colon: {{{name}: {value}}}"
    fields = list(getattr(_model_at(model, tuple(err["loc"][:-1])), "model_fields", {}))
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.7)
    if close:
        return f". Did you mean {close[0]!r}?"
    return f"; known keys here: {', '.join(fields)}" if fields else ""


def _given(err: Any) -> str:
    """' (got VALUE)' after a message, unless the message already names the value (or there is none to name)."""
    if err["type"] == "missing" or isinstance(err["input"], dict) or repr(err["input"]) in err["msg"] \
            or (err["type"] == "extra_forbidden" and err["input"] is None):
        return ""
    return f" (got {err['input']!r})"


def format_validation_error(exc: ValidationError, prefix: str = "", model: Any = None) -> str:
    """The dotted field path and why: one line for one problem, an indented line per problem for several. With
    ``model`` (the pydantic class validated), a key it does not have gets the closest field name, if any."""
    lines = []
    for err in exc.errors():
        path = ".".join(p for p in (prefix, _field_path(err["loc"])) if p)
        # a validator's own ValueError already says what is wrong; pydantic's "Value error, " adds nothing
        msg = err["msg"].removeprefix("Value error, ") if err["type"] == "value_error" else err["msg"]
        msg = re.sub(r" or instance of \w+", "", msg)  # pydantic names the class; a config has mappings
        lines.append(f"{path or '(config)'}: {msg}{_suggestion(model, err)}{_given(err)}")
    return "invalid config: " + lines[0] if len(lines) == 1 else "invalid config:\n  " + "\n  ".join(lines)


#: keys that belonged to one method and now live in its params: old dotted path -> new one
MOVED_KEYS: dict[str, str] = {
    "scoring": "method", "bias.method": "method.name", "bias.metric": "method.metric",
    "bias.pooling": "method.pooling", "bias.objective": "method.objective", "bias.attribution": "method",
    "pruning.selection": "method.selection", "pruning.guard_magnitude_ratio": "method.guard_magnitude_ratio",
}


def _refuse_moved_keys(data: dict[str, Any]) -> None:
    """``ConfigError`` for a key of the layout before methods were plugins, naming where it lives now."""
    for old, new in MOVED_KEYS.items():
        section, _, key = old.partition(".")
        node = data.get(section) if key else data
        if isinstance(node, dict) and (key or section) in node:
            raise ConfigError(f"{old}: this key moved to {new} (a method's keys live in its params: "
                              "method: {name: activation, bias_weight: 0.8} or {name: attribution, folds: 2})")


def validate_config(data: dict[str, Any]) -> RunConfig:
    """A ``RunConfig`` from a plain dict; ``ConfigError`` naming each bad field."""
    _refuse_moved_keys(data)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model=RunConfig)) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read YAML, TOML or JSON (by extension) into a dict."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give a config file (YAML, TOML or JSON)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = _load_yaml_config(text, path)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"{path}: unknown config format {suffix!r}; use .yaml, .toml or .json")
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{path}: cannot parse: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model:, bias:, method:, ...), got "
                          + ("an empty file" if data is None else f"a {type(data).__name__}"))
    return data


def _load_yaml_config(text: str, path: Path) -> Any:
    """YAML with every mapping's keys unique (a repeated key would silently replace the first); ``ConfigError`` at
    ``file:line`` in one line for a repeated key or a syntax error."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"{path}:{key_node.start_mark.line + 1}: duplicate key {key!r} (a repeated key "
                                  "would replace the first)")
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=UniqueKeys)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_line(path, exc)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (numbers, lists, booleans)."""
    import yaml

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. pruning.budget.param_fraction=0.002")
        node = data
        parts = key.strip().split(".")
        for index, part in enumerate(parts[:-1]):
            if _is_component(node) and part not in ("name", "params") and index > 0:
                # a component's own keys live under its params once validated: `method.capability.params.x=1`
                # must reach method.params.capability, not start an inline `capability` that replaces it
                node = node["params"]
            child = node.setdefault(part, {})
            if child is None:  # an optional section that is off (e.g. pruning.recovery): setting a key turns it on
                child = node[part] = {}
            if isinstance(child, str):  # a component given as a bare name
                child = node[part] = {"name": child}
            if isinstance(child, list):
                dotted = ".".join(parts[:index + 1])
                raise ConfigError(f"--set {item!r}: {dotted} is a list, whose items cannot be set one at a time; "
                                  f"give the whole list, e.g. --set '{dotted}=[...]'")
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        if _is_component(node) and parts[-1] not in ("name", "params") and len(parts) > 1:
            node = node["params"]
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(yaml_error_line(f"--set {key.strip()}", exc, lines=False)) from None
    return data


def _is_component(node: dict[str, Any]) -> bool:
    """A validated component section (``{name, params}``), whose other keys belong in ``params``."""
    return isinstance(node.get("name"), str) and isinstance(node.get("params"), dict)


def load_config(source: str | Path | dict[str, Any] | RunConfig, overrides: list[str] | None = None) -> RunConfig:
    """A validated ``RunConfig`` from a path, a dict or a ``RunConfig``, with ``--set`` style overrides."""
    if isinstance(source, RunConfig):
        data = source.model_dump(mode="json")
    elif isinstance(source, dict):
        data = json.loads(json.dumps(source))
    else:
        data = read_config_file(source)
    if overrides:  # apply onto the defaults-filled config, so `scoring.scorer.params.x=1` finds its section
        data = apply_overrides(validate_config(data).model_dump(mode="json"), overrides)
    return validate_config(data)


def resolve_component(registry: Any, kind: str, component: Component, path: str) -> Any:
    """The configured plugin for a component; errors name the config path of the bad field."""
    from .errors import DuplicatePluginError, UnknownPluginError

    try:
        return registry.create(kind, component.name, component.params)
    except (UnknownPluginError, DuplicatePluginError) as exc:
        raise ConfigError(f"{path}.name: {exc}") from None
    except ValidationError as exc:
        params = getattr(registry.get(kind, component.name), "Params", None)
        raise ConfigError(format_validation_error(exc, prefix=f"{path}.params", model=params)) from None
