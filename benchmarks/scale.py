"""Benchmark: fairprune at the Llama-3.2-1B shape (random weights), float32 and bfloat16, one and two processes.

1. Builds a model of Llama-3.2-1B's shape (hidden 2048, MLP width 8192, 16
   layers, 32 heads, 8 KV heads, vocabulary 128256, tied embeddings) with random
   weights, saved in bfloat16 with SmolLM2's tokenizer (its ids fit the vocabulary)
   in a cache directory, once.
2. ``timings``, in one process, per dtype (float32, then bfloat16): optipfair's
   ``analyze_neuron_bias`` on 16 race pairs, fairprune's ``analyze_bias`` on the
   same pairs, and a bare batched forward of the model body (no LM head) over
   the same 32 prompts; best and median of ``--repeats`` interleaved rounds.
3. ``memory``: peak resident set (``/usr/bin/time -v``) of ``fairprune analyze``
   and of ``fairprune run examples/fair-llama-3.2-1b.yaml --set
   model.source=DIR`` in bfloat16, against the size of the weights.
4. ``torchrun``: the analysis of the same pairs in 1 process (2 threads) and in
   2 processes started by torchrun (1 thread each), and the largest difference
   between their reports.

Writes its section of ``benchmarks/RESULTS.md``.

    python benchmarks/scale.py [--only timings,memory,torchrun] [--repeats 3] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from bias_analysis import _cpu_model, bare_forward, make_pairs, timed_rounds

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's fairprune, also in the processes it starts (PYTHONPATH)
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- scale:start -->", "<!-- scale:end -->"
EXAMPLE = ROOT / "examples" / "fair-llama-3.2-1b.yaml"
SHAPE = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
             num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=131072,
             rope_theta=500000.0, rms_norm_eps=1e-5, head_dim=64)
N_PAIRS = 16


def model_dir(args: argparse.Namespace) -> Path:
    """The random 1B-shaped model in bfloat16, built and saved on first use."""
    from fairprune.core.io.sources import cache_root

    path = Path(args.dir) if args.dir else cache_root() / "bench" / f"llama-3.2-1b-shape-{args.layers}l"
    if (path / "config.json").exists():
        return path
    from transformers import LlamaConfig, LlamaForCausalLM

    from fairprune.core.io.sources import load_model

    _, tokenizer = load_model("smollm2-135m")
    config = LlamaConfig(**{**SHAPE, "num_hidden_layers": args.layers}, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    return path


def weights_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def timings(path: Path, args: argparse.Namespace) -> list[str]:
    """Rows of the in-process table, for float32 then bfloat16."""
    import optipfair.bias as ob

    from fairprune.core.io.sources import load_model
    from fairprune.core.method.bias import analyze_bias

    pairs = make_pairs(N_PAIRS)
    prompts = [p for pair in pairs for p in pair]
    rows = []
    for dtype in ("float32", "bfloat16"):
        model, tok = load_model(str(path), dtype=dtype)
        bare_forward(model.model, tok, prompts[:4], 4)  # warm-up; model.model is the body, no LM head
        phases = {
            "optipfair analyze_neuron_bias": lambda: ob.analyze_neuron_bias(model, tok, pairs, show_progress=False),
            "fairprune analyze_bias": lambda: analyze_bias(model, tok, pairs=pairs, batch_size=args.batch_size,
                                                           progress=False),
            "bare batched forward of the body": lambda: bare_forward(model.model, tok, prompts, args.batch_size),
        }
        rounds = [timed_rounds(phases, 1) for _ in range(args.repeats)]  # interleaved: one of each per round
        times = {name: [r[name][0] for r in rounds] for name in phases}
        best = {name: min(t) for name, t in times.items()}
        median = {name: statistics.median(t) for name, t in times.items()}
        bare = "bare batched forward of the body"
        for name in phases:
            peak = max(r[name][1] for r in rounds)
            rows.append(f"| {dtype} | {name} | {best[name]:.2f} | {median[name]:.2f} | "
                        f"{best[name] / best[bare]:.2f}x | {median[name] / median[bare]:.2f}x | "
                        f"{median['optipfair analyze_neuron_bias'] / median[name]:.2f}x | {peak / 2**20:.0f} |")
            print(rows[-1], flush=True)
        del model, phases, rounds
    return rows


def time_v(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``cmd`` under ``/usr/bin/time -v``: wall seconds, peak RSS in bytes, and its output tail."""
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-4000:]}")
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) * 1024
    return wall, peak, done.stdout[-2000:]


def pairs_file(tmp: Path) -> Path:
    target = tmp / "pairs.json"
    target.write_text(json.dumps({"axis": "race", "pairs": [list(p) for p in make_pairs(N_PAIRS)]}))
    return target


