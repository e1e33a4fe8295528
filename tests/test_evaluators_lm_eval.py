"""lm_eval evaluator: offline custom tasks from local JSONL, cross-checked against our own LAMBADA scoring."""

from __future__ import annotations

import json
import sys

import pytest

from fairprune.core.contract.errors import ConfigError, FairpruneError
from fairprune.core.contract.registry import Registry
from fairprune.testing import tiny_model, tiny_tokenizer
from fairprune.testing.evaluators import ModelPair, model_pair, run_evaluator

pytest.importorskip("lm_eval")

PASSAGES = ["the man was good", "she is a kind teacher", "they went home", "the old doctor works in the city"]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(load_entrypoints=False)


def context(model, registry) -> ModelPair:
    adapter = registry.get("architectures", "glu")
    return model_pair(model, model, tiny_tokenizer(), [], adapter, batch_size=4, registry=registry,
                       progress=False)


def test_lm_eval_lambada_and_boolq_offline_match_our_scoring(registry: Registry, tmp_path) -> None:
    lambada = tmp_path / "lambada.jsonl"
    lambada.write_text("\n".join(json.dumps({"text": t}) for t in PASSAGES))
    boolq = tmp_path / "boolq.jsonl"
    boolq.write_text("\n".join(json.dumps(d) for d in [
        {"passage": "the man was good", "question": "was the man good", "answer": True},
        {"passage": "she is kind", "question": "is she bad", "label": 0},
        {"passage": "they went home", "question": "did they go home", "answer": True}]))
    model = tiny_model("llama")
    ctx = context(model, registry)
    ours = run_evaluator(registry.create("evaluators", "capability", {"tasks": ["lambada"], "lambada_path": str(lambada),
                                                        "n_boot": 20}), ctx)
    theirs = run_evaluator(registry.create("evaluators", "lm_eval", {"lambada_path": str(lambada), "boolq_path": str(boolq),
                                                       "backend": "auto"}), ctx)
    m = theirs.metrics
    assert m["lambada_perplexity_base"] == pytest.approx(ours.metrics["lambada_word_ppl_base"], rel=1e-4)
    assert m["lambada_acc_base"] == pytest.approx(ours.metrics["lambada_acc_base"])
    assert 0.0 <= m["boolq_acc_base"] <= 1.0
    assert m["lambada_perplexity_change_pct"] == 0.0 and m["boolq_acc_pruned"] == m["boolq_acc_base"]
    assert {r["task"] for r in theirs.tables["lm_eval"]} == {"lambada", "boolq"}


def test_lm_eval_needs_data_and_reports_missing_files(registry: Registry, tmp_path) -> None:
    ctx = context(tiny_model("llama"), registry)
    with pytest.raises(ConfigError, match="lambada_path and/or lm_eval.boolq_path"):
        run_evaluator(registry.create("evaluators", "lm_eval"), ctx)
    with pytest.raises(ConfigError, match="boolq_path"):
        run_evaluator(registry.create("evaluators", "lm_eval", {"boolq_path": str(tmp_path / "none.jsonl")}), ctx)


def test_lm_eval_missing_package_gives_install_hint(registry: Registry, tmp_path, monkeypatch) -> None:
    lambada = tmp_path / "lambada.jsonl"
    lambada.write_text(json.dumps({"text": "the man was good"}))
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(FairpruneError, match=r"pip install 'fairprune\[lm_eval\]'"):
        run_evaluator(registry.create("evaluators", "lm_eval", {"lambada_path": str(lambada)}), 
            context(tiny_model("llama"), registry))
