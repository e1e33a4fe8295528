"""``fairprune evaluate``: compare a pruned model with its base on held-out bias and capability."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import OUT, add_overwrite_argument, add_trust_remote_code_argument, positive_int

DEFAULT_EVALUATORS = "activation_bias,output_bias,capability,parameters"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="compare a pruned model with its base (bias, capability, size)",
                            description="Evaluate base vs pruned on held-out prompt groups and general text; every "
                                        "bias and capability figure comes with a 95% bootstrap interval.")
    parser.add_argument("--base", required=True, help="base model: source name, directory, .gguf path or HF id")
    parser.add_argument("--pruned", required=True, help="directory of a model saved by fairprune")
    parser.add_argument("--axes", default="race", help="comma-separated bias axes for held-out groups (default: race)")
    parser.add_argument("--evaluators", default=DEFAULT_EVALUATORS,
                        help=f"comma-separated evaluator plugins (default: {DEFAULT_EVALUATORS})")
    parser.add_argument("--lambada", metavar="PATH", help="LAMBADA-format JSONL for the capability evaluator")
    parser.add_argument("--lambada-limit", type=int, default=400, help="first N LAMBADA passages (default: 400)")
    parser.add_argument("--params", metavar="JSON", help='extra evaluator params, e.g. \'{"output_bias": {...}}\'')
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--out", metavar="PATH", help="write all results as JSON here")
    add_overwrite_argument(parser)
    add_trust_remote_code_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=main)


def build_params(args: argparse.Namespace, evaluators: list[str]) -> dict[str, dict]:
    """Evaluator params from ``--params`` plus ``--lambada`` (for capability)."""
    from ..core.errors import ConfigError

    try:
        params = json.loads(args.params) if args.params else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON: {exc}") from exc
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise ConfigError("--params must be a JSON object mapping evaluator names to objects of parameters")
    if args.lambada:
        if "capability" not in evaluators:
            raise ConfigError("--lambada is used by the capability evaluator, which is not in --evaluators")
        params.setdefault("capability", {}).update(lambada_path=args.lambada, lambada_limit=args.lambada_limit)
    return params


def main(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..core.evaluation import evaluate, results_to_dict
    from ..core.outputs import check_output_file, write_file_atomic
    from ..core.persist import load_pretrained
    from ..core.sources import load_model

    evaluators = [e.strip() for e in args.evaluators.split(",") if e.strip()]
    axes = [a.strip() for a in args.axes.split(",") if a.strip()]
    params = build_params(args, evaluators)
    if not Path(args.pruned).is_dir():
        raise ConfigError(f"--pruned: {args.pruned!r} is not a directory saved by fairprune")
    if args.out:
        check_output_file(args.out, args.overwrite, OUT)
    base, tokenizer = load_model(args.base, trust_remote_code=args.trust_remote_code)
    pruned, pruned_tokenizer = load_pretrained(args.pruned)
    results = evaluate(base, pruned, tokenizer or pruned_tokenizer, axes=axes, evaluators=evaluators, params=params,
                       batch_size=args.batch_size, progress=not args.no_progress)
    for name, result in results.items():
        print(f"## {name}\n\n{result.summary}\n")
    if args.out:
        write_file_atomic(args.out, json.dumps(results_to_dict(results), indent=2) + "\n", args.overwrite, OUT)
        print(f"wrote {args.out}")
    return 0
