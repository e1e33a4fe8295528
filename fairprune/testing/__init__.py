"""Helpers for testing fairprune and its plugins: tiny models of every architecture, a tiny tokenizer.

``pytest_plugins = ["fairprune.testing.fixtures"]`` gives the fixtures ``tiny_llama``,
``tiny_qwen2``, ``tiny_gemma`` and ``tiny_tok``.
"""

from __future__ import annotations

from .disk import snapshot
from .models import TINY_ARCHITECTURES, VOCAB_SIZE, tiny_model, tiny_multimodal_model
from .tokenizer import tiny_char_tokenizer, tiny_tokenizer

__all__ = ["TINY_ARCHITECTURES", "VOCAB_SIZE", "snapshot", "tiny_char_tokenizer", "tiny_model", "tiny_multimodal_model",
           "tiny_tokenizer"]
