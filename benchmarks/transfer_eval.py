"""Evaluate pruning plans on prompt files the selection never saw: between vs within, recall, LAMBADA, control.

Reads prompt sets by path (JSON), so the data can live outside the repository:

- ``--swap FILE`` (repeatable): ``{"groups": {group: [form, ...]}, "templates": [{"text": "... {a} ..."}]}``.
  Every template is filled with every form of every group ("a {a}" becomes "an {a}" before a vowel). Per
  template, the next-token Jensen-Shannon divergence (nats) of every pair of filled prompts is averaged over
  pairs of *different* groups (between) and over pairs of two forms of *one* group (within: the word-swap
  floor). Group words and first names both fit this format.
- ``--recall FILE``: ``{"answers": {group: [" word", ...]}, "stated": {group: form}, "templates": ["... {a} ..."]}``.
  Each template states a group and asks it back; the model's score of a group is the logsumexp over its answer
  words of log p(word | prompt) (all tokens). Accuracy of choosing the stated group among all groups, and the
  mean log-probability of the stated group normalised over the groups.
- LAMBADA (``--lambada``, first ``--lambada-limit`` passages): last-word greedy accuracy and per-token perplexity.

Each plan (``plan.json`` of a run, or a run directory holding one) is applied to the base model by ablation
(removed neurons set to zero, which equals the structural pruner's result), so one loaded model serves the base,
every plan and the random control: ``--random K`` seeded draws of the first plan's per-layer neuron counts among
neurons that are not massive-activation neurons (max |h| on the bundled calibration text above ``--massive``
times the layer's median max |h|). Intervals are 95% paired bootstraps over templates (JS), prompts (recall)
and passages (LAMBADA). ``--pruned DIR`` measures a whole saved model instead (a pruned model whose kept
weights were then changed, e.g. by recovery), against the same base. Results go to ``--out`` as JSON; a table
is printed.

    python benchmarks/transfer_eval.py --swap /path/between.json --swap /path/names.json \
        --recall /path/recall.json --plan runs/fair-smollm2 --random 3 --lambada-limit 400 --out eval.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import pickle
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
LAMBADA = HERE.parent.parent / "shared" / "data" / "lambada_test.jsonl"
logger = logging.getLogger("transfer_eval")

_ARTICLE = re.compile(r"\b([Aa]) \{a\}")


def fill(template: str, form: str) -> str:
    """``template`` with ``{a}`` replaced by ``form``; "a {a}" takes "an" before a vowel."""
    def article(m: re.Match) -> str:
        a = m.group(1)
        return (a + "n" if form[:1].lower() in "aeiou" else a) + " {a}"
    return _ARTICLE.sub(article, template).replace("{a}", form)


def load_swap(path: Path) -> dict[str, Any]:
    """A swap set: per template, the filled prompts and each one's group."""
    data = json.loads(path.read_text())
    if "groups" not in data or "templates" not in data:
        raise SystemExit(f"error: {path}: a swap set needs 'groups' and 'templates'")
    groups = data["groups"]
    items = []
    for t in data["templates"]:
        text = t["text"] if isinstance(t, dict) else t
        if "{a}" not in text:
            raise SystemExit(f"error: {path}: template without {{a}}: {text[:60]!r}")
        prompts, labels = [], []
        for group, forms in groups.items():
            for form in forms:
                prompts.append(fill(text, form))
                labels.append(group)
        items.append({"prompts": prompts, "labels": labels,
                      "register": t.get("register", "") if isinstance(t, dict) else ""})
    return {"name": path.stem, "items": items}


