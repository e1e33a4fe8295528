"""``fairprune axes``: list the bias axes with their attribute groups, templates and prompt counts."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("axes", help="list bias axes with group, template and prompt counts",
                            description="List every registered bias axis (or the axis files given) with the "
                                        "numbers of attribute groups, templates (held out) and prompts.")
    parser.add_argument("files", nargs="*", help="axis YAML files to check and count instead of registered axes")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..core.contract.registry import get_registry
    from ..core.data.prompts import load_axis

    if args.files:
        axes = [load_axis(path) for path in args.files]
    else:
        axes = [entry.obj for entry in get_registry().items("bias_axes")]
    rows = []
    for axis in axes:
        counts = axis.counts() if hasattr(axis, "counts") else _count(axis)
        rows.append({"name": axis.name, **counts, "description": axis.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'axis':<20} {'groups':>6} {'templates':>9} {'held out':>8} {'prompts':>7}  description"
    print(header)
    for r in rows:
        print(f"{r['name']:<20} {r.get('groups', '-'):>6} {r.get('templates', '-'):>9} "
              f"{r.get('heldout_templates', '-'):>8} {r['prompts']:>7}  {r['description']}")
    return 0


def _count(axis: object) -> dict[str, int]:
    """Counts for a third-party axis that only implements ``prompt_groups``."""
    groups = axis.prompt_groups("all")  # type: ignore[attr-defined]
    templates = {g.template_id for g in groups}
    heldout = {g.template_id for g in axis.prompt_groups("heldout")}  # type: ignore[attr-defined]
    return {"groups": max((len(g.prompts) for g in groups), default=0), "templates": len(templates),
            "heldout_templates": len(heldout), "prompt_groups": len(groups),
            "prompts": sum(len(g.prompts) for g in groups)}
