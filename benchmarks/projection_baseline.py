"""Baseline lever for issue 23: erase the between-group directions from MLP outputs instead of pruning neurons.

A LEACE-form linear eraser per layer, folded into ``down_proj`` (weight and a bias), measured under the same
protocol as the pruning recipes (``transfer_eval.py --pruned OUT``). Per chosen layer L:

1. ``D``: the between-group differences of the MLP output (the ``mlp_out`` site) on the run's analysis prompts,
   pooled at ``--pooling`` (default: the last token, the position that predicts the continuation). For every
   prompt group (one template, one member per attribute group) the members' vectors minus their mean;
   ``[n_prompts, hidden]``.
2. ``Σ``, ``μ``: covariance and mean of the same site over general English text (the bundled calibration text,
   ``--text-tokens`` tokens in chunks of 128, the first position of each chunk left out: the special prefix, or
   the first token, which serves as the attention sink), ridge ``--eps`` x mean variance.
3. The top ``--rank`` right singular vectors ``V`` of ``D Σ^-1/2`` (the directions where groups differ most per
   unit of general-text variance), and the eraser ``E = Σ^1/2 V Vᵀ Σ^-1/2``.
4. ``y' = y − E (y − μ)``: ``down_proj.weight ← (I − E) W`` and ``down_proj.bias ← E μ``.

The bias needs an architecture whose config can declare MLP biases (Llama's ``mlp_bias``: SmolLM2 yes; Gemma-3
no), so this script refuses other models. ``--no-whiten`` uses ``Σ = I`` (plain orthogonal projection of the top
between-group directions, mean kept), which the measurements show breaks the model.

    python benchmarks/projection_baseline.py /tmp/erased --rank 2 --layers 4-28
    python benchmarks/transfer_eval.py --swap ... --recall ... --pruned /tmp/erased --out erased.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

logger = logging.getLogger("projection_baseline")


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """``"all"``, ``"4-28"`` or ``"3,7,9"`` -> sorted layer indices; ``ValueError`` outside ``[0, n_layers)``."""
    if spec == "all":
        return list(range(n_layers))
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    bad = sorted(i for i in out if not 0 <= i < n_layers)
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {n_layers} layers")
    return sorted(out)


def between_differences(per_prompt: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Each prompt group's member vectors minus the group's mean: ``[n_prompts, hidden]`` (float64)."""
    rows, start = [], 0
    for size in sizes:
        block = per_prompt[start:start + size].double()
        rows.append(block - block.mean(0))
        start += size
    return torch.cat(rows)


