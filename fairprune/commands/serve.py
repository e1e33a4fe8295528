"""``fairprune serve --model SPEC [--pruned DIR]``: the local interactive explorer (needs the ``serve`` extra)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import positive_int

INSTALL_HINT = 'fairprune serve needs Gradio: pip install "fairprune[serve]"'


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="explore a model (and its pruned version) in the browser",
                            description="A local web page: type two prompts that differ in a demographic word and "
                                        "see, for the base and the pruned model, the activation difference per "
                                        "layer, a PCA, a token heatmap and greedy completions. The models are "
                                        "loaded once, here; the page cannot load others.")
    parser.add_argument("--model", required=True, metavar="SPEC",
                        help="base model: a model source name (smollm2-135m), a local HF directory or a .gguf file")
    parser.add_argument("--pruned", metavar="DIR", help="a pruned model directory written by fairprune (run or prune)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--max-prompt-tokens", type=int, default=96, metavar="N",
                        help="longest prompt accepted, in tokens (default 96)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=64, metavar="N",
                        help="longest completion a request may ask for, in tokens (default 64)")
    parser.add_argument("--max-queue", type=positive_int, default=32, metavar="N",
                        help="requests that may wait for their turn; more are refused until some are answered "
                             "(default 32)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401  (only to check the extra is installed; the page imports it)
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    from ..core.contract.errors import ConfigError
    from ..serve.app import launch
    from ..serve.explorer import Explorer, Limits

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_prompt_tokens < 1:
        raise ConfigError(f"--max-prompt-tokens must be at least 1, got {args.max_prompt_tokens}")
    if args.pruned is not None and not Path(args.pruned).is_dir():
        raise ConfigError(f"--pruned {args.pruned!r} is not a directory")
    explorer = Explorer.load(args.model, args.pruned, Limits(max_tokens=args.max_prompt_tokens,
                                                                    max_new_tokens=args.max_new_tokens,
                                                                    max_queue=args.max_queue))
    print(f"fairprune explorer on http://{args.host}:{args.port} (Ctrl-C to stop)", file=sys.stderr)
    launch(explorer, host=args.host, port=args.port)
    return 0
