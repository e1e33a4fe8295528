"""The built-in report plugin: ``report.md``, the model card (``README.md``) and ``report.html`` of a run.

It implements the ``fairprune_write_run_files`` hook. All figures are read from
the metrics dictionary that is also written to ``metrics.json`` (headlines as
the evaluators declared them), so what a person reads always matches what a
program reads. ``report.html`` needs matplotlib (the ``viz`` extra); without it
the Markdown files are still written and a warning says what to install.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from ..core.contract.hookspecs import hookimpl
from ..core.contract.summary import headline_rows, headlines, metric
from .evidence_card import evidence_section

logger = logging.getLogger(__name__)


def _table(rows: list[tuple[str, str]], header: tuple[str, str] = ("", "")) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def report_markdown(config: Any, metrics: dict[str, Any], evaluations: dict[str, Any]) -> str:
    """``report.md``: headline figures, each evaluator's section, the plan settings and the config."""
    parts = [f"# fairprune report: {config.model.source}", "",
             f"Config hash `{metrics['config_hash'][:12]}`; bias axes: {', '.join(config.bias.axes)}; site "
             f"`{config.bias.site}`; method `{config.method.name}` ({_params_text(config)}); pruner "
             f"`{config.pruning.pruner.name}`, budget {config.pruning.budget.describe()}.", "",
             *_at_a_glance(metrics),
             "## Headline figures (held-out prompts, base vs pruned)", "", _table(headline_rows(metrics), ("", "")), ""]
    parts += attribution_section(metrics)
    for name, result in evaluations.items():
        if getattr(result, "summary", ""):
            parts += [f"## {name}", "", result.summary.strip(), ""]
    parts += ["## Config", "", "```yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).strip(),
              "```", ""]
    return "\n".join(parts)


def attribution_section(metrics: dict[str, Any]) -> list[str]:
    """The attribution method's check: predicted vs measured change of its objective on the analysis groups."""
    check = metrics.get("pruning", {}).get("attribution")
    if not check:
        return []
    agree = "agree" if check["signs_agree"] else "**disagree: the first-order estimate was wrong about the direction**"
    return ["## Attribution check (analysis groups)", "",
            f"Objective `{check['objective']}`: {check['objective_before']:.6g} before, {check['objective_after']:.6g} "
            f"with the chosen neurons removed (measured change {check['measured_change']:+.4g}, "
            f"{check['measured_change_pct']:+.1f}%; first-order prediction {check['predicted_change']:+.4g}); the "
            f"signs {agree}. {check['rounds_run']} round(s); stopped because {check['stop_reason']}.", ""]


def _at_a_glance(metrics: dict[str, Any]) -> list[str]:
    """The evidence table, findings and verdict under their heading ([] when the run measured none of them)."""
    section = evidence_section(metrics)
    if not section:
        return []
    return ["## At a glance: fairer, or deafer?", "",
            "Between groups vs between two words for the same group, whether the model still names the group it "
            "was told, the method against random neurons, transfer, stereotype preference and capability; 95% "
            "bootstrap intervals in brackets.", "", *section]


def _measured_bias(metrics: dict[str, Any]) -> bool:
    """Whether the run measured any bias figure (a headline of role ``bias`` with a value)."""
    return any(h.get("role") == "bias" and metric(metrics, evaluator, h["key"]) is not None
               for evaluator, h in headlines(metrics))


