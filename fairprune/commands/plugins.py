"""``fairprune plugins``: every registered plugin by kind, with broken and disabled plugins.

Building the registry imports only the light registration modules, so this
command does not import torch and answers in well under a second.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plugins", help="list registered plugins by kind",
                            description="List every registered plugin (built-in and installed), by kind, "
                                        "with plugins that failed to load and those disabled.")
    parser.add_argument("--json", action="store_true",
                        help='print {"<kind>": [{"name", "description", "package"}], "broken": [...], '
                             '"disabled": [...]}; architectures also list the model families they support')
    parser.set_defaults(func=main)


def listing(registry: Any) -> dict[str, Any]:
    """The registry as plain data: kinds -> entries, plus broken and disabled plugins."""
    from ..core.contract.registry import KINDS

    data: dict[str, Any] = {
        kind: [{"name": e.name, "description": e.description, "package": e.package} for e in registry.items(kind)]
        for kind in KINDS
    }
    for row, entry in zip(data["architectures"], registry.items("architectures")):
        row["families"] = list(getattr(entry.obj, "families", ()) or ())  # the model_types it prunes whole
    data["broken"] = [{"plugin": b.plugin, "package": b.package, "error": b.error} for b in registry.broken]
    data["disabled"] = sorted(registry.disabled or ())
    return data


def render(data: dict[str, Any]) -> str:
    """Human-readable text of ``listing``'s output."""
    from ..core.contract.registry import KINDS

    lines: list[str] = []
    for kind in KINDS:
        entries = data.get(kind, [])
        lines.append(f"{kind} ({len(entries)})")
        width = max((len(e["name"]) for e in entries), default=0)
        for e in entries:
            lines.append(f"  {e['name']:<{width}}  {e['description']}  [{e['package']}]")
            if e.get("families"):
                lines.append(f"  {'':<{width}}  supports: {', '.join(e['families'])}")
        if not entries:
            lines.append("  (none)")
    if data["broken"]:
        lines.append("broken plugins")
        lines.extend(f"  {b['plugin']} ({b['package']}): {b['error']}" for b in data["broken"])
    if data["disabled"]:
        lines.append("disabled: " + ", ".join(data["disabled"]))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from ..core.contract.registry import get_registry

    data = listing(get_registry())
    print(json.dumps(data, indent=2) if args.json else render(data))
    return 0
