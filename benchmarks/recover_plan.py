"""Apply a saved plan to a base model, run recovery distillation, and save the result for ``transfer_eval``.

What ``pruning.recovery`` does inside a run, for a plan that already exists (no selection is repeated):
the base model's top-k next-token distributions on the recovery text are read, the plan's neurons are
removed structurally, the kept MLP weights are trained towards those distributions, and the model is saved
with ``fairprune.save_pretrained``. Measure it against the same base with
``transfer_eval.py --pruned OUT``.

    python benchmarks/recover_plan.py runs/fair-smollm2/plan.json /tmp/recovered --epochs 2 --lr 2e-5
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan", type=Path, help="plan.json, or a run directory holding one")
    parser.add_argument("out", type=Path, help="where the recovered model is saved")
    parser.add_argument("--model", default="smollm2-135m", help="the base model the plan was made for")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--tokens", type=int, default=4096, help="recovery text tokens trained on")
    parser.add_argument("--top-k", type=int, default=64)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import fairprune as fp
    from fairprune.core.method.plan_files import read_plan_file
    from fairprune.core.method.recovery import distillation_targets, recover

    path = args.plan / "plan.json" if args.plan.is_dir() else args.plan
    removed = {int(layer): list(neurons) for layer, neurons in read_plan_file(path)["removed"].items()}
    model, tok = fp.load_model(args.model)
    adapter = fp.resolve_adapter(model)
    targets = distillation_targets(model, tok, tokens=args.tokens, top_k=args.top_k)
    fp.prune(model, removed, adapter=adapter)
    record = recover(model, adapter, targets, epochs=args.epochs, lr=args.lr)
    fp.save_pretrained(model, tok, args.out)
    print(json.dumps({"plan": str(path), "neurons": sum(map(len, removed.values())), **record}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
