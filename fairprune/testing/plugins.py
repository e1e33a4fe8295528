"""Install a plugin package for a test the way pip does: a module and a dist-info with an entry point."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install_plugin(root: Path, dist: str, entry_name: str, module: str, source: str) -> None:
    """Write ``module`` and a dist-info with one ``fairprune`` entry point under ``root`` (put ``root`` on
    ``sys.path`` to install it)."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[fairprune]\n{entry_name} = {module}\n")
