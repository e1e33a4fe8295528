"""``fairprune demo``: the bundled SmolLM2-135M example run, with its summary."""

from __future__ import annotations

import argparse
from pathlib import Path

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "data" / "configs" / "fair-smollm2.yaml"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("demo", help="fairness-prune the bundled SmolLM2-135M on the race axis",
                            description=f"Run {DEMO_CONFIG.name} (also at examples/fair-smollm2.yaml).")
    parser.add_argument("--out", default=None, help="output directory (default: the config's output.dir, which "
                                                     "each demo run replaces)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out when it exists and is not empty")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the demo config by dotted key, e.g. --set "
                             "model.source=gemma3-270m (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--check", action="store_true",
                        help="every check the demo run makes, then stop before the model loads (as run --check)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..core.contract.summary import summary_text
    from ..core.run.pipeline import check, run

    # the demo's own directory is replaced on every run; a directory the user names is not, unless asked
    chosen = [f"output.dir={args.out}", f"output.overwrite={str(args.overwrite).lower()}"] if args.out else []
    overrides = chosen + list(args.overrides)
    if args.check:
        print(check(DEMO_CONFIG, overrides))
        return 0
    result = run(DEMO_CONFIG, overrides, progress=not args.quiet)
    print(summary_text(result.metrics, result.output_dir))
    return 0
