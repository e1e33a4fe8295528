"""Read what a finished run (or sweep) directory holds, for plots and the HTML report; nothing is recomputed here
unless asked (importance of every neuron and the models are loaded on demand)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from ..core.contract.errors import FairpruneError, PersistError

logger = logging.getLogger(__name__)

#: failures that cost a report one plot or table, never the whole page
RECOVERABLE: tuple[type[BaseException], ...] = (FairpruneError, OSError, ValueError, KeyError, TypeError,
                                                RuntimeError, ImportError)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PersistError(f"{path}: not valid JSON ({exc})") from None


@dataclass
class RunFiles:
    """The files of one run directory: ``metrics.json``, ``plan.json``, ``config.yaml``, ``sweep.json``, ``bias/``."""

    directory: Path
    metrics: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    #: the run's pruned model while the run itself writes its report: used instead of reloading the saved one
    model: Any = None

    @cached_property
    def bias(self) -> Any | None:
        """The saved ``BiasReport`` (``bias/``), or None when absent or unreadable (the reason goes to ``notes``)."""
        if not (self.directory / "bias").exists():
            return None
        try:
            from ..core.method.bias import BiasReport

            return BiasReport.load(self.directory / "bias")
        except RECOVERABLE as exc:  # a report without neuron plots is still useful
            self.notes.append(f"bias/ could not be read: {exc}")
            logger.warning("bias report in %s could not be read: %s", self.directory, exc)
            return None

    def removed(self) -> dict[int, list[int]]:
        """Removed neurons per layer from ``plan.json`` (empty without a plan)."""
        return {int(k): [int(i) for i in v] for k, v in (self.plan or {}).get("removed", {}).items()}

    def plan_settings(self) -> dict[str, Any]:
        return dict((self.plan or {}).get("settings", {}))

    def evaluation(self, name: str) -> dict[str, Any]:
        return (self.metrics or {}).get("evaluation", {}).get(name, {})

    def table(self, evaluator: str, table: str) -> list[dict[str, Any]]:
        return list(self.evaluation(evaluator).get("tables", {}).get(table, []))

    def has_model(self) -> bool:
        return any(self.directory.glob("*.safetensors")) and (self.directory / "config.json").exists()


def load_run(directory: str | Path) -> RunFiles:
    """Read a run or sweep directory; raises ``PersistError`` naming the folder when it holds neither."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PersistError(f"run directory {str(directory)!r} does not exist")
    files = {name: directory / name for name in ("metrics.json", "plan.json", "sweep.json")}
    if not files["metrics.json"].exists() and not files["sweep.json"].exists():
        raise PersistError(f"{str(directory)!r} is not a fairprune run or sweep directory "
                           "(no metrics.json or sweep.json)")
    run = RunFiles(directory, **{name.split(".")[0]: _read_json(path) for name, path in files.items() if path.exists()})
    if (directory / "config.yaml").exists():
        import yaml

        run.config = yaml.safe_load((directory / "config.yaml").read_text())
    return run


def full_importance(run: RunFiles) -> dict[int, Any] | None:
    """Importance of every base-model neuron, rebuilt from the saved pruned model plus the plan's records.

    A kept neuron keeps its weights, so weight-based importance of the pruned model is
    the base model's on the kept neurons; removed ones come from ``plan.json`` records.
    Returns None (with a note) when the model, the plan or the metric cannot be used.
    """
    import torch

    settings = run.plan_settings()
    cost = (run.bias.extra.get("capability_cost") if run.bias is not None else None) or None
    if settings.get("method") == "attribution" and cost:  # the base model's cost of every neuron, saved by selection
        return dict(cost)
    metric = settings.get("importance")
    if not run.plan or not metric or metric == "precomputed" or (run.model is None and not run.has_model()):
        run.notes.append("importance of every neuron needs plan.json, a named importance metric and the saved model")
        return None
    try:
        from ..core.io.persist import load_pretrained
        from ..core.method.surgery import importance

        # a second copy of the weights would be the peak of a run's memory: the run passes its model in
        model = run.model if run.model is not None else load_pretrained(run.directory)[0]
        stats = _kept_stats(run, model)
        pruned = importance(model, metric, stats=stats, params=settings.get("importance_params") or None)
    except RECOVERABLE as exc:
        run.notes.append(f"importance could not be recomputed: {exc}")
        logger.warning("importance for %s could not be recomputed: %s", run.directory, exc)
        return None
    removed, widths = run.removed(), run.plan.get("widths_before", [])
    records = {(int(r["layer"]), int(r["neuron"])): float(r["importance"]) for r in run.plan.get("records", [])}
    full: dict[int, Any] = {}
    for layer, width in enumerate(widths):
        values = torch.zeros(width)
        gone = removed.get(layer, [])
        kept = torch.tensor(sorted(set(range(width)) - set(gone)), dtype=torch.long)
        values[kept] = pruned[layer] if pruned[layer].numel() == kept.numel() else pruned[layer][kept]
        for n in gone:
            values[n] = records[(layer, n)]
        full[layer] = values
    return full


def _kept_stats(run: RunFiles, model: Any) -> dict[int, dict[str, Any]] | None:
    """The bias report's activation statistics restricted to the kept neurons (for activation-aware importance)."""
    report = run.bias
    magnitude = getattr(report, "magnitude", None)
    if not magnitude:
        return None
    from ..core.model.adapters import resolve_adapter, widths

    current = widths(model, resolve_adapter(model))
    removed = run.removed()
    stats = {}
    for layer, mag in magnitude.items():
        gone = set(removed.get(layer, [])) if current[layer] != mag.numel() else set()
        keep = [i for i in range(mag.numel()) if i not in gone]
        entry = {"mean_abs": mag[keep]}
        if getattr(report, "mean", None):
            entry["mean"] = report.mean[layer][keep]
        stats[layer] = entry
    return stats
