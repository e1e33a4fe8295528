"""The whole fairness-pruning run, config-driven: load -> analyze -> plan -> observe base -> prune -> evaluate -> save.

A ``Run`` holds what the stages share: the validated config, the plugins it
names (resolved once, before any work), the model, tokenizer and adapter, and
each stage's result. The base model is observed by every evaluator before it
is pruned in place, so a run holds one full model at a time. Human-readable
files (report, model card, HTML) are written by plugins through the
``fairprune_write_run_files`` hook; the core writes the data files.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ..contract.config import RunConfig, load_config, resolve_component
from ..contract.errors import ConfigError, DuplicatePluginError, UnknownPluginError
from ..io.outputs import releasing_claims

logger = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("fairprune", "torch", "transformers", "pluggy", "pydantic", "numpy", "safetensors", "gguf")


class Timer:
    """Named wall-clock stages (seconds), for the manifest."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        logger.info("stage %s ...", name)
        failed = True
        try:
            yield
            failed = False
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)
            logger.info("stage %s %s in %.1f s", name, "failed" if failed else "done", self.timings[name])


@dataclass
class Plugins:
    """Every plugin a config names, resolved and configured once (``prepare``)."""

    method: Any
    pruner: Any
    evaluators: list[tuple[str, Any]]
    adapter: Any = None


@dataclass
class Run:
    """One run's shared state; stages fill it in order. ``output_dir`` is where ``save_run`` writes."""

    config: RunConfig
    registry: Any
    plugins: Plugins
    output_dir: Path
    progress: bool = True
    timer: Timer = field(default_factory=Timer)
    model: Any = None
    tokenizer: Any = None
    adapter: Any = None
    base_model_id: str = ""
    license: str | None = None
    bias_report: Any = None
    analysis: Any = None  # the method's MethodAnalysis (its bias report and its own state)
    plan: Any = None
    prune_result: Any = None
    heldout_groups: list[Any] | None = None
    transfer_groups: dict[str, list[Any]] = field(default_factory=dict)
    base_observations: dict[str, Any] = field(default_factory=dict)
    evaluations: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def config_hash(self) -> str:
        return self.config.config_hash()


@dataclass
class RunResult:
    """What a run produced: where, the metrics (as in ``metrics.json``), the plan and the timings."""

    output_dir: Path | None
    metrics: dict[str, Any]
    plan: Any
    prune_result: Any
    timings: dict[str, float] = field(default_factory=dict)
    evaluations: dict[str, Any] = field(default_factory=dict)


def resolve_plugins(config: RunConfig, registry: Any) -> Plugins:
    """Every plugin the config names, configured; ``ConfigError`` naming the config field otherwise."""
    from ..data.groups import is_axis_name
    from .evaluation import configure_evaluators

    def named(kind: str, name: str, path: str) -> Any:
        try:
            return registry.get(kind, name)
        except (UnknownPluginError, DuplicatePluginError) as exc:
            raise ConfigError(f"{path}: {exc}") from None

    for section, axes in (("bias", config.bias.axes), ("evaluation", config.evaluation.axes or [])):
        for i, axis in enumerate(axes):
            if is_axis_name(axis):
                named("bias_axes", axis, f"{section}.axes.{i}")
    named("sites", config.bias.site, "bias.site")
    return Plugins(
        method=resolve_method(config, registry),
        pruner=resolve_component(registry, "pruners", config.pruning.pruner, "pruning.pruner"),
        evaluators=configure_evaluators(registry, config.evaluation.evaluators),
        adapter=named("architectures", config.model.adapter, "model.adapter") if config.model.adapter else None,
    )


#: optional keys outside ``method`` that only some methods read (``Method.shared_keys``)
SHARED_KEYS: dict[str, tuple[str, str]] = {"pruning.round_to": ("pruning", "round_to"),
                                           "sweep.bias_weights": ("sweep", "bias_weights")}


