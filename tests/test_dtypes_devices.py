"""Models in float16/bfloat16 and models spread over devices (accelerate): loading, analysis, non-finite values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fairprune as fp
from fairprune.core.contract.errors import ConfigError, NonFiniteError
from fairprune.core.contract.registry import Registry
from fairprune.core.data.prompts import pairs_to_groups
from fairprune.core.io.sources import load_model
from fairprune.core.method.collect import collect_prompts
from fairprune.core.model.devices import input_device
from fairprune.testing import tiny_char_tokenizer, tiny_model, tiny_tokenizer

REG = Registry(load_entrypoints=False)
PAIRS = [("the black man walked into the room", "the white man walked into the room"),
         ("a young woman works at the school", "an old woman works at the school"),
         ("the muslim family went home", "the christian family went home")]


def overflowing_llama() -> torch.nn.Module:
    """The issue's reproduction: a tiny Llama whose layer-1 gate/up weights are 2000x, in float16."""
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.gate_proj.weight.mul_(2000)
        model.model.layers[1].mlp.up_proj.weight.mul_(2000)
    return model.half()


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("dtype") / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512).to(torch.bfloat16), tiny_char_tokenizer(),
                       path)
    return path


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_load_model_gives_the_requested_dtype(saved_dir, dtype):
    model, _ = load_model(str(saved_dir), registry=REG, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {getattr(torch, dtype)}


def test_auto_dtype_keeps_the_checkpoints(saved_dir):
    model, _ = load_model(str(saved_dir), registry=REG)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_unknown_dtype_is_a_config_error(saved_dir):
    with pytest.raises(ConfigError, match="model.dtype: unknown dtype 'float8'"):
        load_model(str(saved_dir), registry=REG, dtype="float8")


def test_config_rejects_unknown_dtype():
    with pytest.raises(ConfigError, match="model.dtype"):
        fp.load_config({"model": {"source": "x", "dtype": "int8"}})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_analysis_is_close_to_float32(dtype):
    """Reductions run in float32 whatever the model's dtype: scores agree with the float32 model's."""
    model = tiny_model("llama")
    groups = pairs_to_groups(PAIRS)
    want = collect_prompts(model, tiny_tokenizer(), groups, progress=False, registry=REG)["neuron"]
    got = collect_prompts(model.to(dtype), tiny_tokenizer(), groups, progress=False, registry=REG)["neuron"]
    for layer in want.per_prompt:
        assert got.per_prompt[layer].dtype == torch.float32
        torch.testing.assert_close(got.per_prompt[layer], want.per_prompt[layer], atol=0.05, rtol=0.05)
        torch.testing.assert_close(got.magnitude[layer], want.magnitude[layer], atol=0.02, rtol=0.02)


def test_float16_overflow_names_site_model_layer_and_a_wider_dtype():
    with pytest.raises(NonFiniteError) as info:
        collect_prompts(overflowing_llama(), tiny_tokenizer(), pairs_to_groups(PAIRS), progress=False,
                        registry=REG, label="pruned")
    message = str(info.value)
    assert "site 'neuron' of layer 1 of the pruned model" in message
    assert "in float16; float16 overflows" in message and "model.dtype: float32" in message


def test_the_same_model_in_float32_is_finite():
    model = overflowing_llama().float()
    result = collect_prompts(model, tiny_tokenizer(), pairs_to_groups(PAIRS), progress=False, registry=REG)
    assert all(torch.isfinite(t).all() for t in result["neuron"].per_prompt.values())


# -- models spread over devices --------------------------------------------------------------------

DISK_MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
            "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    """A plain HF directory (no fairprune sidecar), so from_pretrained places it, as for hub models."""
    path = tmp_path_factory.mktemp("dispatch") / "tiny-llama"
    tiny_model("llama", max_position_embeddings=512).save_pretrained(path)
    tiny_char_tokenizer().save_pretrained(path)
    return path


def offloaded(model: torch.nn.Module) -> list[str]:
    """Names of the parameters whose weights are not in memory (offloaded to disk by accelerate)."""
    return sorted(name for name, p in model.named_parameters() if p.device.type == "meta")


def test_max_memory_map_offloads_layers_and_the_bias_report_is_unchanged(plain_dir, tmp_path):
    base, tok = load_model(str(plain_dir), registry=REG)
    want = fp.analyze_bias(base, tok, axes=["race"], progress=False, registry=REG)
    budget = sum(p.numel() * p.element_size() for p in base.parameters()) // 2
    placed, _ = load_model(str(plain_dir), registry=REG, device_map="auto", max_memory={"cpu": budget},
                           offload_folder=tmp_path / "offload")
    assert "disk" in set(placed.hf_device_map.values())
    assert offloaded(placed), "some layers must be offloaded (weights on the meta device)"
    assert input_device(placed).type == "cpu"
    got = fp.analyze_bias(placed, tok, axes=["race"], progress=False, registry=REG)
    assert offloaded(placed), "offloaded weights go back to disk after the analysis"
    for layer, scores in want.scores.items():
        torch.testing.assert_close(got.scores[layer], scores, atol=1e-6, rtol=0)
        torch.testing.assert_close(got.magnitude[layer], want.magnitude[layer], atol=1e-6, rtol=0)


def test_explicit_device_map_dispatches_a_loaded_model(saved_dir, tmp_path):
    base, tok = load_model(str(saved_dir), registry=REG, dtype="float32")
    want = fp.analyze_bias(base, tok, axes=["race"], progress=False, registry=REG)
    placed, _ = load_model(str(saved_dir), registry=REG, dtype="float32", device_map=DISK_MAP,
                           offload_folder=tmp_path / "offload")
    layer_1 = sorted(name for name, _ in placed.named_parameters() if name.startswith("model.layers.1."))
    assert offloaded(placed) == layer_1
    got = fp.analyze_bias(placed, tok, axes=["race"], progress=False, registry=REG)
    for layer, scores in want.scores.items():
        torch.testing.assert_close(got.scores[layer], scores, atol=1e-6, rtol=0)


def test_one_device_as_the_device_map_places_the_whole_model_there(saved_dir):
    from fairprune.core.contract.config import ModelSection

    assert ModelSection(source="x", device_map="cuda:1").device_map == "cuda:1"  # a device, as transformers takes
    with pytest.raises(ValueError, match="unknown strategy 'gpu'"):
        ModelSection(source="x", device_map="gpu")
    placed, _ = load_model(str(saved_dir), registry=REG, dtype="float32", device_map="cpu")
    assert placed.hf_device_map == {"": "cpu"}
    assert {p.device.type for p in placed.parameters()} == {"cpu"}


def test_disk_offload_without_a_folder_is_an_error(saved_dir):
    from fairprune.core.contract.errors import ModelSourceError

    with pytest.raises(ModelSourceError, match="offload_folder"):
        load_model(str(saved_dir), registry=REG, device_map=DISK_MAP)


def test_pruning_an_offloaded_layer_equals_pruning_the_plain_model(saved_dir, tmp_path):
    plan = {0: [1, 2, 40], 1: [3, 4, 5, 6]}
    plain, _ = load_model(str(saved_dir), registry=REG, dtype="float32")
    placed, _ = load_model(str(saved_dir), registry=REG, dtype="float32", device_map=DISK_MAP,
                           offload_folder=tmp_path / "offload")
    want, got = fp.prune(plain, plan, registry=REG), fp.prune(placed, plan, registry=REG)
    assert got.widths_after == want.widths_after == [61, 60]
    layer_1 = sorted(name for name, _ in placed.named_parameters() if name.startswith("model.layers.1."))
    assert offloaded(placed) == layer_1, "the pruned layer is offloaded again"
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        torch.testing.assert_close(placed(ids).logits, plain(ids).logits, atol=0, rtol=0)
    fp.save_pretrained(placed, None, tmp_path / "saved")  # offloaded weights are gathered for saving
    reloaded, _ = fp.load_pretrained(tmp_path / "saved")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, plain(ids).logits, atol=0, rtol=0)


# -- evaluators and whole runs in half precision ---------------------------------------------------

def test_the_issues_overflow_case_is_an_error_naming_evaluator_model_and_layer():
    """A float16 model whose layer 1 overflows, evaluated against the float32 original: no JS of 0.0."""
    groups = pairs_to_groups(PAIRS)
    base = tiny_model("llama")
    params = {"output_bias": {}, "capability": {"tasks": ["text"], "text_max_tokens": 40, "window": 20, "stride": 20}}
    for evaluator in ("output_bias", "capability"):
        with pytest.raises(NonFiniteError) as info:
            fp.evaluate(base, overflowing_llama(), tiny_tokenizer(), groups=groups, evaluators=[evaluator],
                        params={evaluator: params[evaluator]}, registry=REG, progress=False)
        message = str(info.value)
        assert f"evaluator {evaluator!r}: the output of layer 1 of the pruned model" in message, message
        assert "in float16; float16 overflows" in message


def test_activation_bias_names_the_site_layer_and_model():
    with pytest.raises(NonFiniteError, match=r"evaluator 'activation_bias': site '\w+' of layer 1 of the "
                                             r"pruned model"):
        fp.evaluate(tiny_model("llama"), overflowing_llama(), tiny_tokenizer(), groups=pairs_to_groups(PAIRS),
                    evaluators=["activation_bias"], registry=REG, progress=False)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_whole_run_in_half_precision(saved_dir, tmp_path, dtype):
    config = {"model": {"source": str(saved_dir), "dtype": dtype}, "bias": {"axes": ["race"], "batch_size": 8},
              "pruning": {"budget": {"neurons": 8}}, "output": {"dir": str(tmp_path / "run")},
              "evaluation": {"evaluators": [
                  "activation_bias", {"name": "output_bias", "params": {"n_boot": 20}},
                  {"name": "capability", "params": {"tasks": ["text", "cloze"], "text_max_tokens": 200,
                                                    "window": 100, "stride": 100}}, "parameters"]}}
    result = fp.run(config, progress=False, registry=REG)
    saved, _ = load_model(str(result.output_dir), registry=REG)
    assert {p.dtype for p in saved.parameters()} == {getattr(torch, dtype)}
    figures = [v for e in result.metrics["evaluation"].values() for v in e["metrics"].values()
               if isinstance(v, float)]
    assert figures and all(np.isfinite(figures))
    assert result.metrics["evaluation"]["output_bias"]["metrics"]["js_base"] > 0


def test_analyze_command_loads_the_requested_dtype(saved_dir, tmp_path):
    from fairprune.cli import main as cli_main
    from fairprune.core.method.bias import BiasReport

    assert cli_main(["analyze", "--model", str(saved_dir), "--axes", "race", "--dtype", "float16",
                     "--out", str(tmp_path / "fp16")]) == 0
    assert cli_main(["analyze", "--model", str(saved_dir), "--axes", "race", "--out", str(tmp_path / "auto")]) == 0
    assert BiasReport.load(tmp_path / "fp16").settings["dtype"] == "float16"
    assert BiasReport.load(tmp_path / "auto").settings["dtype"] == "bfloat16"


def test_scoring_in_logit_budgeted_forwards_gives_the_same_scores(monkeypatch):
    """A large vocabulary splits a scoring batch into several forwards; the scores do not change."""
    from fairprune.core.model import lm_scoring

    model = tiny_model("llama")
    requests = lm_scoring.window_requests(list(range(3, 120)), window=20, stride=20)
    whole = lm_scoring.score_continuations(model, requests, batch_size=16)
    calls = []
    forward = lm_scoring.forward_left_padded
    monkeypatch.setattr(lm_scoring, "forward_left_padded", lambda *a, **k: calls.append(len(a[1])) or forward(*a, **k))
    monkeypatch.setattr(lm_scoring, "LOGITS_BUDGET", 2 * 21 * 128)  # two sequences of 21 kept positions
    split = lm_scoring.score_continuations(model, requests, batch_size=16)
    assert max(calls) == 2 and len(calls) == 3
    for a, b in zip(whole, split):
        assert a.n_tokens == b.n_tokens and a.greedy == b.greedy
        assert a.nll == pytest.approx(b.nll, abs=1e-4)