def memory(path: Path, tmp: Path, args: argparse.Namespace) -> list[str]:
    """Peak RSS of the analysis and of a whole run, bfloat16, each in a fresh process."""
    weights = weights_bytes(path)
    rows = []
    analyze = [sys.executable, "-m", "fairprune", "analyze", "--model", str(path), "--prompts", str(pairs_file(tmp)),
               "--batch-size", str(args.batch_size), "--out", str(tmp / "analysis")]
    run = [sys.executable, "-m", "fairprune", "run", str(EXAMPLE), "--set", f"model.source={path}",
           "--set", f"output.dir={tmp / 'run'}", "--quiet"]
    for name, cmd in (("fairprune analyze (16 pairs)", analyze), ("fairprune run (the example config)", run)):
        wall, peak, _ = time_v(cmd)
        rows.append(f"| {name} | {wall:.0f} | {peak / 2**30:.2f} | {peak / weights:.2f}x |")
        print(rows[-1], flush=True)
    return rows


def sharded(path: Path, tmp: Path) -> list[str]:
    """The analysis in one process (1 and 2 threads) and in two (torchrun, 1 thread each); analysis time only."""
    pairs = pairs_file(tmp)
    worker = [str(Path(__file__).resolve()), "--worker", str(path), str(pairs)]
    runs = {"1 process, 1 thread": ([sys.executable, *worker], "1"),
            "1 process, 2 threads": ([sys.executable, *worker], "2"),
            "2 processes (torchrun, gloo), 1 thread each":
                ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *worker], "1")}
    got = {}
    for name, (cmd, threads) in runs.items():
        out = tmp / f"{len(got)}.pt"
        done = subprocess.run([*cmd, str(out)], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": threads})
        if done.returncode != 0:
            raise SystemExit(done.stderr[-4000:])
        got[name] = torch.load(out)
    first = got["1 process, 1 thread"]
    rows = []
    for name, result in got.items():
        diff = max(float((first["scores"][k] - result["scores"][k]).abs().max()) for k in first["scores"])
        rows.append(f"| {name} | {result['seconds']:.2f} | {first['seconds'] / result['seconds']:.2f}x | {diff:.1e} |")
    print("\n".join(rows), flush=True)
    return rows


def worker(path: str, pairs: str, out: str) -> None:
    """Inside torchrun (or alone): load bfloat16, time ``analyze_bias`` between barriers, rank 0 saves."""
    from fairprune.core.data.prompts import load_prompt_groups
    from fairprune.core.io.sources import load_model
    from fairprune.core.method.bias import analyze_bias
    from fairprune.core.model.distributed import init_from_env, shutdown

    world = init_from_env()
    model, tok = load_model(path)
    groups = load_prompt_groups(pairs)
    if world:
        world.check()
    start = time.perf_counter()
    report = analyze_bias(model, tok, groups=groups, batch_size=32, progress=False)
    seconds = time.perf_counter() - start
    if world is None or world.is_main:
        torch.save({"seconds": seconds, "scores": report.scores}, out)
    if world:
        world.check()
        shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="timings,memory,torchrun")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per in-process phase; the best time is kept")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dir", default=None, help="where the random model lives (default: the fairprune cache)")
    parser.add_argument("--layers", type=int, default=16, help="fewer layers for a quick check of this script")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the in-process timings (default: torch's; 1 on a busy shared machine)")
    parser.add_argument("--no-write", action="store_true", help="do not update benchmarks/RESULTS.md")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "PAIRS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    only = set(args.only.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    path = model_dir(args)
    load_before = os.getloadavg()
    parts = [START, f"## Scale: the Llama-3.2-1B shape ({args.layers} layers, random weights), CPU", "",
             f"Machine: {os.cpu_count()} cores, {_cpu_model()}, torch {torch.__version__}; shared with other work "
             f"(load average {load_before[0]:.1f} at the start). Weights: {weights_bytes(path) / 2**30:.2f} GiB in "
             f"bfloat16. No GPU was lent to this run. Command: `python benchmarks/scale.py --repeats {args.repeats}`.",
             ""]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "timings" in only:
            parts += [f"In one process ({torch.get_num_threads()} torch threads), {N_PAIRS} race pairs "
                      f"({2 * N_PAIRS} prompts), batch {args.batch_size}, "
                      f"{args.repeats} interleaved rounds (best and median time; optipfair / this by medians):", "",
                      "| dtype | work | best (s) | median (s) | best vs bare forward | median vs bare forward | "
                      "optipfair / this | peak RSS growth (MiB) |",
                      "|---|---|---:|---:|---:|---:|---:|---:|", *timings(path, args), ""]
        if "memory" in only:
            parts += ["Peak resident set of a fresh process (`/usr/bin/time -v`), bfloat16 (the checkpoint's dtype):",
                      "", "| command | wall (s) | peak RSS (GiB) | vs weights |", "|---|---:|---:|---:|",
                      *memory(path, tmp, args), ""]
        if "torchrun" in only:
            parts += ["Sharded analysis, bfloat16, same pairs (analysis time between barriers, model loading "
                      "excluded):", "",
                      "| processes | analysis (s) | speed-up vs 1 process, 1 thread | max abs score diff vs it |",
                      "|---|---:|---:|---:|", *sharded(path, tmp), ""]
    load_after = os.getloadavg()
    parts += [f"Load average at the end: {load_after[0]:.1f}.", "", END]
    section = "\n".join(parts)
    print(section)
    if not args.no_write:
        text = RESULTS.read_text()
        if START in text and END in text:
            text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
