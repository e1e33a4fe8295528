"""The benchmark evaluators on the real SmolLM2-135M and its BPE tokenizer (small files of tests/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

import fairprune as fp
from fairprune.core.model import benchmark_scoring
from fairprune.plugins.evaluators.bbq import BBQEvaluator

pytestmark = pytest.mark.integration
DATA = Path(__file__).parent / "data" / "benchmarks"


@pytest.fixture(scope="module")
def smollm2():
    return fp.load_model("smollm2-135m")


def test_answers_continued_from_the_cache_match_whole_sequences_on_the_real_model(smollm2, monkeypatch):
    model, tok = smollm2
    examples = BBQEvaluator().configure({"path": str(DATA / "bbq")}).examples
    prompts, choices = [e.prompt for e in examples], [list(e.answers) for e in examples]
    assert benchmark_scoring._takes_cache(model)
    cached = benchmark_scoring.choice_logprobs(model, tok, prompts, choices, batch_size=4)
    monkeypatch.setattr(benchmark_scoring, "_takes_cache", lambda m: False)
    whole = benchmark_scoring.choice_logprobs(model, tok, prompts, choices, batch_size=4)
    assert [s.logprob for row in cached for s in row] == pytest.approx(
        [s.logprob for row in whole for s in row], abs=1e-3)


def test_benchmarks_compare_the_real_model_with_itself(smollm2):
    model, tok = smollm2
    params = {"winobias": {"path": str(DATA / "winobias"), "n_boot": 50},
              "crows_pairs": {"path": str(DATA / "crows_pairs.csv"), "n_boot": 50}}
    results = fp.evaluate(model, model, tok, evaluators=list(params), params=params, progress=False)
    for name, figure in (("winobias", "pct_pro"), ("crows_pairs", "pct_stereotype")):
        metrics = results[name].metrics
        assert 0.0 <= metrics[f"{figure}_base"] <= 100.0 and metrics[f"{figure}_change"] == 0.0
