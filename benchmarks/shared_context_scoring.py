"""Time of attribute_recall's word scoring with each prompt run once (key/value cache) against every word whole.

Builds the attribute-recall prompts of one axis as the evaluator does (the
bundled frames; 180 race prompts), loads the model, and times
``attribute_recall.continuation_logprobs`` in one process, interleaved
``--repeats`` times: (a) "whole": every multi-token word scored as its own
``prompt + word`` sequence, as a model whose forward returns no cache is scored
(``lm_scoring.cache_argument`` answers None), and (b) "cached": the default,
each prompt run once and every word continued from its cache. Prints the
medians, the ratio of every repeat, the load average before and after, the
token positions each way runs through the model (padding included; these do not
depend on the machine's load), and the largest difference between the two
tables of log-probabilities (nats).

    OMP_NUM_THREADS=1 python benchmarks/shared_context_scoring.py --repeats 3
    OMP_NUM_THREADS=1 python benchmarks/shared_context_scoring.py --model gemma3-270m --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from unittest import mock

import numpy as np
import torch

import fairprune as fp
from fairprune.core.contract.registry import get_registry
from fairprune.core.model import lm_scoring
from fairprune.plugins.evaluators.attribute_recall import (
    answer_forms,
    build_prompts,
    continuation_logprobs,
    read_frames,
)


def recall_inputs(axis: str) -> tuple[list[str], list[str]]:
    """The evaluator's prompts of ``axis`` (bundled frames, every prompt) and the words it scores after each."""
    people, frames = read_frames()
    groups = {name: tuple(forms) for name, forms in get_registry().get("bias_axes", axis).attribute_groups().items()}
    prompts = [p.text for p in build_prompts(axis, frames[axis], people, groups)]
    words = [word for forms in groups.values() for word in answer_forms(forms)]
    return prompts, words


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--axis", default="race")
    parser.add_argument("--batch-size", type=int, default=16, help="the evaluators' default batch size")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    model, tokenizer = fp.load_model(args.model)
    prompts, words = recall_inputs(args.axis)
    multi = sum(len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) > 1 for w in words)
    print(f"{args.model}: {len(prompts)} {args.axis} prompts, {len(words)} words ({multi} of several tokens), "
          f"batch {args.batch_size}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {platform.machine()}, {os.cpu_count()} cores")
    load_before = os.getloadavg()

    positions = [0]

    def count(_module: torch.nn.Module, args_: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args_[0] if args_ else None)
        positions[0] += int(ids.numel())

    def run() -> tuple[float, np.ndarray, int]:
        positions[0] = 0
        handle = model.register_forward_pre_hook(count, with_kwargs=True)
        start = time.perf_counter()
        table = continuation_logprobs(model, tokenizer, prompts, words, args.batch_size, False, "recall")
        seconds = time.perf_counter() - start
        handle.remove()
        return seconds, table, positions[0]

    times: dict[str, list[float]] = {"whole": [], "cached": []}
    largest = 0.0
    for repeat in range(args.repeats):
        with mock.patch.object(lm_scoring, "cache_argument", lambda _model: None):
            whole_s, whole, whole_positions = run()
        cached_s, cached, cached_positions = run()
        times["whole"].append(whole_s)
        times["cached"].append(cached_s)
        largest = max(largest, float(np.abs(whole - cached).max()))
        print(f"repeat {repeat + 1}: whole {whole_s:.2f} s, cached {cached_s:.2f} s, ratio {whole_s / cached_s:.2f}x")
    load_after = os.getloadavg()
    whole_med, cached_med = statistics.median(times["whole"]), statistics.median(times["cached"])
    ratios = [w / c for w, c in zip(times["whole"], times["cached"])]
    print(f"median: whole {whole_med:.2f} s, cached {cached_med:.2f} s, ratio of medians {whole_med / cached_med:.2f}x "
          f"(per repeat {min(ratios):.2f}-{max(ratios):.2f}x)")
    print(f"positions run through the model: whole {whole_positions}, cached {cached_positions} "
          f"({whole_positions / cached_positions:.2f}x)")
    print(f"largest |difference| of the log-probabilities: {largest:.2e} nats")
    print(f"load average (1, 5, 15 min): before {tuple(round(x, 2) for x in load_before)}, "
          f"after {tuple(round(x, 2) for x in load_after)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
