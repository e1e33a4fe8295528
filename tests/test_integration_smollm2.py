"""End to end on the real SmolLM2-135M: prune, save, reload, identical logits; the plugin listing."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import fairprune as fp

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2():
    return fp.load_model("smollm2-135m")


def test_prune_save_reload_identical_logits(smollm2, tmp_path):
    model, tokenizer = smollm2
    assert model.config.fairprune_base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    adapter = fp.resolve_adapter(model)
    gen = torch.Generator().manual_seed(0)
    n_layers, width = len(adapter.layers(model)), adapter.width(model, 0)
    assert (n_layers, width) == (30, 1536)
    layers = torch.randperm(n_layers, generator=gen)[: n_layers // 2].tolist()
    plan = {layer: torch.randperm(width, generator=gen)[: width // 100].tolist() for layer in layers}
    batch = tokenizer(["The nurse said that", "A Black man walked into the room and"], return_tensors="pt",
                      padding=True)
    result = fp.prune(model, plan)
    assert result.params_removed == 15 * 15 * 3 * model.config.hidden_size
    with torch.no_grad():
        expected = model(**batch).logits
    path = fp.save_pretrained(model, tokenizer, tmp_path / "pruned", plan=plan)
    reloaded, tokenizer2 = fp.load_pretrained(path)
    with torch.no_grad():
        got = reloaded(**tokenizer2(["The nurse said that", "A Black man walked into the room and"],
                                    return_tensors="pt", padding=True)).logits
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert reloaded.config.fairprune_intermediate_sizes == result.widths_after


def test_plugins_json_lists_builtins():
    out = subprocess.run([sys.executable, "-m", "fairprune.cli", "plugins", "--json"], capture_output=True,
                         text=True, check=True).stdout
    data = json.loads(out)
    names = {kind: {e["name"] for e in entries} for kind, entries in data.items()
             if kind not in ("broken", "disabled")}
    assert {"max_abs_weight", "peak_to_peak", "variance", "l1_product", "l2",
            "activation_weight"} <= names["importance_metrics"]
    assert {"glu", "fused_gate_up"} <= names["architectures"]
    assert {"hf", "gguf", "smollm2-135m", "gemma3-270m"} <= names["model_sources"]
    assert {"structural", "mask", "compensated"} <= names["pruners"]
    entry = next(e for e in data["pruners"] if e["name"] == "structural")
    assert entry["package"] == "fairprune" and entry["description"]