def resolve_method(config: RunConfig, registry: Any) -> Any:
    """The configured method plugin, its params validated and its own plugins resolved; ``ConfigError`` for a
    key of another method (naming that method) or a shared key this method does not read."""
    from pydantic import ValidationError

    from ..contract.config import format_validation_error

    try:
        method = registry.create("methods", config.method.name, config.method.params)
    except (UnknownPluginError, DuplicatePluginError) as exc:
        raise ConfigError(f"method.name: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(_other_method_key(exc, config.method.name, registry)
                          or format_validation_error(exc, prefix="method",
                                                     model=registry.get("methods", config.method.name).Params)) from None
    for key, (section, field_name) in SHARED_KEYS.items():
        part = getattr(config, section)
        if getattr(part, field_name) != type(part)().__getattribute__(field_name) and key not in method.shared_keys:
            raise ConfigError(f"{key}: the {method.name} method does not read this key; remove it (it would do "
                              "nothing)")
    if callable(getattr(method, "prepare", None)):
        method.prepare(config, registry)
    return method


def _other_method_key(exc: Any, name: str, registry: Any) -> str | None:
    """A one-line error for a key that belongs to another registered method, or None."""
    for err in exc.errors():
        if err["type"] != "extra_forbidden":
            continue
        key = str(err["loc"][0])
        owners = [other for other in registry.names("methods") if other != name
                  and key in getattr(registry.get("methods", other), "Params").model_fields]
        if owners:
            return (f"method.{key}: a key of the {' and '.join(owners)} method, not of {name}; remove it or set "
                    f"method.name to {owners[0]}")
    return None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def prepare(config: Any, overrides: list[str] | None = None, registry: Any = None, progress: bool = True) -> Run:
    """Validate the config and every plugin it names, seed torch, check the output directory: all before work."""
    import torch

    from ..contract.registry import default_registry
    from ..io.outputs import claim_output_dir
    from ..io.sources import input_paths
    from ..model.distributed import is_main_process
    from .preflight import check_analysis_prompts, check_input_files

    config = load_config(config, overrides)
    registry = default_registry(registry)
    plugins = resolve_plugins(config, registry)
    if plugins.pruner.needs_calibration and config.bias.site != "neuron":
        raise ConfigError("pruning.pruner: a compensating pruner needs neuron-site activations (bias.site=neuron)")
    check_input_files(config)
    check_analysis_prompts(config, registry)
    if is_main_process(init=True):  # under torchrun only rank 0 writes, so only it claims the directory
        out_dir = claim_output_dir(config.output.dir, config.output.overwrite,  # locked until the run ends
                                   reads=input_paths(config.model.source, registry))
    else:
        out_dir = Path(config.output.dir).expanduser().absolute()
    torch.manual_seed(config.seed)
    return Run(config, registry, plugins, out_dir, progress)


@contextmanager
def _naming_model_source() -> Iterator[None]:
    """A ``ModelSourceError`` raised in the block names ``model.source``, as every other config error names its
    field."""
    from ..contract.errors import ModelSourceError

    try:
        yield
    except ModelSourceError as exc:
        raise ModelSourceError(f"model.source: {exc}") from exc.__cause__


@releasing_claims
def check(config: Any, overrides: list[str] | None = None, registry: Any = None,
          also: Callable[[Run], list[str]] | None = None) -> str:
    """What ``run`` would do, after every check it makes before loading the model (``prepare``) and the choice
    of model source, as a few lines of text; the same errors as ``run``, and no model code runs. ``also`` (a
    command's own checks on the prepared run, such as a sweep's) adds its lines."""
    from ..io.sources import pick_source, refuse_custom_code

    state = prepare(config, overrides, registry, progress=False)
    extra = also(state) if also is not None else []
    section = state.config.model
    with _naming_model_source():
        refuse_custom_code(section.source, section.trust_remote_code)
        source = pick_source(str(section.source), state.registry)
        if hasattr(source, "check"):  # a source's own look without loading (the hub: reachable or cached)
            source.check(str(section.source))
    out = state.output_dir
    replaced = out.is_dir() and any(out.iterdir())
    evaluators = [e.name for e in state.config.evaluation.evaluators]
    return "\n".join([
        "config ok: nothing was loaded or written",
        f"  model        {section.source} (source {source.name!r})",
        f"  method       {state.config.method.name} on {', '.join(state.config.bias.axes)}",
        f"  budget       {state.config.pruning.budget.model_dump(exclude_none=True)}",
        f"  evaluators   {', '.join(evaluators) or '(none)'}",
        *extra,
        f"  output       {out}{' (its contents would be replaced)' if replaced else ''}"])


