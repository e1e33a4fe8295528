"""``fairprune export``: a clean copy of a run's model (no run files), and GGUF for uniform llama models only."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

import fairprune as fp
from fairprune.cli import main
from fairprune.testing import snapshot, tiny_char_tokenizer, tiny_model

RUN_FILES = {"plan.json", "bias", "metrics.json", "report.md", "report.html", "manifest.json", "config.yaml"}
TEXT = ["the black man works in the city", "a white woman was a good doctor", "my friend lives in a new town"]


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few sentences (GGUF's gpt2 tokenizer kind)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(TEXT * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    source = root / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), source)
    out = {}
    for name, uniform in (("uneven", False), ("uniform", True)):
        config = {"model": {"source": str(source)}, "bias": {"axes": ["race"], "batch_size": 12},
                  "pruning": {"budget": {"neurons": 8}, "uniform_widths": uniform},
                  "evaluation": {"evaluators": ["parameters"]}, "output": {"dir": str(root / name)}}
        out[name] = fp.run(config, progress=False).output_dir
    return out


@pytest.mark.parametrize("name", ["uneven", "uniform"])
def test_hf_export_holds_the_model_and_no_run_files(runs, tmp_path, name, capsys):
    out = tmp_path / "deploy"
    assert main(["export", str(runs[name]), str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md",
            "fairprune.json"} <= names
    assert not names & RUN_FILES and not any(n.startswith(".") for n in names)
    assert not list(tmp_path.glob(".deploy*"))  # nothing left of the staging directory
    run_model, _ = fp.load_pretrained(runs[name])
    exported, tok = fp.load_pretrained(out)
    ids = tok(TEXT, return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(exported(**ids).logits, run_model(**ids).logits, atol=0, rtol=0)
        if name == "uniform":
            plain = AutoModelForCausalLM.from_pretrained(out).eval()
            torch.testing.assert_close(plain(**ids).logits, run_model(**ids).logits, atol=1e-5, rtol=0)


def test_gguf_of_uneven_widths_is_refused_saying_why_and_what_to_do(runs, tmp_path, capsys):
    before = snapshot(tmp_path)
    assert main(["export", str(runs["uneven"]), str(tmp_path / "m.gguf"), "--format", "gguf"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --format gguf:") and err.count("\n") == 1
    assert "different MLP widths" in err and "feed_forward_length" in err and "pruning.uniform_widths=true" in err
    assert snapshot(tmp_path) == before


def test_gguf_of_a_non_bpe_tokenizer_or_other_architecture_is_refused(runs, tmp_path, capsys):
    assert main(["export", str(runs["uniform"]), str(tmp_path / "m.gguf"), "--format", "gguf"]) == 1
    assert "not a BPE tokenizer" in capsys.readouterr().err
    qwen = tmp_path / "qwen"
    fp.save_pretrained(tiny_model("qwen2"), bpe_tokenizer(), qwen)
    assert main(["export", str(qwen), str(tmp_path / "q.gguf"), "--format", "gguf"]) == 1
    err = capsys.readouterr().err
    assert "'qwen2'" in err and "convert_hf_to_gguf.py" in err
    assert not (tmp_path / "q.gguf").exists() and not (tmp_path / "m.gguf").exists()


@pytest.mark.parametrize("tied", [False, True])
def test_gguf_of_a_uniform_llama_reloads_with_the_same_logits(tmp_path, tied):
    tok = bpe_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0,
                       pad_token_id=0, rope_theta=100000.0)  # not the default base: it must reach the file
    n_layers = model.config.num_hidden_layers
    fp.prune(model, {layer: [1, 5, 9, 30] for layer in range(n_layers)})
    saved = tmp_path / "pruned"
    fp.save_pretrained(model, tok, saved)
    out = tmp_path / "pruned.gguf"
    assert main(["export", str(saved), str(out), "--format", "gguf"]) == 0
    from gguf import GGUFReader

    fields = GGUFReader(out).fields
    assert fields["llama.feed_forward_length"].contents() == 60
    assert ("output.weight" in {t.name for t in GGUFReader(out).tensors}) is not tied
    reloaded, tok2 = fp.load_model(str(out))  # through transformers' GGUF reader
    ids = tok(TEXT, return_tensors="pt", padding=True)
    assert tok2(TEXT, return_tensors="pt", padding=True)["input_ids"].tolist() == ids["input_ids"].tolist()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**ids).logits, model(**ids).logits, atol=1e-5, rtol=0)
    assert main(["export", str(saved), str(out), "--format", "gguf"]) == 1  # exists: --overwrite to replace


def test_export_of_a_directory_without_a_model_names_it(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{}")
    assert main(["export", str(tmp_path), str(tmp_path / "out")]) == 1
    assert "config.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
