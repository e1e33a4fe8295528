"""``fairprune prune``: apply a saved plan to a model and save the pruned model."""

from __future__ import annotations

import argparse

from ._common import add_overwrite_argument, add_trust_remote_code_argument, claim_out


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("prune", help="apply a plan.json to a model and save it",
                            description="Remove the neurons listed in a plan (plan.json of a run) and save the model.")
    parser.add_argument("--model", required=True, help="model source name, directory, .gguf path or HF id")
    parser.add_argument("--plan", required=True, help="plan.json written by `fairprune run` or plan.save()")
    parser.add_argument("--out", required=True, help="directory for the pruned model")
    parser.add_argument("--pruner", default="structural", help="pruner plugin (default: structural)")
    add_overwrite_argument(parser)
    add_trust_remote_code_argument(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from .. import Plan, load_model, prune, save_pretrained
    from ..core.contract.errors import ConfigError

    out = claim_out(args)
    plan = Plan.load(args.plan)
    if not plan.n_neurons:  # before the model loads: saving an unchanged copy would look like a pruned model
        raise ConfigError(f"--plan: {args.plan} removes no neuron, so there is nothing to prune")
    model, tokenizer = load_model(args.model, trust_remote_code=args.trust_remote_code, require_tokenizer=False)
    result = prune(model, plan, pruner=args.pruner)
    base_model = getattr(model.config, "fairprune_base_model", None) or args.model
    save_pretrained(model, tokenizer, out, overwrite=args.overwrite, plan=plan, base_model=base_model)
    print(f"removed {sum(len(v) for v in result.removed.values())} neurons, {result.params_removed:,} parameters "
          f"({100 * result.fraction_removed:.3f}%); saved to {args.out}")
    return 0
