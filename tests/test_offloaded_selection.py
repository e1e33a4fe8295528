"""Attribution selection on a model that accelerate spreads over memory and disk (a ``max_memory`` map):
gradients flow through the offloading hooks and the same neurons are chosen as on one device."""

from __future__ import annotations

import pytest
import torch

from fairprune.core.contract.config import AttributionParams, Budget
from fairprune.core.contract.registry import Registry
from fairprune.core.data.groups import gather
from fairprune.core.io.sources import load_model
from fairprune.core.method import selection as sel
from fairprune.plugins.capability_cost import CapabilityCost
from fairprune.plugins.objectives import NextTokenJS
from fairprune.testing import tiny_char_tokenizer, tiny_model

REG = Registry(load_entrypoints=False)


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    """A plain HF directory (no fairprune sidecar), so from_pretrained places it, as for hub models."""
    path = tmp_path_factory.mktemp("offload-sel") / "tiny-llama"
    tiny_model("llama", max_position_embeddings=512).save_pretrained(path)
    tiny_char_tokenizer().save_pretrained(path)
    return path


def select(model, tok, compensated: bool):
    found = gather(axes=["race"], split="analysis", registry=REG)
    settings = AttributionParams(guard_fraction=0.25, rounds=2, folds=2, min_improvement_pct=0.0,
                                 target_reduction_pct=50, max_perplexity_increase_pct=50.0)
    capability = CapabilityCost().configure({"chunk_tokens": 32, "max_tokens": 128, "window_tokens": 8,
                                             "check_tokens": 64})
    return sel.select_by_attribution(model, tok, found.groups, objective=NextTokenJS(), capability=capability,
                                     budget=Budget(neurons=12), compensated=compensated, settings=settings,
                                     batch_size=8, registry=REG, progress=False).plan


def offloaded(model: torch.nn.Module) -> list[str]:
    return sorted(name for name, p in model.named_parameters() if p.device.type == "meta")


@pytest.mark.parametrize("compensated", [False, True])
def test_offloaded_model_selects_the_neurons_of_the_model_on_one_device(plain_dir, tmp_path, compensated):
    base, tok = load_model(str(plain_dir), registry=REG)
    want = select(base, tok, compensated)
    assert want.n_neurons > 0
    budget = sum(p.numel() * p.element_size() for p in base.parameters()) // 2
    placed, _ = load_model(str(plain_dir), registry=REG, device_map="auto", max_memory={"cpu": budget},
                           offload_folder=tmp_path / "offload")
    assert "disk" in set(placed.hf_device_map.values())
    before = offloaded(placed)
    assert before, "some layers must be offloaded (weights on the meta device)"
    got = select(placed, tok, compensated)
    assert offloaded(placed) == before, "offloaded weights go back to disk after selection"
    assert got.removed == want.removed
    for a, b in zip(want.settings["round_log"], got.settings["round_log"]):
        assert (b["neurons"], b["accepted"]) == (a["neurons"], a["accepted"])
        assert b["objective_after"] == pytest.approx(a["objective_after"], abs=1e-6)
        assert b["calibration_loss"] == pytest.approx(a["calibration_loss"], abs=1e-6)


def test_a_run_with_recovery_refuses_an_offloaded_model_before_the_analysis(plain_dir, tmp_path):
    import fairprune as fp
    from fairprune.core.contract.errors import ConfigError

    base, _ = load_model(str(plain_dir), registry=REG)
    budget = sum(p.numel() * p.element_size() for p in base.parameters()) // 2
    config = {"model": {"source": str(plain_dir), "device_map": "auto", "max_memory": {"cpu": budget},
                        "offload_folder": str(tmp_path / "offload")},
              "bias": {"axes": ["race"], "batch_size": 8},
              "pruning": {"budget": {"neurons": 8}, "recovery": {"epochs": 1}},
              "evaluation": {"evaluators": ["parameters"]}, "output": {"dir": str(tmp_path / "out")}}
    with pytest.raises(ConfigError, match="pruning.recovery: some MLP weights are offloaded"):
        fp.run(config, progress=False)
    assert not (tmp_path / "out").exists()
