"""Time of the attribution method's whole selection against the activation method's analysis, same prompts.

Loads a run config (default: the demo config), its model and the analysis
groups of its axes, then, in one process and interleaved ``--repeats`` times,
times (a) the activation method: ``analyze_bias`` with the config's site,
pooling and metric plus ``plan_pruning``, and (b) the attribution method's
selection with the config's ``bias.attribution`` settings, all rounds
(``select_by_attribution``: capability cost, attribution passes, measured
checks). Prints the medians and their ratio; ``--write`` puts them in
``benchmarks/RESULTS.md`` (block ``selection_time``).

    python benchmarks/selection_time.py --repeats 3
    python benchmarks/selection_time.py --set model.source=gemma3-270m
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import fairprune as fp
from fairprune.core.contract.config import ActivationParams, load_config
from fairprune.core.contract.registry import get_registry
from fairprune.core.data.groups import run_groups
from fairprune.core.method.selection import select_by_attribution
from fairprune.core.run.pipeline import resolve_method

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fairness_recipe import write_section  # noqa: E402  (the benchmarks' one writer of RESULTS.md blocks)

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE.parent / "examples" / "fair-smollm2.yaml"))
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. model.source=gemma3-270m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--write", action="store_true", help="write the result to benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, args.set)
    registry = get_registry()
    model, tok = fp.load_model(config.model.source)
    found = run_groups(config, "analysis", registry)
    method = resolve_method(config, registry)  # the config's attribution method, its plugins resolved
    objective = method.objective.bind(tok)
    bias, activation_params = config.bias, ActivationParams()

    def activation() -> float:
        start = time.perf_counter()
        report = fp.analyze_bias(model, tok, groups=found.groups, site=bias.site, pooling=activation_params.pooling,
                                 metric=activation_params.metric.name, batch_size=bias.batch_size, progress=False)
        fp.plan_pruning(model, report, budget=config.pruning.budget)
        return time.perf_counter() - start

    def selection() -> tuple[float, int, str]:
        start = time.perf_counter()
        chosen = select_by_attribution(model, tok, found.groups, objective=objective, capability=method.capability,
                                       budget=config.pruning.budget, settings=method.params,
                                       min_width=config.pruning.min_width, layers=config.pruning.layers,
                                       batch_size=bias.batch_size, registry=registry, progress=False,
                                       forms=found.form_to_group)
        return time.perf_counter() - start, chosen.plan.n_neurons, chosen.plan.settings["stop_reason"]

    analysis_s, selection_s = [], []
    for k in range(args.repeats):
        analysis_s.append(activation())
        seconds, neurons, stop = selection()
        selection_s.append(seconds)
        print(f"repeat {k + 1}: analysis {analysis_s[-1]:.1f} s, selection {seconds:.1f} s ({neurons} neurons; "
              f"{stop})", flush=True)
    a, s = statistics.median(analysis_s), statistics.median(selection_s)
    command = " ".join(["python benchmarks/selection_time.py"] + sys.argv[1:])
    text = "\n".join([
        "## Attribution selection time vs the activation analysis (same prompts, same process)", "",
        f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads). Command: `{command}`. Config: `{Path(args.config).name}`"
        f"{' with ' + ', '.join(args.set) if args.set else ''} ({config.model.source}, {len(found.groups)} analysis "
        f"groups, {sum(len(g.prompts) for g in found.groups)} prompts). Medians of {args.repeats} interleaved repeats.",
        "",
        "| step | seconds | ratio |",
        "|---|---:|---:|",
        f"| activation analysis + plan (`analyze_bias` + `plan_pruning`) | {a:.1f} | 1.00x |",
        f"| attribution selection, all rounds (`select_by_attribution`) | {s:.1f} | {s / a:.2f}x |",
        "",
    ])
    print(text)
    if args.write:
        write_section(text, "selection_time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
