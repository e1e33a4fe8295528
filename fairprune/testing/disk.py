"""A fingerprint of a directory tree, to test that a refused command changed nothing on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path


def snapshot(root: str | Path) -> dict[str, str]:
    """Every path under ``root`` (hidden ones included) -> ``"dir"`` or the sha256 of the file's bytes.

    Two equal snapshots mean no file was added, removed or changed (lock files
    and staging directories included).
    """
    root = Path(root)
    tree: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        tree[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return tree
