"""Write a saved llama-family model directory (uniform MLP widths) as one float32 GGUF file.

What is written follows the GGUF conventions llama.cpp's own converter uses for the ``llama``
architecture: hyper-parameters under ``llama.*``, a byte-level BPE tokenizer as ``gpt2`` tokens,
types and merges, tensors named ``token_embd``, ``blk.N.attn_q`` ... ``output``, with the rows of the
query and key projections reordered per head (GGUF stores rotary halves interleaved). Everything
else is refused before writing, with the reason: other architectures, attention or MLP biases (the
``compensated`` pruner adds down_proj biases), rope scaling, and tokenizers that are not byte-level
BPE. The file is written beside the target and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..contract.errors import ConfigError
from .persist import check_weights, read_sidecar

logger = logging.getLogger(__name__)

#: Hugging Face llama parameter suffix -> GGUF tensor name within a block
BLOCK_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
TOP_TENSORS = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
               "lm_head.weight": "output.weight"}


def _read(directory: Path, name: str) -> dict[str, Any]:
    file = directory / name
    return json.loads(file.read_text()) if file.is_file() else {}


def check_exportable(directory: str | Path) -> None:
    """``ConfigError`` naming what GGUF export cannot write for the model saved in ``directory``."""
    root = Path(directory)
    config = _read(root, "config.json")
    where = "--format gguf"
    if config.get("model_type") != "llama":
        raise ConfigError(f"{where}: fairprune writes GGUF for llama-architecture models (SmolLM2, Llama); "
                          f"{root} is {config.get('model_type')!r}. Export --format hf and convert it with "
                          "llama.cpp's convert_hf_to_gguf.py (uniform widths only)")
    if config.get("attention_bias") or config.get("mlp_bias") or (read_sidecar(root) or {}).get("down_bias_layers"):
        raise ConfigError(f"{where}: {root} has attention or MLP biases (the compensated pruner adds down_proj "
                          "biases), which the llama GGUF layout has no place for; prune with pruner: structural")
    rope_type = (config.get("rope_scaling") or config.get("rope_parameters") or {}).get("rope_type", "default")
    if rope_type != "default":
        raise ConfigError(f"{where}: {root} uses rope scaling ({rope_type}), which this writer does not record; "
                          "export --format hf and use llama.cpp's converter")
    tokenizer = _read(root, "tokenizer.json").get("model", {})
    if tokenizer.get("type") != "BPE":
        raise ConfigError(f"{where}: {root}/tokenizer.json is not a BPE tokenizer (got {tokenizer.get('type')!r}); "
                          "GGUF's gpt2 tokenizer needs byte-level BPE vocab and merges")


def _permute(weight: Any, heads: int) -> Any:
    """Rows of a q/k projection, per head, from [half 1; half 2] of the rotary dimensions to interleaved pairs."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tokenizer(writer: Any, root: Path, config: dict[str, Any]) -> None:
    """Tokens (by id, padded to the model's vocabulary), their types, merges and special ids."""
    import gguf

    data = _read(root, "tokenizer.json")
    vocab: dict[str, int] = dict(data["model"]["vocab"])
    special = {t["id"] for t in data.get("added_tokens", []) if t.get("special")}
    for token in data.get("added_tokens", []):
        vocab[token["content"]] = token["id"]
    size = max(int(config.get("vocab_size", 0)), max(vocab.values()) + 1)
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for token, index in vocab.items():
        tokens[index] = token
        types[index] = gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    settings = _read(root, "tokenizer_config.json")
    ids = {name: config.get(f"{name}_token_id") for name in ("bos", "eos", "pad")}
    for name in ("bos", "eos", "pad", "unk"):
        text = settings.get(f"{name}_token")
        text = text.get("content") if isinstance(text, dict) else text
        if text in vocab:
            ids[name] = vocab[text]
    for name, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        if isinstance(ids.get(name), int):
            add(ids[name])
    writer.add_add_bos_token(bool(settings.get("add_bos_token", False)))
    if isinstance(settings.get("chat_template"), str):
        writer.add_chat_template(settings["chat_template"])


def write_gguf(directory: str | Path, target: str | Path) -> Path:
    """Write the model saved in ``directory`` (checked by ``check_exportable``; uniform widths) to ``target``.

    Tensors are float32; tied embeddings write no ``output.weight`` (llama.cpp reuses ``token_embd``).
    Returns ``target``. Raises ``ConfigError`` for what cannot be written, before writing.
    """
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    root, target = Path(directory), Path(target)
    check_exportable(root)
    config = _read(root, "config.json")
    heads, kv_heads = int(config["num_attention_heads"]), int(config.get("num_key_value_heads")
                                                                   or config["num_attention_heads"])
    hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    state: dict[str, Any] = {}
    for file in check_weights(root):
        state.update({k: v.float().numpy() for k, v in load_file(str(file)).items()})
    unknown = sorted(name for name in state if _gguf_name(name) is None)
    if unknown:
        raise ConfigError(f"--format gguf: {root} has tensors the llama GGUF layout has no name for: "
                          f"{', '.join(unknown[:5])}")
    widths = {state[f"model.layers.{i}.mlp.gate_proj.weight"].shape[0] for i in range(layers)}
    if len(widths) != 1:
        raise ConfigError(f"--format gguf: {root}'s weights have MLP widths {sorted(widths)}; GGUF needs one")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    try:
        writer.add_name(root.name)
        writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
        writer.add_embedding_length(hidden)
        writer.add_block_count(layers)
        writer.add_feed_forward_length(widths.pop())
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_rope_freq_base(rope_theta(config))
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
        writer.add_rope_dimension_count(head_dim)
        writer.add_vocab_size(int(config["vocab_size"]))
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        _tokenizer(writer, root, config)
        for name, tensor in state.items():
            out = _gguf_name(name)
            if out == "output.weight" and config.get("tie_word_embeddings"):
                continue
            value = np.ascontiguousarray(tensor, dtype=np.float32)
            if out.endswith("attn_q.weight"):
                value = _permute(value, heads)
            elif out.endswith("attn_k.weight"):
                value = _permute(value, kv_heads)
            writer.add_tensor(out, np.ascontiguousarray(value))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("wrote %s (%d tensors, float32)", target, len(state))
    return target


def rope_theta(config: dict[str, Any]) -> float:
    """The rotary base of a ``config.json``: ``rope_theta``, or inside ``rope_parameters`` (transformers 5)."""
    theta = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta")
    return float(theta or 10000.0)


def _gguf_name(name: str) -> str | None:
    """The GGUF tensor name of a Hugging Face llama parameter (None: not written, e.g. rotary buffers)."""
    if name in TOP_TENSORS:
        return TOP_TENSORS[name]
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in BLOCK_TENSORS:
        return f"blk.{parts[2]}.{BLOCK_TENSORS[parts[3]]}"
    return None
