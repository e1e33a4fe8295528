"""The ``random_control`` evaluator: the run's effect against neurons chosen at random.

Removing *any* few neurons moves a small model's next-token distributions, so a
bias figure alone cannot say whether the method found bias or only disturbed
the model. The control draws, ``draws`` times with seeds ``(seed, k)``, random
neurons with the plan's exact per-layer counts, never one that the
massive-activation guard protects (mean |h| above the method's
``guard_magnitude_ratio`` times its layer's median, 10 for a method without one;
the rule of ``planning.magnitude_guard``): a draw that hits such a neuron
measures breakage, not chance. Each draw is applied to the
*base* model by zeroing the neurons' activations with pre-hooks on down_proj's
input, which equals pruning them (the project's invariant); the hooks are
removed afterwards.

Measured on the held-out groups, as ``output_bias`` measures them:

- **between**: per prompt group, the mean next-token Jensen–Shannon divergence
  (nats) between its members; ``between_reduction_pct`` is the method's % reduction;
- **within**: per template with two words for the same group, the mean JS
  between them (the word-swap floor); ``within_reduction_pct``;
- ``between_minus_within_pts``: between − within reduction on the templates that
  have both (positive = groups treated more alike beyond the floor's fall);
- ``floor_share_pct``: the base model's within-group JS as a % of its between-group
  JS on those templates: 100 minus it is the most the between-group JS could fall
  while the model hears every word as before (the findings say so);
- ``control_between_reduction_pct_<k>`` per draw, their mean, min and max,
  ``between_vs_control_pts`` = method − control mean (positive = the method reduced
  more than chance), and ``between_beyond_control`` (1.0 when the method's
  reduction exceeds every draw's); the same for ``within``.

Intervals are 95% percentile bootstraps over prompt groups (templates for the
within figures), every figure of a resample recomputed from the same groups.
The plan must be known when the base model is observed: a run plans first; a
sweep (one base observation for many plans) and ``fairprune.evaluate`` give no
plan, and the control's figures are then NaN with a sentence saying why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field

from ...core.contract.errors import ConfigError
from ...core.contract.plugin import Plugin, StrictParams
from ...core.contract.protocols import Headline
from ...core.contract.results import EvalContext, EvalResult, add_paired, bootstrap_ci, fmt_ci, reduction_pct
from ..evidence_text import between_within_sentence, ceiling_sentence, control_sentence, figure


class RandomControlParams(StrictParams):
    """Options of the random-neuron control."""

    model_config = ConfigDict(extra="forbid")
    draws: int = Field(3, ge=1, le=100, description="random draws of the plan's per-layer counts")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples")


def draw_neurons(counts: Mapping[int, int], widths: Mapping[int, int], guarded: Mapping[int, Any] | None,
                 draws: int, seed: int) -> list[dict[int, list[int]]]:
    """``draws`` random plans ``{layer: sorted indices}`` with ``counts[layer]`` neurons each, never a guarded one.

    ``guarded[layer]`` is ``Bool[width]`` (an empty tensor or a missing layer: nothing guarded). Draw ``k``
    uses ``numpy.random.default_rng((seed, k))``. ``ConfigError`` when a layer has fewer unguarded neurons
    than its count.
    """
    plans = []
    for k in range(draws):
        rng = np.random.default_rng((seed, k))
        plan: dict[int, list[int]] = {}
        for layer in sorted(counts):
            mask = _guard_mask(guarded, layer, widths[layer])
            candidates = np.flatnonzero(~mask)
            if len(candidates) < counts[layer]:
                raise ConfigError(f"random_control: layer {layer} has {len(candidates)} unguarded neurons, fewer "
                                  f"than the plan's {counts[layer]}")
            plan[layer] = sorted(int(i) for i in rng.choice(candidates, counts[layer], replace=False))
        plans.append(plan)
    return plans


def _guard_mask(guarded: Mapping[int, Any] | None, layer: int, width: int) -> np.ndarray:
    mask = (guarded or {}).get(layer)
    if mask is None or len(mask) == 0:
        return np.zeros(width, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (width,):
        raise ConfigError(f"random_control: the guard of layer {layer} has {mask.shape[0]} entries for a width "
                          f"of {width}")
    return mask


def bias_measures(model: Any, context: EvalContext, desc: str, shared: bool = False) -> dict[str, list[float]]:
    """Per held-out group the mean pairwise next-token JS (``between``), and per template with a word swap
    (``floor_between``, ``within``), in nats, as ``output_bias`` computes them. With ``shared`` (only for the
    observed model as it stands, no hooks applied) the distributions come from ``output_bias``'s shared pass."""
    from ...core.model.lm_scoring import last_token_logprobs
    from .output_bias import _form_groups, group_js, held_out_next_token, noise_floor

    if shared:
        logprobs = held_out_next_token(model, context, desc)
    else:
        prompts = [p for g in context.groups for p in g.prompts]
        logprobs = last_token_logprobs(model, context.tokenizer, prompts, context.batch_size, context.progress,
                                       desc)
    floor_between, within = noise_floor(context.groups, logprobs, _form_groups(context))
    return {"between": group_js(context.groups, logprobs), "floor_between": floor_between, "within": within}