def model_card(config: Any, metrics: dict[str, Any], base_model: str, license: str | None = None) -> str:
    """A Hugging Face model card (``README.md``) stating the measured figures and limitations; its front matter
    carries them as a ``model-index`` the Hub reads, and ``library_name`` says which library loads the directory
    (``transformers`` only when every layer kept the same MLP width, else ``fairprune``)."""
    from .hub_card import loading, model_index

    library, how_to_load = loading(metrics)
    front: dict[str, Any] = {"base_model": base_model, "library_name": library,
                             "pipeline_tag": "text-generation",
                             "tags": ["fairprune", "fairness", "bias-mitigation", "pruning", "structured-pruning"]}
    if license:
        front["license"] = license
    index = model_index(Path(config.output.dir).name, metrics, config.evaluation.axes or config.bias.axes)
    if index:
        front["model-index"] = index
    pr = metrics["pruning"]
    chosen, method = _method_text(config)
    body = [
        f"# {Path(config.output.dir).name}", "",
        f"A fairness-pruned version of `{base_model}` made with fairprune. {pr['neurons_removed']} MLP neurons "
        f"({pr['params_removed_pct']:.3f}% of the parameters) were removed structurally: {chosen} in prompt groups "
        f"of the axes {', '.join(config.bias.axes)}.", "",
        *_at_a_glance(metrics),
        "## Method", "",
        *(f"{i}. {step}" for i, step in enumerate([
            *method, f"Budget {config.pruning.budget.describe()}; pruner `{config.pruning.pruner.name}`.",
            *_recovery_lines(pr)], 1)), "",
        "## Loading", "", how_to_load, "",
        *attribution_section(metrics),
        "## Measured figures", "",
        ("Bias figures are on held-out templates never used to choose neurons; 95% bootstrap intervals in brackets."
         if _measured_bias(metrics) else "**No bias figure was measured in this run** (no bias evaluator ran), so this "
         "card shows no evidence that the pruned model is fairer; run `fairprune evaluate` with the bias evaluators."),
        "", _table(headline_rows(metrics), ("measure", "value")), "",
        "## Limitations", "",
        "- The held-out bias figures come from template prompts written for fairprune, and benchmark figures (where "
        "listed above) cover only their benchmark's sentences and categories; neither proves the model is fair in "
        "other contexts or languages.",
        "- Only the listed axes were targeted; other kinds of bias may be unchanged or larger.",
        "- Structural pruning changes the model: check the capability figures above for your use.",
        *(["- The capability cost that guarded the selection was estimated on the bundled general English text, "
           "so a perplexity measured on that text is in-sample; prefer held-out capability figures (LAMBADA)."]
          if config.method.name == "attribution" else []),
        "- Inherits all limitations and the licence of the base model.", "",
    ]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(body)


def method_params(config: Any) -> Any:
    """The run's method params, validated by the registered method (defaults filled in)."""
    from fairprune.core.contract.registry import get_registry

    return get_registry().get("methods", config.method.name).Params.model_validate(config.method.params)


def _params_text(config: Any) -> str:
    """The method's params as ``key value`` pairs, components by name (as configured for a method that is not
    built in, with its defaults filled in for a built-in one)."""
    builtin = config.method.name in ("activation", "attribution")
    params = dict(method_params(config)) if builtin else config.method.params
    text = ", ".join(f"{key} {getattr(value, 'name', None) or (value.get('name') if isinstance(value, dict) else value)}"
                     for key, value in params.items() if value is not None)
    return text or "default params"


def _recovery_lines(pruning: dict[str, Any]) -> list[str]:
    """The card's line on recovery distillation (``pruning.recovery``), or none when it did not run."""
    rec = pruning.get("recovery")
    if rec is None:
        return []
    if not rec["kept"]:
        return [("Recovery distillation ran but did not lower the KL divergence to the unpruned model on held-out "
                 "text, so its weight changes were undone: the weights are the pruned model's.")]
    return [(f"Recovery distillation: the kept MLP weights were then trained for {rec['steps']} steps towards the "
            "unpruned model's next-token distributions on general text (KL divergence on held-out text "
            f"{rec['held_out_kl_before']:.4f} → {rec['held_out_kl_after']:.4f} nats per token). Every figure below "
            "is of the model after recovery; the random-neuron control is not recovered.")]


