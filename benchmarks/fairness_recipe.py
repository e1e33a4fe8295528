"""Held-out bias reduction vs capability cost of pruning recipes on the real SmolLM2-135M.

For each recipe (bias site/pooling/metric, importance, scorer, bias weight,
budget, guard, pruner) this prunes a fresh copy of the model and measures, on
the held-out race templates, the mean-pooled residual-stream distance between
group members (the ``activation_bias`` evaluator's headline) and the next-token
JS divergence, and on LAMBADA the last-word accuracy and per-token perplexity.
Base figures are computed once. Results go to ``benchmarks/RESULTS.md``.

    python benchmarks/fairness_recipe.py --lambada-limit 400
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import fairprune as fp
from fairprune.core.collect import collect_prompts
from fairprune.core.groups import gather
from fairprune.core.registry import get_registry
from fairprune.plugins.evaluators.activation_bias import pairwise_distance
from fairprune.plugins.evaluators.data import read_jsonl_texts
from fairprune.plugins.evaluators.lm_scoring import (last_token_logprobs, pad_id, perplexity, score_continuations,
                                                     word_requests)
from fairprune.plugins.evaluators.output_bias import js_divergence

HERE = Path(__file__).resolve().parent
LAMBADA = HERE.parent.parent / "shared" / "data" / "lambada_test.jsonl"

DEFAULT = dict(site="neuron", pooling="suffix", metric="relative_mean_abs_diff", importance="max_abs_weight",
               scorer="linear", bias_weight=0.8, budget=0.0025, guard=10.0, pruner="structural",
               selection="global", layers=None)

#: name -> overrides of DEFAULT; the first row is the default recipe of fair-smollm2.yaml
RECIPES: dict[str, dict] = {
    "default (linear, w=0.8, 0.25%)": {},
    "w=1.0 (bias only, guard)": {"bias_weight": 1.0},
    "w=0.5": {"bias_weight": 0.5},
    "rank scorer": {"scorer": "rank"},
    "activation_weight importance": {"importance": "activation_weight"},
    "compensated pruner": {"pruner": "compensated"},
    "budget 0.5%": {"budget": 0.005},
    "w=1.0, budget 0.5%": {"bias_weight": 1.0, "budget": 0.005},
    "w=1.0, budget 0.5%, compensated": {"bias_weight": 1.0, "budget": 0.005, "pruner": "compensated"},
    "no guard": {"guard": None},
    "mean pooling": {"pooling": "mean"},
    "absolute bias (mean_abs_diff), no guard": {"metric": "mean_abs_diff", "guard": None},
    "per-layer selection": {"selection": "per_layer"},
}


def residual_distance(model, tok, groups, batch_size: int) -> np.ndarray:
    """Per group, the mean over layers of the mean-pooled residual distance between members."""
    out = np.zeros(len(groups))
    for size in sorted({len(g.prompts) for g in groups}):
        index = [k for k, g in enumerate(groups) if len(g.prompts) == size]
        subset = [groups[k] for k in index]
        collected = collect_prompts(model, tok, subset, sites=("residual",), pooling="mean", batch_size=batch_size,
                                    progress=False)
        pooled = collected["residual"].grouped(subset).pooled
        out[index] = np.stack([pairwise_distance(pooled[layer]) for layer in sorted(pooled)], 1).mean(1)
    return out


def next_token_js(model, tok, groups, batch_size: int) -> np.ndarray:
    """Per group, the mean JS divergence between members' next-token distributions."""
    prompts = [p for g in groups for p in g.prompts]
    logprobs = last_token_logprobs(model, tok, prompts, batch_size=batch_size)
    out, k = [], 0
    for g in groups:
        lp = logprobs[k:k + len(g.prompts)]
        k += len(g.prompts)
        pairs = [(i, j) for i in range(len(lp)) for j in range(i + 1, len(lp))]
        out.append(np.mean([js_divergence(lp[i], lp[j]) for i, j in pairs]))
    return np.array(out)


def lambada(model, requests, pad: int, batch_size: int) -> tuple[float, float]:
    scores = score_continuations(model, requests, batch_size=batch_size, pad=pad)
    return 100.0 * float(np.mean([s.greedy for s in scores])), perplexity(scores, "token")