def _reduction_minus_control(rows: np.ndarray) -> float:
    """Rows ``[base, method, draw_1..draw_k]``: method's % reduction of the mean − the draws' mean % reduction."""
    base = rows[:, 0].mean()
    draws = [reduction_pct(base, rows[:, c].mean()) for c in range(2, rows.shape[1])]
    return reduction_pct(base, rows[:, 1].mean()) - float(np.mean(draws))


def _between_minus_within(rows: np.ndarray) -> float:
    """Rows ``[between base, between pruned, within base, within pruned]``: the difference of % reductions."""
    return (reduction_pct(rows[:, 0].mean(), rows[:, 1].mean())
            - reduction_pct(rows[:, 2].mean(), rows[:, 3].mean()))


class RandomControlEvaluator(Plugin):
    """The method's between- and within-group JS change against random neurons of the plan's per-layer counts."""

    name = "random_control"
    description = "between- and within-group next-token JS change of the method vs random neurons of the same counts"
    Params = RandomControlParams
    needs_groups = True
    headlines = (
        Headline("between_reduction_pct", "Between-group next-token JS reduction (held-out)", "%", "higher"),
        Headline("within_reduction_pct", "Within-group (two words for one group) JS reduction", "%", "higher"),
        Headline("between_minus_within_pts", "Between-group reduction minus within-group reduction", " pts",
                 "higher"),
        Headline("control_between_reduction_pct_mean", "Random control: between-group JS reduction (mean of "
                 "draws)", "%", "higher"),
        Headline("between_vs_control_pts", "Between-group reduction beyond the random control", " pts", "higher"),
    )

    def observe(self, model: Any, context: EvalContext) -> dict[str, Any]:
        """The model's bias measures; for the base model with a plan, also each random draw's (and the draws)."""
        groups = context.groups
        if not groups:
            raise ConfigError("random_control needs held-out prompt groups (pass axes=[...] or groups=[...])")
        small = [g.template_id for g in groups if len(g.prompts) < 2]
        if small:
            raise ConfigError(f"random_control: prompt groups with fewer than 2 members: {small[:5]}")
        label = context.label or "model"
        out: dict[str, Any] = {"measures": bias_measures(model, context, f"random control ({label})", shared=True)}
        if context.label != "base" or context.plan is None:
            return out
        from ...core.method.attribution import neuron_hooks

        plan = context.plan
        removed = plan.to_mapping() if hasattr(plan, "to_mapping") else {int(k): list(v) for k, v in plan.items() if v}
        widths = {layer: context.adapter.width(model, layer) for layer in removed}
        plans = draw_neurons({layer: len(idx) for layer, idx in removed.items()}, widths, context.guarded,
                             self.params.draws, context.seed)
        out["draws"], out["drawn"] = [], plans
        for k, plan in enumerate(plans):
            with neuron_hooks(model, context.adapter, removed=plan):  # zeroing = pruning; hooks removed after
                out["draws"].append(bias_measures(model, context, f"random draw {k + 1}/{len(plans)}"))
        return out

    def compare(self, base: dict[str, Any], pruned: dict[str, Any], context: EvalContext) -> EvalResult:
        b, p = base["measures"], pruned["measures"]
        draws = base.get("draws") or []
        seed, n_boot = context.seed, self.params.n_boot
        result = EvalResult(self.name)
        add_paired(result, "between", b["between"], p["between"], seed, n_boot)
        result.add("n_groups", float(len(b["between"])))
        result.add("n_floor_templates", float(len(b["within"])))
        if b["within"]:
            add_paired(result, "within", b["within"], p["within"], seed, n_boot)
            rows = np.stack([b["floor_between"], p["floor_between"], b["within"], p["within"]], axis=1)
            result.add("between_minus_within_pts", _between_minus_within(rows),
                       bootstrap_ci(rows, _between_minus_within, n_boot, seed))
            floor_between = float(np.mean(b["floor_between"]))
            result.add("floor_share_pct", 100.0 * float(np.mean(b["within"])) / floor_between
                       if floor_between > 0 else math.nan)
        else:
            for key in ("within_base", "within_pruned", "within_reduction_pct", "between_minus_within_pts",
                        "floor_share_pct"):
                result.add(key, math.nan)
        for measure in ("between", "within"):
            self._add_control(result, measure, b[measure], p[measure], [d[measure] for d in draws], seed)
        result.add("n_draws", float(len(draws)))
        result.tables["draws"] = [
            {"draw": k + 1, "neurons": sum(len(v) for v in plan.values()),
             "between_reduction_pct": result.metrics.get(f"control_between_reduction_pct_{k + 1}"),
             "within_reduction_pct": result.metrics.get(f"control_within_reduction_pct_{k + 1}")}
            for k, plan in enumerate(base.get("drawn") or [])]
        result.tables["drawn_neurons"] = [{"draw": k + 1, "layer": int(layer), "neurons": list(idx)}
                                          for k, plan in enumerate(base.get("drawn") or [])
                                          for layer, idx in sorted(plan.items())]
        result.tables["findings"] = [{"text": between_within_text(result)}, {"text": control_text(result)}]
        result.summary = _summary(result)
        return result

    def _add_control(self, result: EvalResult, measure: str, base: list[float], pruned: list[float],
                     draws: list[list[float]], seed: int) -> None:
        keys = (f"control_{measure}_reduction_pct_mean", f"control_{measure}_reduction_pct_min",
                f"control_{measure}_reduction_pct_max", f"{measure}_vs_control_pts", f"{measure}_beyond_control")
        if not draws or not base:
            for key in keys:
                result.add(key, math.nan)
            return
        rows = np.stack([base, pruned, *draws], axis=1).astype(np.float64)
        changes = []
        for k in range(len(draws)):
            stat = (lambda a, c=k + 2: reduction_pct(a[:, 0].mean(), a[:, c].mean()))
            changes.append(stat(rows))
            result.add(f"control_{measure}_reduction_pct_{k + 1}", changes[-1],
                       bootstrap_ci(rows, stat, self.params.n_boot, seed))
        method = reduction_pct(rows[:, 0].mean(), rows[:, 1].mean())
        result.add(keys[0], float(np.mean(changes)))
        result.add(keys[1], min(changes))
        result.add(keys[2], max(changes))
        result.add(keys[3], _reduction_minus_control(rows),
                   bootstrap_ci(rows, _reduction_minus_control, self.params.n_boot, seed))
        result.add(keys[4], float(method > max(changes)))


