"""A grid over bias weight and budget sharing one bias analysis; the Pareto front of bias vs capability.

Each point prunes a fresh copy of the base model and measures held-out bias
reduction and capability loss. With a capability constraint, the point with the
largest bias reduction under it is saved as a full run.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Component, RunConfig, load_config
from .outputs import releasing_claims

logger = logging.getLogger(__name__)

#: evaluators a sweep point needs; the chosen point gets every configured evaluator
POINT_EVALUATORS = ("activation_bias", "capability")
#: capability-loss metric, preferred first: LAMBADA last-word perplexity, then the project's text perplexity
CAPABILITY_KEYS = ("lambada_ppl_change_pct", "text_ppl_change_pct")


@dataclass
class SweepResult:
    """All points (as in ``sweep.json``), the chosen one (or None) and where it was written."""

    points: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    output_dir: Path
    run: Any = None
    timings: dict[str, float] = field(default_factory=dict)


def capability_loss(capability: dict[str, float]) -> tuple[str, float]:
    """The capability-loss figure of a point (percent increase of perplexity; negative = better)."""
    for key in CAPABILITY_KEYS:
        if key in capability:
            return key, float(capability[key])
    raise KeyError(f"capability evaluator reported none of {CAPABILITY_KEYS}")


def pareto_front(points: list[dict[str, Any]]) -> list[int]:
    """Indices of points no other point beats on both bias reduction (higher) and capability loss (lower)."""
    front = []
    for i, p in enumerate(points):
        dominated = any(q["bias_reduction_pct"] >= p["bias_reduction_pct"] and
                        q["capability_loss_pct"] <= p["capability_loss_pct"] and
                        (q["bias_reduction_pct"], q["capability_loss_pct"]) !=
                        (p["bias_reduction_pct"], p["capability_loss_pct"]) for q in points)
        if not dominated:
            front.append(i)
    return front


def choose(points: list[dict[str, Any]], max_increase: float | None) -> dict[str, Any] | None:
    """The largest bias reduction among points whose capability loss is at most ``max_increase`` percent."""
    if max_increase is None:
        return None
    ok = [p for p in points if p["capability_loss_pct"] <= max_increase]
    return max(ok, key=lambda p: (p["bias_reduction_pct"], -p["capability_loss_pct"])) if ok else None


def _point_evaluators(config: RunConfig) -> list[Component]:
    chosen = [c for c in config.evaluation.evaluators if c.name in POINT_EVALUATORS]
    missing = [n for n in POINT_EVALUATORS if n not in {c.name for c in chosen}]
    return chosen + [Component(name=n) for n in missing]


@releasing_claims
def sweep(config: Any, overrides: list[str] | None = None, *, max_perplexity_increase: float | None = None,
          registry: Any = None, progress: bool = True) -> SweepResult:
    """Run the grid in ``config.sweep``; save the chosen point's model when a constraint is given."""
    from .outputs import atomic_directory
    from .persist import save_pretrained
    from .pipeline import (
        Timer,
        _base_model_id,
        analyze,
        apply_plan,
        collect_metrics,
        evaluate_run,
        load,
        make_plan,
        prepare,
        write_run_files,
    )
    from .report import model_card

    config, registry, out_dir = prepare(config, overrides, registry)
    limit = max_perplexity_increase if max_perplexity_increase is not None else config.sweep.max_perplexity_increase
    timer = Timer()
    with timer.stage("load"):
        base, tokenizer, adapter = load(config, registry)
    with timer.stage("analyze"):
        report = analyze(config, base, tokenizer, adapter, registry, progress)
        importance = make_importance(config, base, report, adapter, registry)

    points = []
    base_cache: dict = {}  # the base model's side of every evaluator is measured once for the whole grid
    with timer.stage("grid"):
        for budget in config.sweep.budgets:
            for weight in config.sweep.bias_weights:
                points.append(_run_point(config, base, tokenizer, report, adapter, registry, importance, weight,
                                         budget, progress, base_cache))
    for i in pareto_front(points):
        points[i]["pareto"] = True
    chosen = choose(points, limit)
    if chosen is not None:
        chosen["chosen"] = True
    logger.info("sweep: %d points, %d on the Pareto front, chosen: %s", len(points),
                sum(p["pareto"] for p in points), chosen)

    run_metrics = None
    with atomic_directory(out_dir, overwrite=config.output.overwrite) as staging:
        if chosen is not None:
            budget = config.pruning.budget.model_validate(chosen["budget"])
            model = copy.deepcopy(base)
            plan = make_plan(config, model, report, adapter, registry, importance=importance,
                             bias_weight=chosen["bias_weight"], budget=budget)
            prune_result = apply_plan(config, model, plan, report, adapter, registry)
            evaluations = evaluate_run(config, base, model, tokenizer, registry, prune_result, progress,
                                       base_cache=base_cache)
            point_config = load_config(config, [f"scoring.bias_weight={chosen['bias_weight']}",
                                                f"pruning.budget={json.dumps(chosen['budget'])}"])
            run_metrics = collect_metrics(point_config, plan, prune_result, evaluations)
            if config.output.save_model:
                save_pretrained(model, tokenizer, staging, plan=plan, run_config=point_config.model_dump(mode="json"),
                                base_model=_base_model_id(base, config),
                                card=model_card(point_config, run_metrics, _base_model_id(base, config),
                                                getattr(base.config, "fairprune_license", None)))
            else:
                staging.mkdir()
            write_run_files(staging, point_config, plan, report, run_metrics, timer.timings, evaluations)
        else:
            staging.mkdir()
            report.save(staging / "bias")
        write_sweep_files(staging, points, chosen, limit)
    return SweepResult(points, chosen, out_dir, run_metrics, timer.timings)