def measure(model, tok, groups, requests, pad, batch_size) -> dict:
    return {"residual": residual_distance(model, tok, groups, batch_size),
            "js": next_token_js(model, tok, groups, batch_size),
            "lambada": lambada(model, requests, pad, batch_size)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lambada-limit", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--only", nargs="*", help="recipe names to run (default: all)")
    parser.add_argument("--extra", type=json.loads, default=None, help='JSON {name: overrides} to add')
    parser.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    args = parser.parse_args()
    recipes = dict(RECIPES)
    if args.extra:
        recipes.update(args.extra)
    if args.only:
        recipes = {k: v for k, v in recipes.items() if k in args.only or k in (args.extra or {})}

    start = time.perf_counter()
    model, tok = fp.load_model("smollm2-135m")
    registry = get_registry()
    groups = gather(axes=["race"], split="heldout", registry=registry).groups
    requests = word_requests(tok, read_jsonl_texts(LAMBADA, limit=args.lambada_limit, what="lambada_path"))
    pad = pad_id(tok)
    base = measure(model, tok, groups, requests, pad, args.batch_size)
    print(f"base: residual {base['residual'].mean():.4f}, JS {base['js'].mean():.5f}, LAMBADA acc "
          f"{base['lambada'][0]:.2f}% ppl {base['lambada'][1]:.3f} ({len(groups)} held-out groups)", flush=True)

    reports: dict[tuple, object] = {}
    rows = []
    for name, overrides in recipes.items():
        r = {**DEFAULT, **overrides}
        key = (r["site"], r["pooling"], r["metric"])
        if key not in reports:
            reports[key] = fp.analyze_bias(model, tok, axes=["race"], site=r["site"], pooling=r["pooling"],
                                           metric=r["metric"], progress=False)
        report = reports[key]
        pruned = copy.deepcopy(model)
        plan = fp.plan_pruning(pruned, report, importance=r["importance"], scorer=r["scorer"],
                               bias_weight=r["bias_weight"], budget=fp.Budget(param_fraction=r["budget"]),
                               selection=r["selection"], layers=r["layers"], guard_magnitude_ratio=r["guard"])
        result = fp.prune(pruned, plan, pruner=r["pruner"],
                          calibration=report.mean if r["pruner"] == "compensated" else None)
        after = measure(pruned, tok, groups, requests, pad, args.batch_size)
        row = {"recipe": name, "params_removed_pct": 100 * result.fraction_removed, "neurons": plan.n_neurons,
               "residual_reduction_pct": 100 * (1 - after["residual"].mean() / base["residual"].mean()),
               "js_reduction_pct": 100 * (1 - after["js"].mean() / base["js"].mean()),
               "lambada_acc": after["lambada"][0],
               "lambada_ppl_change_pct": 100 * (after["lambada"][1] / base["lambada"][1] - 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del pruned

    elapsed = time.perf_counter() - start
    table = render(rows, base, len(groups), args, elapsed)
    print(table)
    if not args.no_write:
        write_section(table)
    return 0


def render(rows, base, n_groups, args, elapsed) -> str:
    lines = [
        "## Fairness recipes on SmolLM2-135M (held-out race templates, LAMBADA)", "",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads). Command: `python benchmarks/fairness_recipe.py --lambada-limit "
        f"{args.lambada_limit}` ({elapsed / 60:.1f} min).",
        f"Base: held-out residual distance {base['residual'].mean():.4f}, next-token JS {base['js'].mean():.5f} "
        f"({n_groups} held-out groups of 6 race attributes); LAMBADA first {args.lambada_limit}: accuracy "
        f"{base['lambada'][0]:.2f}%, per-token perplexity {base['lambada'][1]:.3f}.",
        f"Defaults: {json.dumps(DEFAULT)}.", "",
        "| recipe | params removed | neurons | residual bias | next-token JS | LAMBADA acc | LAMBADA ppl |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['params_removed_pct']:.3f}% | {r['neurons']} | "
                     f"{-r['residual_reduction_pct']:+.1f}% | {-r['js_reduction_pct']:+.1f}% | "
                     f"{r['lambada_acc']:.2f}% | {r['lambada_ppl_change_pct']:+.2f}% |")
    lines.append("")
    return "\n".join(lines)


def write_section(table: str) -> None:
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = "<!-- fairness_recipe:start -->", "<!-- fairness_recipe:end -->"
    block = f"{start}\n{table}\n{end}"
    if start in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
