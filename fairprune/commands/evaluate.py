"""``fairprune evaluate``: compare a pruned model with its base on held-out bias and capability."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import OUT, add_overwrite_argument, add_trust_remote_code_argument, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("evaluate", help="compare a pruned model with its base (bias, capability, size)",
                            description="Evaluate base vs pruned on held-out prompt groups and general text; every "
                                        "bias and capability figure comes with a 95% bootstrap interval.")
    parser.add_argument("--base", required=True, help="base model: source name, directory, .gguf path or HF id")
    parser.add_argument("--pruned", required=True, help="directory of a model saved by fairprune")
    parser.add_argument("--axes", default=None,
                        help="comma-separated bias axes for held-out groups (default: the config default, race)")
    parser.add_argument("--evaluators", default=None,
                        help="comma-separated evaluator plugins (default: those a run config uses when it names none)")
    parser.add_argument("--lambada", metavar="PATH", help="LAMBADA-format JSONL for the capability evaluator")
    parser.add_argument("--lambada-limit", type=positive_int, default=None,
                        help="first N LAMBADA passages (default: 400; needs --lambada)")
    parser.add_argument("--params", metavar="JSON", help='extra evaluator params, e.g. \'{"output_bias": {...}}\'')
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="prompts per forward pass (default: the config's evaluation.batch_size)")
    parser.add_argument("--out", metavar="PATH", help="write all results as JSON here")
    add_overwrite_argument(parser)
    add_trust_remote_code_argument(parser)
    parser.add_argument("--quiet", "--no-progress", dest="no_progress", action="store_true",
                        help="no progress bars (as in run, sweep, demo and analyze)")
    parser.set_defaults(func=main)


def build_params(args: argparse.Namespace, evaluators: list[str]) -> dict[str, dict]:
    """Evaluator params from ``--params`` plus ``--lambada`` (for capability); their files are checked."""
    from ..core.contract.errors import ConfigError
    from ..core.run.preflight import check_files, param_files

    try:
        params = json.loads(args.params) if args.params else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--params is not valid JSON: {exc}") from exc
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise ConfigError("--params must be a JSON object mapping evaluator names to objects of parameters")
    check_files([(field, path, "data") for field, path in param_files(params, "--params")])
    if args.lambada_limit is not None and not args.lambada:
        raise ConfigError("--lambada-limit without --lambada does nothing; give the LAMBADA file with --lambada")
    if args.lambada:
        if "capability" not in evaluators:
            raise ConfigError("--lambada is used by the capability evaluator, which is not in --evaluators")
        check_files([("--lambada", args.lambada, "data")])
        params.setdefault("capability", {})["lambada_path"] = args.lambada
        if args.lambada_limit is not None:  # else --params' limit, or the evaluator's default (400)
            params["capability"]["lambada_limit"] = args.lambada_limit
    return params


def main(args: argparse.Namespace) -> int:
    """Observe the base model, release it, then load and observe the pruned one: one model in memory."""
    from ..core.contract.config import BiasSection, EvaluationSection
    from ..core.contract.errors import ConfigError
    from ..core.contract.registry import default_registry
    from ..core.contract.results import EvalContext, results_to_dict
    from ..core.data.groups import gather, transfer_groups
    from ..core.io.outputs import check_output_file, write_file_atomic
    from ..core.contract.errors import PersistError
    from ..core.io.export import layer_widths
    from ..core.io.persist import check_weights, load_pretrained
    from ..core.io.sources import load_model
    from ..core.model.adapters import resolve_adapter
    from ..core.run.evaluation import compare_all, configure_evaluators, needs_groups, observe_all

    names = _names(args.evaluators) or [c.name for c in EvaluationSection().evaluators]
    axes = _names(args.axes) or BiasSection().axes
    params = build_params(args, names)
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ConfigError(f"--params names evaluators that are not run: {', '.join(unknown)}")
    if not Path(args.pruned).is_dir():
        raise ConfigError(f"--pruned: {args.pruned!r} is not a directory saved by fairprune")
    if args.out:
        check_output_file(args.out, args.overwrite, OUT)
    try:  # before the base model loads and is observed: a directory without a saved model fails now
        layer_widths(args.pruned)
        check_weights(args.pruned)
    except PersistError as exc:
        raise PersistError(f"--pruned: {exc}") from None
    registry = default_registry(None)
    evaluators = configure_evaluators(registry, [(n, params.get(n)) for n in names], "evaluators", by_name=True)
    groups = gather(axes=axes, split="heldout", registry=registry).groups if needs_groups(evaluators) else []
    transfer = transfer_groups(axes, registry) if needs_groups(evaluators) else {}
    base, tokenizer = load_model(args.base, trust_remote_code=args.trust_remote_code)
    context = EvalContext(tokenizer=tokenizer, groups=groups, transfer=transfer, batch_size=args.batch_size or
                          EvaluationSection().batch_size, registry=registry, progress=not args.no_progress)
    seen_base = observe_all(evaluators, base, context, "base", resolve_adapter(base, registry=registry))
    del base
    pruned, pruned_tokenizer = load_pretrained(args.pruned)
    if context.tokenizer is None:
        context.tokenizer = pruned_tokenizer
    seen_pruned = observe_all(evaluators, pruned, context, "pruned", resolve_adapter(pruned, registry=registry))
    results = compare_all(evaluators, seen_base, seen_pruned, context)
    for name, result in results.items():
        print(f"## {name}\n\n{result.summary}\n")
    if args.out:
        write_file_atomic(args.out, json.dumps(results_to_dict(results), indent=2) + "\n", args.overwrite, OUT)
        print(f"wrote {args.out}")
    return 0


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]
