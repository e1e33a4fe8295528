"""Reading the field's benchmark files by path: CSV, JSON lines, JSON and numbered text lines.

Every reader accepts UTF-8 with or without a byte-order mark and any line ending
(LF, CRLF, CR). Every problem is a one-line ``ConfigError`` that names the
evaluator, the file, the line (or the JSON path) and the field, raised before any
model runs. Nothing is downloaded and nothing is copied: the files stay where the
user keeps them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..contract.errors import ConfigError


class Where:
    """A position in a benchmark file, for error messages: ``crows_pairs: /data/x.csv, line 12``."""

    def __init__(self, what: str, path: Path, line: int | None = None, node: str = "") -> None:
        self.what, self.path, self.line, self.node = what, path, line, node

    def __str__(self) -> str:
        line = f", line {self.line}" if self.line is not None else ""
        node = f", {self.node}" if self.node else ""
        return f"{self.what}: {str(self.path)!r}{line}{node}"

    def error(self, message: str) -> ConfigError:
        """A one-line ``ConfigError`` located here."""
        return ConfigError(f"{self}: {' '.join(message.split())}")


def existing_path(value: str, kind: str = "file") -> str:
    """The path itself when it names an existing ``kind`` (file, directory or either); a ``ValueError`` otherwise.

    Used by the evaluators' pydantic ``Params`` so that a wrong path fails at
    config validation, with the field named (``evaluators.bbq.params.path``).
    """
    path = Path(value).expanduser()
    found = {"file": path.is_file(), "directory": path.is_dir(), "either": path.exists()}[kind]
    if not found:
        wanted = "file or directory" if kind == "either" else kind
        raise ValueError(f"no such {wanted}: {value!r}")
    return str(path)


def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """``(line number, text without its line end)`` for each line; BOM dropped, any line ending."""
    try:
        with path.open(encoding="utf-8-sig", newline=None) as handle:
            for number, line in enumerate(handle, 1):
                yield number, line.rstrip("\n")
    except UnicodeDecodeError as exc:
        raise Where(what, path).error(f"is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise Where(what, path).error(f"cannot be read ({exc.strerror})") from None


def read_text_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """The non-blank lines of a text file with their line numbers; an error when there are none."""
    lines = [(n, text) for n, text in _lines(path, what) if text.strip()]
    if not lines:
        raise Where(what, path).error("holds no examples (the file is empty)")
    return lines


def read_csv_records(path: Path, what: str, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` for each data row of a CSV file with a header naming ``required`` columns.

    Empty values in a required column are errors; other columns are kept as they are.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if not header:
                raise Where(what, path).error("holds no examples (the file is empty)")
            if missing:
                raise Where(what, path, 1).error(f"missing column {missing[0]!r} (the header has "
                                                 f"{', '.join(repr(h) for h in header)})")
            rows = []
            for row in reader:
                where = Where(what, path, reader.line_num)
                for column in required:
                    value = row.get(column)
                    if value is None or not value.strip():
                        raise where.error(f"field {column!r} is empty")
                rows.append((reader.line_num, row))
    except UnicodeDecodeError as exc:
        raise Where(what, path).error(f"is not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise Where(what, path).error(f"is not valid CSV ({exc})") from None
    if not rows:
        raise Where(what, path).error("holds no examples (only a header)")
    return rows


def read_jsonl_records(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON-lines file; each line must be an object."""
    records = []
    for number, text in _lines(path, what):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise Where(what, path, number).error(f"is not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise Where(what, path, number).error(f"is a JSON {type(value).__name__}, not an object")
        records.append((number, value))
    if not records:
        raise Where(what, path).error("holds no examples (the file is empty)")
    return records


def read_json(path: Path, what: str) -> Any:
    """The parsed content of a JSON file."""
    text = "\n".join(line for _, line in _lines(path, what))
    if not text.strip():
        raise Where(what, path).error("holds no examples (the file is empty)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Where(what, path, exc.lineno).error(f"is not valid JSON ({exc.msg} at column {exc.colno})") from None


def get_field(record: Any, dotted: str, where: Where, kind: type | tuple[type, ...] = object) -> Any:
    """``record[a][b]`` for ``dotted`` = ``"a.b"``; an error naming the field when it is absent or of another type."""
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise where.error(f"missing field {dotted!r}")
        value = value[part]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise where.error(f"field {dotted!r} must be {names}, got {value!r}")
    return value


def get_choice(value: Any, field_name: str, choices: Sequence[Any], where: Where) -> Any:
    """``value`` when it is one of ``choices``; an error naming the field and the allowed values otherwise."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise where.error(f"field {field_name!r} has {value!r}; expected one of {allowed}")
    return value


def sample_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """All of ``range(n)``, or a seeded random sample of ``limit`` of them in file order.

    A random sample (rather than the first lines) because benchmark files are
    ordered by template: their first lines cover only a few of them.
    """
    if limit is None or limit >= n:
        return list(range(n))
    import numpy as np

    chosen = np.random.default_rng(seed).choice(n, size=limit, replace=False)
    return sorted(int(i) for i in chosen)


def check_filter(what: str, field_name: str, wanted: Sequence[str] | None, present: Sequence[str]) -> None:
    """An error when a filter names values the file does not have (lists the ones it has)."""
    unknown = [w for w in (wanted or ()) if w not in present]
    if unknown:
        raise ConfigError(f"{what}.{field_name}: {', '.join(repr(u) for u in unknown)} not in the data; "
                          f"it has {', '.join(repr(p) for p in sorted(set(present)))}")
