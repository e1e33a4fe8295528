"""Recovery distillation after pruning: the loss, the training, the undo, and the run that records it."""

from __future__ import annotations

import json

import pytest
import torch

import fairprune as fp
from fairprune.core.contract.errors import ConfigError, NonFiniteError
from fairprune.core.method.recovery import coarse_kl, distillation_targets, recover
from fairprune.testing import tiny_char_tokenizer, tiny_model

SMALL = {"tokens": 512, "held_out_tokens": 256, "chunk_tokens": 64, "top_k": 16, "batch_size": 4}


def _pruned(seed: int = 0):
    model = tiny_model("llama", seed=seed, max_position_embeddings=512)
    adapter = fp.resolve_adapter(model)
    return model, adapter


def _mlp_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if ".mlp." in k}


def _other_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if ".mlp." not in k}


def test_coarse_kl_is_zero_for_the_same_distribution_and_below_the_full_kl():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, 50, generator=gen)
    other = base + 0.7 * torch.randn(3, 5, 50, generator=gen)
    lp = torch.log_softmax(base, -1)
    top = torch.topk(lp, 8, dim=-1)
    assert float(coarse_kl(base, top.indices, top.values)) == pytest.approx(0.0, abs=1e-6)
    coarse = float(coarse_kl(other, top.indices, top.values))
    full = float((lp.exp() * (lp - torch.log_softmax(other, -1))).sum(-1).mean())
    assert 0.0 < coarse <= full + 1e-6


def test_recovery_brings_the_pruned_model_closer_to_the_base_and_changes_only_mlp_weights():
    tok = tiny_char_tokenizer()
    model, adapter = _pruned()
    targets = distillation_targets(model, tok, **SMALL)
    fp.prune(model, {0: list(range(0, 64, 3)), 1: list(range(1, 64, 4))}, adapter=adapter)
    widths = [adapter.width(model, i) for i in range(len(adapter.layers(model)))]
    others, mlp = _other_state(model), _mlp_state(model)
    flags = [p.requires_grad for p in model.parameters()]
    record = recover(model, adapter, targets, epochs=3, lr=1e-3, batch_size=SMALL["batch_size"])
    assert record["kept"] and record["steps"] == 3 * 2  # 512 tokens = 8 chunks of 64, 4 per step
    assert record["held_out_kl_after"] < record["held_out_kl_before"]
    assert [adapter.width(model, i) for i in range(len(widths))] == widths  # nothing added back
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in others.items())
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in mlp.items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_a_recovery_that_does_not_lower_the_held_out_kl_is_undone():
    tok = tiny_char_tokenizer()
    model, adapter = _pruned(seed=1)
    fp.prune(model, {0: [1, 2, 3]}, adapter=adapter)
    targets = distillation_targets(model, tok, **SMALL)  # the pruned model itself: nothing left to recover
    before = _mlp_state(model)
    record = recover(model, adapter, targets, epochs=1, lr=1e-2, batch_size=SMALL["batch_size"])
    assert not record["kept"]
    assert record["held_out_kl_after"] == record["held_out_kl_before"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_non_finite_loss_stops_recovery_and_puts_the_weights_back():
    tok = tiny_char_tokenizer()
    model, adapter = _pruned(seed=2)
    targets = distillation_targets(model, tok, **SMALL)
    fp.prune(model, {0: [4, 5]}, adapter=adapter)
    targets.train_logprobs[1:] = float("nan")
    before = _mlp_state(model)
    with pytest.raises(NonFiniteError, match="pruning.recovery"):
        recover(model, adapter, targets, epochs=1, lr=1e-3, batch_size=1)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_recovery_text_too_short_is_a_config_error(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("only a few words")
    model, _ = _pruned()
    with pytest.raises(ConfigError, match="fewer than one chunk"):
        distillation_targets(model, tiny_char_tokenizer(), text=str(short), **SMALL)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("src") / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), path)
    return path


def _config(model_dir, out, recovery):
    pruning = {"budget": {"neurons": 8}}
    if recovery is not None:
        pruning["recovery"] = recovery
    return {"model": {"source": str(model_dir)}, "bias": {"axes": ["race"], "batch_size": 8}, "pruning": pruning,
            "evaluation": {"evaluators": ["parameters"]}, "output": {"dir": str(out)}}


def test_a_run_with_recovery_records_it_and_saves_the_recovered_weights(model_dir, tmp_path):
    plain = fp.run(_config(model_dir, tmp_path / "plain", None), progress=False)
    recovered = fp.run(_config(model_dir, tmp_path / "rec", {**SMALL, "lr": 1e-3, "epochs": 2}), progress=False)
    assert "recovery" not in plain.metrics["pruning"]
    record = json.loads((tmp_path / "rec" / "metrics.json").read_text())["pruning"]["recovery"]
    assert record["steps"] == 4 and record["kept"] is True
    assert recovered.plan.to_mapping() == plain.plan.to_mapping()  # recovery comes after the plan
    saved, _ = fp.load_pretrained(tmp_path / "rec")
    plain_saved, _ = fp.load_pretrained(tmp_path / "plain")
    state, plain_state = saved.state_dict(), plain_saved.state_dict()
    assert any(not torch.equal(state[k], plain_state[k]) for k in state if ".mlp." in k)
    assert all(torch.equal(state[k], plain_state[k]) for k in state if ".mlp." not in k)
    assert "Recovery distillation: the kept MLP weights" in (tmp_path / "rec" / "README.md").read_text()
    assert "Recovery distillation" in fp.summary_text(recovered.metrics)
    assert "Recovery" not in fp.summary_text(plain.metrics)


def test_sweep_refuses_recovery_before_loading_the_model(model_dir, tmp_path):
    from fairprune.core.run.sweep import sweep

    config = _config(model_dir, tmp_path / "sweep", {"epochs": 1})
    with pytest.raises(ConfigError, match="pruning.recovery"):
        sweep(config, progress=False)


def test_recovery_options_are_checked_by_name(model_dir, tmp_path):
    with pytest.raises(ConfigError, match="pruning.recovery.lr"):
        fp.load_config(_config(model_dir, tmp_path / "x", {"lr": 0}))


def test_setting_a_recovery_key_turns_recovery_on_from_a_config_without_it(model_dir, tmp_path):
    off = fp.load_config(_config(model_dir, tmp_path / "x", None))
    assert off.pruning.recovery is None
    on = fp.load_config(off, overrides=["pruning.recovery.epochs=3"])
    assert on.pruning.recovery is not None and on.pruning.recovery.epochs == 3 and on.pruning.recovery.lr == 2e-5


def test_a_missing_recovery_text_is_refused_before_the_model_loads(tmp_path):
    config = _config(tmp_path / "no-model-here", tmp_path / "out", {"text": str(tmp_path / "missing.txt")})
    with pytest.raises(ConfigError, match=r"pruning.recovery.text: file not found"):
        fp.run(config, progress=False)


def test_offloaded_mlp_weights_are_refused_and_nothing_changes():
    tok = tiny_char_tokenizer()
    model, adapter = _pruned(seed=3)
    targets = distillation_targets(model, tok, **SMALL)
    before = _other_state(model)
    mlp = adapter.mlp(model, 1)
    mlp.down_proj.weight = torch.nn.Parameter(torch.empty_like(mlp.down_proj.weight, device="meta"))
    with pytest.raises(ConfigError, match="offloaded"):
        recover(model, adapter, targets, epochs=1, lr=1e-3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
