"""Time of the attribution method's whole selection against the activation method's analysis, same prompts.

Loads a run config (default: the demo config), its model and the analysis
groups of its axes, then, in one process and interleaved ``--repeats`` times,
times (a) the activation method: ``analyze_bias`` with the config's site and
the activation method's default pooling and metric, plus ``plan_pruning``, and
(b) the attribution method's selection with the config's ``method`` params, all
rounds, as ``fairprune run`` makes it (``run_selection``: capability cost,
attribution passes, recall guard, measured checks). Prints the medians and their ratio; ``--write`` puts them in
``benchmarks/RESULTS.md`` (block ``selection_time``).

With ``--torchrun`` it then times the selection alone (model loading excluded,
between barriers) in one process with 1 and with 2 threads and in two processes
started by torchrun (gloo, 1 thread each), and checks that every one chose the
same neurons (block ``selection_torchrun``).

    python benchmarks/selection_time.py --repeats 3
    python benchmarks/selection_time.py --set model.source=gemma3-270m
    python benchmarks/selection_time.py --repeats 1 --set method.pass_dtype=bfloat16
    python benchmarks/selection_time.py --repeats 0 --torchrun --write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import fairprune as fp
from fairprune.core.contract.config import ActivationParams, load_config, resolve_component
from fairprune.core.contract.protocols import MethodContext
from fairprune.core.contract.registry import get_registry
from fairprune.core.data.groups import run_groups
from fairprune.core.method.selection import run_selection
from fairprune.core.model.adapters import resolve_adapter
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
    parser.add_argument("--save-plan", metavar="JSON", help="save the last repeat's removed neurons and round log "
                                                             "(to compare the plans of two versions)")
    parser.add_argument("--torchrun", action="store_true",
                        help="also time the selection in 2 processes (torchrun) against 1 process")
    parser.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return 0
    if args.repeats:
        in_process(args)
    if args.torchrun:
        sharded(args)
    return 0


def select(config: Any, model: Any, tok: Any, method: Any, registry: Any, shard: bool = False) -> Any:
    """The config's attribution selection on the loaded model, all rounds, as ``fairprune run`` makes it
    (``run_selection``: its recall guard, pruner fill, uniform widths); ``shard`` shares it among a torchrun
    world's processes."""
    context = MethodContext(tokenizer=tok, adapter=resolve_adapter(model, registry=registry), registry=registry,
                            config=config, progress=False,
                            pruner=resolve_component(registry, "pruners", config.pruning.pruner, "pruning.pruner"))
    return run_selection(model, context, method.params, objective=method.objective, capability=method.capability,
                         budget=config.pruning.budget, shard=shard)[0]


def in_process(args: argparse.Namespace) -> None:
    config = load_config(args.config, args.set)
    registry = get_registry()
    model, tok = fp.load_model(config.model.source)
    found = run_groups(config, "analysis", registry)
    method = resolve_method(config, registry)  # the config's attribution method, its plugins resolved
    bias, activation_params = config.bias, ActivationParams()

    def activation() -> float:
        start = time.perf_counter()
        report = fp.analyze_bias(model, tok, groups=found.groups, site=bias.site, pooling=activation_params.pooling,
                                 metric=activation_params.metric.name, batch_size=bias.batch_size, progress=False)
        fp.plan_pruning(model, report, budget=config.pruning.budget)
        return time.perf_counter() - start

    def selection() -> tuple[float, int, str]:
        start = time.perf_counter()
        chosen = select(config, model, tok, method, registry)
        seconds = time.perf_counter() - start
        if args.save_plan:
            Path(args.save_plan).write_text(json.dumps({"removed": chosen.plan.to_mapping(),
                                                        "round_log": chosen.plan.settings["round_log"]}, indent=1))
        return seconds, chosen.plan.n_neurons, chosen.plan.settings["stop_reason"]

    analysis_s, selection_s = [], []
    load_before = os.getloadavg()[0]
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
        (f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__} "
         f"({torch.get_num_threads()} threads), load average {load_before:.1f} at the start and "
         f"{os.getloadavg()[0]:.1f} at the end. Command: `{command}`. Config: `{Path(args.config).name}`"
         f"{' with ' + ', '.join(args.set) if args.set else ''} ({config.model.source}, {len(found.groups)} analysis "
         f"groups, {sum(len(g.prompts) for g in found.groups)} prompts). Medians of {args.repeats} interleaved "
         "repeats."),
        "",
        "| step | seconds | ratio |",
        "|---|---:|---:|",
        f"| activation analysis + plan (`analyze_bias` + `plan_pruning`) | {a:.1f} | 1.00x |",
        f"| attribution selection, all rounds (`run_selection`) | {s:.1f} | {s / a:.2f}x |",
        "",
    ])
    print(text)
    if args.write:
        write_section(text, "selection_time")


def worker(args: argparse.Namespace) -> None:
    """Inside torchrun (or alone): load the model, time the selection between barriers; rank 0 saves the plan."""
    from fairprune.core.model.distributed import init_from_env, shutdown

    world = init_from_env()
    config = load_config(args.config, args.set)
    registry = get_registry()
    model, tok = fp.load_model(config.model.source)
    method = resolve_method(config, registry)
    if world:
        world.check()
    start = time.perf_counter()
    chosen = select(config, model, tok, method, registry, shard=world is not None)
    seconds = time.perf_counter() - start
    if world is None or world.is_main:
        Path(args.worker).write_text(json.dumps({"seconds": seconds, "removed": chosen.plan.to_mapping(),
                                                 "round_log": chosen.plan.settings["round_log"]}))
    if world:
        world.check()
        shutdown()


def sharded(args: argparse.Namespace) -> None:
    """The selection in 1 process (1 and 2 threads) and in 2 processes (torchrun, 1 thread each)."""
    this = [str(Path(__file__).resolve()), "--config", args.config, *[f"--set={s}" for s in args.set]]
    runs = {"1 process, 1 thread": ([sys.executable, *this], "1"),
            "1 process, 2 threads": ([sys.executable, *this], "2"),
            "2 processes (torchrun, gloo), 1 thread each":
                ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *this], "1")}
    got = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cmd, threads) in runs.items():
            out = Path(tmp) / f"{len(got)}.json"
            done = subprocess.run([*cmd, "--worker", str(out)], check=False, capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": threads,
                                       "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")})
            if done.returncode != 0:
                raise SystemExit(done.stderr[-4000:])
            got[name] = json.loads(out.read_text())
            print(f"{name}: {got[name]['seconds']:.1f} s", flush=True)
    first = got["1 process, 1 thread"]
    rows = [f"| {name} | {r['seconds']:.1f} | {first['seconds'] / r['seconds']:.2f}x | "
            f"{'yes' if r['removed'] == first['removed'] else 'NO'} | "
            f"{max(abs(a['objective_after'] - b['objective_after']) for a, b in zip(first['round_log'], r['round_log'])):.1e} |"
            for name, r in got.items()]
    command = " ".join(["python benchmarks/selection_time.py"] + sys.argv[1:])
    text = "\n".join([
        "## Attribution selection in two processes (torchrun) vs one", "",
        (f"Machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
         f"shared with other work (load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
         f"end). Command: `{command}`. Config: `{Path(args.config).name}`. Selection time only (model loading "
         "excluded), one run each."), "",
        ("| processes | selection (s) | speed-up vs 1 process, 1 thread | same neurons | max abs diff of the measured "
         "objectives |"), "|---|---:|---:|---|---:|", *rows, ""])
    print(text)
    if args.write:
        write_section(text, "selection_torchrun")


if __name__ == "__main__":
    sys.exit(main())
