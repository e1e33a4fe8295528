"""The model card in the Hub's format, read back with huggingface_hub's own parser (offline): ``model-index``
holds the run's measured figures, ``library_name`` says what loads the directory."""

from __future__ import annotations

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load

import fairprune as fp
from fairprune.core.contract.summary import headlines, metric
from fairprune.plugins.hub_card import dataset_type, loading, model_index

EVALUATORS = [
    {"name": "output_bias", "params": {"n_boot": 50}},
    {"name": "capability", "params": {"tasks": ["text", "cloze"], "text_max_tokens": 300, "window": 150,
                                      "stride": 150, "n_boot": 50}},
    "parameters",
]


def run_config(source, out, **pruning):
    return {"model": {"source": str(source)}, "bias": {"axes": ["race"], "batch_size": 8},
            "pruning": {"budget": {"neurons": 8}, **pruning}, "evaluation": {"evaluators": EVALUATORS},
            "output": {"dir": str(out)}}


@pytest.fixture(scope="module")
def source(tiny_llama_dir):
    return tiny_llama_dir  # the session's saved tiny Llama (fairprune.testing.fixtures)


@pytest.fixture(scope="module")
def uneven_run(source, tmp_path_factory):
    return fp.run(run_config(source, tmp_path_factory.mktemp("runs") / "uneven"), progress=False)


def test_hub_parser_reads_every_headline_of_the_run(uneven_run):
    card_path = uneven_run.output_dir / "README.md"
    card = ModelCard.load(card_path)
    results = card.data.eval_results
    measured = {f"{ev}/{h['key']}": metric(uneven_run.metrics, ev, h["key"]) for ev, h in headlines(uneven_run.metrics)
                if metric(uneven_run.metrics, ev, h["key"]) is not None}
    assert len(measured) >= 4
    assert {r.metric_type: r.metric_value for r in results} == {k: round(v, 4) for k, v in measured.items()}
    assert {r.task_type for r in results} == {"text-generation"}
    by_type = {r.metric_type: r for r in results}
    js = by_type["output_bias/js_reduction_pct"]
    assert (js.dataset_name, js.dataset_split) == ("fairprune held-out templates (race)", "heldout")
    assert js.metric_name == "Held-out next-token JS divergence reduction (%)"
    text = by_type["capability/text_ppl_change_pct"]
    assert (text.dataset_name, text.dataset_type, text.dataset_split) == ("general English text",
                                                                          "general-english-text", None)
    assert all(r.source_name is None and not r.verified for r in results)
    meta = metadata_load(card_path)
    assert meta["model-index"][0]["name"] == "uneven"
    assert meta["base_model"] and meta["pipeline_tag"] == "text-generation"


def test_uneven_widths_are_not_announced_as_transformers(uneven_run):
    widths = uneven_run.metrics["pruning"]["widths_after"]
    assert len(set(widths)) > 1
    card = (uneven_run.output_dir / "README.md").read_text()
    assert ModelCard(card).data.library_name == "fairprune"
    assert "fairprune.load_pretrained(path)" in card and "pruning.uniform_widths: true" in card
    from transformers import AutoModelForCausalLM

    with pytest.raises(Exception, match="size mismatch|ignore_mismatched_sizes|shape"):
        AutoModelForCausalLM.from_pretrained(uneven_run.output_dir)


def test_loading_and_index_from_metrics_alone():
    metrics = {"pruning": {"widths_after": [60, 60, 60]},
               "evaluation": {"bench": {"metrics": {"score": 51.23456, "missing": None},
                                        "headlines": [{"key": "score", "label": "Bench score", "unit": "%",
                                                       "dataset": "WinoBias", "split": "test"},
                                                      {"key": "absent", "label": "Not measured"}]}}}
    library, sentence = loading(metrics)
    assert library == "transformers" and "(60)" in sentence and "AutoModelForCausalLM" in sentence
    assert loading({"pruning": {"widths_after": [60, 61]}})[0] == "fairprune"
    index = model_index("m", metrics, ["race"])
    assert index == [{"name": "m", "results": [{
        "task": {"type": "text-generation", "name": "Text Generation"},
        "dataset": {"name": "WinoBias", "type": "winobias", "split": "test"},
        "metrics": [{"type": "bench/score", "value": 51.2346, "name": "Bench score (%)"}]}]}]
    assert model_index("m", {"evaluation": {}}, ["race"]) == []
    assert dataset_type("CrowS-Pairs") == "crows-pairs"
