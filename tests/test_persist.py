"""Pruned models round-trip through save_pretrained/load_pretrained with identical logits."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import fairprune as fp
from fairprune.core.contract.config import RunConfig
from fairprune.core.contract.errors import PersistError
from fairprune.core.contract.registry import Registry
from fairprune.core.io.persist import SIDECAR
from fairprune.testing import TINY_ARCHITECTURES, tiny_model, tiny_tokenizer

REG = Registry(load_entrypoints=False)
INPUT = torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(4))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(INPUT).logits


def nonuniform_plan(model) -> dict[int, list[int]]:
    n = model.config.num_hidden_layers
    return {layer: list(range(0, 3 * layer + 2, 1)) for layer in range(n - 1)}  # last layer keeps full width


@pytest.mark.parametrize("arch", sorted(TINY_ARCHITECTURES))
def test_roundtrip_nonuniform_widths_identical_logits(arch, tmp_path):
    model = tiny_model(arch)
    plan = nonuniform_plan(model)
    fp.prune(model, plan, registry=REG)
    path = fp.save_pretrained(model, tiny_tokenizer(), tmp_path / arch, plan=plan, run_config={"model": {"source": "tiny"}, "seed": 1})
    loaded, tokenizer = fp.load_pretrained(path)
    assert type(loaded) is type(model) and not loaded.training
    torch.testing.assert_close(logits(loaded), logits(model), atol=0, rtol=0)
    assert loaded.config.fairprune_intermediate_sizes == model.config.fairprune_intermediate_sizes
    assert tokenizer("the black man")["input_ids"] == tiny_tokenizer()("the black man")["input_ids"]
    sidecar = json.loads((path / SIDECAR).read_text())
    assert sidecar["removed"] == {str(k): v for k, v in plan.items()}
    assert sidecar["widths"] == model.config.fairprune_intermediate_sizes


def test_compensated_model_roundtrip_recreates_down_biases(tmp_path):
    model = tiny_model("llama")
    calibration = {0: torch.ones(64), 1: torch.ones(64)}
    fp.prune(model, {1: [4, 5]}, pruner="compensated", calibration=calibration, registry=REG)
    path = fp.save_pretrained(model, None, tmp_path / "comp")
    assert json.loads((path / SIDECAR).read_text())["down_bias_layers"] == [1]
    loaded, tokenizer = fp.load_pretrained(path)
    assert tokenizer is None and loaded.model.layers[0].mlp.down_proj.bias is None
    torch.testing.assert_close(logits(loaded), logits(model), atol=0, rtol=0)


def test_uniform_widths_load_with_plain_transformers(tmp_path):
    model = tiny_model("qwen2")
    fp.prune(model, {0: [1, 2], 1: [3, 4], 2: [0, 63]}, registry=REG)
    path = fp.save_pretrained(model, None, tmp_path / "uniform")
    plain = AutoModelForCausalLM.from_pretrained(path).eval()
    torch.testing.assert_close(logits(plain), logits(model), atol=0, rtol=0)


def test_sidecar_records_provenance_and_card(tmp_path):
    model = tiny_model("llama")
    run_config = RunConfig.model_validate({"model": {"source": "tiny"}, "method": {"bias_weight": 0.7}})
    path = fp.save_pretrained(model, None, tmp_path / "m", run_config=run_config, base_model="org/base",
                              card="# Tiny\n", extra_files={"report/summary.txt": "ok", "raw.bin": b"\x00\x01"})
    sidecar = json.loads((path / SIDECAR).read_text())
    assert sidecar["format_version"] == 1 and sidecar["adapter"] == "glu" and sidecar["removed"] is None
    assert sidecar["base_model"] == "org/base" and sidecar["run_config"] == run_config.model_dump(mode="json")
    assert sidecar["run_config_sha256"] == run_config.config_hash()  # the hash metrics.json carries
    assert (path / "README.md").read_text() == "# Tiny\n"
    assert (path / "report" / "summary.txt").read_text() == "ok" and (path / "raw.bin").read_bytes() == b"\x00\x01"


def test_failed_save_leaves_nothing(tmp_path):
    model = tiny_model("llama")
    with pytest.raises(PersistError, match="outside the model directory"):
        fp.save_pretrained(model, None, tmp_path / "out", extra_files={"../escape.txt": "x"})
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_previous_save(tmp_path):
    model = tiny_model("llama")
    path = fp.save_pretrained(model, None, tmp_path / "out", card="first")
    with pytest.raises(PersistError):
        fp.save_pretrained(model, None, path, card="second", extra_files={"bad": 3}, overwrite=True)
    assert (path / "README.md").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    fp.save_pretrained(model, None, path, card="third", overwrite=True)
    assert (path / "README.md").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sidecar_that_does_not_match_weights_is_reported(tmp_path):
    model = tiny_model("llama")
    fp.prune(model, {0: [1, 2]}, registry=REG)
    path = fp.save_pretrained(model, None, tmp_path / "m")
    sidecar = json.loads((path / SIDECAR).read_text())
    sidecar["widths"] = [60, 64]
    (path / SIDECAR).write_text(json.dumps(sidecar))
    with pytest.raises(PersistError, match=r"model\.layers\.0\.mlp\.\w+_proj\.weight has shape"):
        fp.load_pretrained(path)
    sidecar["widths"] = [62]
    (path / SIDECAR).write_text(json.dumps(sidecar))
    with pytest.raises(PersistError, match="records 1 layer widths but the config builds 2"):
        fp.load_pretrained(path)


def test_missing_files_are_reported(tmp_path):
    path = fp.save_pretrained(tiny_model("llama"), None, tmp_path / "m")
    (path / "model.safetensors").unlink()
    with pytest.raises(PersistError, match="has no weights"):
        fp.load_pretrained(path)
    with pytest.raises(PersistError, match="config.json is missing"):
        fp.load_pretrained(tmp_path / "nowhere")
    (path / SIDECAR).write_text("{not json")
    with pytest.raises(PersistError, match="not valid JSON"):
        fp.load_pretrained(path)


def test_bfloat16_model_keeps_its_dtype(tmp_path):
    model = tiny_model("llama").to(torch.bfloat16)
    fp.prune(model, {1: [0]}, registry=REG)
    loaded, _ = fp.load_pretrained(fp.save_pretrained(model, None, tmp_path / "bf16"))
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # transformers keeps the rotary frequencies in float32 (model.to(bfloat16) had rounded them): same buffers,
    # same outputs
    for name, buffer in loaded.named_buffers():
        model.get_buffer(name).data = buffer.clone()
    torch.testing.assert_close(logits(loaded), logits(model), atol=0, rtol=0)
