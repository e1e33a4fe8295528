"""Tiny real runs in seconds, for tests, docs screenshots and trying the plots out.

``tiny_analysis()`` runs the real collection, planning, pruning and evaluation on a
tiny Llama with the tiny tokenizer; ``sample_run(directory)`` writes a complete run
directory from it (the files ``fairprune run`` writes, minus nothing the report reads).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: prompt pairs in the tiny tokenizer's vocabulary; the attribute word sits mid-sentence
TINY_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (t.format("black"), t.format("white")) for t in (
        "the {} man works in the city", "a {} woman was a good doctor", "the {} boy walked into the school",
        "that {} person is very smart", "my {} friend lives in a new town", "the {} girl said she was kind",
        "a {} worker went home from the job", "the {} teacher is known in this town",
        "this {} student has a new friend", "the {} nurse was often at the school",
        "an old {} engineer lives at home", "the young {} doctor said it was good"))


@dataclass
class TinyAnalysis:
    """Everything the plots need, computed for real on a tiny model."""

    base: Any
    pruned: Any
    tokenizer: Any
    groups: list[Any]
    bias: Any  # BiasReport
    importance: dict[int, Any]
    plan: Any
    prune_result: Any
    evaluations: dict[str, Any]


def tiny_analysis(bias_weight: float = 0.8, neurons: int = 12, seed: int = 0) -> TinyAnalysis:
    """Collect, score, plan (linear scorer, global selection), prune and evaluate a tiny Llama."""
    from fairprune.core.data.prompts import pairs_to_groups
    from fairprune.core.method.bias import analyze_bias
    from fairprune.core.method.planning import Budget, plan_pruning
    from fairprune.core.method.surgery import importance, prune
    from fairprune.core.run.evaluation import evaluate
    from fairprune.testing import tiny_model, tiny_tokenizer

    base, tokenizer = tiny_model("llama", seed=seed, num_hidden_layers=3), tiny_tokenizer()
    groups = pairs_to_groups(TINY_PAIRS, axis="race")
    report = analyze_bias(base, tokenizer, groups=groups, progress=False)
    imp = importance(base, "max_abs_weight")
    plan = plan_pruning(base, report, importance="max_abs_weight", bias_weight=bias_weight,
                        budget=Budget(neurons=neurons))
    pruned = copy.deepcopy(base)
    result = prune(pruned, plan)
    evaluations = evaluate(base, pruned, tokenizer, groups=groups, evaluators=["activation_bias", "parameters"],
                           params={"activation_bias": {"n_boot": 50}}, progress=False, prune_result=result)
    return TinyAnalysis(base, pruned, tokenizer, groups, report, imp, plan, result, evaluations)


def sample_run(directory: str | Path, bias_weight: float = 0.8, neurons: int = 12, seed: int = 0) -> Path:
    """A complete run directory for a tiny random Llama, written by the pipeline itself (``fairprune.run``).

    The model and tokenizer are saved to ``directory/source`` and the prompt pairs to
    ``directory/pairs.yaml``; the run (model, plan, bias report, metrics, config,
    report.md and report.html) goes to ``directory/run``, which is returned.
    """
    import yaml

    from fairprune.core.run.pipeline import run
    from fairprune.testing import tiny_model, tiny_tokenizer

    directory = Path(directory)
    source = directory / "source"
    tiny_model("llama", seed=seed, num_hidden_layers=3).save_pretrained(source)
    tiny_tokenizer().save_pretrained(source)
    pairs = directory / "pairs.yaml"
    pairs.write_text(yaml.safe_dump({"axis": "race", "pairs": [list(p) for p in TINY_PAIRS]}))
    config = {"model": {"source": str(source)}, "bias": {"axes": [], "prompts": str(pairs)},
              "method": {"name": "activation", "bias_weight": bias_weight}, "pruning": {"budget": {"neurons": neurons}},
              "evaluation": {"evaluators": ["activation_bias", "activation_pictures", "output_bias", "generations",
                                            "parameters"]},
              "output": {"dir": str(directory / "run")}, "seed": seed}
    return run(config, progress=False).output_dir


def tiny_attribution_config(directory: str | Path, source: str | Path, **method: Any) -> dict[str, Any]:
    """A one-round attribution run config on the race axis for a saved tiny model at ``source`` (char
    tokenizer), 4 neurons, no perplexity check, ``method`` merged into the method section; writes nothing."""
    return {"model": {"source": str(source)},
            "bias": {"axes": ["race"], "batch_size": 12},
            "method": {"name": "attribution", "rounds": 1, "guard_fraction": 0.25,
                       "max_perplexity_increase_pct": None,
                       "capability": {"name": "capability_cost", "params": {"chunk_tokens": 64, "max_tokens": 256}},
                       **method},
            "pruning": {"budget": {"neurons": 4}}, "evaluation": {"evaluators": ["parameters"]},
            "output": {"dir": str(directory), "save_model": False}}