def make_importance(config: RunConfig, model: Any, report: Any, adapter: Any, registry: Any) -> dict[int, Any]:
    """Importance per layer, computed once for the whole grid."""
    from .planning import _importance
    from .surgery import importance as compute

    return dict(_importance(model, config.scoring.importance.name, config.scoring.importance.params or None,
                            report, adapter, registry, compute))


def _run_point(config: RunConfig, base: Any, tokenizer: Any, report: Any, adapter: Any, registry: Any,
               importance: dict[int, Any], weight: float, budget: Any, progress: bool,
               base_cache: dict) -> dict[str, Any]:
    from .pipeline import apply_plan, evaluate_run, make_plan

    model = copy.deepcopy(base)
    plan = make_plan(config, model, report, adapter, registry, importance=importance, bias_weight=weight,
                     budget=budget)
    result = apply_plan(config, model, plan, report, adapter, registry)
    evaluations = evaluate_run(config, base, model, tokenizer, registry, result, progress,
                               evaluators=_point_evaluators(config), base_cache=base_cache)
    key, loss = capability_loss(evaluations["capability"].metrics)
    point = {"bias_weight": weight, "budget": budget.model_dump(exclude_none=True),
             "neurons_removed": plan.n_neurons, "params_removed_pct": 100.0 * result.fraction_removed,
             "bias_reduction_pct": float(evaluations["activation_bias"].metrics["reduction_pct"]),
             "capability_loss_pct": loss, "capability_metric": key, "pareto": False, "chosen": False}
    logger.info("sweep point %s", point)
    return point


def write_sweep_files(directory: Path, points: list[dict[str, Any]], chosen: dict[str, Any] | None,
                      limit: float | None) -> None:
    """``sweep.json`` (every point) and ``sweep.md`` (a table with the Pareto front marked)."""
    (directory / "sweep.json").write_text(json.dumps({"max_perplexity_increase": limit, "points": points,
                                                      "chosen": chosen}, indent=1))
    header = "| bias_weight | budget | params removed | bias reduction | capability loss | Pareto | chosen |"
    lines = ["# fairprune sweep", "", header, "|---|---|---|---|---|---|---|"]
    for p in points:
        budget = ", ".join(f"{k}={v}" for k, v in p["budget"].items())
        lines.append(f"| {p['bias_weight']} | {budget} | {p['params_removed_pct']:.3f}% | "
                     f"{p['bias_reduction_pct']:+.2f}% | {p['capability_loss_pct']:+.2f}% ({p['capability_metric']}) "
                     f"| {'yes' if p['pareto'] else ''} | {'**yes**' if p['chosen'] else ''} |")
    if limit is not None and chosen is None:
        lines += ["", f"No point kept the capability loss within {limit}%; no model was saved."]
    (directory / "sweep.md").write_text("\n".join(lines) + "\n")
