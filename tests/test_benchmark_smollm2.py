"""The benchmark evaluators on the real SmolLM2-135M and its BPE tokenizer (small files of tests/data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fairprune as fp
from fairprune.core.model import benchmark_scoring, lm_scoring
from fairprune.plugins.evaluators.bbq import BBQEvaluator
from fairprune.plugins.evaluators.crows_pairs import CrowsPairsEvaluator

pytestmark = pytest.mark.integration
DATA = Path(__file__).parent / "data" / "benchmarks"


@pytest.fixture(scope="module")
def smollm2():
    return fp.load_model("smollm2-135m")


def test_answers_continued_from_the_cache_match_whole_sequences_on_the_real_model(smollm2, monkeypatch):
    model, tok = smollm2
    examples = BBQEvaluator().configure({"path": str(DATA / "bbq")}).examples
    prompts, choices = [e.prompt for e in examples], [list(e.answers) for e in examples]
    assert lm_scoring.cache_argument(model) is not None
    cached = benchmark_scoring.choice_logprobs(model, tok, prompts, choices, batch_size=4)
    monkeypatch.setattr(lm_scoring, "cache_argument", lambda m: None)
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


def test_crows_pairs_on_a_file_of_real_size_matches_whole_sentence_scoring(smollm2, tmp_path):
    from fairprune.testing.benchmarks import whole_sentence_logprobs, write_crows_pairs

    model, tok = smollm2
    path = write_crows_pairs(tmp_path / "crows_pairs_anonymized.csv", n=520, seed=2)
    params = {"crows_pairs": {"path": str(path), "n_boot": 50}}
    results = fp.evaluate(model, model, tok, evaluators=["crows_pairs"], params=params, batch_size=16,
                          progress=False)
    metrics = results["crows_pairs"].metrics
    pairs = CrowsPairsEvaluator().configure(params["crows_pairs"]).examples
    more = np.array(whole_sentence_logprobs(model, tok, [p.sent_more for p in pairs]))
    less = np.array(whole_sentence_logprobs(model, tok, [p.sent_less for p in pairs]))
    assert metrics["n_pairs"] == 520
    assert abs(metrics["pct_stereotype_base"] - 100.0 * float(np.mean(more > less))) <= 1.0
    assert metrics["pct_stereotype_change"] == 0.0


def test_bbq_winobias_and_stereoset_on_files_of_real_size(smollm2, tmp_path):
    from fairprune.testing.benchmarks import write_stereoset

    model, tok = smollm2
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    params = {"stereoset": {"path": str(write_stereoset(tmp_path / "dev.json", n=2100)), "limit": 60, "n_boot": 50}}
    if (shared / "bbq").is_dir() and (shared / "winobias").is_dir():
        params["bbq"] = {"path": str(shared / "bbq"), "limit": 30, "n_boot": 50}
        params["winobias"] = {"path": str(shared / "winobias"), "limit": 60, "n_boot": 50}
    results = fp.evaluate(model, model, tok, evaluators=list(params), params=params, batch_size=16, progress=False)
    for name, figure in (("stereoset", "ss"), ("bbq", "accuracy_disambiguated"), ("winobias", "pct_pro")):
        if name in params:
            value = results[name].metrics[f"{figure}_base"]
            assert 0.0 <= value <= 100.0 and results[name].metrics[f"{figure}_change"] == 0.0
