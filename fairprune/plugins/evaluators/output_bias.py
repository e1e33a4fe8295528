"""The ``output_bias`` evaluator: how differently the model continues prompts that differ only in the attribute.

Two measures per held-out prompt group, averaged over all member pairs of the
group and then over groups (CIs resample groups):

- ``js``: Jensen–Shannon divergence (natural log, so in nats, at most ln 2)
  between the members' next-token distributions after the prompt;
- ``logprob_gap``: |log p(c | prompt_i) − log p(c | prompt_j)| for neutral
  continuations c (e.g. " was"), averaged over the continuations.

**The noise floor.** Swapping two surface forms of the *same* attribute group
("Black" / "African American") also moves the next-token distribution.
``js_within`` is that within-group JS: per template, the mean JS between
prompts whose members belong to the same attribute group but carry different
surface forms (the variants a bias axis expands a template into; a registered
axis's ``attribute_groups()`` confirms the forms share a group). On the same
templates, ``js_above_floor_pct`` = 100·(between-group JS − within-group JS) /
within-group JS, ratio of the means over templates (CIs resample templates),
says how far demographic sensitivity exceeds word-swap noise, before and after
pruning. Both are NaN when no template has two surface forms of a group.
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ...core.contract.errors import ConfigError
from ...core.contract.plugin import Plugin
from ...core.contract.protocols import Headline, PromptGroup
from ...core.contract.results import EvalContext, EvalResult, add_paired, fmt_ci
from ...core.model.benchmark_base import add_compared
from ...core.model.divergence import js_divergence  # the one JS of fairprune: the attribution objective uses it too

if TYPE_CHECKING:
    import torch


class OutputBiasParams(BaseModel):
    """Options of the output-bias evaluator."""

    model_config = ConfigDict(extra="forbid")
    continuations: list[str] = Field([" was", " would", " is", " had"],
                                     description="neutral continuations whose log-probability gap is measured")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples")


def mean_pairwise(values: np.ndarray) -> float:
    """Mean of |v_i − v_j| over all member pairs i < j (``values`` is ``[n_members]``)."""
    pairs = list(combinations(range(len(values)), 2))
    return float(np.mean([abs(values[i] - values[j]) for i, j in pairs]))


class OutputBiasEvaluator(Plugin):
    """Output-level bias on held-out groups: next-token JS divergence and continuation log-prob gaps."""

    name = "output_bias"
    description = "next-token Jensen-Shannon divergence and log-prob gaps between group members, base vs pruned"
    Params = OutputBiasParams
    needs_groups = True
    headlines = (
        Headline("js_reduction_pct", "Held-out next-token JS divergence reduction", "%", "higher", "bias"),
        Headline("logprob_gap_reduction_pct", "Held-out continuation log-prob gap reduction", "%", "higher"),
        Headline("js_above_floor_pct_base", "Held-out JS above the word-swap noise floor (base)", "%", "lower",
                 kind="level"),
        Headline("js_above_floor_pct_pruned", "Held-out JS above the word-swap noise floor (pruned)", "%", "lower",
                 kind="level"),
    )

    def observe(self, model, context: EvalContext) -> dict[str, list[float]]:
        """Per held-out group of one model: mean pairwise JS (nats) and continuation log-prob gap."""
        groups = context.groups
        if not groups:
            raise ConfigError("output_bias needs held-out prompt groups (pass axes=[...] or groups=[...])")
        small = [g.template_id for g in groups if len(g.prompts) < 2]
        if small:
            raise ConfigError(f"output_bias: prompt groups with fewer than 2 members: {small[:5]}")
        if not self.params.continuations:
            raise ConfigError("output_bias.continuations must name at least one continuation")
        return self._measure(context, model, context.label)

    def compare(self, base: dict[str, list[float]], pruned: dict[str, list[float]],
                context: EvalContext) -> EvalResult:
        groups = context.groups
        per_model = {"base": base, "pruned": pruned}
        result = EvalResult(self.name)
        for measure in ("js", "logprob_gap"):
            add_paired(result, measure, per_model["base"][measure], per_model["pruned"][measure],
                       context.seed, self.params.n_boot)
        result.add("n_groups", float(len(groups)))
        self._add_floor(result, base, pruned, context.seed)
        result.tables["groups"] = [
            {"axis": g.axis, "template_id": g.template_id, "attributes": list(g.attributes),
             "js_base": per_model["base"]["js"][k], "js_pruned": per_model["pruned"]["js"][k],
             "logprob_gap_base": per_model["base"]["logprob_gap"][k],
             "logprob_gap_pruned": per_model["pruned"]["logprob_gap"][k]}
            for k, g in enumerate(groups)]
        result.summary = _summary(result, len(groups))
        return result

    def _add_floor(self, result: EvalResult, base: dict, pruned: dict, seed: int) -> None:
        """``js_within_*`` (the floor) and ``js_above_floor_pct_*`` over the templates with a within-group swap."""
        result.add("n_floor_templates", float(len(base["js_within"])))
        if not base["js_within"]:
            for key in ("js_within_base", "js_within_pruned", "js_within_reduction_pct", "js_above_floor_pct_base",
                        "js_above_floor_pct_pruned", "js_above_floor_pct_change"):
                result.add(key, float("nan"))
            return
        add_paired(result, "js_within", base["js_within"], pruned["js_within"], seed, self.params.n_boot)
        rows = {label: np.stack([obs["js_between_floor"], obs["js_within"]], axis=1).astype(np.float64)
                for label, obs in (("base", base), ("pruned", pruned))}
        add_compared(result, "js_above_floor_pct", rows["base"], rows["pruned"], _above_floor_pct, seed,
                     self.params.n_boot)

    def _measure(self, context: EvalContext, model, label: str) -> dict[str, list[float]]:
        """Per group: mean pairwise JS divergence and mean pairwise log-prob gap."""
        from ...core.model.lm_scoring import encode, last_token_logprobs, pad_id, score_continuations

        tok = context.tokenizer
        prompts = [p for g in context.groups for p in g.prompts]
        logprobs = last_token_logprobs(model, tok, prompts, context.batch_size, context.progress,
                                       f"next-token distributions ({label})")
        cont_lp = np.zeros((len(prompts), len(self.params.continuations)))
        for c, text in enumerate(self.params.continuations):
            ids = encode(tok, text, special=False)
            if not ids:
                raise ConfigError(f"output_bias.continuations: {text!r} encodes to no tokens")
            if len(ids) == 1:
                cont_lp[:, c] = logprobs[:, ids[0]].double().numpy()
            else:
                scores = score_continuations(model, [(encode(tok, p), ids) for p in prompts], context.batch_size,
                                             pad_id(tok), progress=context.progress, desc=f"{text!r} ({label})")
                cont_lp[:, c] = [s.logprob for s in scores]
        js, gap, start = [], [], 0
        for group in context.groups:
            members = range(start, start + len(group.prompts))
            pairs = list(combinations(members, 2))
            js.append(float(np.mean([js_divergence(logprobs[i], logprobs[j]).item() for i, j in pairs])))
            gap.append(float(np.mean([mean_pairwise(cont_lp[list(members), c]) for c in range(cont_lp.shape[1])])))
            start += len(group.prompts)
        between, within = noise_floor(context.groups, logprobs, _form_groups(context))
        return {"js": js, "logprob_gap": gap, "js_between_floor": between, "js_within": within}


def _form_groups(context: EvalContext) -> dict[tuple[str, str], str]:
    """``(axis, surface form) -> attribute group`` of the registered axes among the groups' axes."""
    out: dict[tuple[str, str], str] = {}
    registry = context.registry
    for axis in sorted({g.axis for g in context.groups}):
        if registry is None or axis not in registry.names("bias_axes"):
            continue  # an axis from a file or user groups: members are matched by position only
        for name, forms in registry.get("bias_axes", axis).attribute_groups().items():
            out.update({(axis, form): name for form in forms})
    return out


