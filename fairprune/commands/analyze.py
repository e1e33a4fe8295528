"""``fairprune analyze``: score every MLP neuron by bias and save the report (steps 1-2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..core.contract.placement import DEVICE_MAP_STRATEGIES
from ._common import add_overwrite_argument, add_trust_remote_code_argument, claim_out, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("analyze", help="score MLP neurons by how much they react to demographic words",
                            description="Run the prompt groups of bias axes through a model and save per-neuron "
                                        "bias scores (bias_scores.safetensors + bias_report.json).")
    parser.add_argument("--model", required=True, help="model source name, directory, .gguf path or HF id")
    parser.add_argument("--axes", default=None,
                        help="comma-separated axis names or axis YAML paths (default: all registered axes, "
                             "or none when --prompts is given)")
    parser.add_argument("--prompts", default=None, help="your own prompt groups (.yaml, .json, .jsonl or .csv)")
    parser.add_argument("--out", required=True, help="directory for the report")
    add_overwrite_argument(parser)
    add_trust_remote_code_argument(parser)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="weights and activations (default: auto = the checkpoint's; reductions stay float32)")
    parser.add_argument("--device-map", default=None, choices=DEVICE_MAP_STRATEGIES,
                        help="spread the model over the available devices with accelerate")
    parser.add_argument("--split", default="analysis", choices=("analysis", "heldout", "all"),
                        help="which templates of the axes to use (default: analysis)")
    parser.add_argument("--site", default="neuron", help="activation site (default: neuron = input of down_proj)")
    parser.add_argument("--pooling", default="suffix", help="token pooling: suffix (default), mean or last")
    parser.add_argument("--metric", default=None, help="bias metric (default: relative_mean_abs_diff)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="prompts per forward pass (default: 16)")
    parser.add_argument("--top", type=positive_int, default=5, help="neurons listed per layer in the summary")
    parser.add_argument("--quiet", "--no-progress", dest="no_progress", action="store_true",
                        help="no progress bars (as in run, sweep, demo and evaluate)")
    parser.add_argument("--plots", action="store_true",
                        help="also write the bias profile and neuron map plots (PNG) into --out (needs matplotlib)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from .. import analyze_bias
    from ..core.data.prompts import load_prompt_groups
    from ..core.io.outputs import atomic_directory
    from ..core.io.sources import load_model
    from ..core.model.distributed import is_main_process
    from ..core.run.preflight import axis_files, check_files

    axes = [a.strip() for a in args.axes.split(",") if a.strip()] if args.axes else None
    check_files(axis_files(axes or [], "--axes") + ([("--prompts", args.prompts, "prompts")] if args.prompts else []))
    check_names(axes or [], args)
    out = claim_out(args)
    groups = load_prompt_groups(args.prompts) if args.prompts else None
    model, tokenizer = load_model(args.model, trust_remote_code=args.trust_remote_code, dtype=args.dtype,
                                  device_map=args.device_map)
    report = analyze_bias(model, tokenizer, axes=axes, groups=groups, split=args.split, site=args.site,
                          pooling=args.pooling, metric=args.metric, batch_size=args.batch_size,
                          progress=not args.no_progress)
    if not is_main_process():  # under torchrun every process computed the same report; rank 0 writes it
        return 0
    with atomic_directory(out, overwrite=args.overwrite) as staging:
        report.save(staging)
        plots = write_plots(report, staging) if args.plots else []
    s = report.settings
    print(f"{s['n_groups']} prompt groups ({s['n_prompts']} prompts) on axes {', '.join(s['axes'])}; "
          f"site {s['site']}, pooling {s['pooling']}, metric {s['metric']}")
    print(f"{'layer':>5}  {'mean':>10}  {'max':>10}  top neurons")
    for row in report.layer_summary(args.top):
        top = ", ".join(f"{i}:{v:.3g}" for i, v in row["top"])
        print(f"{row['layer']:>5}  {row['mean']:>10.4g}  {row['max']:>10.4g}  {top}")
    for name in plots:
        print(f"plot: {out / name}")
    print(f"saved to {args.out}")
    return 0


def check_names(axes: list[str], args: argparse.Namespace) -> None:
    """Every plugin name the flags give is registered, before the model loads; ``ConfigError`` naming the flag
    (with the known names) otherwise."""
    from ..core.contract.errors import ConfigError, UnknownPluginError
    from ..core.contract.registry import get_registry
    from ..core.data.groups import is_axis_name

    registry = get_registry()
    wanted = [("--axes", "bias_axes", name) for name in axes if is_axis_name(name)]
    wanted += [("--site", "sites", args.site), ("--pooling", "poolings", args.pooling)]
    wanted += [("--metric", "bias_metrics", args.metric)] if args.metric else []
    for flag, kind, name in wanted:
        try:
            registry.get(kind, name)
        except UnknownPluginError as exc:
            raise ConfigError(f"{flag}: {exc}") from None


def write_plots(report: object, directory: Path) -> list[str]:
    """The bias profile and neuron map PNGs, written into ``directory``; their file names."""
    from ..viz.analysis import write_analysis_plots

    return [Path(path).name for path in write_analysis_plots(report, directory)]
