"""The field's benchmarks on SmolLM2-135M: WinoBias and BBQ (the shared files), base vs a pruned model.

Loads the base model (a model source name) and a pruned model saved by
fairprune (default: the demo config's output, made with
``fairprune run examples/fair-smollm2.yaml --set output.dir=...``), runs the
``winobias`` and ``bbq`` evaluators through ``fairprune.evaluate`` and prints
each evaluator's table (base, pruned and the change, 95% bootstrap intervals);
``--out`` writes the results, the command, the timings and the machine as JSON.
CrowS-Pairs and StereoSet run the same way when their files are given.

    python benchmarks/field_benchmarks.py --pruned /tmp/fair-smollm2 --bbq-limit 200 --out /tmp/field.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="smollm2-135m", help="base model (source name, directory or HF id)")
    parser.add_argument("--pruned", required=True, help="directory of a model saved by fairprune")
    parser.add_argument("--winobias", default=str(SHARED / "winobias"), help="WinoBias directory ('' to skip)")
    parser.add_argument("--winobias-split", default="test", choices=("dev", "test"))
    parser.add_argument("--bbq", default=str(SHARED / "bbq"), help="BBQ file or directory ('' to skip)")
    parser.add_argument("--bbq-limit", type=int, default=400, help="BBQ examples per category file (sampled)")
    parser.add_argument("--bbq-length-normalize", action="store_true",
                        help="BBQ answers ranked by mean log-probability per token instead of the sum")
    parser.add_argument("--crows-pairs", default="", help="CrowS-Pairs CSV (optional)")
    parser.add_argument("--stereoset", default="", help="StereoSet dev.json (optional)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", help="write the results as JSON here")
    return parser.parse_args(argv)


def evaluator_params(args: argparse.Namespace) -> dict[str, dict]:
    """``{evaluator: params}`` for each benchmark whose data was given."""
    params: dict[str, dict] = {}
    if args.winobias:
        params["winobias"] = {"path": args.winobias, "split": args.winobias_split}
    if args.bbq:
        params["bbq"] = {"path": args.bbq, "limit": args.bbq_limit, "length_normalize": args.bbq_length_normalize}
    if args.crows_pairs:
        params["crows_pairs"] = {"path": args.crows_pairs}
    if args.stereoset:
        params["stereoset"] = {"path": args.stereoset}
    return params


def main(argv: list[str] | None = None) -> int:
    import torch

    import fairprune as fp
    from fairprune.core.contract.results import results_to_dict

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = evaluator_params(args)
    start = time.perf_counter()
    base, tok = fp.load_model(args.base)
    pruned, _ = fp.load_pretrained(args.pruned)
    loaded = time.perf_counter()
    results = fp.evaluate(base, pruned, tok, evaluators=list(params), params=params, batch_size=args.batch_size)
    seconds = time.perf_counter() - loaded
    for name, result in results.items():
        print(f"## {name}\n\n{result.summary}\n")
    print(f"evaluation took {seconds:.0f} s (models loaded in {loaded - start:.0f} s)")
    if args.out:
        record = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "params": params,
                  "seconds": {"load": loaded - start, "evaluate": seconds},
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                              "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
                  "results": results_to_dict(results)}
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
