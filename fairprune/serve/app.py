"""The Gradio page of ``fairprune serve`` around an ``Explorer``: two prompts in, plots and completions out.

The page takes only text, a layer, a pooling and a token count: no file, path or
model name crosses from the browser, so a client can neither load a model nor
write a file. Bad input is answered in the page (``#serve-status``) and the
server keeps running; Gradio's queue runs one computation at a time and holds at
most ``Limits.max_queue`` waiting requests (more are refused: "queue is full").
An API client is not held by the page's text lengths and slider ranges, so
``respond`` and ``Explorer.compare`` check every value again.
"""

from __future__ import annotations

import html
import logging
import math
from typing import Any

from ..core.contract.errors import FairpruneError, PromptError
from .explorer import Comparison, Explorer, template_choices

logger = logging.getLogger(__name__)

#: the pair shown when the page opens (the race axis's held-out showcase template)
DEFAULT_PAIR = ("A Black man walked at night through the neighborhood. The police officer thought he",
                "A white man walked at night through the neighborhood. The police officer thought he")

INTRO = """# fairprune explorer
Type two prompts that differ only in a demographic word (or fill them from a template of a bias axis), then
**Compare**. For each model: the mean difference of the two prompts' residual-stream activations per layer, the PCA
of their token activations at one layer, where the hidden states differ token by token, and greedy completions."""


def build_app(explorer: Explorer, default_pair: tuple[str, str] = DEFAULT_PAIR) -> Any:
    """The ``gradio.Blocks`` page, queued with one computation at a time (not launched)."""
    import gradio as gr

    from ..core.contract.registry import get_registry

    registry = explorer.registry or get_registry()
    choices = template_choices(registry)
    poolings = registry.names("poolings")
    with gr.Blocks(title="fairprune explorer", analytics_enabled=False) as app:
        gr.Markdown(INTRO + "\n\n" + _models_line(explorer))
        with gr.Accordion("Fill the prompts from a bias axis template", open=False):
            with gr.Row():
                axis = gr.Dropdown(list(choices), label="axis", value=None, elem_id="axis")
                template = gr.Dropdown([], label="template", elem_id="template")
                attr_a = gr.Dropdown([], label="attribute A", elem_id="attribute-a")
                attr_b = gr.Dropdown([], label="attribute B", elem_id="attribute-b")
            fill = gr.Button("Use this template", elem_id="fill")
        with gr.Row():
            prompt_a = gr.Textbox(default_pair[0], label="prompt A", lines=2, elem_id="prompt-a",
                                  max_length=explorer.limits.max_chars * 2)
            prompt_b = gr.Textbox(default_pair[1], label="prompt B", lines=2, elem_id="prompt-b",
                                  max_length=explorer.limits.max_chars * 2)
        with gr.Row():
            layer = gr.Slider(0, explorer.n_layers - 1, value=explorer.n_layers // 2, step=1,
                              label="layer (PCA)", elem_id="layer")
            pooling = gr.Radio(poolings, value="suffix" if "suffix" in poolings else poolings[0],
                               label="pooling (per-layer difference)", elem_id="pooling")
            new_tokens = gr.Slider(1, explorer.limits.max_new_tokens, value=min(24, explorer.limits.max_new_tokens),
                                   step=1, label="new tokens (completions)", elem_id="new-tokens")
        compare = gr.Button("Compare", variant="primary", elem_id="compare")
        status = gr.Markdown("", elem_id="serve-status")
        completions = gr.HTML("", elem_id="completions")
        with gr.Row():  # the figures carry their own titles
            profile = gr.Plot(format="png", show_label=False, scale=2, elem_id="plot-profile")
            pca = gr.Plot(format="png", show_label=False, scale=3, elem_id="plot-pca")
        tokens = gr.Plot(format="png", show_label=False, elem_id="plot-tokens")

        axis.change(lambda name: _template_update(choices, name), axis, [template, attr_a, attr_b])
        template.change(lambda name, tid: _attribute_update(choices, name, tid), [axis, template], [attr_a, attr_b])
        fill.click(lambda *picked: _filled(choices, *picked), [axis, template, attr_a, attr_b],
                   [prompt_a, prompt_b, status])

        def run(a: str, b: str, at: float, pool: str, tokens: float, progress=gr.Progress()) -> tuple:  # noqa: B008
            return respond(explorer, a, b, at, pool, tokens, progress)

        compare.click(run, [prompt_a, prompt_b, layer, pooling, new_tokens],
                      [status, completions, profile, pca, tokens], concurrency_limit=1)
    app.queue(default_concurrency_limit=1, max_size=explorer.limits.max_queue)
    return app


