"""Reading evaluation data: the bundled text and cloze files, and LAMBADA-format JSONL files given by path."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ...core.contract.errors import ConfigError

#: bundled data, relative to the ``fairprune`` package
GENERAL_TEXT = "data/text/general_english.txt"
GENERAL_CLOZE = "data/cloze/general_knowledge.jsonl"


def bundled_path(relative: str) -> Path:
    """Filesystem path of a data file shipped inside the ``fairprune`` package."""
    return Path(str(resources.files("fairprune").joinpath(relative)))


def read_text(path: str | Path | None, what: str = "text_path") -> str:
    """The text of ``path`` (the bundled general English text when None)."""
    file = Path(path) if path else bundled_path(GENERAL_TEXT)
    if not file.is_file():
        raise ConfigError(f"{what}: no such text file {str(file)!r}")
    return file.read_text(encoding="utf-8")


def read_jsonl_texts(path: str | Path | None, limit: int | None = None, what: str = "cloze_path") -> list[str]:
    """The ``text`` field of the first ``limit`` lines of a JSONL file (the bundled cloze set when None)."""
    file = Path(path) if path else bundled_path(GENERAL_CLOZE)
    if not file.is_file():
        raise ConfigError(f"{what}: no such JSONL file {str(file)!r}")
    texts: list[str] = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if limit is not None and len(texts) >= limit:
                break
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f"{what}: line {number} of {str(file)!r} is not a JSON object with a 'text' "
                                  f"field ({type(exc).__name__})") from exc
            if not isinstance(text, str) or " " not in text.strip():
                raise ConfigError(f"{what}: line {number} of {str(file)!r} has no last word to predict")
            texts.append(text)
    if not texts:
        raise ConfigError(f"{what}: {str(file)!r} holds no examples")
    return texts
