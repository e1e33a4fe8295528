"""Which capability check sees what a plan costs on LAMBADA? Perplexity changes of saved plans, one process.

Selection keeps a round only if a measured capability check passes (the calibration text's perplexity,
``method.max_perplexity_increase_pct``), yet plans that pass it have cost LAMBADA far more. This script applies
each plan to the base model by ablation (removed neurons set to zero, which equals the structural pruner) and
measures, against the same unpruned model, the perplexity change (%) on:

- ``text``: the bundled calibration text (``fairprune/data/text/general_english.txt``, windows of 256 tokens,
  stride 128), what the check reads;
- ``narrative``: ``benchmarks/data/narrative_fiction.txt`` (about 1,500 words of fiction with dialogue and
  recurring names, written for this test), the same windows;
- ``cloze``: the last word of each text of ``--cloze`` (default: the bundled cloze set, ``fairprune/data/cloze``),
  per token;
- ``passages``: the last word of 400 passages in LAMBADA's form written for this test
  (``benchmarks/data/long_range_passages.jsonl``: a few sentences of fiction whose last word the passage makes
  guessable), per token;
- ``name_passages``: the same for passages whose last word is a character's name met earlier in the passage
  (``fairprune/data/cloze/name_passages.jsonl``, what ``method.cloze_check`` reads by default);
- ``lambada``: the last word of LAMBADA's first ``--lambada-limit`` passages (``../shared/data``), per token,
  with its 95% paired bootstrap interval over passages.

``--by-round`` adds a row per selection round of each plan. Results go to ``--out`` as JSON; a Markdown table is
printed. Rank agreement between a check and LAMBADA is Spearman's rho over the plans' whole rows.

    python benchmarks/capability_checks.py runs/a runs/b --lambada-limit 1000 --out checks.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LAMBADA = ROOT.parent / "shared" / "data" / "lambada_test.jsonl"
TEXT = ROOT / "fairprune" / "data" / "text" / "general_english.txt"
NARRATIVE = HERE / "data" / "narrative_fiction.txt"
CLOZE = ROOT / "fairprune" / "data" / "cloze" / "general_knowledge.jsonl"
PASSAGES = HERE / "data" / "long_range_passages.jsonl"
NAME_PASSAGES = ROOT / "fairprune" / "data" / "cloze" / "name_passages.jsonl"
CHECKS = ("text", "narrative", "cloze", "passages", "name_passages", "lambada")


def removed_sets(path: Path, by_round: bool) -> dict[str, dict[int, list[int]]]:
    """``{label: {layer: neurons}}``: the whole plan, and with ``by_round`` each round's neurons alone."""
    from fairprune.core.method.plan_files import read_plan_file

    plan_path = path / "plan.json" if path.is_dir() else path
    plan = read_plan_file(plan_path)
    name = path.name if path.is_dir() else path.parent.name
    sets = {name: {int(layer): list(neurons) for layer, neurons in plan["removed"].items()}}
    records = plan.get("records") or []
    if by_round:
        for k in sorted({r["round"] for r in records if "round" in r}):
            chosen: dict[int, list[int]] = {}
            for r in records:
                if r.get("round") == k:
                    chosen.setdefault(int(r["layer"]), []).append(int(r["neuron"]))
            sets[f"{name}, round {k}"] = chosen
    return sets


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than three pairs."""
    if len(a) < 3:
        return float("nan")
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _ranks(values: list[float]) -> np.ndarray:
    """0-based ranks, tied values sharing the mean of their ranks."""
    x = np.asarray(values, dtype=float)
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plans", nargs="+", type=Path, help="plan.json files or run directories holding one")
    parser.add_argument("--model", default="smollm2-135m", help="the base model the plans were made for")
    parser.add_argument("--cloze", type=Path, default=CLOZE, help="a JSONL of texts whose last word is scored "
                                                                     "(default: the bundled cloze set)")
    parser.add_argument("--lambada", type=Path, default=LAMBADA)
    parser.add_argument("--lambada-limit", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--by-round", action="store_true", help="also each round's neurons alone")
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    import fairprune as fp
    from fairprune.core.method.attribution import neuron_hooks
    from fairprune.core.model.lm_scoring import encode, pad_id, score_continuations, window_requests, word_requests
    from fairprune.plugins.evaluators.data import read_jsonl_texts

    torch.set_grad_enabled(False)
    model, tok = fp.load_model(args.model)
    adapter = fp.resolve_adapter(model)
    requests = {
        "text": window_requests(encode(tok, TEXT.read_text(), special=False), 256, 128),
        "narrative": window_requests(encode(tok, NARRATIVE.read_text(), special=False), 256, 128),
        "cloze": word_requests(tok, read_jsonl_texts(str(args.cloze), what="cloze")),
        "passages": word_requests(tok, read_jsonl_texts(str(PASSAGES), what="passages")),
        "name_passages": word_requests(tok, read_jsonl_texts(str(NAME_PASSAGES), what="name_passages")),
        "lambada": word_requests(tok, read_jsonl_texts(str(args.lambada), limit=args.lambada_limit, what="lambada")),
    }

    def measure(removed: dict[int, list[int]]) -> dict[str, np.ndarray]:
        with neuron_hooks(model, adapter, removed):
            out = {}
            for check, reqs in requests.items():
                scores = score_continuations(model, reqs, batch_size=args.batch_size, pad=pad_id(tok))
                out[check] = np.array([[s.nll, s.n_tokens] for s in scores], dtype=float)
            return out

    def change(base: np.ndarray, after: np.ndarray) -> float:
        return 100.0 * (math.exp(after[:, 0].sum() / after[:, 1].sum() - base[:, 0].sum() / base[:, 1].sum()) - 1)

    base = measure({})
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    n = len(base["lambada"])
    draws = [rng.integers(0, n, n) for _ in range(2000)]
    for path in args.plans:
        for label, removed in removed_sets(path, args.by_round).items():
            after = measure(removed)
            row: dict[str, Any] = {"plan": label, "neurons": sum(map(len, removed.values()))}
            row.update({check: change(base[check], after[check]) for check in CHECKS})
            boot = [change(base["lambada"][d], after["lambada"][d]) for d in draws]
            row["lambada_ci"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
            rows.append(row)
            print(json.dumps(row), flush=True)
    whole = [r for r in rows if "round" not in r["plan"]]
    rho = {check: spearman([r[check] for r in whole], [r["lambada"] for r in whole]) for check in CHECKS[:-1]}
    print(f"\n| plan | neurons | {' | '.join(CHECKS[:-1])} | LAMBADA-{args.lambada_limit} |")
    print("|---|---:|" + "---:|" * (len(CHECKS) - 1) + "---|")
    for r in rows:
        lo, hi = r["lambada_ci"]
        cells = " | ".join(f"{r[check]:+.2f}%" for check in CHECKS[:-1])
        print(f"| {r['plan']} | {r['neurons']} | {cells} | {r['lambada']:+.1f}% [{lo:+.1f}, {hi:+.1f}] |")
    print("\nSpearman rho with LAMBADA over the whole plans: "
          + ", ".join(f"{check} {value:+.2f}" for check, value in rho.items()))
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "lambada_limit": args.lambada_limit, "rows": rows,
                                        "spearman_with_lambada": rho}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