def respond(explorer: Explorer, a: str, b: str, layer: float, pooling: str, tokens: float,
            progress: Any = None) -> tuple:
    """The page's outputs for one request: status, completions and figures, or the error message and nothing else."""
    try:
        layer, tokens = _whole(layer, "layer"), _whole(tokens, "new tokens")
        if not isinstance(a, str) or not isinstance(b, str) or not isinstance(pooling, str):
            raise PromptError("the prompts and the pooling must be text")
        comparison = explorer.compare(a, b, layer=layer, pooling=pooling, max_new_tokens=tokens,
                                      progress=(lambda f, what: progress(f, desc=what)) if progress else None)
        figures = comparison.figures()
    except FairpruneError as exc:
        return (f"**Cannot compare:** {html.escape(str(exc))}", "", None, None, None)
    return (_done_line(comparison), completions_html(comparison), figures["profile"], figures["pca"],
            figures["tokens"])


def _whole(value: Any, what: str) -> int:
    """A whole number from a slider's value; ``PromptError`` for text, NaN, infinity or a fraction (an API client
    can send anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
            int(value) != value:
        raise PromptError(f"{what} must be a whole number, got {str(value)[:40]!r}")
    return int(value)


def completions_html(comparison: Comparison) -> str:
    """A table of greedy completions: one row per prompt, one column per model."""
    head = "".join(f"<th>{html.escape(label)}</th>" for label in comparison.labels)
    rows = "".join(
        f"<tr><td class=\"prompt\">{html.escape(row['prompt'])}</td>"
        + "".join(f"<td class=\"completion {label}\">{html.escape(row[label].strip())}</td>"
                  for label in comparison.labels) + "</tr>"
        for row in comparison.completions)
    return f"<table class=\"completions\"><thead><tr><th>prompt</th>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _done_line(comparison: Comparison) -> str:
    a, b = comparison.group.attributes
    worst = max(comparison.profile, key=lambda row: row["base"])
    text = f"Compared **{html.escape(a)}** with **{html.escape(b)}**; the base model's largest difference is at layer {worst['layer']}"
    if "pruned" in comparison.labels:
        total = {label: sum(row[label] for row in comparison.profile) for label in comparison.labels}
        change = 100 * (total["pruned"] - total["base"]) / total["base"] if total["base"] else 0.0
        text += f"; summed over layers the pruned model's difference is {change:+.1f}% of the base model's"
    return text + "."


def _models_line(explorer: Explorer) -> str:
    parts = [f"base `{explorer.names.get('base', 'base model')}`"]
    if explorer.pruned is not None:
        parts.append(f"pruned `{explorer.names.get('pruned', 'pruned model')}`")
    return "Models (fixed when the server started): " + ", ".join(parts) + f"; {explorer.n_layers} layers."


def _template_update(choices: dict, axis: str | None) -> tuple:
    import gradio as gr

    templates = list(choices.get(axis or "", {}))
    return (gr.update(choices=templates, value=templates[0] if templates else None),
            gr.update(choices=[], value=None), gr.update(choices=[], value=None))


def _attribute_update(choices: dict, axis: str | None, template: str | None) -> tuple:
    import gradio as gr

    picked = choices.get(axis or "", {}).get(template or "")
    attributes = list(picked.prompts) if picked else []
    return (gr.update(choices=attributes, value=attributes[0] if attributes else None),
            gr.update(choices=attributes, value=attributes[1] if len(attributes) > 1 else None))


def _filled(choices: dict, axis: str | None, template: str | None, a: str | None, b: str | None) -> tuple:
    import gradio as gr

    picked = choices.get(axis or "", {}).get(template or "")
    if picked is None or a not in picked.prompts or b not in picked.prompts:
        return gr.update(), gr.update(), "**Cannot fill:** pick an axis, a template and two of its attributes"
    if a == b:
        return gr.update(), gr.update(), "**Cannot fill:** pick two different attributes"
    return picked.prompts[a], picked.prompts[b], ""


def launch(explorer: Explorer, host: str = "127.0.0.1", port: int | None = None, block: bool = True) -> Any:
    """Serve the page on ``host:port`` (127.0.0.1 by default: this machine only); returns the app."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("serving on %s: anyone who can reach this address can use the explorer", host)
    app = build_app(explorer)
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block,
               show_error=False, footer_links=[], theme=_offline_theme())
    return app


def _offline_theme() -> Any:
    """Gradio's default look with system fonts: the page loads nothing from outside this machine."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])
