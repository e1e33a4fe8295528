"""Tiny random models of every supported architecture, built from configs (no downloads).

Each builder returns a float32 model in eval mode with 2-3 decoder layers, a
hidden size of 32-64 and an MLP width of 48-96, so a forward pass takes
milliseconds. Plugin authors use them to test against every architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

VOCAB_SIZE = 128

#: keyword arguments shared by every tiny config
_COMMON: dict[str, Any] = dict(
    vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
)


def _llama(**kw: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM
    return LlamaForCausalLM(LlamaConfig(**{**_COMMON, **kw}))


def _mistral(**kw: Any) -> Any:
    from transformers import MistralConfig, MistralForCausalLM
    return MistralForCausalLM(MistralConfig(**{**_COMMON, "sliding_window": 16, "intermediate_size": 48, **kw}))


def _qwen2(**kw: Any) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM
    return Qwen2ForCausalLM(Qwen2Config(**{**_COMMON, "num_hidden_layers": 3, **kw}))


def _qwen3(**kw: Any) -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM
    return Qwen3ForCausalLM(Qwen3Config(**{**_COMMON, "head_dim": 8, "intermediate_size": 80, **kw}))


def _gemma(**kw: Any) -> Any:
    from transformers import GemmaConfig, GemmaForCausalLM
    return GemmaForCausalLM(GemmaConfig(**{**_COMMON, "head_dim": 8, "hidden_size": 48, "intermediate_size": 96,
                                           "tie_word_embeddings": True, **kw}))


def _gemma2(**kw: Any) -> Any:
    from transformers import Gemma2Config, Gemma2ForCausalLM
    return Gemma2ForCausalLM(Gemma2Config(**{**_COMMON, "head_dim": 8, "sliding_window": 16, "num_hidden_layers": 3,
                                             "tie_word_embeddings": True, **kw}))


def _gemma3(**kw: Any) -> Any:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    return Gemma3ForCausalLM(Gemma3TextConfig(**{**_COMMON, "head_dim": 8, "sliding_window": 16,
                                                 "num_hidden_layers": 3, "tie_word_embeddings": True, **kw}))


def _olmo2(**kw: Any) -> Any:
    from transformers import Olmo2Config, Olmo2ForCausalLM
    return Olmo2ForCausalLM(Olmo2Config(**{**_COMMON, "hidden_size": 64, "intermediate_size": 72, **kw}))


def _granite(**kw: Any) -> Any:
    from transformers import GraniteConfig, GraniteForCausalLM
    return GraniteForCausalLM(GraniteConfig(**{**_COMMON, "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
                                               "logits_scaling": 2.0, "attention_multiplier": 0.25, **kw}))


def _phi3(**kw: Any) -> Any:
    from transformers import Phi3Config, Phi3ForCausalLM
    return Phi3ForCausalLM(Phi3Config(**{**_COMMON, "num_key_value_heads": 4, "intermediate_size": 56, **kw}))


#: architecture name -> builder taking config overrides
TINY_ARCHITECTURES: dict[str, Callable[..., Any]] = {
    "llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "gemma": _gemma,
    "gemma2": _gemma2, "gemma3": _gemma3, "olmo2": _olmo2, "granite": _granite, "phi3": _phi3,
}


def tiny_model(arch: str, seed: int = 0, **overrides: Any) -> Any:
    """A tiny random float32 model of ``arch`` in eval mode; ``overrides`` change its config."""
    import torch

    if arch not in TINY_ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {arch!r}; known: {', '.join(TINY_ARCHITECTURES)}")
    torch.manual_seed(seed)
    model = TINY_ARCHITECTURES[arch](**overrides)
    _spread_weights(model, seed)
    model.config.architectures = [type(model).__name__]
    return model.float().eval()


def _spread_weights(model: Any, seed: int) -> None:
    """Re-draw norm weights and biases at random so that no parameter is a trivial constant.

    Freshly built models have all-ones (or all-zeros) norm weights, which would
    hide bugs that permute or drop such parameters.
    """
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.copy_(param + 0.1 * torch.randn(param.shape, generator=gen))
            elif param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)


def tiny_multimodal_model(seed: int = 0, **text_overrides: Any) -> Any:
    """A tiny random ``Gemma3ForConditionalGeneration`` (vision tower + 2-layer Gemma 3 text model, width 64).

    transformers saves its text weights under other names than it holds them
    in memory (``language_model.model.*``), which a loader must map back.
    """
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = {**_COMMON, "head_dim": 8, "sliding_window": 16, "tie_word_embeddings": True, **text_overrides}
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          image_token_index=VOCAB_SIZE - 1, boi_token_index=VOCAB_SIZE - 3,
                          eoi_token_index=VOCAB_SIZE - 2)
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    _spread_weights(model, seed)
    model.config.architectures = [type(model).__name__]
    return model.float().eval()
