"""Steps 1-2 of the method: how much each MLP neuron reacts to a demographic word.

``analyze_bias`` runs the prompt groups of the requested axes (and any user
pairs or groups) through the model in one batched pass, scores every neuron of
every layer with a bias metric per axis, and combines the axes by a mean. The
result, a ``BiasReport``, saves to safetensors + JSON and loads back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..contract.errors import PersistError, PluginContractError
from ..contract.protocols import PromptGroup
from ..data.groups import attribute_key, gather
from ..model.adapters import resolve_adapter
from .collect import collect_prompts

logger = logging.getLogger(__name__)

TENSORS_FILE = "bias_scores.safetensors"
META_FILE = "bias_report.json"


@dataclass
class BiasReport:
    """Per-layer, per-neuron bias scores (combined over axes and per axis) with activation statistics.

    ``scores[layer]`` and ``per_axis[axis][layer]`` are ``Tensor[width]`` (higher =
    more biased); ``magnitude`` is the mean |activation| and ``mean`` the mean
    activation (``E[h]``, calibration for compensating pruners) over all real tokens.
    """

    scores: dict[int, torch.Tensor]
    per_axis: dict[str, dict[int, torch.Tensor]]
    magnitude: dict[int, torch.Tensor]
    mean: dict[int, torch.Tensor]
    settings: dict[str, Any] = field(default_factory=dict)
    groups: list[PromptGroup] = field(default_factory=list)
    #: further per-neuron tables, name -> layer -> ``Tensor[width]`` (the attribution method's capability cost)
    extra: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)

    def layer_summary(self, top: int = 5) -> list[dict[str, Any]]:
        """Per layer: mean and max score, and the ``top`` neurons with their scores."""
        rows = []
        for layer in sorted(self.scores):
            s = self.scores[layer]
            k = min(top, s.numel())
            values, idx = torch.topk(s, k)
            rows.append({"layer": layer, "width": s.numel(), "mean": float(s.mean()), "max": float(s.max()),
                         "top": [[int(i), float(v)] for i, v in zip(idx, values)]})
        return rows

    def save(self, directory: str | Path) -> Path:
        """Write ``bias_scores.safetensors`` and ``bias_report.json`` into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        for name, table in (("scores", self.scores), ("magnitude", self.magnitude), ("mean", self.mean)):
            tensors.update({f"{name}/{layer}": t.float().contiguous() for layer, t in table.items()})
        for axis, table in self.per_axis.items():
            tensors.update({f"per_axis/{axis}/{layer}": t.float().contiguous() for layer, t in table.items()})
        for name, table in self.extra.items():
            tensors.update({f"extra/{name}/{layer}": t.float().contiguous() for layer, t in table.items()})
        save_file(tensors, str(directory / TENSORS_FILE))
        meta = {"settings": self.settings, "axes": list(self.per_axis), "groups": [asdict(g) for g in self.groups],
                "layer_summary": self.layer_summary()}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> BiasReport:
        """Read a report written by ``save``."""
        from safetensors.torch import load_file

        directory = Path(directory)
        missing = [f for f in (TENSORS_FILE, META_FILE) if not (directory / f).is_file()]
        if missing:
            raise PersistError(f"{str(directory)!r} is not a saved bias report: missing {missing}")
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / TENSORS_FILE))
        tables: dict[str, dict[int, torch.Tensor]] = {"scores": {}, "magnitude": {}, "mean": {}}
        per_axis: dict[str, dict[int, torch.Tensor]] = {axis: {} for axis in meta.get("axes", [])}
        extra: dict[str, dict[int, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            parts = key.split("/")
            if parts[0] == "per_axis":
                per_axis.setdefault("/".join(parts[1:-1]), {})[int(parts[-1])] = tensor
            elif parts[0] == "extra":
                extra.setdefault("/".join(parts[1:-1]), {})[int(parts[-1])] = tensor
            else:
                tables[parts[0]][int(parts[1])] = tensor
        groups = [PromptGroup(g["axis"], g["template_id"], tuple(g["attributes"]), tuple(g["prompts"]))
                  for g in meta.get("groups", [])]
        return cls(_sorted(tables["scores"]), {a: _sorted(t) for a, t in per_axis.items()},
                   _sorted(tables["magnitude"]), _sorted(tables["mean"]), meta.get("settings", {}), groups,
                   {name: _sorted(t) for name, t in extra.items()})


def _sorted(table: Mapping[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    return {k: table[k] for k in sorted(table)}


def score_groups(metric: Any, per_prompt: Mapping[int, torch.Tensor], magnitude: Mapping[int, torch.Tensor],
                 groups: Sequence[PromptGroup], form_to_group: Mapping[str, str]) -> dict[str, dict[int, torch.Tensor]]:
    """Bias score per axis and layer: the metric on each bucket of like groups, mean weighted by groups.

    A bucket holds the groups of one axis whose member j is the same attribute
    group for every j, so ``[n_groups, n_members, width]`` is well defined.
    """
    offsets, start = [], 0
    for g in groups:
        offsets.append(start)
        start += len(g.prompts)
    buckets: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for i, g in enumerate(groups):
        buckets.setdefault((g.axis, attribute_key(g, form_to_group)), []).append(i)
    per_axis: dict[str, dict[int, torch.Tensor]] = {}
    weights: dict[str, int] = {}
    for (axis, _), members in buckets.items():
        n = len(groups[members[0]].prompts)
        rows = torch.tensor([offsets[i] + j for i in members for j in range(n)])
        table = per_axis.setdefault(axis, {})
        for layer, flat in per_prompt.items():
            pooled = flat.index_select(0, rows).reshape(len(members), n, flat.shape[-1])
            score = _checked(metric, metric.score(pooled, magnitude[layer]), flat.shape[-1], layer)
            table[layer] = table.get(layer, 0) + score * len(members)
        weights[axis] = weights.get(axis, 0) + len(members)
    return {axis: {layer: s / weights[axis] for layer, s in table.items()} for axis, table in per_axis.items()}


def _checked(metric: Any, score: Any, width: int, layer: int) -> torch.Tensor:
    if not isinstance(score, torch.Tensor) or tuple(score.shape) != (width,):
        shape = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
        raise PluginContractError(f"bias metric {metric.name!r} returned {shape} for layer {layer}; "
                                  f"expected a tensor of shape ({width},)")
    if not bool(torch.isfinite(score).all()):
        raise PluginContractError(f"bias metric {metric.name!r} returned non-finite scores for layer {layer}")
    return score.float()


def analyze_bias(model: Any, tokenizer: Any, axes: Sequence[Any] | None = None,
                 pairs: Sequence[Sequence[str]] | None = None, groups: Sequence[PromptGroup] | None = None, *,
                 prompt_files: Sequence[str | Path] = (), split: str = "analysis", site: str | None = None,
                 pooling: str | None = None, metric: str | None = None, metric_params: Mapping[str, Any] | None = None,
                 batch_size: int | None = None, layers: Sequence[int] | None = None, adapter: Any = None,
                 registry: Any = None, progress: bool = True, shard: bool = True) -> BiasReport:
    """Score every MLP neuron by how much it reacts to the demographic attribute.

    ``axes`` are registered axis names (or axis YAML paths / objects); with no
    axes, prompt files, pairs or groups, every registered axis is used.
    ``prompt_files`` are user files of pairs or groups (split by template like
    axes); ``pairs`` are ``(a, b)`` prompt strings; ``groups`` are
    ``PromptGroup``s (used as given, not split). ``site``, ``pooling``,
    ``metric`` and ``batch_size`` default to ``BiasSection``'s and
    ``ActivationParams``' defaults (``core/contract/config.py``). Raises ``PromptError`` for bad prompts and
    ``UnknownPluginError`` for unknown plugin names. With ``shard`` and an active
    torch.distributed group of several processes (torchrun), every process must
    call this; each runs a share of the groups and all return the report of a
    one-process run (see ``core.distributed``).
    """
    from ..contract.config import ActivationParams, BiasSection
    from ..contract.registry import default_registry

    defaults, method_defaults = BiasSection(), ActivationParams()
    registry = default_registry(registry)
    site = site or defaults.site
    pooling = pooling or method_defaults.pooling
    metric_name = metric or method_defaults.metric.name
    batch_size = batch_size or defaults.batch_size
    metric_obj = registry.create("bias_metrics", metric_name, dict(metric_params or {}))
    if axes is None and not (prompt_files or pairs or groups):
        axes = registry.names("bias_axes")
    adapter = adapter or resolve_adapter(model, registry=registry)
    found = gather(axes=axes, prompt_files=prompt_files, pairs=pairs, groups=groups, split=split, registry=registry)
    all_groups, form_to_group = found.groups, found.form_to_group
    collected = collect_prompts(model, tokenizer, all_groups, sites=(site,), pooling=pooling, layers=layers,
                                adapter=adapter, batch_size=batch_size, progress=progress, registry=registry,
                                world=_world() if shard else None)[site]
    per_axis = score_groups(metric_obj, collected.per_prompt, collected.magnitude, all_groups, form_to_group)
    layer_ids = sorted(collected.per_prompt)
    combined = {layer: torch.stack([per_axis[a][layer] for a in per_axis]).mean(0) for layer in layer_ids}
    settings = {
        "site": site, "pooling": pooling, "metric": metric_name, "metric_params": dict(metric_params or {}),
        "axes": list(per_axis), "split": split, "n_groups": len(all_groups),
        "n_groups_per_axis": {a: sum(g.axis == a for g in all_groups) for a in per_axis},
        "n_prompts": sum(len(g.prompts) for g in all_groups), "n_tokens": collected.n_tokens,
        "layers": layer_ids, "model_class": type(model).__name__, "adapter": getattr(adapter, "name", ""),
        "dtype": str(next((p.dtype for p in model.parameters() if p.is_floating_point()), "")).removeprefix("torch."),
    }
    logger.info("bias analysis: %d groups on axes %s, %d tokens", len(all_groups), list(per_axis),
                collected.n_tokens)
    return BiasReport(combined, per_axis, collected.magnitude, collected.mean, settings, list(all_groups))


def _world() -> Any:
    from ..model.distributed import current

    return current()
