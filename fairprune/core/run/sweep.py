"""A grid over budgets (and the method's sweep variants, e.g. bias weights) sharing one analysis; the Pareto
front of bias vs capability.

One model is held: the base is observed once, then each point prunes it in
place, is observed and compared, and the touched layers are restored exactly.
Which figures a point is judged by comes from the evaluators' headlines (roles
``bias`` and ``capability``) or ``sweep.bias_metric`` / ``sweep.capability_metric``;
the core names no evaluator. With a capability constraint, the point with the
largest bias reduction under it is saved as a full run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract.config import load_config
from ..contract.errors import ConfigError
from ..io.outputs import releasing_claims

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    """All points (as in ``sweep.json``), the chosen one (or None) and where it was written."""

    points: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    output_dir: Path | None  # None in torchrun processes other than rank 0
    run: Any = None
    timings: dict[str, float] = field(default_factory=dict)


def metric_choice(run: Any, key: str | None, role: str) -> list[tuple[str, str]]:
    """Candidate ``(evaluator, metric)`` pairs for the sweep's bias or capability figure, in preference order:
    the configured ``evaluator.metric``, else every headline with ``role`` of the run's evaluators."""
    if key is not None:
        evaluator, _, metric = key.partition(".")
        if not metric or evaluator not in dict(run.plugins.evaluators):
            raise ConfigError(f"sweep.{role}_metric: {key!r} must be 'evaluator.metric' with an evaluator of "
                              f"evaluation.evaluators ({', '.join(n for n, _ in run.plugins.evaluators)})")
        return [(evaluator, metric)]
    found = [(name, h.key) for name, ev in run.plugins.evaluators for h in getattr(ev, "headlines", ())
             if h.role == role]
    if not found:
        raise ConfigError(f"sweep: no evaluator in evaluation.evaluators declares a {role!r} headline; add one "
                          f"(e.g. activation_bias, capability) or set sweep.{role}_metric")
    return found


def point_figure(evaluations: dict[str, Any], candidates: list[tuple[str, str]], role: str) -> tuple[str, float]:
    """The first candidate metric a point reported: ``("evaluator.metric", value)``."""
    for evaluator, metric in candidates:
        value = evaluations.get(evaluator).metrics.get(metric) if evaluator in evaluations else None
        if value is not None:
            return f"{evaluator}.{metric}", float(value)
    raise ConfigError(f"sweep: the evaluators reported none of the {role} metrics "
                      f"{', '.join(f'{e}.{m}' for e, m in candidates)}")


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


