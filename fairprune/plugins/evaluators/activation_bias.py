"""The ``activation_bias`` evaluator: how far apart the hidden states of group members are, base vs pruned.

Measured on fixed-width sites (the residual stream after each layer, and each
MLP's output), which have the hidden size before and after pruning. For a group,
a layer and a site: the mean over member pairs of mean_d |a_d − b_d|, where a
and b are the members' pooled activations (``pooling``, default ``mean`` over all
tokens: the "mean-pooled residual stream" difference). **Overall** for a
site is the mean over layers of that per-layer figure, then the mean over
groups; CIs resample held-out groups, paired between base and pruned. The headline
``reduction_pct`` is the residual site's overall reduction (the first site's if
``residual`` is not measured).
"""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ConfigDict, Field

from ...core.contract.errors import ConfigError
from ...core.contract.plugin import Plugin, StrictParams
from ...core.contract.protocols import Headline
from ...core.contract.results import EvalContext, EvalResult, add_paired, bootstrap_ci, fmt_ci, reduction_pct

if TYPE_CHECKING:
    import torch


class ActivationBiasParams(StrictParams):
    """Options of the activation-bias evaluator."""

    model_config = ConfigDict(extra="forbid")
    sites: list[str] = Field(["residual", "mlp_out"], min_length=1, description="fixed-width activation sites")
    pooling: str = Field("mean", description="token pooling (a registered pooling: mean, suffix, last, ...)")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples")


def pairwise_distance(pooled: torch.Tensor) -> np.ndarray:
    """Per group: mean over member pairs of mean |a − b| over the hidden dimension.

    ``pooled`` is ``[n_groups, n_members, width]``; returns ``[n_groups]``.
    """
    import torch

    n_members = pooled.shape[1]
    pairs = list(combinations(range(n_members), 2))
    if not pairs:
        raise ConfigError("activation_bias needs groups of at least 2 members")
    x = pooled.double()
    dist = torch.stack([(x[:, i] - x[:, j]).abs().mean(-1) for i, j in pairs], 1)
    return dist.mean(1).cpu().numpy()


class ActivationBiasEvaluator(Plugin):
    """Hidden-state differences between group members on held-out prompts, per layer and overall."""

    name = "activation_bias"
    description = "mean |a-b| between group members on residual and mlp_out sites, per layer, base vs pruned"
    Params = ActivationBiasParams
    needs_groups = True
    headlines = (
        Headline("reduction_pct", "Held-out activation bias (residual stream) reduction", "%", "higher", "bias"),
        Headline("mlp_out_reduction_pct", "Held-out activation bias (MLP output) reduction", "%", "higher"),
    )

    def observe(self, model, context: EvalContext) -> dict[str, np.ndarray]:
        """Per site, ``[n_groups, n_layers]`` mean member distances of one model."""
        if not context.groups:
            raise ConfigError("activation_bias needs held-out prompt groups (pass axes=[...] or groups=[...])")
        if len(set(self.params.sites)) != len(self.params.sites):
            raise ConfigError(f"activation_bias.sites lists a site twice: {self.params.sites}")
        return self._distances(context, model, context.adapter)

    def compare(self, base: dict[str, np.ndarray], pruned: dict[str, np.ndarray], context: EvalContext) -> EvalResult:
        result = EvalResult(self.name)
        rows: list[dict] = []
        for site in self.params.sites:
            if base[site].shape != pruned[site].shape:
                raise ConfigError(f"activation_bias: site {site!r} has {base[site].shape[1]} layers in the base "
                                  f"model and {pruned[site].shape[1]} in the pruned one")
            add_paired(result, site, base[site].mean(1), pruned[site].mean(1), context.seed, self.params.n_boot)
            rows.extend(self._layer_rows(site, base[site], pruned[site], context.seed))
        headline = "residual" if "residual" in self.params.sites else self.params.sites[0]
        result.add("reduction_pct", result.metrics[f"{headline}_reduction_pct"],
                   result.intervals[f"{headline}_reduction_pct"])
        result.add("n_groups", float(len(context.groups)))
        result.tables["layers"] = rows
        result.summary = _summary(result, self.params.sites, self.params.pooling, len(context.groups))
        return result

    def _distances(self, context: EvalContext, model, adapter) -> dict[str, np.ndarray]:
        """Per site, ``[n_groups, n_layers]`` member distances; all sites in one pass per group size. Under
        ``distributed.sharing``, the groups of a size are shared among the processes when there are at least as
        many groups as processes (else every process collects them all)."""
        from ...core.method.collect import collect_prompts
        from ...core.model.distributed import sharing_world

        world = sharing_world()

        by_size: dict[int, list[int]] = {}
        for k, group in enumerate(context.groups):
            by_size.setdefault(len(group.prompts), []).append(k)
        out: dict[str, np.ndarray] = {}
        for indices in by_size.values():
            subset = [context.groups[k] for k in indices]
            collected = collect_prompts(model, context.tokenizer, subset, sites=tuple(self.params.sites),
                                        pooling=self.params.pooling, adapter=adapter, batch_size=context.batch_size,
                                        progress=context.progress, registry=context.registry,
                                        world=world if world is not None and len(subset) >= world.size else None)
            for site, activations in collected.items():
                pooled = activations.grouped(subset).pooled
                dist = np.stack([pairwise_distance(pooled[layer]) for layer in sorted(pooled)], 1)
                out.setdefault(site, np.zeros((len(context.groups), dist.shape[1])))[indices] = dist
        return out

    def _layer_rows(self, site: str, base: np.ndarray, pruned: np.ndarray, seed: int) -> list[dict]:
        rows = []
        stat = (lambda a: reduction_pct(a[:, 0].mean(), a[:, 1].mean()))
        for layer in range(base.shape[1]):
            pairs = np.stack([base[:, layer], pruned[:, layer]], 1)
            lo, hi = bootstrap_ci(pairs, stat, n_boot=self.params.n_boot, seed=seed)
            rows.append({"site": site, "layer": layer, "base": float(pairs[:, 0].mean()),
                         "pruned": float(pairs[:, 1].mean()), "reduction_pct": stat(pairs),
                         "reduction_pct_ci": [lo, hi]})
        return rows


def _summary(result: EvalResult, sites: list[str], pooling: str, n_groups: int) -> str:
    intro = (f"Activation difference between group members ({pooling}-pooled, mean |a−b| over hidden units, "
             f"mean over member pairs and layers) on {n_groups} held-out groups; 95% bootstrap CI over groups.")
    lines = [intro,
             "", "| site | base | pruned | reduction % |", "|---|---|---|---|"]
    for site in sites:
        lines.append(f"| {site} | {fmt_ci(result, site + '_base')} | {fmt_ci(result, site + '_pruned')} | "
                     f"{fmt_ci(result, site + '_reduction_pct', 3)} |")
    return "\n".join(lines)