def load(run: Run) -> None:
    """The model, its tokenizer and its architecture adapter; the base model's id and licence."""
    from ..io.sources import load_model
    from ..model.adapters import check_supported, resolve_adapter

    section = run.config.model
    with _naming_model_source():
        run.model, run.tokenizer = load_model(section.source, registry=run.registry, dtype=section.dtype,
                                              device_map=section.device_map, max_memory=section.max_memory,
                                              offload_folder=section.offload_folder,
                                              trust_remote_code=section.trust_remote_code)
    run.adapter = run.plugins.adapter or resolve_adapter(run.model, registry=run.registry)
    check_supported(run.model, run.adapter)  # every layer's MLP prunable, before any analysis (a named adapter too)
    run.base_model_id = getattr(run.model.config, "fairprune_base_model", None) or run.config.model.source
    run.license = getattr(run.model.config, "fairprune_license", None)


def method_context(run: Run) -> Any:
    """The ``MethodContext`` the run's method is called with."""
    from ..contract.protocols import MethodContext

    return MethodContext(tokenizer=run.tokenizer, adapter=run.adapter, registry=run.registry, config=run.config,
                         pruner=run.plugins.pruner, progress=run.progress)


def analyze(run: Run) -> None:
    """Steps 1-2: the method's analysis of the analysis split of the configured axes and prompt file (the
    attribution method also selects the neurons here: its scores are recomputed round by round)."""
    from ..model.memory import release_memory

    run.analysis = run.plugins.method.analyze(run.model, method_context(run))
    run.bias_report = run.analysis.bias_report
    release_memory()  # the analysis's per-prompt tables and activations, freed in the heap


def eval_context(run: Run, prune_result: Any = None) -> Any:
    """The ``EvalContext`` of a run: held-out and transfer groups of the evaluation axes (default: the bias
    axes)."""
    from ..contract.results import EvalContext
    from ..data.groups import run_groups, run_transfer_groups
    from .evaluation import needs_groups

    config = run.config
    if run.heldout_groups is None:  # read once: a sweep evaluates every grid point on the same groups
        needed = needs_groups(run.plugins.evaluators)
        run.heldout_groups = run_groups(config, "heldout", run.registry).groups if needed else []
        run.transfer_groups = run_transfer_groups(config, run.registry) if needed else {}
    guarded = None
    if run.plan is not None and run.bias_report is not None:  # for a random control of the plan
        from ..contract.config import ActivationParams
        from ..method.planning import magnitude_guard

        ratio = getattr(run.plugins.method.params, "guard_magnitude_ratio", ActivationParams().guard_magnitude_ratio)
        guarded = magnitude_guard(run.bias_report, sorted(run.plan.removed), ratio)
    return EvalContext(tokenizer=run.tokenizer, groups=run.heldout_groups, transfer=run.transfer_groups,
                       batch_size=config.evaluation.batch_size,
                       seed=config.seed, registry=run.registry, progress=run.progress, prune_result=prune_result,
                       plan=run.plan, guarded=guarded)


def observe_base(run: Run, evaluators: list[tuple[str, Any]] | None = None, world: Any = None) -> None:
    """Every evaluator observes the model before it is pruned; with ``world`` (every process calls this) the
    scoring passes are shared among its processes (``evaluation.observe_all``)."""
    from .evaluation import observe_all

    run.base_observations = observe_all(evaluators or run.plugins.evaluators, run.model, eval_context(run), "base",
                                        run.adapter, world)


def make_plan(run: Run, *, budget: Any = None, variant: dict[str, Any] | None = None) -> Any:
    """Step 3-4a: the method chooses the neurons to remove within ``budget`` (default: the config's) for one
    sweep ``variant`` (default: none)."""
    return run.plugins.method.plan(run.model, run.analysis, budget if budget is not None else
                                   run.config.pruning.budget, method_context(run), variant or {})


