"""Reading JSONL files of texts whose last word is predicted (LAMBADA's format: one ``{"text": ...}`` per line)."""

from __future__ import annotations

import json
from pathlib import Path

from ..contract.errors import ConfigError


def read_jsonl_texts(file: str | Path, limit: int | None = None, what: str = "cloze_path") -> list[str]:
    """The ``text`` field of the first ``limit`` non-empty lines of ``file``; every text must have a last word
    after a space. ``ConfigError`` naming ``what`` (the config field), the file and the line otherwise."""
    file = Path(file)
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
