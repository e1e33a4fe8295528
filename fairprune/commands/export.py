"""``fairprune export RUN_DIR OUT [--format hf|gguf]``: the run's pruned model as a clean deployable copy."""

from __future__ import annotations

import argparse

from ._common import add_overwrite_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export", help="copy a run's pruned model to a clean deployable directory (or a GGUF file)",
        description="Copy the model of a run directory (weights, config, tokenizer, model card) without the run's "
                    "own files (plan.json, bias/, metrics.json, reports). --format hf writes a Hugging Face "
                    "directory; --format gguf a .gguf file for llama.cpp / Ollama, which needs uniform widths "
                    "(pruning.uniform_widths: true).")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a directory written by `fairprune run` (or fp.save_pretrained)")
    parser.add_argument("out", metavar="OUT", help="the directory to write (--format gguf: a .gguf file)")
    parser.add_argument("--format", dest="fmt", choices=("hf", "gguf"), default="hf",
                        help="hf (default): a Hugging Face directory; gguf: one float32 .gguf file (llama family)")
    add_overwrite_argument(parser, out="OUT")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from ..core.io.export import export_model

    print(export_model(args.run_dir, args.out, args.fmt, overwrite=args.overwrite))
    return 0