def apply_plan(run: Run, plan: Any) -> Any:
    """Step 4b: remove the planned neurons with the configured pruner (in place; all or nothing), then, with
    ``pruning.recovery``, train the kept MLP weights back towards the unpruned model (``method.recovery``)."""
    from ..method.surgery import prune
    from ..model.memory import release_memory

    pruner = run.plugins.pruner
    calibration = run.bias_report.mean if pruner.needs_calibration else None
    recovery = run.config.pruning.recovery
    targets = None
    if recovery is not None:  # the unpruned model's side of the distillation, read before it changes
        from ..method.recovery import distillation_targets

        targets = distillation_targets(run.model, run.tokenizer, text=recovery.text, tokens=recovery.tokens,
                                       held_out_tokens=recovery.held_out_tokens, chunk_tokens=recovery.chunk_tokens,
                                       top_k=recovery.top_k, batch_size=recovery.batch_size)
    result = prune(run.model, plan, pruner=pruner, adapter=run.adapter, calibration=calibration,
                   registry=run.registry)
    release_memory()  # the replaced weights
    if recovery is not None:
        from ..method.recovery import recover

        result.recovery = recover(run.model, run.adapter, targets, epochs=recovery.epochs, lr=recovery.lr,
                                  batch_size=recovery.batch_size, seed=run.config.seed)
    return result


def evaluate_pruned(run: Run, prune_result: Any, evaluators: list[tuple[str, Any]] | None = None,
                    world: Any = None) -> dict[str, Any]:
    """Step 5: observe the pruned model and compare with the base observations; ``{name: EvalResult}``. With
    ``world`` the observe passes are shared, as in ``observe_base``."""
    from .evaluation import compare_all, observe_all

    evaluators = evaluators or run.plugins.evaluators
    context = eval_context(run, prune_result)
    pruned = observe_all(evaluators, run.model, context, "pruned", run.adapter, world)
    return compare_all(evaluators, run.base_observations, pruned, context)


def collect_metrics(run: Run) -> dict[str, Any]:
    """The deterministic figures of a run (no timings), as written to ``metrics.json``."""
    plan, result = run.plan, run.prune_result
    return {
        "model": run.config.model.source,
        "base_model": run.base_model_id,
        "config_hash": run.config_hash,
        "pruning": {
            "neurons_removed": plan.n_neurons,
            "layers_touched": len(plan.removed),
            "params_before": result.params_before,
            "params_after": result.params_after,
            "params_removed": result.params_removed,
            "params_removed_pct": 100.0 * result.fraction_removed,
            "widths_after": result.widths_after,
            **({"recovery": result.recovery} if result.recovery is not None else {}),
            **_verification_metrics(plan),
        },
        "evaluation": {name: r.to_dict() for name, r in run.evaluations.items()},
    }


def _verification_metrics(plan: Any) -> dict[str, Any]:
    """``{method: figures}`` of a plan that records a measured verification (the attribution method's predicted
    vs measured objective change, rounds and stop reason); empty for a plan without one. Core names no method."""
    settings = getattr(plan, "settings", {}) or {}
    if "verification" not in settings:
        return {}
    extra = {key: settings[key] for key in ("rounds_run", "stop_reason", "selection_seconds") if key in settings}
    return {settings.get("method", "method"): {**settings["verification"], **extra}}