def between_within_text(result: EvalResult) -> str:
    m, i = result.metrics, result.intervals
    text = between_within_sentence(figure(m, i, "between_reduction_pct"), figure(m, i, "within_reduction_pct"),
                                   figure(m, i, "between_minus_within_pts"))
    ceiling = ceiling_sentence(m.get("floor_share_pct"))
    return f"{text} {ceiling}" if ceiling else text


def control_text(result: EvalResult) -> str:
    m, i = result.metrics, result.intervals
    draws = [m[f"control_between_reduction_pct_{k + 1}"] for k in range(int(m.get("n_draws", 0)))]
    return control_sentence(figure(m, i, "between_reduction_pct"), draws, figure(m, i, "between_vs_control_pts"),
                            m.get("between_beyond_control") == 1.0)


def _summary(result: EvalResult) -> str:
    m = result.metrics
    lines = [f"Random-neuron control on {int(m['n_groups'])} held-out prompt groups ({int(m['n_floor_templates'])} "
             "templates with two words for one group); next-token JS in nats, 95% bootstrap CI over groups.", "",
             "| measure | base | pruned | reduction % |", "|---|---|---|---|",
             f"| between groups | {fmt_ci(result, 'between_base')} | {fmt_ci(result, 'between_pruned')} | "
             f"{fmt_ci(result, 'between_reduction_pct', 3)} |"]
    if not math.isnan(m.get("within_base", math.nan)):
        lines.append(f"| two words for one group | {fmt_ci(result, 'within_base')} | "
                     f"{fmt_ci(result, 'within_pruned')} | {fmt_ci(result, 'within_reduction_pct', 3)} |")
    for k in range(int(m.get("n_draws", 0))):
        key = f"control_between_reduction_pct_{k + 1}"
        lines.append(f"| random draw {k + 1}, between groups | | | {fmt_ci(result, key, 3)} |")
    return "\n".join(lines + ["", between_within_text(result), "", control_text(result)])
