"""Every model fairprune can prune it can reload: a multimodal Gemma 3 checkpoint, uniform or not, through
transformers' own key mapping."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import fairprune as fp
from fairprune.testing import tiny_multimodal_model, tiny_tokenizer

INPUT = torch.randint(3, 120, (2, 9), generator=torch.Generator().manual_seed(4))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT).logits


def mlp_widths(model) -> list[int]:
    return [layer.mlp.down_proj.in_features for layer in model.model.language_model.layers]


@pytest.mark.parametrize(("plan", "widths"), [({0: [1, 2, 3], 1: [4, 5, 6]}, [61, 61]),
                                             ({0: [1, 2, 3], 1: [7]}, [61, 63])])
def test_a_pruned_multimodal_model_reloads_through_fairprune(tmp_path, plan, widths):
    model = tiny_multimodal_model()
    fp.prune(model, plan)
    path = fp.save_pretrained(model, tiny_tokenizer(), tmp_path / "mm")
    with safe_open(path / "model.safetensors", "pt") as handle:  # saved in transformers' own layout
        assert any(key.startswith("language_model.model.layers.") for key in handle.keys())
    for loaded in (fp.load_pretrained(path)[0], fp.load_model(str(path))[0]):
        assert type(loaded) is type(model) and mlp_widths(loaded) == widths
        torch.testing.assert_close(logits(loaded), logits(model), atol=1e-6, rtol=0)
    assert loaded.config.text_config.fairprune_intermediate_sizes == widths


def test_a_uniformly_pruned_multimodal_model_also_loads_with_plain_transformers(tmp_path):
    model = tiny_multimodal_model()
    fp.prune(model, {0: [1, 2], 1: [3, 4]})
    path = fp.save_pretrained(model, tiny_tokenizer(), tmp_path / "mm")
    plain = AutoModelForCausalLM.from_pretrained(path)
    torch.testing.assert_close(logits(plain), logits(model), atol=1e-6, rtol=0)
