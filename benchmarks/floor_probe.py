"""A one-shot probe of the floor criterion: is a neuron's removal estimated to narrow groups, or to deafen?

First-order estimates only (no rounds, no measured checks), on the demo's analysis templates with every surface
form of every group, SmolLM2-135M: per neuron, ΔB (between-group next-token JS) and ΔW (the word-swap floor,
two forms of one group), relative to the unpruned model's B and W; the capability cost of the demo's method
(windows of 8, 2048 tokens) guards the costlier half of each layer. Three plans of ``--neurons`` neurons each,
ranked by estimated gain per unit of capability cost:

- ``between_only``: gain ``−ΔB/B`` (what selection on the between-group JS alone asks);
- ``capped``: gain ``−(ΔB/B − min(ΔW, 0)/W)``, the rule of ``method.floor_guard`` (``core/method/floor_guard.py``);
- ``relative``: gain ``−(ΔB/B − ΔW/W)``, which also rewards raising the floor.

Each plan is written to ``OUT/NAME/plan.json`` for ``transfer_eval.py --plan``:

    python benchmarks/floor_probe.py /tmp/probe
    python benchmarks/transfer_eval.py --swap ... --recall ... --plan /tmp/probe/capped --plan /tmp/probe/between_only
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

logger = logging.getLogger("floor_probe")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--config", type=Path, default=Path("examples/fair-smollm2.yaml"))
    parser.add_argument("--neurons", type=int, default=131, help="neurons per plan (the demo plan's count)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import fairprune as fp
    from fairprune.core.contract.registry import get_registry
    from fairprune.core.data.groups import run_groups
    from fairprune.core.method import attribution as attr
    from fairprune.core.method.floor_guard import _PairJS

    model, tokenizer = fp.load_model(args.model)
    adapter = fp.resolve_adapter(model)
    found = run_groups(fp.load_config(args.config), "analysis", get_registry())
    batches = attr.group_batches(model, tokenizer, found.groups, 16, positions="last", labels=found.form_to_group)
    between = attr.attribute_objective(model, batches, _PairJS(same=False), adapter, progress=True)
    within = attr.attribute_objective(model, batches, _PairJS(same=True), adapter, progress=True)
    b0, w0 = between.objective, within.objective
    d_b, d_w = between.sums.delta(None), within.sums.delta(None)
    cost = attr.capability_attribution(model, attr.text_chunks(tokenizer, None, 128, 2048, window=8), adapter,
                                       progress=True).cost(None)
    logger.info("between-group JS %.5f, word-swap floor %.5f (%.0f%%)", b0, w0, 100 * w0 / b0)
    scores = {"between_only": lambda l: d_b[l] / b0,
              "capped": lambda l: d_b[l] / b0 - d_w[l].clamp(max=0) / w0,
              "relative": lambda l: d_b[l] / b0 - d_w[l] / w0}
    widths = [adapter.width(model, layer) for layer in range(len(adapter.layers(model)))]
    for name, score in scores.items():
        ranked = []
        for layer in d_b:
            guard = cost[layer] >= cost[layer].median()
            s = score(layer)
            for i in torch.nonzero((s < 0) & ~guard).flatten().tolist():
                ranked.append((float(-s[i] / (cost[layer][i] + 1e-12)), layer, i))
        ranked.sort(reverse=True)
        removed: dict[int, list[int]] = {}
        for _, layer, i in ranked[:args.neurons]:
            removed.setdefault(layer, []).append(i)
        est_b = sum(float(d_b[l][ix].sum()) for l, ix in removed.items()) / b0
        est_w = sum(float(d_w[l][ix].sum()) for l, ix in removed.items()) / w0
        logger.info("%s: %d of %d candidates; first-order estimate: between %+.1f%%, floor %+.1f%%", name,
                    min(args.neurons, len(ranked)), len(ranked), 100 * est_b, 100 * est_w)
        (args.out / name).mkdir(parents=True, exist_ok=True)
        plan = {"removed": {str(l): sorted(ix) for l, ix in sorted(removed.items())}, "widths_before": widths}
        (args.out / name / "plan.json").write_text(json.dumps(plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