def _method_text(config: Any) -> tuple[str, list[str]]:
    """What the card says was removed and how, for the configured method: a phrase and the method's steps
    (unnumbered; ``model_card`` numbers them with the budget and recovery steps)."""
    if config.method.name not in ("activation", "attribution"):
        return f"the neurons chosen by the `{config.method.name}` method", [
            f"Method `{config.method.name}` ({_params_text(config)}) on the analysis prompt groups."]
    bias, a = config.bias, method_params(config)
    if config.method.name == "attribution":
        return ("the neurons whose removal was estimated, and then measured, to make the model's outputs differ "
                "less between prompts that differ only in a demographic attribute"), [
            f"Signed attribution: for every MLP neuron, the first-order change of the output-level bias "
            f"objective `{a.objective.name}` when the neuron is removed, from backward passes over the "
            "analysis prompt groups; only neurons whose removal lowers it are candidates"
            + (f" in each of {a.folds} folds of the groups split by template (a neuron's gain is its smallest "
               "fold's)." if a.folds > 1 else "."),
            f"Capability guard: the same estimate on the language-model loss of a calibration text "
            f"(`{a.capability.name}`); the costliest {a.guard_fraction:.0%} of each layer are protected and "
            f"candidates are ranked by `{a.ranking}`. Up to {a.rounds} rounds, recomputed on the model as pruned "
            f"so far; a round is kept only if the measured calibration perplexity rises by at most "
            f"{a.max_perplexity_increase_pct}% and the measured objective falls"
            + (f"; selection stops once the measured objective is {a.target_reduction_pct}% below its start."
               if a.target_reduction_pct is not None else "."),
            *_cloze_guard(a), *_deafness_guards(a)]
    return ("the neurons whose activation moved most with the demographic word, weighed against their "
            "importance"), [
        f"Prompt groups differing only in a demographic attribute ran through the base model; the "
        f"`{bias.site}` activation of every MLP neuron was pooled (`{a.pooling}`) and scored with "
        f"`{a.metric.name}`.",
        f"Importance `{a.importance.name}`; scorer `{a.scorer.name}` with bias weight "
        f"{a.bias_weight}; {a.selection} selection."]


def _deafness_guards(params: Any) -> list[str]:
    """The method list's line for the attribution guards against deafness that are on (none: no line)."""
    parts = []
    if params.recall is not None:
        parts.append(f"the {params.recall.guard_fraction:.0%} of each layer whose removal is estimated to cost most "
                     "recall of the stated group are protected, and a round that lowers measured recall by more "
                     f"than {params.recall.max_drop_pts} points is halved or rejected")
    if params.floor_guard:
        parts.append("a neuron is removed only if its removal is estimated to lower the between-group divergence "
                     "by a larger share than the divergence between two words for one group, and a round whose "
                     "measured divergences do not show that is halved (the floor guard)")
    return [f"Guards against deafness: {'; '.join(parts)}."] if parts else []


def _cloze_guard(params: Any) -> list[str]:
    """The method list's line for the name passages (``method.cloze_check``; none when it is off)."""
    cloze = params.cloze_check
    if cloze is None:
        return []
    parts = []
    source = ("passages that end in a name they used before" if cloze.passages is None
              else f"the passages of `{cloze.passages}`")
    read = f"{cloze.limit} of the " if cloze.limit is not None else ""
    if cloze.guard_fraction:
        parts.append(f"the {cloze.guard_fraction:.0%} of each layer whose removal is estimated to raise most the "
                     f"last-word loss of {read}{source} are protected")
    if cloze.max_increase_pct is not None:
        sample = f" (measured on a seeded sample of {cloze.check_limit})" if cloze.check_limit is not None else ""
        parts.append(f"a round that raises their last-word perplexity{sample} by more than "
                     f"{cloze.max_increase_pct}% is halved or rejected")
    return [f"Name passages (a LAMBADA-like check): {'; '.join(parts)}."]


def write_html_report(directory: str | Path, model: Any = None) -> Path | None:
    """Write ``report.html`` beside ``report.md`` (plots embedded) from a run directory's files and, when given,
    the run's pruned ``model`` (not reloaded then); None (with a warning) when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.warning("report.html not written: it needs matplotlib (pip install 'fairprune[viz]'); "
                       "report.md and the model card are written")
        return None
    from ..viz.html import build_report

    return build_report(directory, model=model)


@hookimpl
def fairprune_write_run_files(run, directory):
    """report.md, the model card README.md (when the model is saved) and report.html."""
    directory = Path(directory)
    (directory / "report.md").write_text(report_markdown(run.config, run.metrics, run.evaluations))
    if run.config.output.save_model:
        (directory / "README.md").write_text(model_card(run.config, run.metrics, run.base_model_id, run.license))
    write_html_report(directory, run.model)
    return True