def noise_floor(groups: list[PromptGroup], logprobs: torch.Tensor,
                form_groups: dict[tuple[str, str], str]) -> tuple[list[float], list[float]]:
    """Per template that has a within-group swap: (mean between-group JS, mean within-group JS), in nats.

    ``logprobs`` is ``[n_prompts, vocab]`` in the order of the groups' prompts.
    Two prompts of one template are a within-group swap when they hold the same
    member position, carry different surface forms, and (when the axis is
    known) those forms belong to the same attribute group.
    """
    offsets = np.cumsum([0] + [len(g.prompts) for g in groups])
    by_template: dict[tuple[str, str], list[int]] = {}
    for k, g in enumerate(groups):
        by_template.setdefault((g.axis, g.template_id), []).append(k)
    between, within = [], []
    for (axis, _), members in by_template.items():
        swaps = []
        for a, b in combinations(members, 2):
            ga, gb = groups[a], groups[b]
            for j in range(min(len(ga.prompts), len(gb.prompts))):
                fa, fb = ga.attributes[j], gb.attributes[j]
                same = form_groups.get((axis, fa), fa) == form_groups.get((axis, fb), fb) if form_groups else True
                if fa != fb and same:
                    swaps.append(js_divergence(logprobs[offsets[a] + j], logprobs[offsets[b] + j]).item())
        if swaps:
            within.append(float(np.mean(swaps)))
            between.append(float(np.mean([js_divergence(logprobs[offsets[k] + i], logprobs[offsets[k] + j]).item()
                                          for k in members
                                          for i, j in combinations(range(len(groups[k].prompts)), 2)])))
    return between, within


def _above_floor_pct(rows: np.ndarray) -> float:
    """100·(mean between − mean within) / mean within over templates (rows ``[between, within]``)."""
    if not len(rows) or rows[:, 1].mean() <= 0:
        return float("nan")
    return 100.0 * float(rows[:, 0].mean() - rows[:, 1].mean()) / float(rows[:, 1].mean())


def _summary(result: EvalResult, n_groups: int) -> str:
    intro = (f"Output bias on {n_groups} held-out prompt groups (mean over member pairs, then groups; "
             "95% bootstrap CI over groups).")
    return "\n".join([
        intro,
        "",
        "| measure | base | pruned | reduction % |",
        "|---|---|---|---|",
        _row(result, "next-token JS divergence (nats)", "js"),
        _row(result, "continuation log-prob gap", "logprob_gap"),
        _row(result, "within-group JS, word-swap noise floor (nats)", "js_within"),
        "",
        _floor_sentence(result),
    ])


def _floor_sentence(result: EvalResult) -> str:
    n = int(result.metrics.get("n_floor_templates", 0))
    if not n:
        return ("No template swaps two surface forms of one group, so there is no word-swap noise floor to "
                "compare with.")
    return (f"On the {n} templates with two surface forms of a group, the between-group JS exceeds the "
            f"within-group floor by {fmt_ci(result, 'js_above_floor_pct_base', 3)} % before pruning and "
            f"{fmt_ci(result, 'js_above_floor_pct_pruned', 3)} % after (change "
            f"{fmt_ci(result, 'js_above_floor_pct_change', 3)} points).")


def _row(result: EvalResult, label: str, prefix: str) -> str:
    return (f"| {label} | {fmt_ci(result, prefix + '_base')} | {fmt_ci(result, prefix + '_pruned')} | "
            f"{fmt_ci(result, prefix + '_reduction_pct', 3)} |")
