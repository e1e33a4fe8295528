"""Peak resident set of one capability pass at the Llama-3.2-1B shape (bfloat16, random weights).

Loads the model ``benchmarks/scale.py`` builds (its cache directory), touches every weight so that the base is
the resident model, then runs the streamed capability estimate (the demo's windows of 8 positions) over
``CHUNKS`` chunks of 128 text tokens, ``BATCH`` chunks per batch, in one thread. Prints the resident set
after loading and the peak, against the weights' bytes. Run each setting in a fresh process:

    python benchmarks/capability_peak.py 1 1
    python benchmarks/capability_peak.py 4 4
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chunks", type=int)
    parser.add_argument("batch", type=int)
    parser.add_argument("--dir", default=None, help="the 1B-shaped model (default: scale.py's cache directory)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from fairprune.core.io.sources import cache_root, load_model
    from fairprune.core.method.attribution import resolve_adapter
    from fairprune.core.method.capability import capability_estimate
    from fairprune.plugins.capability_cost import CapabilityCost

    path = args.dir or str(cache_root() / "bench" / "llama-3.2-1b-shape-16l")
    model, tok = load_model(path)
    with torch.no_grad():
        for p in model.parameters():
            float(p.view(-1)[::1024].float().sum())  # every page of every weight resident
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    text = CapabilityCost().configure({"window_tokens": 8, "max_tokens": 128 * args.chunks}).chunks(tok)
    start = time.perf_counter()
    capability_estimate(model, text, resolve_adapter(model), batch_size=args.batch)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"{args.chunks} chunks, {args.batch} per batch: weights {weights / 2**30:.2f} GiB, resident after loading "
          f"{loaded / 2**30:.2f} GiB, peak {peak / 2**30:.2f} GiB = {peak / weights:.2f}x the weights, {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