def _sweep_metrics(run: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The bias and capability figures each grid point is judged by (one evaluator each, which keeps points
    fast); ``ConfigError`` for a setting a sweep cannot honour, before the model loads."""
    config = run.config
    if config.pruning.recovery is not None:
        raise ConfigError("pruning.recovery: a sweep restores only the planned layers between its points, and "
                          "recovery trains every layer's MLP; sweep without it, then `fairprune run` the chosen point "
                          "with pruning.recovery")
    bias_keys = metric_choice(run, config.sweep.bias_metric, "bias")
    cap_keys = metric_choice(run, config.sweep.capability_metric, "capability")
    return [k for k in bias_keys if k[0] == bias_keys[0][0]], [k for k in cap_keys if k[0] == cap_keys[0][0]]


def check_sweep(config: Any, overrides: list[str] | None = None, *, max_perplexity_increase: float | None = None,
                registry: Any = None) -> str:
    """What ``sweep`` would do, after every check it makes before loading the model (``pipeline.check`` and the
    sweep's own), as a few lines of text; nothing is loaded or written."""
    from . import pipeline

    def grid(run: Any) -> list[str]:
        bias_keys, cap_keys = _sweep_metrics(run)
        limit = (max_perplexity_increase if max_perplexity_increase is not None
                 else run.config.sweep.max_perplexity_increase)
        variants = run.plugins.method.sweep_variants(run.config.sweep)
        budgets = [b.model_dump(exclude_none=True) for b in run.config.sweep.budgets]
        return [f"  grid         {len(budgets) * len(variants)} points: budgets {budgets}"
                + (f" x {len(variants)} method variants" if len(variants) > 1 else ""),
                f"  judged by    {' or '.join(f'{e}.{k}' for e, k in bias_keys)} (the first measured) against "
                f"{' or '.join(f'{e}.{k}' for e, k in cap_keys)}"
                + (f" (at most {limit}%)" if limit is not None else "")]

    return pipeline.check(config, overrides, registry, also=grid)


@releasing_claims
def sweep(config: Any, overrides: list[str] | None = None, *, max_perplexity_increase: float | None = None,
          registry: Any = None, progress: bool = True) -> SweepResult:
    """Run the grid in ``config.sweep`` on one model: the base is observed once, each point is pruned in place,
    observed and restored; the chosen point (under the capability constraint) is saved as a full run.

    Under torchrun every process runs the grid: each point's plan is checked to be the same in every process
    and its observe passes are shared among them (as in a run), so the points are those of one process; rank
    0 alone writes, and the other processes return the points without an output directory.
    """
    from ..method.attribution import stop_together
    from ..model.distributed import current, is_main_process
    from . import pipeline

    run = pipeline.prepare(config, overrides, registry, progress)
    config = run.config
    limit = max_perplexity_increase if max_perplexity_increase is not None else config.sweep.max_perplexity_increase
    bias_keys, cap_keys = _sweep_metrics(run)
    needed = {bias_keys[0][0], cap_keys[0][0]}
    point_evaluators = [(n, e) for n, e in run.plugins.evaluators if n in needed]
    with run.timer.stage("load"):
        pipeline.load(run)
    world = current()  # None in one process
    with run.timer.stage("analyze"):
        pipeline.analyze(run)
    with run.timer.stage("observe_base"):
        pipeline.observe_base(run, world=world)
    points, plans = [], []
    with run.timer.stage("grid"):
        for budget in config.sweep.budgets:
            for variant in run.plugins.method.sweep_variants(config.sweep):
                point, plan = _run_point(run, variant, budget, point_evaluators, bias_keys, cap_keys, world)
                points.append(point)
                plans.append(plan)
    for i in pareto_front(points):
        points[i]["pareto"] = True
    chosen = choose(points, limit)
    if chosen is not None:
        chosen["chosen"] = True
    logger.info("sweep: %d points, %d on the Pareto front, chosen: %s", len(points),
                sum(p["pareto"] for p in points), chosen)
    if chosen is None:
        if not is_main_process():
            return SweepResult(points, None, None, None, run.timer.timings)
        _save_points_only(run, points, limit)
        return SweepResult(points, None, run.output_dir, None, run.timer.timings)
    run.config = load_config(config, [f"method.{key}={json.dumps(value)}" for key, value in chosen["variant"].items()]
                             + [f"pruning.budget={json.dumps(chosen['budget'])}"])
    run.plan = plans[points.index(chosen)]  # the plan the chosen point was measured with
    with stop_together(world):
        run.prune_result = pipeline.apply_plan(run, run.plan)
    run.evaluations = pipeline.evaluate_pruned(run, run.prune_result, world=world)
    run.metrics = pipeline.collect_metrics(run)
    if not is_main_process():  # every process holds the same points and metrics; rank 0 alone writes them
        return SweepResult(points, chosen, None, run.metrics, run.timer.timings)
    pipeline.save_run(run, extra=lambda staging: write_sweep_files(staging, points, chosen, limit))
    return SweepResult(points, chosen, run.output_dir, run.metrics, run.timer.timings)


def _save_points_only(run: Any, points: list[dict[str, Any]], chosen_limit: float | None) -> None:
    from ..io.outputs import atomic_directory

    with atomic_directory(run.output_dir, overwrite=run.config.output.overwrite) as staging:
        staging.mkdir()
        run.bias_report.save(staging / "bias")
        write_sweep_files(staging, points, None, chosen_limit)


def _run_point(run: Any, variant: dict[str, Any], budget: Any, evaluators: list[tuple[str, Any]],
               bias_keys: list[tuple[str, str]], cap_keys: list[tuple[str, str]],
               world: Any = None) -> tuple[dict[str, Any], Any]:
    """Prune the run's model in place for one grid point, observe and compare, then restore it exactly; the
    point's figures and its plan. With ``world`` every process runs the point and its observe passes are shared."""
    from ..method.attribution import stop_together
    from ..method.surgery import snapshot_layers
    from . import pipeline

    with stop_together(world):
        plan = pipeline.make_plan(run, budget=budget, variant=variant)
    pipeline.check_same_plan(plan, world)
    snapshot = snapshot_layers(run.model, run.adapter, plan.to_mapping(),
                               only_planned=bool(getattr(run.plugins.pruner, "changes_only_planned", False)))
    try:
        with stop_together(world):
            result = pipeline.apply_plan(run, plan)
        evaluations = pipeline.evaluate_pruned(run, result, evaluators, world=world)
    finally:
        snapshot.restore()
    bias_key, bias = point_figure(evaluations, bias_keys, "bias")
    cap_key, loss = point_figure(evaluations, cap_keys, "capability")
    point = {"variant": dict(variant), **variant, "budget": budget.model_dump(exclude_none=True),
             "neurons_removed": plan.n_neurons, "params_removed_pct": 100.0 * result.fraction_removed,
             "bias_reduction_pct": bias, "bias_metric": bias_key, "capability_loss_pct": loss,
             "capability_metric": cap_key, "pareto": False, "chosen": False}
    logger.info("sweep point %s", point)
    return point, plan


def write_sweep_files(directory: Path, points: list[dict[str, Any]], chosen: dict[str, Any] | None,
                      limit: float | None) -> None:
    """``sweep.json`` (every point) and ``sweep.md`` (a table with the Pareto front marked)."""
    (directory / "sweep.json").write_text(json.dumps({"max_perplexity_increase": limit, "points": points,
                                                      "chosen": chosen}, indent=1))
    header = "| settings | budget | params removed | bias reduction | capability loss | Pareto | chosen |"
    lines = ["# fairprune sweep", "", header, "|---|---|---|---|---|---|---|"]
    for p in points:
        budget = ", ".join(f"{k}={v}" for k, v in p["budget"].items())
        variant = ", ".join(f"{k}={v}" for k, v in p["variant"].items()) or "-"
        lines.append(f"| {variant} | {budget} | {p['params_removed_pct']:.3f}% | "
                     f"{p['bias_reduction_pct']:+.2f}% | {p['capability_loss_pct']:+.2f}% ({p['capability_metric']}) "
                     f"| {'yes' if p['pareto'] else ''} | {'**yes**' if p['chosen'] else ''} |")
    if limit is not None and chosen is None:
        lines += ["", f"No point kept the capability loss within {limit}%; no model was saved."]
    (directory / "sweep.md").write_text("\n".join(lines) + "\n")
