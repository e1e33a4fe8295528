"""Capability evaluator: perplexity against a manual computation, cloze accuracy on a rigged model, bundled data."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.registry import Registry
from fairprune.core.model.lm_scoring import encode, score_continuations, window_requests, word_requests
from fairprune.plugins.evaluators.data import GENERAL_CLOZE, GENERAL_TEXT, bundled_path
from fairprune.testing import tiny_model, tiny_tokenizer
from fairprune.testing.evaluators import ModelPair, model_pair, run_evaluator

TEXT = ("the old man was a good friend of the family and he said no . the young woman works in the city "
        "because she is a teacher . they went home . ") * 3


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_entrypoints=False)


def context(base, pruned, registry) -> ModelPair:
    adapter = registry.get("architectures", "glu")
    return model_pair(base, pruned, tiny_tokenizer(), [], adapter, batch_size=3, registry=registry,
                       progress=False)


def rigged_model(next_word: dict[str, str]):
    """A real one-layer Llama whose greedy next token after word ``a`` is ``next_word[a]``.

    Embeddings are one-hot (hidden = vocab), attention and MLP outputs are zero, so
    the LM head sees the current token only; its weights encode the table.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(128))
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for current, following in next_word.items():
            model.lm_head.weight[tok.convert_tokens_to_ids(following), tok.convert_tokens_to_ids(current)] = 10.0
    return model


def test_cloze_accuracy_on_rigged_models(registry: Registry, tmp_path) -> None:
    cloze = tmp_path / "cloze.jsonl"
    cloze.write_text("\n".join(json.dumps({"text": t}) for t in [
        "the man was good", "she is a kind teacher", "they went to school", "the old woman lives in the city"]))
    table = {"was": "good", "kind": "teacher", "to": "home", "the": "city"}
    base, pruned = rigged_model(table), rigged_model({**table, "to": "school"})
    result = run_evaluator(registry.create("evaluators", "capability", {"tasks": ["cloze"], "cloze_path": str(cloze),
                                                          "n_boot": 100}), context(base, pruned, registry))
    m = result.metrics
    assert m["cloze_acc_base"] == 0.75 and m["cloze_acc_pruned"] == 1.0
    assert m["cloze_acc_change_pts"] == pytest.approx(25.0)
    assert m["cloze_ppl_pruned"] == pytest.approx(1.0, abs=1e-3)  # every word certain
    assert m["cloze_ppl_base"] > 1e6  # one word was given ~zero probability
    # every target is one token here, so per-token and per-word perplexity agree
    assert m["cloze_word_ppl_base"] == pytest.approx(m["cloze_ppl_base"], rel=1e-6)
    lo, hi = result.intervals["cloze_acc_base"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0
    assert "lambada_acc_base" not in m and "text_ppl_base" not in m


def test_text_perplexity_equals_hf_loss_for_one_window(registry: Registry, tmp_path) -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    ids = encode(tok, TEXT, special=False)
    assert 60 < len(ids) < 128
    result = run_evaluator(registry.create("evaluators", "capability", {"tasks": ["text"], "text_path": str(text), "window": 128,
                                                          "stride": 128, "n_boot": 50}), 
        context(model, model, registry))
    with torch.no_grad():
        loss = model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert result.metrics["text_ppl_base"] == pytest.approx(math.exp(loss), rel=1e-4)
    assert result.metrics["text_tokens"] == len(ids) - 1
    capped = run_evaluator(registry.create("evaluators", "capability", {"tasks": ["text"], "text_path": str(text),
                                                          "text_max_tokens": 20, "n_boot": 20}), 
        context(model, model, registry))
    with torch.no_grad():
        loss20 = model(torch.tensor([ids[:20]]), labels=torch.tensor([ids[:20]])).loss.item()
    assert capped.metrics["text_tokens"] == 19
    assert capped.metrics["text_ppl_base"] == pytest.approx(math.exp(loss20), rel=1e-4)


def test_sliding_windows_score_each_token_once_and_match_unpadded_forward() -> None:
    model, tok = tiny_model("llama"), tiny_tokenizer()
    ids = encode(tok, TEXT, special=False)
    requests = window_requests(ids, window=12, stride=5)
    assert [t for _, t in requests] and [x for _, t in requests for x in t] == ids[1:]
    assert all(len(c) + len(t) <= 12 for c, t in requests)
    scores = score_continuations(model, requests, batch_size=4, pad=0)
    for (ctx, tgt), score in zip(requests, scores):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ctx + tgt])).logits[0].double(), -1)
        nll = -sum(logp[len(ctx) - 1 + k, t].item() for k, t in enumerate(tgt))
        assert score.nll == pytest.approx(nll, rel=1e-4, abs=1e-4) and score.n_tokens == len(tgt)


