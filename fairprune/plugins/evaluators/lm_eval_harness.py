"""The ``lm_eval`` evaluator: LAMBADA and BoolQ through lm-evaluation-harness, offline, from local JSONL files.

lm-evaluation-harness is an optional extra (``pip install fairprune[lm_eval]``),
imported only when this evaluator runs. Each task is written as a custom task
YAML (``dataset_path: json`` with the given file) into a temporary directory, so
nothing is downloaded; our in-memory models are wrapped in lm_eval's ``HFLM``, or,
when HFLM cannot be imported (it needs ``accelerate``), in ``lm_eval_adapter.ScoringLM``.
CIs are lm_eval's standard errors times 1.96 (normal approximation).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from ...core.contract.errors import ConfigError, FairpruneError
from ...core.contract.plugin import Plugin, StrictParams
from ...core.contract.results import EvalContext, EvalResult, change_pct

logger = logging.getLogger(__name__)


class LmEvalParams(StrictParams):
    """Options of the lm_eval evaluator; a task runs only when its data file is given."""

    model_config = ConfigDict(extra="forbid")
    lambada_path: str | None = Field(None, description="LAMBADA-format JSONL ({'text': ...} per line)")
    boolq_path: str | None = Field(None, description="BoolQ JSONL (passage, question, and label 0/1 or answer bool)")
    limit: int | None = Field(None, ge=1, description="first N examples of each task (None = all)")
    batch_size: int | None = Field(None, ge=1, description="lm_eval batch size (default: the context's)")
    backend: Literal["auto", "hflm", "fairprune"] = Field(
        "auto", description="hflm: lm_eval's HFLM (needs accelerate); fairprune: our scorer; auto: HFLM if importable")


def task_configs(params: LmEvalParams) -> dict[str, dict[str, Any]]:
    """lm_eval custom task configurations, keyed by our task name, for the data files given."""
    tasks: dict[str, dict[str, Any]] = {}
    if params.lambada_path:
        tasks["lambada"] = {
            "task": "fairprune_lambada", "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": _existing(params.lambada_path, "lambada_path")}},
            "output_type": "loglikelihood", "test_split": "test",
            "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}", "doc_to_target": "{{' '+text.split(' ')[-1]}}",
            "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                            {"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0}}
    if params.boolq_path:
        tasks["boolq"] = {
            "task": "fairprune_boolq", "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"validation": _existing(params.boolq_path, "boolq_path")}},
            "output_type": "multiple_choice", "validation_split": "validation",
            "doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:",
            "doc_to_target": "{{((1 if answer else 0) if label is not defined or label is none else label)}}",
            "doc_to_choice": ["no", "yes"], "metric_list": [{"metric": "acc"}], "metadata": {"version": 1.0}}
    return tasks


def _existing(path: str, what: str) -> str:
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ConfigError(f"lm_eval.{what}: no such file {str(file)!r}")
    return str(file)


def make_lm(model: Any, tokenizer: Any, batch_size: int, backend: str = "auto") -> Any:
    """Wrap an in-memory model as an lm_eval ``LM``: ``HFLM`` when possible, else our ``ScoringLM``."""
    if backend in ("auto", "hflm"):
        try:
            from lm_eval.models.huggingface import HFLM
        except ImportError as exc:
            if backend == "hflm":
                raise FairpruneError(f"lm_eval's HFLM cannot be imported ({exc}); install accelerate, or use "
                                     "lm_eval.backend: fairprune") from exc
            logger.info("lm_eval HFLM unavailable (%s); using fairprune's scorer as the lm_eval model", exc)
        else:
            return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    from .lm_eval_adapter import ScoringLM

    return ScoringLM(model, tokenizer, batch_size)


def run_tasks(model: Any, tokenizer: Any, tasks: dict[str, dict[str, Any]], limit: int | None,
              batch_size: int, backend: str = "auto") -> dict[str, dict[str, float]]:
    """Run the tasks on one model; ``{our task: {metric: value, metric_stderr: value}}``."""
    try:
        import yaml
        from lm_eval import simple_evaluate
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise FairpruneError("the lm_eval evaluator needs lm-evaluation-harness: pip install 'fairprune[lm_eval]' "
                             f"({exc})") from exc
    with tempfile.TemporaryDirectory(prefix="fairprune-lm-eval-") as tmp:
        for config in tasks.values():
            (Path(tmp) / f"{config['task']}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        manager = TaskManager(include_path=tmp, include_defaults=False)
        lm = make_lm(model, tokenizer, batch_size, backend)
        out = simple_evaluate(model=lm, tasks=[c["task"] for c in tasks.values()], limit=limit,
                              task_manager=manager, bootstrap_iters=1000, log_samples=False, verbosity="ERROR")
    metrics: dict[str, dict[str, float]] = {}
    for ours, config in tasks.items():
        raw = out["results"][config["task"]]
        metrics[ours] = {key.split(",")[0]: float(value) for key, value in raw.items()
                         if "," in key and isinstance(value, (int, float))}
    return metrics


class LmEvalEvaluator(Plugin):
    """Standard benchmarks through lm-evaluation-harness, from local files only."""

    name = "lm_eval"
    description = "LAMBADA and BoolQ through lm-evaluation-harness (optional extra), offline from local JSONL"
    Params = LmEvalParams

    needs_groups = False
    headlines = ()

    def observe(self, model, context: EvalContext) -> dict[str, dict[str, float]]:
        """``{task: {metric: value, metric_stderr: value}}`` of one model."""
        tasks = task_configs(self.params)
        if not tasks:
            raise ConfigError("lm_eval needs data: set lm_eval.lambada_path and/or lm_eval.boolq_path "
                              "(local JSONL files; nothing is downloaded)")
        batch = self.params.batch_size or context.batch_size
        return run_tasks(model, context.tokenizer, tasks, self.params.limit, batch, self.params.backend)

    def compare(self, base: dict[str, dict[str, float]], pruned: dict[str, dict[str, float]],
                context: EvalContext) -> EvalResult:
        tasks = list(base)
        found = {"base": base, "pruned": pruned}
        result = EvalResult(self.name)
        rows = []
        for task in tasks:
            for metric in sorted(m for m in found["base"][task] if not m.endswith("_stderr")):
                for label in ("base", "pruned"):
                    value = found[label][task][metric]
                    err = found[label][task].get(f"{metric}_stderr", float("nan"))
                    result.add(f"{task}_{metric}_{label}", value, (value - 1.96 * err, value + 1.96 * err))
                b, q = found["base"][task][metric], found["pruned"][task][metric]
                result.add(f"{task}_{metric}_change_pct", change_pct(b, q))
                rows.append({"task": task, "metric": metric, "base": b, "pruned": q, "change_pct": change_pct(b, q)})
        result.tables["lm_eval"] = rows
        lines = ["| lm_eval task | metric | base | pruned | change % |", "|---|---|---|---|---|"]
        lines += [f"| {r['task']} | {r['metric']} | {r['base']:.4g} | {r['pruned']:.4g} | {r['change_pct']:+.2f} |"
                  for r in rows]
        result.summary = "\n".join(lines)
        return result
