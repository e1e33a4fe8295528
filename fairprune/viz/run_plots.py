"""Every plot, drawn from a finished run (or sweep) directory: ``figure_for(kind, run)``, used by
``fairprune plot`` and the HTML report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.contract.errors import ConfigError, PersistError
from .rundata import RunFiles, full_importance

logger = logging.getLogger(__name__)


#: the evaluator whose tables hold the data of the PCA and token plots (measured while the run had its models)
PICTURES = "activation_pictures"


@dataclass(frozen=True)
class PlotKind:
    """One kind of plot: how to draw it from a run, what it shows, what to look for, and whether it loads models.

    A kind that ``needs_models`` is drawn from the run's ``stored`` table (evaluator, table) when the run has
    it, and otherwise by reloading the base and pruned models.
    """

    name: str
    draw: Callable[..., Any]
    caption: str
    needs_models: bool = False
    stored: tuple[str, str] | None = None
    #: the caption on a run made by the attribution method, when the picture differs there
    attribution_caption: str | None = None

    def caption_for(self, run: RunFiles) -> str:
        """The caption that describes what this plot draws for ``run`` (its selection method decides)."""
        if self.attribution_caption and run.plan_settings().get("method") == "attribution":
            return self.attribution_caption
        return self.caption

    def loads_models(self, run: RunFiles) -> bool:
        """Whether drawing this plot for ``run`` reloads the models (its data was not stored)."""
        return self.needs_models and not (self.stored and run.table(*self.stored))


def _profile(run: RunFiles, **_: Any) -> Any:
    from .profile import bias_profile_plot, report_profile_rows

    rows = run.table("activation_bias", "layers")
    if rows:
        return bias_profile_plot(rows)
    if run.bias is not None and getattr(run.bias, "per_axis", None):
        return bias_profile_plot(report_profile_rows(run.bias.per_axis), ylabel="mean neuron bias score",
                                 title="Bias score per layer (analysis prompts, base model)")
    raise PersistError(f"{run.directory}: no activation_bias layer table in metrics.json and no bias/ report")


def _neurons(run: RunFiles, **_: Any) -> Any:
    from .neurons import neuron_map_plot

    if run.bias is None:
        raise PersistError(f"{run.directory}: the neuron map needs the saved bias report (bias/)")
    return neuron_map_plot(run.bias.scores, run.removed())


def _scatter(run: RunFiles, layer: int | None = None, **_: Any) -> Any:
    from .neurons import bias_importance_plot

    if run.bias is None:
        raise PersistError(f"{run.directory}: the bias-importance plot needs the saved bias report (bias/)")
    settings = run.plan_settings()
    if settings.get("method") == "attribution":
        return _attribution_scatter(run, settings, layer)
    importance = full_importance(run)
    if importance is None:
        raise PersistError(f"{run.directory}: cannot rebuild the importance of every neuron ({run.notes[-1]})")
    scores = {k: v for k, v in run.bias.scores.items() if k in importance}
    return bias_importance_plot(scores, importance, run.removed(), scorer=settings.get("scorer", "linear"),
                                bias_weight=float(settings.get("bias_weight", 0.8)), layer=layer)


def _attribution_scatter(run: RunFiles, settings: dict[str, Any], layer: int | None) -> Any:
    """What the attribution method used: first-round estimated reduction vs capability cost, and the guard."""
    from .attribution import attribution_cost_plot

    cost = run.bias.extra.get("capability_cost")
    if not cost:
        raise PersistError(f"{run.directory}: the attribution plot needs the capability cost saved in bias/")
    return attribution_cost_plot(run.bias.scores, cost, run.removed(),
                                 guard_fraction=float(settings.get("guard_fraction", 0.0)), layer=layer,
                                 objective=str(settings.get("objective", "objective")),
                                 magnitude_guard=float(settings.get("magnitude_guard") or 0.0))


def _pareto(run: RunFiles, **_: Any) -> Any:
    from .sweep import pareto_plot

    if not run.sweep:
        raise PersistError(f"{run.directory}: the Pareto plot needs a sweep directory (sweep.json)")
    return pareto_plot(run.sweep.get("points", []))


def _pca(run: RunFiles, layer: int | None = None, **_: Any) -> Any:
    from ..core.method.collect import collect_pooled
    from .activations import PCAProjection, pca_plot, pca_projection_plot

    stored = run.table(PICTURES, "pca")
    if stored and layer in (None, stored[0]["layer"]):
        return pca_projection_plot(PCAProjection.from_rows(stored), members=stored[0]["members"],
                                   layer=stored[0]["layer"])
    base, pruned, tokenizer, groups = load_models(run)
    n_layers = int(base.config.num_hidden_layers)
    layer = n_layers // 2 if layer is None else layer
    if not 0 <= layer < n_layers:
        raise ConfigError(f"layer {layer} is out of range: the model has {n_layers} layers")
    size = len(groups[0].prompts)
    groups = [g for g in groups if len(g.prompts) == size]
    pooled = [collect_pooled(m, tokenizer, groups, site="residual", pooling="mean", layers=[layer],
                             progress=False).pooled[layer] for m in (base, pruned)]
    return pca_plot(pooled[0], pooled[1], members=list(groups[0].attributes), layer=layer)


def _tokens(run: RunFiles, **_: Any) -> Any:
    from .activations import TokenDistances, token_distances, token_heatmap_plot

    stored = run.table(PICTURES, "tokens")
    if stored:
        row = stored[0]
        a, b = row["prompt_a"], row["prompt_b"]
        base, pruned = (TokenDistances.from_dict({**row, "distances": row[label]}) for label in ("base", "pruned"))
    else:
        base_model, pruned_model, tokenizer, groups = load_models(run)
        a, b = groups[0].prompts[:2]
        base, pruned = (token_distances(m, tokenizer, a, b) for m in (base_model, pruned_model))
    return token_heatmap_plot(base, pruned=pruned, title=f"{a!r} vs {b!r}")


def load_models(run: RunFiles) -> tuple[Any, Any, Any, list[Any]]:
    """The base model (from the config's source), the pruned model (from the run) and the held-out prompt groups."""
    if not run.config or not run.has_model():
        raise PersistError(f"{run.directory}: activation plots need config.yaml and the saved pruned model")
    from ..core.contract.config import load_config
    from ..core.contract.registry import get_registry
    from ..core.data.groups import run_groups
    from ..core.io.persist import load_pretrained
    from ..core.io.sources import load_model

    groups = run_groups(load_config(run.config), "heldout", get_registry()).groups
    base, tokenizer = load_model(load_config(run.config).model.source)
    pruned, _ = load_pretrained(run.directory)
    return base.eval(), pruned.eval(), tokenizer, groups


PLOTS: dict[str, PlotKind] = {kind.name: kind for kind in (
    PlotKind("profile", _profile, "Mean activation difference between the members of held-out prompt groups at "
             "every layer, base (solid) vs pruned (dashed). Look for the dashed line below the solid one, "
             "especially in the layers where the plan removed neurons."),
    PlotKind("neurons", _neurons, "Bias score of every MLP neuron (min-max within each layer); white ticks mark the "
             "removed neurons. They should sit on bright cells; a bright cell without a tick was protected by its "
             "importance or a magnitude guard."),
    PlotKind("scatter", _scatter, "Each neuron's bias against its importance, both normalised within its layer, "
             "as the scorer sees them. Removed neurons (red) lie beyond the dashed decision line: biased and "
             "unimportant (bottom right).",
             attribution_caption="Each neuron's first-round estimate of how much removing it lowers the bias "
             "objective (right of the dotted line: a candidate) against its capability cost, ranked within its "
             "layer. The costliest neurons of every layer (above the dashed guard line) are never removed; removed "
             "neurons (red) were ranked by the configured ranking (default: reduction per unit of cost) and "
             "re-estimated on the model as pruned each round, so a few may sit where round 1 placed them otherwise."),
    PlotKind("pareto", _pareto, "Every sweep setting: bias reduction against capability loss. The joined points "
             "are the Pareto front (no setting beats them on both); the star is the chosen setting."),
    PlotKind("pca", _pca, "Pooled residual-stream activations of held-out group members in one shared PCA plane; "
             "arrows join the members of a prompt group. Shorter arrows after pruning mean the model tells the "
             "groups apart less.", needs_models=True, stored=(PICTURES, "pca")),
    PlotKind("tokens", _tokens, "For one held-out prompt pair: how far the two prompts' hidden states are apart "
             "at every token and layer, base and pruned on one colour scale. Nothing differs before the attribute "
             "word (causal attention); what follows shows how far the difference spreads.", needs_models=True,
             stored=(PICTURES, "tokens")),
)}


def figure_for(kind: str, run: RunFiles, **options: Any) -> Any:
    """Draw plot ``kind`` from ``run``; unknown kinds raise a ``ConfigError`` listing the known ones."""
    if kind not in PLOTS:
        import difflib

        close = difflib.get_close_matches(kind, PLOTS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown plot kind {kind!r}.{hint} Known: {', '.join(PLOTS)}")
    return PLOTS[kind].draw(run, **options)
