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


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A saved tiny Llama (512 positions) with the character tokenizer: a model source runs read from, never
    write to; saved once per test session."""
    import fairprune as fp
    from fairprune.testing import tiny_char_tokenizer, tiny_model

    path = tmp_path_factory.mktemp("shared-src") / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), path)
    return path