def text_moments(model, adapter, tokenizer, layers: list[int], tokens: int, batch_size: int = 4
                 ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (mean [hidden], covariance [hidden, hidden])}`` of the MLP output over the bundled text, float64,
    streamed (sums of y and y yᵀ per layer, never the tokens)."""
    from fairprune.core.method.attribution import text_chunks
    from fairprune.core.method.collect import capture

    chunks = text_chunks(tokenizer, None, 128, tokens)
    ids = torch.tensor(chunks.chunks)
    skip = max(chunks.n_prefix, 1)  # the special prefix, or else the first token: the attention sink
    sums: dict[int, list] = {}

    def reduce(site: str, layer: int, activation: torch.Tensor) -> None:
        y = activation[:, skip:].reshape(-1, activation.shape[-1]).double()
        s = sums.setdefault(layer, [0, torch.zeros(y.shape[1], dtype=torch.float64),
                                    torch.zeros(y.shape[1], y.shape[1], dtype=torch.float64)])
        s[0] += y.shape[0]
        s[1] += y.sum(0)
        s[2] += y.T @ y

    with torch.no_grad(), capture(model, adapter, "mlp_out", layers, reduce) as run:
        for i in range(0, len(ids), batch_size):
            run.forward(input_ids=ids[i:i + batch_size])
    out = {}
    for layer, (n, s1, s2) in sums.items():
        mean = s1 / n
        out[layer] = (mean, (s2 - n * torch.outer(mean, mean)) / (n - 1))
    return out


def eraser(diffs: torch.Tensor, cov: torch.Tensor, rank: int, eps: float, whiten: bool
           ) -> tuple[torch.Tensor, dict[str, float]]:
    """The ``[hidden, hidden]`` eraser ``E`` and what it takes: the share of the (whitened) between-group
    variance in the erased directions, and the share of general-text variance ``E`` removes."""
    hidden = cov.shape[0]
    if whiten:
        cov = cov + eps * cov.diagonal().mean() * torch.eye(hidden, dtype=cov.dtype)
        values, vectors = torch.linalg.eigh(cov)
        root = vectors @ torch.diag(values.sqrt()) @ vectors.T
        inv_root = vectors @ torch.diag(values.rsqrt()) @ vectors.T
    else:
        root = inv_root = torch.eye(hidden, dtype=cov.dtype)
    _, singular, v = torch.linalg.svd(diffs @ inv_root, full_matrices=False)
    top = v[:rank].T
    erase = root @ top @ top.T @ inv_root
    general = float(torch.trace(erase @ cov @ erase.T) / torch.trace(cov))
    return erase, {"between_share": float((singular[:rank] ** 2).sum() / (singular ** 2).sum()),
                   "general_variance_erased": general}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where the edited model is saved")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--config", type=Path, default=Path("examples/fair-smollm2-registers.yaml"),
                        help="the run config whose analysis prompts give the between-group differences")
    parser.add_argument("--rank", type=int, default=2, help="directions erased per layer")
    parser.add_argument("--layers", default="4-28", help='"all", "4-28" or "3,7,9"')
    parser.add_argument("--pooling", default="last")
    parser.add_argument("--text-tokens", type=int, default=4096)
    parser.add_argument("--eps", type=float, default=1e-2, help="ridge on the text covariance, x mean variance")
    parser.add_argument("--no-whiten", action="store_true", help="plain orthogonal projection (Σ = I)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import fairprune as fp
    from fairprune.core.contract.registry import get_registry
    from fairprune.core.data.groups import run_groups
    from fairprune.core.method.collect import collect_prompts

    model, tokenizer = fp.load_model(args.model)
    if not hasattr(model.config, "mlp_bias"):
        parser.error(f"{type(model).__name__}'s config cannot declare MLP biases, so the eraser's bias would not "
                     "survive saving; use a Llama-family model")
    adapter = fp.resolve_adapter(model)
    layers = parse_layers(args.layers, len(adapter.layers(model)))
    groups = run_groups(fp.load_config(args.config), "analysis", get_registry()).groups
    pooled = collect_prompts(model, tokenizer, groups, sites=("mlp_out",), pooling=args.pooling, layers=layers,
                             adapter=adapter)["mlp_out"].per_prompt
    moments = text_moments(model, adapter, tokenizer, layers, args.text_tokens)
    sizes = [len(g.prompts) for g in groups]
    record = {"model": args.model, "config": str(args.config), "rank": args.rank, "pooling": args.pooling,
              "whiten": not args.no_whiten, "eps": args.eps, "text_tokens": args.text_tokens, "layers": {}}
    with torch.no_grad():
        for layer in range(len(adapter.layers(model))):
            mlp = adapter.mlp(model, layer)
            for name in (adapter.gate_attr, adapter.up_attr, adapter.down_attr):
                linear = getattr(mlp, name)  # every MLP gets a (zero) bias: the config's mlp_bias is global
                if linear.bias is None:
                    linear.bias = torch.nn.Parameter(torch.zeros(linear.out_features, dtype=linear.weight.dtype))
        for layer in layers:
            mean, cov = moments[layer]
            erase, stats = eraser(between_differences(pooled[layer], sizes), cov, args.rank, args.eps,
                                  not args.no_whiten)
            down = getattr(adapter.mlp(model, layer), adapter.down_attr)
            weight = down.weight.double()
            down.weight.copy_((weight - erase @ weight).to(down.weight.dtype))
            down.bias.copy_((erase @ mean).to(down.weight.dtype))
            record["layers"][layer] = stats
            logger.info("layer %d: between-group share erased %.2f, general-text variance erased %.4f",
                        layer, stats["between_share"], stats["general_variance_erased"])
    model.config.mlp_bias = True
    fp.save_pretrained(model, tokenizer, args.out)
    (args.out / "eraser.json").write_text(json.dumps(record, indent=1))
    logger.info("saved %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