def test_batching_and_padding_do_not_change_scores() -> None:
    model, tok = tiny_model("qwen2"), tiny_tokenizer()
    texts = ["the man was good", "she said that the young teacher went home", "they were kind",
             "a very old doctor lives in the town and works at the school"]
    requests = word_requests(tok, texts)
    one = score_continuations(model, requests, batch_size=1, pad=0)
    many = score_continuations(model, requests, batch_size=4, pad=0)
    for a, b in zip(one, many):
        assert a.nll == pytest.approx(b.nll, rel=1e-4, abs=1e-5) and a.greedy == b.greedy


def test_lambada_from_path_respects_limit_and_reports_bad_files(registry: Registry, tmp_path) -> None:
    model = tiny_model("llama")
    lambada = tmp_path / "lambada.jsonl"
    lambada.write_text("\n".join(json.dumps({"text": t}) for t in [
        "the man was good", "she is kind", "they went home", "he said no"]))
    cap = registry.create("evaluators", "capability", {"tasks": ["lambada"], "lambada_path": str(lambada),
                                                       "lambada_limit": 3, "n_boot": 20})
    result = run_evaluator(cap, context(model, model, registry))
    assert result.metrics["lambada_n"] == 3 and result.metrics["lambada_ppl_change_pct"] == 0.0
    missing = registry.create("evaluators", "capability", {"lambada_path": str(tmp_path / "nope.jsonl")})
    with pytest.raises(ConfigError, match="lambada_path"):
        run_evaluator(missing, context(model, model, registry))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "x y"}\n')
    with pytest.raises(ConfigError, match="line 1"):
        run_evaluator(registry.create("evaluators", "capability", {"tasks": ["cloze"], "cloze_path": str(bad)}), 
            context(model, model, registry))


def test_bundled_text_is_long_enough() -> None:
    """>= 5,000 words; English prose runs ~1.3 BPE tokens per word, so well over 5,000 tokens."""
    text = bundled_path(GENERAL_TEXT).read_text(encoding="utf-8")
    words = text.split()
    assert len(words) >= 5000
    assert len({p.strip() for p in text.split("\n\n") if p.strip()}) > 60  # many distinct paragraphs


def test_bundled_cloze_set_has_200_unique_single_word_targets() -> None:
    lines = bundled_path(GENERAL_CLOZE).read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    assert len(texts) >= 200 and len(set(texts)) == len(texts)
    for text in texts:
        last = text.rsplit(" ", 1)[1]
        assert last.isalnum(), text


@pytest.mark.parametrize("params, named", [({"lambada_limit": 1000}, "lambada_limit"),
                                            ({"tasks": ["text", "lambada"]}, "tasks"),
                                            ({"tasks": ["lambada"], "lambada_limit": 50}, "lambada_limit and tasks")])
def test_lambada_asked_for_without_its_file_is_refused(registry, params, named):
    # the default tasks skip LAMBADA when no file is given; naming it (or its limit) would then do nothing
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=f"{named} set for LAMBADA without lambada_path"):
        registry.create("evaluators", "capability", params)
    registry.create("evaluators", "capability", {"tasks": ["text", "cloze"]})  # no LAMBADA asked for: fine


def test_evaluate_refuses_a_lambada_limit_without_the_file(capsys):
    from fairprune import cli

    assert cli.main(["evaluate", "--base", "tiny", "--pruned", "x", "--lambada-limit", "100"]) == 1
    assert "--lambada-limit without --lambada does nothing" in capsys.readouterr().err
