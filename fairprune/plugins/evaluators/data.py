"""Reading evaluation data: the bundled text and cloze files, and LAMBADA-format JSONL files given by path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ...core.contract.errors import ConfigError
from ...core.data.jsonl_texts import read_jsonl_texts as read_texts

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
    return read_texts(Path(path) if path else bundled_path(GENERAL_CLOZE), limit=limit, what=what)
