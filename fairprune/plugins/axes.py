"""Registers one bias axis per YAML file shipped in ``fairprune/data/axes``.

Only the file names are looked at here; an axis file is parsed when the axis
is first asked for its prompts, so ``fairprune plugins`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.contract.hookspecs import hookimpl
from ..core.contract.plugin import Plugin

AXES_DIR = Path(__file__).resolve().parent.parent / "data" / "axes"


class BuiltinAxis(Plugin):
    """A built-in axis backed by a YAML file, loaded lazily on first use."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.name = path.stem  # type: ignore[misc]
        self.description = _first_description(path) or f"bias axis {self.name}"  # type: ignore[misc]
        self._axis: Any = None

    @property
    def axis(self) -> Any:
        """The parsed ``TemplateAxis``."""
        if self._axis is None:
            from ..core.data.prompts import load_axis

            self._axis = load_axis(self.path)
        return self._axis

    def prompt_groups(self, split: str = "all") -> list:
        """The axis' prompt groups for ``split`` (analysis, heldout or all)."""
        return self.axis.prompt_groups(split)

    def attribute_groups(self) -> dict[str, tuple[str, ...]]:
        """Attribute group name -> its surface forms."""
        return self.axis.attribute_groups()

    def counts(self) -> dict[str, int]:
        """Numbers of groups, templates and prompts."""
        return self.axis.counts()

    def __repr__(self) -> str:
        return f"<BuiltinAxis {self.name!r}>"


def _first_description(path: Path) -> str:
    """The ``description:`` line of an axis file, read without a YAML parser."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("description:"):
                return line.split(":", 1)[1].strip().strip("\"'")
    return ""


@hookimpl
def fairprune_register_bias_axes(register):
    for path in sorted(AXES_DIR.glob("*.yaml")):
        register(BuiltinAxis(path))
