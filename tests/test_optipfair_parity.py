"""fairprune's gate/up + mean pooling + mean_abs_diff mode reproduces optipfair's analyze_neuron_bias."""

from __future__ import annotations

import pytest
import torch

from fairprune.core.contract.registry import Registry
from fairprune.core.data.prompts import pairs_to_groups
from fairprune.core.method.bias import analyze_bias
from fairprune.core.method.collect import collect_prompts
from fairprune.testing import tiny_model, tiny_tokenizer

optipfair_bias = pytest.importorskip("optipfair.bias")

REGISTRY = Registry(load_entrypoints=False)
PAIRS = [
    ("the black man walked into the room . the doctor said he", "the white man walked into the room . the doctor said he"),
    ("a young woman works at the school", "an old woman works at the school"),
    ("the asian student was very smart and", "the hispanic student was very smart and"),
    ("his rich friend lives in the city", "his poor friend lives in the city"),
    ("the muslim family went home because", "the christian family went home because"),
    ("the arab engineer said that she", "the latino engineer said that she"),
]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_gate_and_up_mean_match_optipfair(arch):
    model, tok = tiny_model(arch), tiny_tokenizer()
    want = optipfair_bias.analyze_neuron_bias(model, tok, PAIRS, show_progress=False)
    for site, prefix in (("gate", "gate_proj"), ("up", "up_proj")):
        report = analyze_bias(model, tok, pairs=PAIRS, site=site, pooling="mean", metric="mean_abs_diff",
                              batch_size=4, progress=False, registry=REGISTRY)
        for layer, score in report.scores.items():
            torch.testing.assert_close(score, want[f"{prefix}_layer_{layer}"], atol=1e-5, rtol=0)
        assert set(want) >= {f"{prefix}_layer_{i}" for i in report.scores}


def test_one_pass_over_both_sites_matches_optipfair():
    model, tok = tiny_model("llama"), tiny_tokenizer(padding_side="left")
    want = optipfair_bias.analyze_neuron_bias(model, tok, PAIRS, show_progress=False)
    groups = pairs_to_groups(PAIRS)
    metric = REGISTRY.get("bias_metrics", "mean_abs_diff")
    got = collect_prompts(model, tok, groups, sites=("gate", "up"), pooling="mean", batch_size=16, progress=False,
                          registry=REGISTRY)
    for site, prefix in (("gate", "gate_proj"), ("up", "up_proj")):
        pooled = got[site].grouped(groups)
        for layer, tensor in pooled.pooled.items():
            score = metric.score(tensor, pooled.magnitude[layer])
            torch.testing.assert_close(score, want[f"{prefix}_layer_{layer}"], atol=1e-5, rtol=0)
