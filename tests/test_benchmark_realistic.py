"""The benchmark evaluators on files shaped like the real ones, with a vocabulary large enough to split batches.

A batch of sentences sorted by length is scored in parts when the vocabulary is
large (``LOGITS_BUDGET``); every figure here is checked against
``whole_sentence_logprob`` / ``continuation_logprob``, which score one sequence
at a time without batching, padding or logit trimming.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fairprune.core.model import lm_scoring
from fairprune.core.model.benchmark_scoring import choice_logprobs, sentence_logprobs, sentence_prefix
from fairprune.plugins.evaluators.bbq import BBQEvaluator
from fairprune.plugins.evaluators.crows_pairs import CrowsPairsEvaluator
from fairprune.plugins.evaluators.stereoset import StereoSetEvaluator
from fairprune.plugins.evaluators.winobias import WinoBiasEvaluator
from fairprune.testing import tiny_char_tokenizer, tiny_model
from fairprune.testing.benchmarks import (
    continuation_logprob,
    crows_pairs_rows,
    whole_sentence_logprob,
    whole_sentence_logprobs,
    write_crows_pairs,
    write_stereoset,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: Gemma 3's vocabulary: 262,144 ids, so ~128 positions of float32 logits fill ``LOGITS_BUDGET``
BIG_VOCAB = 262_144


def char_tokenizer(prefix: str):
    """The character tokenizer with BOS and EOS (``"bos"``), EOS only (``"eos"``) or neither (``"none"``)."""
    tok = tiny_char_tokenizer()
    if prefix in ("eos", "none"):
        tok.bos_token = None
    if prefix == "none":
        tok.eos_token = None
    return tok


@pytest.fixture(scope="module")
def big_vocab_model():
    return tiny_model("llama", vocab_size=BIG_VOCAB)


@pytest.fixture(scope="module")
def small_model():
    return tiny_model("llama")


def counted_forwards(monkeypatch) -> list[int]:
    """Record the number of sequences of each scoring forward pass."""
    sizes: list[int] = []
    original = lm_scoring.forward_left_padded

    def forward(model, sequences, *args, **kwargs):
        sizes.append(len(sequences))
        return original(model, sequences, *args, **kwargs)

    monkeypatch.setattr(lm_scoring, "forward_left_padded", forward)
    return sizes


@pytest.mark.parametrize("prefix", ["bos", "eos", "none"])
def test_split_batches_of_long_and_short_sentences_score_like_whole_sentences(big_vocab_model, prefix, monkeypatch):
    tok = char_tokenizer(prefix)
    assert sentence_prefix(tok) == {"bos": [1], "eos": [2], "none": []}[prefix]
    # one batch: the longest target needs ~100 positions, which leaves room for one sequence per forward
    rows = crows_pairs_rows(40, seed=3)
    ordered = sorted({s for row in rows for s in row[:2] if len(s) < 130}, key=len)
    sentences = ordered[:5] + ordered[-3:]
    assert max(map(len, sentences)) > 100 and min(map(len, sentences)) < 45
    sizes = counted_forwards(monkeypatch)
    scored = sentence_logprobs(big_vocab_model, tok, sentences, batch_size=8)
    assert len(sizes) > 1 and sum(sizes) == len(sentences)  # the batch was split into parts
    expected = [whole_sentence_logprob(big_vocab_model, tok, s) for s in sentences]
    assert [s.logprob for s in scored] == pytest.approx(expected, abs=2e-3)
    assert [s.n_tokens for s in scored] == [len(s) - (prefix == "none") for s in sentences]


def test_pct_stereotype_of_a_crows_pairs_file_matches_whole_sentence_scoring(small_model, tmp_path, monkeypatch):
    # the budget of a 262k vocabulary, scaled to this model's 128 ids: the same parts, a cheap reference
    monkeypatch.setattr(lm_scoring, "LOGITS_BUDGET", lm_scoring.LOGITS_BUDGET * 128 // BIG_VOCAB)
    sizes = counted_forwards(monkeypatch)
    path = write_crows_pairs(tmp_path / "crows_pairs_anonymized.csv", n=520, seed=1)
    tok = tiny_char_tokenizer()
    evaluator = CrowsPairsEvaluator().configure({"path": str(path), "n_boot": 20})
    pairs = evaluator.examples
    assert len(pairs) == 520 and {p.direction for p in pairs} == {"stereo", "antistereo"}
    observed = evaluator.observe(small_model, SimpleNamespace(tokenizer=tok, batch_size=16, progress=False,
                                                              label="base"))
    assert any(size < 16 for size in sizes[:-1])  # parts smaller than a batch, not only the last one
    result = evaluator.compare(observed, observed, SimpleNamespace(seed=0))
    more = np.array([whole_sentence_logprob(small_model, tok, p.sent_more) for p in pairs])
    less = np.array([whole_sentence_logprob(small_model, tok, p.sent_less) for p in pairs])
    expected = 100.0 * float(np.mean(more > less))
    assert abs(result.metrics["pct_stereotype_base"] - expected) <= 1.0
    assert np.abs(np.asarray(observed["sent_more"]) - more).max() < 2e-3


@pytest.mark.parametrize("prefix", ["bos", "none"])
def test_whole_sentence_logprobs_stack_equal_lengths_into_one_pass_with_the_unbatched_figures(small_model, prefix):
    tok = char_tokenizer(prefix)
    sentences = ["the cat sat.", "a dog ran...", "short", "the cat sat on the mat", "a dog ran..."]
    calls: list[int] = []
    handle = small_model.register_forward_hook(lambda module, args, output: calls.append(output.logits.shape[0]))
    try:
        stacked = whole_sentence_logprobs(small_model, tok, sentences)
        assert sorted(calls) == [1, 1, 3]  # the three sentences of 12 characters in one pass
        calls.clear()
        one_by_one = whole_sentence_logprobs(small_model, tok, sentences, max_logits=1)
        assert calls == [1] * 5
    finally:
        handle.remove()
    expected = [whole_sentence_logprob(small_model, tok, s) for s in sentences]
    assert stacked == pytest.approx(expected, abs=1e-4) and one_by_one == pytest.approx(expected, abs=1e-4)
    assert stacked[1] == stacked[4]
    if prefix == "none":
        with pytest.raises(ValueError, match="nothing to score in the sentence 'a'"):
            whole_sentence_logprobs(small_model, tok, ["a"])


def test_stereoset_and_winobias_on_generated_and_real_files_with_a_big_vocabulary(big_vocab_model, tmp_path):
    tok = char_tokenizer("eos")
    ctx = SimpleNamespace(tokenizer=tok, batch_size=16, progress=False, label="base")
    stereoset = StereoSetEvaluator().configure({"path": str(write_stereoset(tmp_path / "dev.json", n=600)),
                                                "limit": 4, "n_boot": 20})
    observed = stereoset.observe(big_vocab_model, ctx)["sentence_logprobs"]
    item = stereoset.examples[0]
    reference = [whole_sentence_logprob(big_vocab_model, tok, s) / len(s) for s in item.sentences]
    assert observed[0] == pytest.approx(reference, abs=1e-4)
    if not (SHARED / "winobias").is_dir():
        pytest.skip("the shared WinoBias files are not here")
    winobias = WinoBiasEvaluator().configure({"path": str(SHARED / "winobias"), "limit": 6, "n_boot": 20})
    scores = winobias.observe(big_vocab_model, ctx)
    pair = winobias.examples[-1]
    assert scores["pro"][-1] == pytest.approx(whole_sentence_logprob(big_vocab_model, tok, pair.pro), abs=2e-3)


@pytest.mark.skipif(not (SHARED / "bbq").is_dir(), reason="the shared BBQ files are not here")
@pytest.mark.parametrize("prefix", ["bos", "none"])
def test_bbq_answers_on_the_real_files_with_a_big_vocabulary(big_vocab_model, prefix):
    tok = char_tokenizer(prefix)
    evaluator = BBQEvaluator().configure({"path": str(SHARED / "bbq"), "limit": 6, "n_boot": 20})
    examples = evaluator.examples
    assert len(examples) == 12
    scored = choice_logprobs(big_vocab_model, tok, [e.prompt for e in examples], [e.answers for e in examples],
                             batch_size=8)
    head = sentence_prefix(tok)
    for example, row in list(zip(examples, scored))[::3]:
        context = head + tok(example.prompt, add_special_tokens=False)["input_ids"]
        for answer, score in zip(example.answers, row):
            target = tok(" " + answer.strip(), add_special_tokens=False)["input_ids"]
            assert score.logprob == pytest.approx(continuation_logprob(big_vocab_model, context, target), abs=2e-3)


def test_generated_crows_pairs_file_has_the_published_columns_and_quoting(tmp_path):
    path = write_crows_pairs(tmp_path / "c.csv", n=500)
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header == ",sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators"
    pairs = CrowsPairsEvaluator().configure({"path": str(path)}).examples
    lengths = [len(p.sent_more.split()) for p in pairs]
    assert min(lengths) <= 8 and max(lengths) >= 60 and any('"' in p.sent_more for p in pairs)
    assert all(p.sent_more != p.sent_less and len(p.sent_more.split()) == len(p.sent_less.split()) for p in pairs)
    assert json.loads(json.dumps([p.bias_type for p in pairs]))  # plain strings
