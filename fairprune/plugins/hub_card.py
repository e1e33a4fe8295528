"""The parts of a run's model card that the Hugging Face Hub reads: ``model-index`` and ``library_name``.

``model_index`` turns the headlines the evaluators declared (``protocols.Headline``, stored in
``metrics.json``) into the Hub's evaluation-results block: one result per dataset and split, each
with its task and every measured figure of that dataset as a metric (type = the metric's key, name =
its label and unit, value as measured). ``loading`` says how the saved directory loads: plain
transformers only when every layer kept the same MLP width.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..core.contract.summary import headlines, metric

#: the Hub's task of every fairprune model (a causal language model)
TASK = {"type": "text-generation", "name": "Text Generation"}


def heldout_dataset(axes: Sequence[str]) -> tuple[str, str]:
    """Name and split of the run's held-out prompt groups, where headlines without a ``dataset`` are measured."""
    return f"fairprune held-out templates ({', '.join(axes)})", "heldout"


def dataset_type(name: str) -> str:
    """A Hub-style identifier for a dataset name: lowercase words joined by ``-`` (``CrowS-Pairs`` -> ``crows-pairs``)."""
    return "-".join(re.findall(r"[a-z0-9]+", name.lower())) or "dataset"


def model_index(model_name: str, metrics: dict[str, Any], axes: Sequence[str]) -> list[dict[str, Any]]:
    """The ``model-index`` list of a run's card: ``[{name, results: [{task, dataset, metrics}]}]``.

    Every headline with a measured value becomes one metric, grouped by (dataset, split) in the order the
    evaluators reported them; an empty list when the run measured no headline (the Hub needs at least one
    result per entry).
    """
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for evaluator, h in headlines(metrics):
        value = metric(metrics, evaluator, h["key"])
        if value is None:
            continue
        dataset = (h.get("dataset"), h.get("split", "")) if h.get("dataset") else heldout_dataset(axes)
        unit = h.get("unit", "").strip()
        results.setdefault(dataset, []).append({"type": f"{evaluator}/{h['key']}", "value": round(float(value), 4),
                                                "name": h["label"] + (f" ({unit})" if unit else "")})
    if not results:
        return []
    entries = []
    for (name, split), found in results.items():
        dataset = {"name": name, "type": dataset_type(name)}
        if split:
            dataset["split"] = split
        entries.append({"task": dict(TASK), "dataset": dataset, "metrics": found})
    return [{"name": model_name, "results": entries}]


def uniform_width(metrics: dict[str, Any]) -> int | None:
    """The MLP width every layer has after pruning, or None when the layers' widths differ."""
    widths = set(metrics.get("pruning", {}).get("widths_after") or [])
    return widths.pop() if len(widths) == 1 else None


def loading(metrics: dict[str, Any]) -> tuple[str, str]:
    """``(library_name, sentence)``: which library loads the directory, and how to load it."""
    width = uniform_width(metrics)
    if width is not None:
        return "transformers", (f"Every layer has the same MLP width ({width}), so the directory loads with plain "
                                "`AutoModelForCausalLM.from_pretrained(path)` (and `fairprune.load_pretrained`), "
                                "and converts to GGUF with llama.cpp's converter.")
    return "fairprune", ("Layers have different MLP widths, which `config.intermediate_size` cannot express: load "
                         "with `fairprune.load_pretrained(path)` (plain `AutoModelForCausalLM.from_pretrained` "
                         "refuses the checkpoint, and GGUF converters cannot read it). For a directory that loads "
                         "with transformers, vLLM or llama.cpp, re-run with `pruning.uniform_widths: true`.")
