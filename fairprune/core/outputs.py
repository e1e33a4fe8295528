"""Atomic output directories: a run writes into a hidden sibling, renamed into place at the end."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError


def check_output_dir(path: str | Path, overwrite: bool) -> Path:
    """Fail early (before any long work) when the output exists and may not be replaced."""
    path = Path(path)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise ConfigError(f"output.dir: {path} exists and is not empty; choose another directory "
                          "or set output.overwrite=true")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output.dir: {path} exists and is not a directory")
    return path


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a not-yet-existing staging path beside ``path`` (create it, or let a saver create it);
    on success it replaces ``path``, on error it vanishes with everything written into it."""
    path = Path(path)
    check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    container = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    staging = container / path.name
    try:
        yield staging
        staging.mkdir(exist_ok=True)
        if path.exists():
            path.rename(container / ".replaced")
        staging.rename(path)
    finally:
        shutil.rmtree(container, ignore_errors=True)