@releasing_claims
def run(config: str | Path | dict[str, Any] | RunConfig, overrides: list[str] | None = None, *,
        registry: Any = None, progress: bool = True) -> RunResult:
    """Run the whole pipeline from a config (path, dict or ``RunConfig``) and write the output directory.

    Under torchrun (``WORLD_SIZE`` > 1) every process loads the model, takes a share
    of the method's analysis (and of the attribution method's selection), plans (the
    plans must be equal: ``DistributedError`` otherwise), observes the base model,
    prunes its replica and observes the pruned one; each observe pass is shared
    among the processes (``distributed.sharing``), whose results are gathered in a
    fixed order, so every process compares the observations one process would
    make. Rank 0 alone writes; the other processes return the same metrics in a
    ``RunResult`` without an output directory. A failure in one process stops all
    with its message.
    """
    from ..method.attribution import stop_together
    from ..model.distributed import current, is_main_process
    from .preflight import check_budget, check_plan_removes_neurons

    state = prepare(config, overrides, registry, progress)
    state.registry.hook.fairprune_run_started(config=state.config, output_dir=state.output_dir)
    timer = state.timer
    with timer.stage("load"):
        load(state)
        check_budget(state.config, state.model, state.adapter)
        if state.config.pruning.recovery is not None:  # an offloaded model is refused before the analysis
            from ..method.recovery import trainable_mlp_parameters

            trainable_mlp_parameters(state.model, state.adapter)
    world = current()  # None in one process
    with timer.stage("analyze"):
        analyze(state)  # shared among the processes of a torchrun world
    with timer.stage("plan"):  # before the base is observed, so that a random control can draw the plan's counts
        with stop_together(world):
            state.plan = make_plan(state)
            check_plan_removes_neurons(state.plan, state.config)
        check_same_plan(state.plan, world)
    with timer.stage("observe_base"):
        observe_base(state, world=world)
    with timer.stage("prune"), stop_together(world):
        state.prune_result = apply_plan(state, state.plan)
    if world is not None and state.prune_result.recovery is not None:
        # every process trained its replica alike (after stop_together: all succeeded); rank 0's weights and
        # record make the replicas equal whatever each device's arithmetic did, before they share evaluation
        from ..method.recovery import trainable_mlp_parameters

        # only the MLP weights were trained: the rest of each replica is already the same
        state.prune_result.recovery = world.broadcast_from_main(
            trainable_mlp_parameters(state.model, state.adapter), state.prune_result.recovery)
    with timer.stage("evaluate"):
        state.evaluations = evaluate_pruned(state, state.prune_result, world=world)
    state.metrics = collect_metrics(state)
    if not is_main_process():  # every process holds the same results; rank 0 alone writes them
        return RunResult(None, state.metrics, state.plan, state.prune_result, timer.timings, state.evaluations)
    save_run(state)
    state.registry.hook.fairprune_run_finished(config=state.config, output_dir=state.output_dir,
                                               metrics=state.metrics)
    logger.info("run written to %s", state.output_dir)
    return RunResult(state.output_dir, state.metrics, state.plan, state.prune_result, timer.timings,
                     state.evaluations)


def check_same_plan(plan: Any, world: Any) -> None:
    """Under a torchrun ``world``, ``DistributedError`` in every process unless all planned the same neurons;
    nothing (no collective) in one process."""
    from ..contract.errors import DistributedError

    if world is None:
        return
    mine = {int(layer): [int(n) for n in neurons] for layer, neurons in plan.removed.items()}
    plans = world.gather_objects([mine])
    differ = [rank for rank, other in enumerate(plans) if other != plans[0]]
    if differ:
        raise DistributedError(f"process {differ[0]} of {world.size} planned other neurons than process 0; every "
                               "process must load the same model, config and prompts")


def save_run(run: Run, extra: Any = None) -> None:
    """Write the run into its output directory, atomically: the model (when ``output.save_model``), the data
    files, then the plugins' files (``fairprune_write_run_files``); ``extra(staging)`` may add more."""
    from ..io.outputs import atomic_directory
    from ..io.persist import write_pretrained
    from ..model.memory import release_memory

    with atomic_directory(run.output_dir, overwrite=run.config.output.overwrite) as staging, run.timer.stage("save"):
        staging.mkdir()
        if run.config.output.save_model:
            write_pretrained(run.model, run.tokenizer, staging, plan=run.plan, run_config=run.config,
                             base_model=run.base_model_id, adapter=run.adapter)
        write_data_files(run, staging)
        if extra is not None:
            extra(staging)
        release_memory()  # before the report plugin draws its figures
        written = run.registry.hook.fairprune_write_run_files(run=run, directory=staging)
        if not any(written):
            logger.warning("no plugin wrote the run's report files (report.md, README.md, report.html); the "
                           "built-in report plugin is fairprune.plugins.report")


def write_data_files(run: Run, directory: Path) -> None:
    """plan.json, bias/, metrics.json, config.yaml and manifest.json: the machine-readable record."""
    import yaml

    from ..io.outputs import writing

    run.plan.save(directory / "plan.json")
    with writing(directory / "bias"):  # its scores are written by safetensors, which names no file
        run.bias_report.save(directory / "bias")
    (directory / "metrics.json").write_text(json.dumps(run.metrics, indent=1, sort_keys=True))
    (directory / "config.yaml").write_text(yaml.safe_dump(run.config.model_dump(mode="json"), sort_keys=False))
    manifest = {"config_hash": run.config_hash, "versions": package_versions(), "timings_s": run.timer.timings,
                "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
