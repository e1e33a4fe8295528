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

**Transfer splits.** When the axes have transfer prompts (``core/data/transfer.py``:
other registers, first names in place of group words), every measure above is
also computed on each transfer split alone and stored with the split's suffix:
``js_reduction_pct@registers``, ``js_within_reduction_pct@names``, ... (keys
without a suffix stay those of the held-out templates, so older figures
compare). For names, "between" is the mean JS over names of different groups
(the k-th name of each group, one name set such as one gender at a time) and
"within" the mean JS between two names of the same group and set.
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ConfigDict, Field

from ...core.contract.errors import ConfigError
from ...core.contract.plugin import Plugin, StrictParams
from ...core.contract.protocols import Headline, PromptGroup
from ...core.contract.results import EvalContext, EvalResult, add_paired, fmt_ci
from ...core.model.benchmark_base import add_compared
from ...core.model.divergence import js_divergence  # the one JS of fairprune: the attribution objective uses it too

if TYPE_CHECKING:
    import torch


class OutputBiasParams(StrictParams):
    """Options of the output-bias evaluator."""

    model_config = ConfigDict(extra="forbid")
    continuations: list[str] = Field([" was", " would", " is", " had"],
                                     description="neutral continuations whose log-probability gap is measured")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples")
    transfer: bool = Field(True, description="also measure the axes' transfer splits (other registers, first "
                                             "names), each reported apart with the suffix @registers / @names")

#: metric-key suffix of each transfer split
SPLIT_SUFFIX = {"transfer_registers": "@registers", "transfer_names": "@names"}


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
        Headline("js_reduction_pct@registers", "Next-token JS reduction between groups, other registers", "%",
                 "higher"),
        Headline("js_within_reduction_pct@registers", "Next-token JS reduction within one group (word swap), "
                 "other registers", "%", "lower"),
        Headline("js_reduction_pct@names", "Next-token JS reduction between groups, first names", "%", "higher"),
        Headline("js_within_reduction_pct@names", "Next-token JS reduction between two names of one group", "%",
                 "lower"),
    )

    def observe(self, model, context: EvalContext) -> dict:
        """Per held-out group of one model: mean pairwise JS (nats) and continuation log-prob gap; the same
        per transfer split under ``"splits"`` (``{split: observation}``)."""
        groups = context.groups
        if not groups:
            raise ConfigError("output_bias needs held-out prompt groups (pass axes=[...] or groups=[...])")
        small = [g.template_id for g in groups if len(g.prompts) < 2]
        if small:
            raise ConfigError(f"output_bias: prompt groups with fewer than 2 members: {small[:5]}")
        if not self.params.continuations:
            raise ConfigError("output_bias.continuations must name at least one continuation")
        observed: dict = self._measure(context, model, context.label, context.groups, _form_groups(context),
                                       held_out=True)
        splits = self._transfer_splits(context)
        if splits:
            observed["splits"] = {split: self._measure(context, model, f"{context.label}, {split}", found,
                                                       _form_groups(context, names=split == "transfer_names"))
                                  for split, found in splits.items()}
        return observed

    def _transfer_splits(self, context: EvalContext) -> dict[str, list[PromptGroup]]:
        """The transfer splits this evaluator measures: those of the context with groups, when enabled."""
        if not self.params.transfer:
            return {}
        return {split: found for split, found in (context.transfer or {}).items() if found and split in SPLIT_SUFFIX}

    def compare(self, base: dict, pruned: dict, context: EvalContext) -> EvalResult:
        result = EvalResult(self.name)
        self._add_split(result, base, pruned, context, "")
        result.tables["groups"] = _group_rows(context.groups, base, pruned)
        splits = self._transfer_splits(context)
        for split, found in splits.items():
            if split not in base.get("splits", {}) or split not in pruned.get("splits", {}):
                raise ConfigError(f"output_bias: split {split!r} was not observed on both models")
            self._add_split(result, base["splits"][split], pruned["splits"][split], context, SPLIT_SUFFIX[split])
            result.tables["groups" + SPLIT_SUFFIX[split]] = _group_rows(found, base["splits"][split],
                                                                        pruned["splits"][split])
        result.summary = _summary(result, len(context.groups), {s: len(g) for s, g in splits.items()})
        return result

    def _add_split(self, result: EvalResult, base: dict, pruned: dict, context: EvalContext, suffix: str) -> None:
        """Every metric of one split, keys ending in ``suffix`` (``""`` for the held-out templates)."""
        part = EvalResult(self.name)
        for measure in ("js", "logprob_gap"):
            add_paired(part, measure, base[measure], pruned[measure], context.seed, self.params.n_boot)
        part.add("n_groups", float(len(base["js"])))
        self._add_floor(part, base, pruned, context.seed)
        for key, value in part.metrics.items():
            result.add(key + suffix, value, part.intervals.get(key))

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

    def _measure(self, context: EvalContext, model, label: str, groups: list[PromptGroup],
                 form_groups: dict[tuple[str, str], str], held_out: bool = False) -> dict[str, list[float]]:
        """Per group: mean pairwise JS divergence and mean pairwise log-prob gap; the floor per template
        (``held_out``: ``groups`` are the context's held-out groups, whose distributions are shared)."""
        from ...core.model.lm_scoring import encode, last_token_logprobs, pad_id, score_continuations

        tok = context.tokenizer
        prompts = [p for g in groups for p in g.prompts]
        desc = f"next-token distributions ({label})"
        logprobs = held_out_next_token(model, context, desc) if held_out else \
            last_token_logprobs(model, tok, prompts, context.batch_size, context.progress, desc)
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
        gap, start = [], 0
        for group in groups:
            members = list(range(start, start + len(group.prompts)))
            gap.append(float(np.mean([mean_pairwise(cont_lp[members, c]) for c in range(cont_lp.shape[1])])))
            start += len(group.prompts)
        between, within = noise_floor(groups, logprobs, form_groups)
        return {"js": group_js(groups, logprobs), "logprob_gap": gap, "js_between_floor": between,
                "js_within": within}


