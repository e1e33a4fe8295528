"""The ``activation_pictures`` evaluator: the data behind the report's PCA and token heatmaps, measured on held-out
prompt groups while each model is loaded, so the report (and ``fairprune report``) draws them without a model.

``observe`` records one model's pooled residual stream at one layer for the held-out
groups, and the token-by-layer hidden-state distances of the first held-out pair
(members 0 and 1 of the first group).
``compare`` fits one PCA on both models' points (shared coordinates, as in
``viz.activations.pca_plot``) and keeps the projected points, not the activations:
a few kilobytes in ``metrics.json`` whatever the model's width. The member distance at
that layer (mean |a − b| in the full space, per group) is a paired metric with a
95% bootstrap interval.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field

from ...core.contract.errors import ConfigError
from ...core.contract.plugin import Plugin, StrictParams
from ...core.contract.results import EvalContext, EvalResult, add_paired, fmt_ci


class ActivationPicturesParams(StrictParams):
    """Options of the activation-pictures evaluator."""

    model_config = ConfigDict(extra="forbid")
    layer: int | None = Field(None, ge=0, description="layer whose residual stream the PCA shows (None: the middle)")
    pooling: str = Field("mean", description="token pooling of the PCA points (a registered pooling)")
    max_groups: int = Field(48, ge=2, description="held-out groups in the PCA (the first of the most common size)")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples")


class ActivationPicturesEvaluator(Plugin):
    """Held-out groups' residual stream at one layer (PCA) and per token (heatmaps), base vs pruned."""

    name = "activation_pictures"
    description = "held-out activations for the report's PCA and token heatmaps, base vs pruned"
    Params = ActivationPicturesParams
    needs_groups = True
    headlines = ()

    def observe(self, model: Any, context: EvalContext) -> dict[str, Any]:
        """``{"layer", "pooled": [n_groups, n_members, hidden], "tokens": TokenDistances as a dict, "attributes"}``."""
        from ...core.method.collect import collect_pooled
        from ...core.model.distributed import sharing_world
        from ...viz.activations import aligned_states

        groups = self._pca_groups(context)
        world = sharing_world()  # under torchrun the groups' batches are shared when there is one per process
        n_layers = len(context.adapter.layers(model))
        layer = n_layers // 2 if self.params.layer is None else self.params.layer
        if layer >= n_layers:
            raise ConfigError(f"activation_pictures.layer {layer} is out of range: the model has {n_layers} layers")
        pooled = collect_pooled(model, context.tokenizer, groups, site="residual", pooling=self.params.pooling,
                                layers=[layer], adapter=context.adapter, batch_size=context.batch_size,
                                progress=False, registry=context.registry,
                                world=world if world is not None and len(groups) >= world.size else None).pooled[layer]
        pair = context.groups[0].prompts[:2]
        tokens = {"prompts": list(pair), **aligned_states(model, context.tokenizer, *pair).distances().to_dict()}
        return {"layer": layer, "pooled": pooled.float().numpy(), "tokens": tokens,
                "attributes": list(groups[0].attributes)}

    def compare(self, base: dict[str, Any], pruned: dict[str, Any], context: EvalContext) -> EvalResult:
        from ...viz.activations import pca_projection

        if base["pooled"].shape != pruned["pooled"].shape:
            raise ConfigError(f"activation_pictures: base and pruned points differ in shape "
                              f"({base['pooled'].shape} vs {pruned['pooled'].shape})")
        result = EvalResult(self.name)
        add_paired(result, "layer_distance", _member_distance(base["pooled"]), _member_distance(pruned["pooled"]),
                   context.seed, self.params.n_boot)
        result.add("layer", base["layer"])
        result.add("n_groups", base["pooled"].shape[0])
        projection = pca_projection({"base": base["pooled"], "pruned": pruned["pooled"]})
        result.tables["pca"] = [{**row, "layer": base["layer"], "members": base["attributes"]}
                                for row in projection.to_rows()]
        b, p = base["tokens"], pruned["tokens"]
        result.tables["tokens"] = [{"prompt_a": b["prompts"][0], "prompt_b": b["prompts"][1], "tokens": b["tokens"],
                                    "diverge_at": b["diverge_at"], "base": b["distances"], "pruned": p["distances"]}]
        result.summary = (f"Residual stream after layer {base['layer']}, {base['pooled'].shape[0]} held-out groups "
                          f"(pooling `{self.params.pooling}`): mean |a − b| between members "
                          f"{fmt_ci(result, 'layer_distance_base')} (base) → {fmt_ci(result, 'layer_distance_pruned')}"
                          f" (pruned), a reduction of {fmt_ci(result, 'layer_distance_reduction_pct', 3)}%. The "
                          f"report draws their PCA, and the token heatmaps of {b['prompts'][0]!r} vs "
                          f"{b['prompts'][1]!r}.")
        return result

    def _pca_groups(self, context: EvalContext) -> list[Any]:
        if not context.groups:
            raise ConfigError("activation_pictures needs held-out prompt groups (pass axes=[...] or groups=[...])")
        size = Counter(len(g.prompts) for g in context.groups).most_common(1)[0][0]
        return [g for g in context.groups if len(g.prompts) == size][:self.params.max_groups]


def _member_distance(pooled: np.ndarray) -> np.ndarray:
    """Per group: mean |member 0 − member j| over the other members and the hidden dimension (``[n_groups]``)."""
    x = pooled.astype(np.float64)
    return np.abs(x[:, 1:, :] - x[:, :1, :]).mean(axis=(1, 2))
