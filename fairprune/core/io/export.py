"""Export a run's pruned model as a clean, deployable directory (``fairprune export``).

A run directory mixes the model (weights, config, tokenizer, model card, the ``fairprune.json``
sidecar that lets ``fairprune.load_pretrained`` rebuild uneven widths) with the run's own files
(``plan.json``, ``bias/``, ``metrics.json``, the reports, the manifest). ``export_model`` copies
only the model's files, atomically like every other save. Formats:

- ``hf``: a Hugging Face directory. It loads with plain ``AutoModelForCausalLM`` when every layer
  has the same MLP width; otherwise only with ``fairprune.load_pretrained`` (the card says so).
- ``gguf``: one ``.gguf`` file for llama.cpp / Ollama, written from the exported weights
  (``core.gguf_export``). GGUF holds one ``feed_forward_length`` for all layers, so uneven widths
  are refused before anything is written.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ..contract.errors import ConfigError, PersistError
from .outputs import Where, atomic_directory, check_output_file, refuse_reading_from
from .persist import SIDECAR, WEIGHTS_INDEX, check_weights, read_sidecar

logger = logging.getLogger(__name__)

FORMATS = ("hf", "gguf")

#: the model's files besides the weights: config, tokenizer (every format transformers writes), card, sidecar
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "tokenizer.model", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
               "chat_template.jinja", "chat_template.json", "README.md", SIDECAR)


def layer_widths(directory: str | Path) -> list[int]:
    """The MLP width of every layer of a saved model directory, from its sidecar or its ``config.json``.

    Raises ``PersistError`` when the directory is not a saved model (no ``config.json``) or neither
    file records the widths.
    """
    root = Path(directory)
    if not (root / "config.json").is_file():
        raise PersistError(f"{root} holds no saved model: config.json is missing (is it a run of "
                           "`fairprune run` with output.save_model: true?)")
    sidecar = read_sidecar(root)
    if sidecar and sidecar.get("widths"):
        return [int(w) for w in sidecar["widths"]]
    config = json.loads((root / "config.json").read_text())
    config = config.get("text_config", config) if "intermediate_size" not in config else config
    if config.get("fairprune_intermediate_sizes"):
        return [int(w) for w in config["fairprune_intermediate_sizes"]]
    if "intermediate_size" in config and "num_hidden_layers" in config:
        return [int(config["intermediate_size"])] * int(config["num_hidden_layers"])
    raise PersistError(f"{root}: neither {SIDECAR} nor config.json records the MLP widths")


def refuse_uneven(widths: list[int], fmt: str, directory: Path) -> None:
    """``ConfigError`` for a format that cannot hold layers of different widths, saying why and what to do."""
    if len(set(widths)) == 1:
        return
    raise ConfigError(f"--format {fmt}: {directory}'s layers have different MLP widths ({min(widths)} to "
                      f"{max(widths)}), and a GGUF file holds one feed_forward_length for every layer, so llama.cpp "
                      "and Ollama cannot load it. Re-run with `--set pruning.uniform_widths=true` (every layer loses "
                      "the same number of neurons), or export --format hf and load it with "
                      "fairprune.load_pretrained")


def model_files(directory: Path) -> list[Path]:
    """The files of ``directory`` that belong to the model: weights (and their index), config, tokenizer, card."""
    files = list(check_weights(directory))
    if (directory / WEIGHTS_INDEX).exists():
        files.append(directory / WEIGHTS_INDEX)
    files += [directory / name for name in MODEL_FILES if (directory / name).is_file()]
    return files


def export_model(run_dir: str | Path, out: str | Path, fmt: str = "hf", *, overwrite: bool = False) -> Path:
    """Copy the model of ``run_dir`` to ``out`` in format ``fmt`` (``hf``: a directory; ``gguf``: a file).

    Every check runs before anything is written: an unknown format, a directory without a saved model or
    with damaged weights (``PersistError``), uneven widths for ``gguf`` (``ConfigError``), and ``out``
    existing without ``overwrite`` (``OutputError``). Returns the path written.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    source = Path(run_dir).expanduser().resolve()
    if not source.is_dir():
        raise PersistError(f"RUN_DIR: {source} is not a directory")
    widths = layer_widths(source)
    files = model_files(source)
    target = Path(out).expanduser().absolute()
    refuse_reading_from(target, [run_dir], Where("OUT", "pass --overwrite"))
    if fmt == "gguf":
        refuse_uneven(widths, fmt, source)
        from .gguf_export import check_exportable, write_gguf

        check_exportable(source)
        if target.suffix != ".gguf":
            raise ConfigError(f"OUT: {target} must end in .gguf for --format gguf")
        check_output_file(target, overwrite, Where("OUT", "pass --overwrite"))
        return write_gguf(source, target)
    with atomic_directory(target, overwrite, Where("OUT", "pass --overwrite")) as staging:
        staging.mkdir()
        for file in files:
            shutil.copy2(file, staging / file.name)
    left = sorted(p.name for p in source.iterdir() if p not in files and not p.name.startswith("."))
    logger.info("exported %d files to %s; left out the run's files: %s", len(files), target, ", ".join(left))
    if len(set(widths)) > 1:
        logger.warning("%s: layers have different MLP widths (%d to %d): it loads with fairprune.load_pretrained, "
                       "not with plain transformers; re-run with pruning.uniform_widths: true for that",
                       target, min(widths), max(widths))
    return target

