"""Continuations that share a context run it once and continue from its key/value cache; the scores are those of
every ``context + target`` sequence run whole (the path a model without a cache takes)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from benchmark_helpers import context
from test_attribute_recall import FRAMES  # the same two-frame recall file
from torch import nn

from fairprune.core.model import lm_scoring
from fairprune.plugins.evaluators.attribute_recall import AttributeRecallEvaluator, continuation_logprobs
from fairprune.testing import tiny_model
from fairprune.testing.tokenizer import tiny_char_tokenizer


def mixed_requests(seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Seven contexts of 9-40 tokens (past the tiny Gemma 3's sliding window of 16), each followed by 2-7 targets
    of 1-4 tokens, and three requests that share nothing; shuffled."""
    rng = random.Random(seed)
    requests = []
    for length in (9, 17, 25, 33, 40, 12, 10):
        ctx = [rng.randrange(3, 128) for _ in range(length)]
        requests += [(ctx, [rng.randrange(3, 128) for _ in range(rng.randrange(1, 5))])
                     for _ in range(rng.randrange(2, 8))]
    requests += [([5, 6, 7], [8, 9]), ([10] * 20, [11]), ([12, 13], [14, 15, 16, 17])]
    rng.shuffle(requests)
    return requests


class Forwards:
    """Records, for every forward of a model, the rows and columns of its input ids and whether a cache came in."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[tuple[int, int, bool]] = []
        self.handle = model.register_forward_pre_hook(self.record, with_kwargs=True)

    def record(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        self.calls.append((int(ids.shape[0]), int(ids.shape[1]), cache is not None))

    def positions(self) -> int:
        return sum(rows * cols for rows, cols, _ in self.calls)

    def continued(self) -> list[tuple[int, int, bool]]:
        return [call for call in self.calls if call[2]]


def whole(monkeypatch: pytest.MonkeyPatch, score, *args, **kwargs):
    """``score(*args, **kwargs)`` with every request run whole, as for a model that takes no cache."""
    with monkeypatch.context() as patched:
        patched.setattr(lm_scoring, "cache_argument", lambda _model: None)
        return score(*args, **kwargs)


def assert_same_scores(got: list, want: list) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.n_tokens == b.n_tokens and a.greedy == b.greedy
        assert a.nll == pytest.approx(b.nll, abs=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_shared_contexts_run_once_score_as_whole_sequences(arch, batch_size, monkeypatch):
    model = tiny_model(arch)
    requests = mixed_requests()
    reference = whole(monkeypatch, lm_scoring.score_continuations, model, requests, batch_size, pad=0)
    forwards = Forwards(model)
    got = lm_scoring.score_continuations(model, requests, batch_size, pad=0)
    forwards.handle.remove()
    assert_same_scores(got, reference)
    groups = lm_scoring.shared_context_groups(requests, range(len(requests)))
    assert len(groups) == 7  # every context of several targets is run once; the three loners are not
    uncached = Forwards(model)
    whole(monkeypatch, lm_scoring.score_continuations, model, requests, batch_size, pad=0)
    assert forwards.positions() < 0.6 * uncached.positions()  # padded positions included
    continued = forwards.continued()
    assert continued and max(rows for rows, _, _ in continued) <= lm_scoring.CONTINUATION_ROWS * batch_size
    if batch_size == 1:  # a context of more multi-token targets than one forward takes continues in several
        most = max(sum(len(requests[i][1]) > 1 for i in group) for group in groups)
        assert most > lm_scoring.CONTINUATION_ROWS and len(continued) > len(groups)


def test_a_large_vocabulary_continues_fewer_rows_per_forward(monkeypatch):
    model = tiny_model("llama")
    requests = mixed_requests(seed=1)
    monkeypatch.setattr(lm_scoring, "LOGITS_BUDGET", 2 * 3 * 128)  # two rows of three positions of 128 logits
    reference = whole(monkeypatch, lm_scoring.score_continuations, model, requests, 16, pad=0)
    forwards = Forwards(model)
    got = lm_scoring.score_continuations(model, requests, 16, pad=0)
    assert_same_scores(got, reference)
    continued = forwards.continued()
    assert continued and all(rows * cols <= 6 for rows, cols, _ in continued)
    contexts = [rows for rows, _, cache in forwards.calls if not cache and rows > 1]
    assert max(contexts) <= 6  # a context pass keeps one logit row per context: six fit the budget


def test_requests_that_max_length_truncates_are_scored_whole(monkeypatch):
    model = tiny_model("llama")
    requests = mixed_requests(seed=2)
    reference = whole(monkeypatch, lm_scoring.score_continuations, model, requests, 4, pad=0, max_length=20)
    forwards = Forwards(model)
    got = lm_scoring.score_continuations(model, requests, 4, pad=0, max_length=20)
    assert_same_scores(got, reference)
    longest = max(cols for _, cols, cache in forwards.calls if not cache)
    assert longest == 20  # truncated requests ran whole, at max_length
    assert forwards.continued()  # short contexts were still run once


class NoCacheLM(nn.Module):
    """A tiny Llama behind a forward that takes a ``cache`` argument (or none) but never returns a cache."""

    def __init__(self, takes_cache: bool) -> None:
        super().__init__()
        self.inner = tiny_model("llama")
        self.takes_cache = takes_cache

    def get_output_embeddings(self) -> nn.Module:
        return self.inner.get_output_embeddings()

    def get_input_embeddings(self) -> nn.Module:
        return self.inner.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                use_cache: bool = False, logits_to_keep: int = 0, **kwargs: object) -> SimpleNamespace:
        assert self.takes_cache or not kwargs, "a model without a cache argument got one"
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=False, logits_to_keep=logits_to_keep)
        return SimpleNamespace(logits=out.logits)


class CacheArgumentLM(NoCacheLM):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                use_cache: bool = False, logits_to_keep: int = 0, cache: object = None) -> SimpleNamespace:
        return super().forward(input_ids, attention_mask, position_ids, use_cache, logits_to_keep)


@pytest.mark.parametrize("wrapper", [NoCacheLM, CacheArgumentLM])
def test_a_model_that_returns_no_cache_scores_every_request_whole(wrapper):
    model = wrapper(takes_cache=wrapper is CacheArgumentLM)
    assert (lm_scoring.cache_argument(model) is None) == (wrapper is NoCacheLM)
    requests = mixed_requests(seed=3)
    got = lm_scoring.score_continuations(model, requests, 3, pad=0)
    # the tiny Llama itself, every request whole (a model without a cache argument runs no other way)
    want = lm_scoring.score_continuations(NoCacheLM(takes_cache=False), requests, 3, pad=0)
    assert_same_scores(got, want)


def test_which_contexts_are_run_once():
    long_prompt, bos = list(range(3, 23)), [1]
    requests = [(long_prompt, [30, 31]), (long_prompt, [32]), (long_prompt, [33, 34, 35]),  # 6 <= 2 * 20
                (bos, list(range(40, 50))), (bos, list(range(50, 60))),  # a sentence after BOS: 20 > 1 * 1
                ([7, 8], [9])]  # one request: nothing to share
    assert lm_scoring.shared_context_groups(requests, range(6)) == [[0, 1, 2]]
    assert lm_scoring.shared_context_groups(requests, [0, 2]) == [[0, 2]]
    assert lm_scoring.shared_context_groups(requests, [0]) == []


def test_attribute_recall_observes_the_same_with_each_prompt_run_once(tmp_path, monkeypatch):
    path = tmp_path / "frames.yaml"
    path.write_text(FRAMES)
    evaluator = AttributeRecallEvaluator().configure({"path": str(path), "axes": ["race"], "n_boot": 100})
    base, pruned = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    seen, before = {}, {}
    positions = {}
    for label, model in (("base", base), ("pruned", pruned)):
        forwards = Forwards(model)
        seen[label] = evaluator.observe(model, context(label=label))
        positions[label] = forwards.positions()
        forwards.handle.remove()
        forwards = Forwards(model)
        before[label] = whole(monkeypatch, evaluator.observe, model, context(label=label))
        assert positions[label] < forwards.positions() / 3  # each prompt run once, not once per word
    for label in seen:
        assert seen[label]["stated"] == before[label]["stated"]
        np.testing.assert_allclose(seen[label]["scores"], before[label]["scores"], atol=1e-4, rtol=0)
    now = evaluator.compare(seen["base"], seen["pruned"], context())
    then = evaluator.compare(before["base"], before["pruned"], context())
    for key in ("accuracy_base", "accuracy_pruned", "accuracy_change", "n_prompts"):
        assert now.metrics[key] == then.metrics[key]
    for key in ("stated_logprob_base", "stated_logprob_pruned", "stated_logprob_change"):
        assert now.metrics[key] == pytest.approx(then.metrics[key], abs=1e-4)


def test_continuation_logprobs_one_token_words_come_from_the_prompt_pass(monkeypatch):
    """With a cache, one-token words are read from the prompt's last position, as the next-token pass reads them."""
    model, tok = tiny_model("llama"), tiny_char_tokenizer()
    prompts = ["Race: Black. Q: What race? A:", "The nurse is", "Form. Race: Arab. A:"]
    words = ["a", "B", "Black", "East Asian"]  # one character is one token here
    forwards = Forwards(model)
    got = continuation_logprobs(model, tok, prompts, words, 2, False, "recall")
    assert sum(rows for rows, _, cache in forwards.calls if not cache) == len(prompts)  # one pass over the prompts
    want = whole(monkeypatch, continuation_logprobs, model, tok, prompts, words, 2, False, "recall")
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_a_model_with_an_offloaded_layer_continues_from_its_cache(tmp_path, monkeypatch):
    """accelerate's hooks (a layer offloaded to disk) keep the cache path equal to scoring the sequences whole."""
    import fairprune as fp
    from fairprune.core.contract.registry import Registry
    from fairprune.core.io.sources import load_model

    fp.save_pretrained(tiny_model("llama"), tiny_char_tokenizer(), tmp_path / "tiny")
    disk_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"}
    placed, _ = load_model(str(tmp_path / "tiny"), registry=Registry(load_entrypoints=False), dtype="float32",
                           device_map=disk_map, offload_folder=tmp_path / "offload")
    assert any(p.device.type == "meta" for p in placed.parameters())
    requests = mixed_requests(seed=4)
    forwards = Forwards(placed)
    got = lm_scoring.score_continuations(placed, requests, 4, pad=0)
    assert forwards.continued()
    assert_same_scores(got, whole(monkeypatch, lm_scoring.score_continuations, placed, requests, 4, pad=0))
