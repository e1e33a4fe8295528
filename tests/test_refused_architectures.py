"""Models fairprune cannot prune end in one line before any analysis, naming the layers or the family.

A mixture-of-experts model whose first layer is a dense GLU and whose others are
expert blocks used to be taken by the GLU adapter (it looked at layer 0 only) and
fail deep in the analysis with ``AttributeError: 'Qwen3MoeSparseMoeBlock' object
has no attribute 'down_proj'``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairprune.cli import main as cli_main
from fairprune.core.contract.errors import ArchitectureError
from fairprune.core.model.adapters import resolve_adapter
from fairprune.testing import TINY_ARCHITECTURES, snapshot, tiny_char_tokenizer, tiny_model


@pytest.fixture(autouse=True)
def _no_loading_bars():
    """transformers draws a weight-loading bar on stderr; the refusal is the only other line."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    yield
    hf_logging.enable_progress_bar()


def tiny_qwen3_moe(**overrides):
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = {"vocab_size": 128, "hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16,
              "num_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 128, "pad_token_id": 0,
              "bos_token_id": 1, "eos_token_id": 2}
    return Qwen3MoeForCausalLM(Qwen3MoeConfig(**{**config, **overrides})).eval()


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=128)).eval()


def saved(model, path: Path) -> Path:
    model.save_pretrained(path)
    tiny_char_tokenizer().save_pretrained(path)
    return path


def cli_refuses(tmp_path: Path, capsys, model_dir: Path) -> str:
    """``fairprune analyze`` on ``model_dir``: exit 1, one line, nothing written; the line."""
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli_main(["analyze", "--model", str(model_dir), "--axes", "race", "--out", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert snapshot(tmp_path) == before
    return lines[0]


def test_moe_with_a_dense_first_layer_names_its_expert_layers(tmp_path, capsys):
    model_dir = saved(tiny_qwen3_moe(mlp_only_layers=[0]), tmp_path / "moe")
    message = cli_refuses(tmp_path, capsys, model_dir)
    assert "Qwen3MoeForCausalLM (qwen3_moe)" in message
    assert "layers 1-3 (Qwen3MoeSparseMoeBlock) of its 4 decoder layers" in message and "'glu'" in message


def test_moe_with_experts_every_other_layer_names_each_one(tmp_path):
    model = tiny_qwen3_moe(decoder_sparse_step=2)  # layers 1 and 3 are expert blocks, 0 and 2 dense
    with pytest.raises(ArchitectureError, match=r"layers 1, 3 \(Qwen3MoeSparseMoeBlock\) of its 4 decoder layers"):
        resolve_adapter(model)


def test_moe_whose_first_layer_is_an_expert_block_names_the_layers(tmp_path):
    model = tiny_qwen3_moe(mlp_only_layers=[2])
    with pytest.raises(ArchitectureError) as info:
        resolve_adapter(model)
    message = str(info.value)
    assert "no registered adapter prunes its MLPs: layers 0-1, 3 (Qwen3MoeSparseMoeBlock)" in message
    assert "glu (llama" in message and "fused_gate_up (phi3)" in message and "\n" not in message


def test_a_non_glu_model_names_its_mlp_and_what_is_supported(tmp_path, capsys):
    message = cli_refuses(tmp_path, capsys, saved(tiny_gpt2(), tmp_path / "gpt2"))
    assert "GPT2LMHeadModel (gpt2) cannot be pruned" in message and "layers 0-1 (GPT2MLP)" in message
    assert "registered adapters:" in message and "phi3" in message


def test_a_named_adapter_is_checked_too(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"model": {"source": str(saved(tiny_qwen3_moe(mlp_only_layers=[0]),
                                                                 tmp_path / "moe")), "adapter": "glu"},
                                  "output": {"dir": str(tmp_path / "out")}}))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli_main(["run", str(config)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "layers 1-3 (Qwen3MoeSparseMoeBlock)" in lines[0], lines
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("arch", sorted(TINY_ARCHITECTURES))
def test_every_listed_family_is_supported_whole(arch):
    model = tiny_model(arch)
    adapter = resolve_adapter(model)
    assert model.config.model_type in adapter.families
    assert adapter.unsupported_layers(model) == []


def test_plugins_lists_the_families_of_each_adapter(capsys):
    assert cli_main(["plugins", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["architectures"]}
    assert "llama" in rows["glu"]["families"] and rows["fused_gate_up"]["families"] == ["phi3"]
    assert cli_main(["plugins"]) == 0
    assert "supports: phi3" in capsys.readouterr().out
