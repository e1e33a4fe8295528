"""The whole fairness-pruning run, config-driven: load -> analyze -> score -> plan -> prune -> evaluate -> save -> report."""

from __future__ import annotations

import copy
import json
import logging
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .config import RunConfig, load_config, resolve_component
from .errors import ConfigError
from .outputs import releasing_claims

logger = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("fairprune", "torch", "transformers", "pluggy", "pydantic", "numpy", "safetensors", "gguf")


@dataclass
class RunResult:
    """What a run produced: where, the metrics (as in ``metrics.json``), the plan and the timings."""

    output_dir: Path | None
    metrics: dict[str, Any]
    plan: Any
    prune_result: Any
    timings: dict[str, float] = field(default_factory=dict)
    evaluations: dict[str, Any] = field(default_factory=dict)


class Timer:
    """Named wall-clock stages, for the manifest."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        logger.info("stage %s ...", name)
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)
            logger.info("stage %s done in %.1f s", name, self.timings[name])


def validate_plugins(config: RunConfig, registry: Any) -> dict[str, Any]:
    """Resolve every plugin the config names, before any long work; errors name the config field."""
    from .errors import UnknownPluginError

    def named(kind: str, name: str, path: str) -> Any:
        try:
            return registry.get(kind, name)
        except UnknownPluginError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    resolved = {
        "bias_metric": resolve_component(registry, "bias_metrics", config.bias.metric, "bias.metric"),
        "site": named("sites", config.bias.site, "bias.site"),
        "pooling": named("poolings", config.bias.pooling, "bias.pooling"),
        "scorer": resolve_component(registry, "scorers", config.scoring.scorer, "scoring.scorer"),
        "importance": resolve_component(registry, "importance_metrics", config.scoring.importance,
                                        "scoring.importance"),
        "pruner": resolve_component(registry, "pruners", config.pruning.pruner, "pruning.pruner"),
        "evaluators": [resolve_component(registry, "evaluators", c, f"evaluation.evaluators.{i}")
                       for i, c in enumerate(config.evaluation.evaluators)],
    }
    if config.model.adapter:
        resolved["adapter"] = named("architectures", config.model.adapter, "model.adapter")
    for i, axis in enumerate(config.bias.axes):
        if not Path(axis).is_file():
            named("bias_axes", axis, f"bias.axes.{i}")
    return resolved


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def split_groups(config: RunConfig, split: str, axes: list[str] | None = None) -> list[Any] | None:
    """Prompt groups of a user prompt file or axis files for ``split``; None when only registered axes are used."""
    from .prompts import load_axis, load_prompt_groups
    from .prompts import split_groups as split_by_template

    groups: list[Any] = []
    if config.bias.prompts:
        groups.extend(split_by_template(load_prompt_groups(config.bias.prompts), split))
    for axis in axes if axes is not None else config.bias.axes:
        if Path(axis).is_file():
            groups.extend(load_axis(axis).prompt_groups(split))
    return groups or None


def registered_axes(axes: list[str]) -> list[str]:
    return [a for a in axes if not Path(a).is_file()]


def analyze(config: RunConfig, model: Any, tokenizer: Any, adapter: Any, registry: Any, progress: bool) -> Any:
    """Step 1-2: the bias report on the analysis split of the configured axes and prompts."""
    from .bias import analyze_bias

    return analyze_bias(model, tokenizer, axes=registered_axes(config.bias.axes) or None,
                        groups=split_groups(config, "analysis"), split="analysis", site=config.bias.site,
                        pooling=config.bias.pooling, metric=config.bias.metric.name,
                        metric_params=config.bias.metric.params or None, batch_size=config.bias.batch_size,
                        adapter=adapter, registry=registry, progress=progress)


def make_plan(config: RunConfig, model: Any, report: Any, adapter: Any, registry: Any,
              importance: Any = None, bias_weight: float | None = None, budget: Any = None) -> Any:
    """Step 3-4a: score every neuron and choose the ones to remove within the budget."""
    from .planning import plan_pruning

    scoring, pruning = config.scoring, config.pruning
    return plan_pruning(model, report, importance=importance if importance is not None else scoring.importance.name,
                        importance_params=scoring.importance.params or None, scorer=scoring.scorer.name,
                        scorer_params=scoring.scorer.params or None,
                        bias_weight=scoring.bias_weight if bias_weight is None else bias_weight,
                        budget=budget or pruning.budget, selection=pruning.selection, layers=pruning.layers,
                        min_width=pruning.min_width, round_to=pruning.round_to,
                        guard_magnitude_ratio=pruning.guard_magnitude_ratio, adapter=adapter, registry=registry)


def apply_plan(config: RunConfig, model: Any, plan: Any, report: Any, adapter: Any, registry: Any) -> Any:
    """Step 4b: remove the planned neurons with the configured pruner (in place)."""
    from .surgery import prune

    pruner = resolve_component(registry, "pruners", config.pruning.pruner, "pruning.pruner")
    calibration = report.mean if getattr(pruner, "needs_calibration", False) else None
    if calibration is not None and report.settings.get("site") != "neuron":
        raise ConfigError("pruning.pruner: a compensating pruner needs neuron-site activations (bias.site=neuron)")
    return prune(model, plan, pruner=pruner, adapter=adapter, calibration=calibration, registry=registry)


def evaluate_run(config: RunConfig, base: Any, pruned: Any, tokenizer: Any, registry: Any, prune_result: Any,
                 progress: bool, evaluators: list[Any] | None = None, base_cache: dict | None = None) -> dict[str, Any]:
    """Step 5: every configured evaluator on the held-out split, base vs pruned (``base_cache``: see
    ``evaluation.evaluate``; one dict per base model)."""
    from .evaluation import evaluate

    comps = evaluators if evaluators is not None else config.evaluation.evaluators
    axes = config.evaluation.axes if config.evaluation.axes is not None else config.bias.axes
    return evaluate(base, pruned, tokenizer, axes=registered_axes(axes) or None,
                    groups=split_groups(config, "heldout", axes), evaluators=[c.name for c in comps],
                    params={c.name: c.params for c in comps if c.params}, batch_size=config.evaluation.batch_size,
                    registry=registry, prune_result=prune_result, progress=progress, base_cache=base_cache)


def collect_metrics(config: RunConfig, plan: Any, prune_result: Any, evaluations: dict[str, Any]) -> dict[str, Any]:
    """The deterministic figures of a run (no timings), as written to ``metrics.json``."""
    return {
        "model": config.model.source,
        "config_hash": config.config_hash(),
        "pruning": {
            "neurons_removed": plan.n_neurons,
            "layers_touched": len(plan.removed),
            "params_before": prune_result.params_before,
            "params_after": prune_result.params_after,
            "params_removed": prune_result.params_removed,
            "params_removed_pct": 100.0 * prune_result.fraction_removed,
            "widths_after": prune_result.widths_after,
        },
        "evaluation": {name: result.to_dict() for name, result in evaluations.items()},
    }


def prepare(config: Any, overrides: list[str] | None, registry: Any) -> tuple[RunConfig, Any, Path]:
    """Validate the config and every plugin it names, seed torch, check the output directory: all before work."""
    import torch

    from .outputs import claim_output_dir
    from .registry import get_registry

    config = load_config(config, overrides)
    registry = registry or get_registry()
    validate_plugins(config, registry)
    out_dir = claim_output_dir(config.output.dir, config.output.overwrite)  # locked until the run ends
    torch.manual_seed(config.seed)
    return config, registry, out_dir


def load(config: RunConfig, registry: Any) -> tuple[Any, Any, Any]:
    """The model, its tokenizer and its architecture adapter."""
    from .sources import load_model
    from .surgery import resolve_adapter

    model, tokenizer = load_model(config.model.source, registry=registry,
                                  trust_remote_code=config.model.trust_remote_code)
    return model, tokenizer, resolve_adapter(model, config.model.adapter, registry=registry)


@releasing_claims
def run(config: str | Path | dict[str, Any] | RunConfig, overrides: list[str] | None = None, *,
        registry: Any = None, progress: bool = True) -> RunResult:
    """Run the whole pipeline from a config (path, dict or ``RunConfig``) and write the output directory."""
    from . import report as report_mod
    from .outputs import atomic_directory
    from .persist import save_pretrained
    config, registry, out_dir = prepare(config, overrides, registry)
    registry.hook.fairprune_run_started(config=config, output_dir=out_dir)
    timer = Timer()

    with timer.stage("load"):
        model, tokenizer, adapter = load(config, registry)
    with timer.stage("analyze"):
        bias_report = analyze(config, model, tokenizer, adapter, registry, progress)
    with timer.stage("plan"):
        plan = make_plan(config, model, bias_report, adapter, registry)
    base = copy.deepcopy(model)
    with timer.stage("prune"):
        prune_result = apply_plan(config, model, plan, bias_report, adapter, registry)
    with timer.stage("evaluate"):
        evaluations = evaluate_run(config, base, model, tokenizer, registry, prune_result, progress)
    metrics = collect_metrics(config, plan, prune_result, evaluations)

    with atomic_directory(out_dir, overwrite=config.output.overwrite) as staging, timer.stage("save"):
        card = report_mod.model_card(config, metrics, base_model=_base_model_id(base, config),
                                     license=getattr(base.config, "fairprune_license", None))
        if config.output.save_model:
            save_pretrained(model, tokenizer, staging, plan=plan, run_config=config.model_dump(mode="json"),
                            base_model=_base_model_id(base, config), card=card)
        else:
            staging.mkdir()
        write_run_files(staging, config, plan, bias_report, metrics, timer.timings, evaluations)
    registry.hook.fairprune_run_finished(config=config, output_dir=out_dir, metrics=metrics)
    logger.info("run written to %s", out_dir)
    return RunResult(out_dir, metrics, plan, prune_result, timer.timings, evaluations)


def write_run_files(directory: Path, config: RunConfig, plan: Any, bias_report: Any, metrics: dict[str, Any],
                    timings: dict[str, float], evaluations: dict[str, Any]) -> None:
    """plan.json, bias/, metrics.json, report.md, report.html, config.yaml and manifest.json."""
    import yaml

    from . import report as report_mod

    plan.save(directory / "plan.json")
    bias_report.save(directory / "bias")
    (directory / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    (directory / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    (directory / "report.md").write_text(report_mod.report_markdown(config, metrics, evaluations))
    manifest = {"config_hash": config.config_hash(), "versions": package_versions(), "timings_s": timings,
                "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    report_mod.write_html_report(directory)


def _base_model_id(model: Any, config: RunConfig) -> str:
    return getattr(model.config, "fairprune_base_model", None) or config.model.source
