"""Pytest fixtures with tiny models; enable with ``pytest_plugins = ["fairprune.testing.fixtures"]``."""

from __future__ import annotations

from typing import Any

import pytest

from .models import tiny_model
from .tokenizer import tiny_tokenizer


@pytest.fixture
def tiny_llama() -> Any:
    """A fresh tiny random LlamaForCausalLM (2 layers, hidden 32, width 64)."""
    return tiny_model("llama")


@pytest.fixture
def tiny_qwen2() -> Any:
    """A fresh tiny random Qwen2ForCausalLM (3 layers, hidden 32, width 64)."""
    return tiny_model("qwen2")


@pytest.fixture
def tiny_gemma() -> Any:
    """A fresh tiny random Gemma3ForCausalLM (3 layers, hidden 32, width 64)."""
    return tiny_model("gemma3")


@pytest.fixture
def tiny_tok() -> Any:
    """A word-level tokenizer whose ids fit the tiny models (pad token set, right padding)."""
    return tiny_tokenizer()