def load_recall(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    answers, stated = data["answers"], data["stated"]
    items = [{"prompt": fill(t, stated[g]), "group": g} for t in data["templates"] for g in answers]
    return {"name": path.stem, "answers": answers, "items": items}


def pair_js_matrix(lp: torch.Tensor) -> torch.Tensor:
    """JS (nats) between every pair of rows of log-probs ``[n, V]`` -> ``[n, n]`` (float64)."""
    from fairprune.core.model.divergence import js_divergence

    n = lp.shape[0]
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        out[i, i + 1:] = js_divergence(lp[i:i + 1].expand(n - i - 1, -1), lp[i + 1:])
    return out + out.T


def swap_measures(model, tok, swap: dict[str, Any], batch_size: int) -> dict[str, np.ndarray]:
    """Per template: mean between-group JS and mean within-group JS."""
    from fairprune.core.model.lm_scoring import last_token_logprobs

    prompts = [p for it in swap["items"] for p in it["prompts"]]
    lp = last_token_logprobs(model, tok, prompts, batch_size=batch_size)
    between, within, k = [], [], 0
    for it in swap["items"]:
        n = len(it["prompts"])
        js = pair_js_matrix(lp[k:k + n])
        k += n
        labels = it["labels"]
        b = [float(js[i, j]) for i in range(n) for j in range(i + 1, n) if labels[i] != labels[j]]
        w = [float(js[i, j]) for i in range(n) for j in range(i + 1, n) if labels[i] == labels[j]]
        between.append(np.mean(b))
        within.append(np.mean(w) if w else np.nan)
    return {"between": np.array(between), "within": np.array(within)}


def recall_measures(model, tok, recall: dict[str, Any], batch_size: int) -> dict[str, np.ndarray]:
    """Per prompt: whether the stated group wins, and its log-probability normalised over the groups."""
    from fairprune.core.model.lm_scoring import encode, pad_id, score_continuations

    groups = list(recall["answers"])
    requests, index = [], []
    for i, it in enumerate(recall["items"]):
        ctx = encode(tok, it["prompt"])
        for gi, g in enumerate(groups):
            for word in recall["answers"][g]:
                requests.append((ctx, encode(tok, word, special=False)))
                index.append((i, gi))
    scores = score_continuations(model, requests, batch_size=batch_size, pad=pad_id(tok))
    table = np.full((len(recall["items"]), len(groups)), -np.inf)
    for (i, gi), s in zip(index, scores):
        table[i, gi] = np.logaddexp(table[i, gi], -s.nll)
    norm = table - np.logaddexp.reduce(table, axis=1, keepdims=True)
    truth = np.array([groups.index(it["group"]) for it in recall["items"]])
    return {"correct": (table.argmax(1) == truth).astype(float), "logprob": norm[np.arange(len(truth)), truth]}


def lambada_measures(model, tok, requests, batch_size: int) -> dict[str, np.ndarray]:
    from fairprune.core.model.lm_scoring import pad_id, score_continuations

    scores = score_continuations(model, requests, batch_size=batch_size, pad=pad_id(tok))
    return {"correct": np.array([float(s.greedy) for s in scores]), "nll": np.array([s.nll for s in scores]),
            "tokens": np.array([s.n_tokens for s in scores], dtype=float)}


def measure_all(model, tok, sets, recall, requests, batch_size) -> dict[str, Any]:
    out: dict[str, Any] = {s["name"]: swap_measures(model, tok, s, batch_size) for s in sets}
    if recall is not None:
        out["recall"] = recall_measures(model, tok, recall, batch_size)
    if requests:
        out["lambada"] = lambada_measures(model, tok, requests, batch_size)
    return out


# -- statistics --------------------------------------------------------------------------------------

def boot(fn, n: int, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    vals = [fn(rng.integers(0, n, n)) for _ in range(reps)]
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def ratio_change(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """Percent change of the mean, with a paired bootstrap interval over items."""
    ok = ~np.isnan(before)
    b, a = before[ok], after[ok]
    pct = 100.0 * (a.mean() / b.mean() - 1.0)
    lo, hi = boot(lambda i: 100.0 * (a[i].mean() / b[i].mean() - 1.0), len(b))
    return {"before": float(b.mean()), "after": float(a.mean()), "pct": float(pct), "lo": lo, "hi": hi}


def diff_change(before: np.ndarray, after: np.ndarray, scale: float = 100.0) -> dict[str, float]:
    d = scale * (after - before)
    lo, hi = boot(lambda i: d[i].mean(), len(d))
    return {"before": float(scale * before.mean()), "after": float(scale * after.mean()), "diff": float(d.mean()),
            "lo": lo, "hi": hi}


def ppl_change(before: dict, after: dict) -> dict[str, float]:
    def ppl(m, i):
        return math.exp(m["nll"][i].sum() / m["tokens"][i].sum())
    n = len(before["nll"])
    allidx = np.arange(n)
    pct = 100.0 * (ppl(after, allidx) / ppl(before, allidx) - 1.0)
    lo, hi = boot(lambda i: 100.0 * (ppl(after, i) / ppl(before, i) - 1.0), n)
    return {"before": ppl(before, allidx), "after": ppl(after, allidx), "pct": pct, "lo": lo, "hi": hi}


def compare(base: dict, after: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, m in base.items():
        if name == "recall":
            out["recall_acc"] = diff_change(m["correct"], after[name]["correct"])
            out["recall_logprob"] = diff_change(m["logprob"], after[name]["logprob"], scale=1.0)
        elif name == "lambada":
            out["lambada_acc"] = diff_change(m["correct"], after[name]["correct"])
            out["lambada_ppl"] = ppl_change(m, after[name])
        else:
            out[f"{name}:between"] = ratio_change(m["between"], after[name]["between"])
            if not np.all(np.isnan(m["within"])):
                out[f"{name}:within"] = ratio_change(m["within"], after[name]["within"])
    return out


# -- plans and the random control --------------------------------------------------------------------

def read_plan(path: Path) -> dict[int, list[int]]:
    path = path / "plan.json" if path.is_dir() else path
    data = json.loads(path.read_text())
    return {int(k): list(v) for k, v in data["removed"].items() if v}


def massive_neurons(model, tok, adapter, ratio: float) -> dict[int, torch.Tensor]:
    """Per layer, ``Bool[width]``: max |h| over the bundled calibration text above ``ratio`` x the layer median."""
    from fairprune.core.method.attribution import frozen, neuron_hooks, text_chunks

    text = text_chunks(tok, max_tokens=1024)
    peak: dict[int, torch.Tensor] = {}
    with torch.no_grad(), frozen(model), neuron_hooks(model, adapter) as hooks:
        hooks.track = True
        for start in range(0, len(text.chunks), 4):
            hooks.kept = {}
            model(input_ids=torch.tensor(text.chunks[start:start + 4]), use_cache=False)
            for layer, h in hooks.kept.items():
                m = h.detach().abs().amax(dim=(0, 1)).float()
                peak[layer] = torch.maximum(peak[layer], m) if layer in peak else m
    return {layer: p > ratio * p.median() for layer, p in peak.items()}


def random_plans(plan: dict[int, list[int]], massive: dict[int, torch.Tensor], k: int) -> list[dict[int, list[int]]]:
    """``k`` seeded draws with ``plan``'s per-layer counts among the non-massive neurons of each layer."""
    out = []
    for seed in range(k):
        g = torch.Generator().manual_seed(1000 + seed)
        draw = {}
        for layer, idx in plan.items():
            allowed = (~massive[layer]).nonzero().flatten()
            pick = allowed[torch.randperm(len(allowed), generator=g)[:len(idx)]]
            draw[layer] = sorted(pick.tolist())
        assert {l: len(v) for l, v in draw.items()} == {l: len(v) for l, v in plan.items()}
        out.append(draw)
    return out


def ablated_measures(model, tok, adapter, removed, sets, recall, requests, batch_size):
    from fairprune.core.method.attribution import neuron_hooks

    with neuron_hooks(model, adapter, removed):
        return measure_all(model, tok, sets, recall, requests, batch_size)


def row(label: str, n: int, c: dict[str, Any]) -> str:
    def pct(key):
        v = c.get(key)
        return "" if v is None else f"{v['pct']:+.1f}% [{v['lo']:+.0f}, {v['hi']:+.0f}]"

    def pts(key):
        v = c.get(key)
        return "" if v is None else f"{v['after']:.1f} ({v['diff']:+.1f} [{v['lo']:+.1f}, {v['hi']:+.1f}])"
    cols = [label, str(n)]
    for key in sorted(k for k in c if ":" in k):
        cols.append(f"{key} {pct(key)}")
    cols += [f"recall {pts('recall_acc')}", f"lambada acc {pts('lambada_acc')}", f"ppl {pct('lambada_ppl')}"]
    return " | ".join(cols)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--swap", type=Path, action="append", default=[], help="a swap set (JSON), repeatable")
    parser.add_argument("--recall", type=Path, default=None, help="a recall set (JSON)")
    parser.add_argument("--plan", type=Path, action="append", default=[], help="plan.json or a run dir, repeatable")
    parser.add_argument("--pruned", type=Path, action="append", default=[],
                        help="a saved pruned model directory (fairprune's save_pretrained), repeatable")
    parser.add_argument("--random", type=int, default=0, help="random draws of the first plan's per-layer counts")
    parser.add_argument("--massive", type=float, default=10.0, help="massive neuron: max |h| > this x layer median")
    parser.add_argument("--lambada", type=Path, default=LAMBADA)
    parser.add_argument("--lambada-limit", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="write the comparisons here (JSON)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/transfer_eval_cache"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_grad_enabled(False)

    import fairprune as fp
    from fairprune.core.model.adapters import resolve_adapter
    from fairprune.core.model.lm_scoring import word_requests
    from fairprune.plugins.evaluators.data import read_jsonl_texts

    sets = [load_swap(p) for p in args.swap]
    recall = load_recall(args.recall) if args.recall else None
    plans = [(str(p), read_plan(p)) for p in args.plan]
    start = time.perf_counter()
    model, tok = fp.load_model(args.model)
    adapter = resolve_adapter(model)
    texts = read_jsonl_texts(args.lambada, limit=args.lambada_limit, what="lambada") if args.lambada_limit else []
    requests = word_requests(tok, texts) if texts else []

    key = hashlib.sha256(json.dumps([args.model, [p.read_text() for p in args.swap],
                                     args.recall.read_text() if args.recall else "",
                                     args.lambada_limit]).encode()).hexdigest()[:16]
    cache = args.cache / f"base-{key}.pkl"
    if cache.is_file():
        base = pickle.loads(cache.read_bytes())
    else:
        base = measure_all(model, tok, sets, recall, requests, args.batch_size)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(base))
    n_params = sum(p.numel() for p in model.parameters())
    summary: dict[str, Any] = {"model": args.model, "lambada_limit": args.lambada_limit,
                               "base": {k: {kk: float(np.nanmean(vv)) for kk, vv in v.items()}
                                        for k, v in base.items()}, "plans": {}}
    logger.info("base: %s", json.dumps(summary["base"]))
    todo = list(plans)
    if args.random and plans:
        massive = massive_neurons(model, tok, adapter, args.massive)
        todo += [(f"random-{i}", p) for i, p in enumerate(random_plans(plans[0][1], massive, args.random))]
    for label, removed in todo:
        after = ablated_measures(model, tok, adapter, removed, sets, recall, requests, args.batch_size)
        c = compare(base, after)
        n = sum(map(len, removed.values()))
        summary["plans"][label] = {"neurons": n, "compare": c}
        print(row(label, n, c), flush=True)
    for path in args.pruned:  # a whole model of its own (e.g. pruned and then recovered), not an ablation
        other, _ = fp.load_pretrained(path)
        after = measure_all(other, tok, sets, recall, requests, args.batch_size)
        n = n_params - sum(p.numel() for p in other.parameters())
        summary["plans"][str(path)] = {"neurons": None, "params_removed": n, "compare": compare(base, after)}
        print(row(str(path), n, summary["plans"][str(path)]["compare"]), flush=True)
        del other
    summary["seconds"] = time.perf_counter() - start
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