def group_js(groups: list[PromptGroup], logprobs: torch.Tensor) -> list[float]:
    """Per group, the mean next-token JS divergence (nats) over its member pairs; ``logprobs`` is
    ``[n_prompts, vocab]`` in the order of the groups' prompts."""
    out, start = [], 0
    for group in groups:
        pairs = combinations(range(start, start + len(group.prompts)), 2)
        out.append(float(np.mean([js_divergence(logprobs[i], logprobs[j]).item() for i, j in pairs])))
        start += len(group.prompts)
    return out


def held_out_next_token(model, context: EvalContext, desc: str) -> torch.Tensor:
    """Next-token log-probs after every prompt of the context's held-out groups, in group order: float32
    ``[n_prompts, vocab]``. Computed once per observed model and kept in ``context.memo``, so ``output_bias``
    and ``random_control`` read one forward pass; call it only on the model as it stands (no hooks applied)."""
    from ...core.model.lm_scoring import last_token_logprobs

    key = f"output_bias.held_out_next_token:{id(model)}"
    if key not in context.memo:
        prompts = [p for g in context.groups for p in g.prompts]
        context.memo[key] = last_token_logprobs(model, context.tokenizer, prompts, context.batch_size,
                                                context.progress, desc)
    return context.memo[key]


def _group_rows(groups: list[PromptGroup], base: dict, pruned: dict) -> list[dict]:
    """One table row per group: its identity and both models' JS and log-prob gap."""
    return [{"axis": g.axis, "template_id": g.template_id, "attributes": list(g.attributes),
             "js_base": base["js"][k], "js_pruned": pruned["js"][k],
             "logprob_gap_base": base["logprob_gap"][k], "logprob_gap_pruned": pruned["logprob_gap"][k]}
            for k, g in enumerate(groups)]


def _form_groups(context: EvalContext, names: bool = False) -> dict[tuple[str, str], str]:
    """``(axis, surface form) -> attribute group`` of the registered axes among the context's axes (with
    ``names``: ``(axis, first name) -> attribute group``, from the axis' ``name_groups()``)."""
    out: dict[tuple[str, str], str] = {}
    registry = context.registry
    axes = {g.axis for g in context.groups} | {g.axis for found in (context.transfer or {}).values() for g in found}
    for axis in sorted(axes):
        if registry is None or axis not in registry.names("bias_axes"):
            continue  # an axis from a file or user groups: members are matched by position only
        plugin = registry.get("bias_axes", axis)
        if names:
            found = plugin.name_groups() if callable(getattr(plugin, "name_groups", None)) else {}
        else:
            found = plugin.attribute_groups()
        for name, forms in found.items():
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


_SPLIT_LABEL = {"": "held-out templates", "@registers": "other registers", "@names": "first names"}


def _summary(result: EvalResult, n_groups: int, transfer: dict[str, int] | None = None) -> str:
    intro = (f"Output bias on {n_groups} held-out prompt groups (mean over member pairs, then groups; "
             "95% bootstrap CI over groups).")
    lines = [
        intro,
        "",
        "| measure | base | pruned | reduction % |",
        "|---|---|---|---|",
        _row(result, "next-token JS divergence (nats)", "js"),
        _row(result, "continuation log-prob gap", "logprob_gap"),
        _row(result, "within-group JS, word-swap noise floor (nats)", "js_within"),
        "",
        _floor_sentence(result),
    ]
    if transfer:
        lines += ["", _transfer_table(result, transfer)]
    return "\n".join(lines)


def _transfer_table(result: EvalResult, transfer: dict[str, int]) -> str:
    """Between- and within-group JS reduction per split (held-out templates and each transfer split)."""
    intro = ("By split (transfer prompts are never used in selection; between: members of different groups; "
             "within: two words, or two names, for one group):")
    header = ("| prompts | groups | between-group JS, base -> pruned (nats) | reduction % | within-group JS, "
              "base -> pruned (nats) | reduction % |")
    rows = [intro, "", header, "|---|---|---|---|---|---|"]
    for suffix in [""] + [SPLIT_SUFFIX[s] for s in transfer]:
        n = int(result.metrics.get("n_groups" + suffix, 0))
        rows.append(f"| {_SPLIT_LABEL[suffix]} | {n} | {_pair(result, 'js', suffix)} | "
                    f"{fmt_ci(result, 'js_reduction_pct' + suffix, 3)} | {_pair(result, 'js_within', suffix)} | "
                    f"{fmt_ci(result, 'js_within_reduction_pct' + suffix, 3)} |")
    return "\n".join(rows)


def _pair(result: EvalResult, prefix: str, suffix: str) -> str:
    base, pruned = (result.metrics.get(f"{prefix}_{m}{suffix}", float("nan")) for m in ("base", "pruned"))
    return f"{base:.4g} -> {pruned:.4g}"


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
