"""``report.html``: one self-contained page (CSS inline, plots as base64 PNG) built from a run directory's files.

Summary table first, then the plots with captions saying what to look for, each
evaluator's figures and tables, the completions side by side and the config.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.io.outputs import Where, atomic_file
from .run_plots import PICTURES
from .rundata import RECOVERABLE, RunFiles, load_run

logger = logging.getLogger(__name__)

#: plots in page order; those whose data the run did not store (they reload the models) only when asked for
PAGE_PLOTS: tuple[str, ...] = ("profile", "neurons", "scatter", "pca", "tokens", "pareto")
#: (evaluator, table) shown as a picture or as the completions section, not as a table of numbers
DRAWN_TABLES: frozenset[tuple[str, str]] = frozenset({("generations", "generations"), (PICTURES, "pca"),
                                                      (PICTURES, "tokens")})
#: long tables are folded to this many rows (the rest behind a <details>)
FOLD_ROWS = 12

CSS = """
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;max-width:1100px;margin:2em auto;
padding:0 1.2em;background:#fff}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #e4e4e4;padding-bottom:.2em;margin-top:2em}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f6f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.summary td:first-child{font-weight:600}
figure{margin:1.2em 0;padding:.8em;border:1px solid #eee;border-radius:6px}
figure img{max-width:100%;height:auto;display:block;margin:auto}
figcaption{color:#444;font-size:.9em;margin-top:.5em}
.gen{display:grid;grid-template-columns:1fr 1fr;gap:.6em;margin:.8em 0 1.4em}
.gen .prompt{grid-column:1/3;font-weight:600}
.gen pre{white-space:pre-wrap;margin:0;padding:.6em;border-radius:4px;font:13px/1.4 ui-monospace,monospace}
.gen .base pre{background:#eef3fa}.gen .pruned pre{background:#fbf0e6}
.note{color:#8a5a00;background:#fff8e6;padding:.4em .8em;border-left:3px solid #e0a800}
pre.config{background:#f6f6f6;padding:.8em;overflow:auto;font-size:12px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A table cell: floats with 4 significant digits, intervals as [lo, hi], None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float, type(None))) for v in value):
        return f"[{fmt(value[0])}, {fmt(value[1])}]"
    return str(value)


def table_html(rows: Sequence[Mapping[str, Any]], fold: int = FOLD_ROWS) -> str:
    """An HTML table of row dicts (columns in first-seen order); rows beyond ``fold`` go behind a <details>."""
    if not rows:
        return ""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]

    def body(chunk: Iterable[Mapping[str, Any]]) -> str:
        def cells(r: Mapping[str, Any]) -> str:
            return "".join(f"<td class=\"num\">{esc(fmt(r.get(c)))}</td>" if isinstance(r.get(c), (int, float))
                           else f"<td>{esc(fmt(r.get(c)))}</td>" for c in columns)

        return "".join(f"<tr>{cells(r)}</tr>" for r in chunk)

    head = "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"
    out = f"<table><thead>{head}</thead><tbody>{body(rows[:fold])}</tbody></table>"
    if len(rows) > fold:
        out += (f"<details><summary>all {len(rows)} rows</summary><table><thead>{head}</thead>"
                f"<tbody>{body(rows)}</tbody></table></details>")
    return out


def _summary(run: RunFiles) -> str:
    from ..core.contract.summary import headline_rows

    if not run.metrics:
        return ""
    rows = "".join(f"<tr><td>{esc(label)}</td><td>{esc(value)}</td></tr>" for label, value in headline_rows(run.metrics))
    return f"<h2>Summary</h2><table class=\"summary\"><tbody>{rows}</tbody></table>"


def _meta(run: RunFiles) -> str:
    metrics, settings, config = run.metrics or {}, run.plan_settings(), run.config or {}
    bias = config.get("bias", {})
    parts = []
    if metrics.get("config_hash"):
        parts.append(f"config <code>{esc(metrics['config_hash'][:12])}</code>")
    if bias.get("axes"):
        parts.append("axes " + esc(", ".join(map(str, bias["axes"]))))
    if settings.get("method") == "attribution":
        check = settings.get("verification", {})
        parts.append(f"signed attribution on <code>{esc(settings.get('objective'))}</code> ({esc(settings.get('fill'))} "
                     f"fill, {esc(settings.get('ranking'))} ranking, guard {esc(settings.get('guard_fraction'))}, "
                     f"{esc(settings.get('folds', 1))} template fold(s), "
                     f"{esc(settings.get('rounds_run'))} round(s)), budget {esc(settings.get('budget'))}; objective on "
                     f"the analysis groups {esc(check.get('objective_before'))} &rarr; {esc(check.get('objective_after'))}")
    elif settings:
        parts.append(f"scorer <code>{esc(settings.get('scorer'))}</code> (bias_weight {esc(settings.get('bias_weight'))}),"
                     f" importance <code>{esc(settings.get('importance'))}</code>, {esc(settings.get('selection'))} "
                     f"selection, budget {esc(settings.get('budget'))}")
    return f"<p class=\"meta\">{'; '.join(parts)}</p>" if parts else ""


def _plots(run: RunFiles, with_models: bool, notes: list[str]) -> str:
    from .base import png_base64
    from .run_plots import PLOTS, figure_for

    out = []
    for kind in PAGE_PLOTS:
        plot = PLOTS[kind]
        wanted = run.sweep if kind == "pareto" else run.metrics
        if not wanted or (plot.loads_models(run) and not with_models):
            continue
        try:
            fig = figure_for(kind, run)
        except RECOVERABLE as exc:
            notes.append(f"plot '{kind}' not drawn: {exc}")
            logger.info("plot %s not drawn for %s: %s", kind, run.directory, exc)
            continue
        out.append(f"<figure id=\"plot-{kind}\"><img alt=\"{esc(kind)} plot\" src=\"data:image/png;base64,"
                   f"{png_base64(fig)}\"><figcaption>{esc(plot.caption_for(run))}</figcaption></figure>")
    return "<h2>Plots</h2>" + "".join(out) if out else ""


def _evaluators(run: RunFiles) -> str:
    out = []
    for name, result in (run.metrics or {}).get("evaluation", {}).items():
        intervals = result.get("intervals", {})
        rows = [{"metric": k, "value": v, "95% CI": intervals.get(k)} for k, v in result.get("metrics", {}).items()]
        section = [f"<h3>{esc(name)}</h3>", table_html(rows)]
        for table, table_rows in result.get("tables", {}).items():
            if (name, table) in DRAWN_TABLES:
                continue
            section += [f"<h4>{esc(name)}: {esc(table)}</h4>", table_html(table_rows)]
        out.append("".join(section))
    return "<h2>Measurements</h2>" + "".join(out) if out else ""


def _generations(run: RunFiles) -> str:
    from ..core.contract.summary import generations

    rows = generations(run.metrics or {})
    if not rows:
        return ""
    cells = "".join(
        f"<div class=\"gen\"><div class=\"prompt\">{esc(r.get('prompt', ''))}</div>"
        f"<div class=\"base\"><b>base</b><pre>{esc(str(r.get('base', '')).strip())}</pre></div>"
        f"<div class=\"pruned\"><b>pruned</b><pre>{esc(str(r.get('pruned', '')).strip())}</pre></div></div>"
        for r in rows)
    return "<h2>Completions, base vs pruned</h2>" + cells


def _sweep(run: RunFiles) -> str:
    if not run.sweep:
        return ""
    from .sweep import point_label

    rows = [{"setting": point_label(p), "params removed %": p.get("params_removed_pct"),
             "bias reduction %": p.get("bias_reduction_pct"), "capability loss %": p.get("capability_loss_pct"),
             "Pareto": "yes" if p.get("pareto") else "", "chosen": "yes" if p.get("chosen") else ""}
            for p in run.sweep.get("points", [])]
    return "<h2>Sweep</h2>" + table_html(rows, fold=40)


def _config(run: RunFiles) -> str:
    path = run.directory / "config.yaml"
    if not path.exists():
        return ""
    return f"<h2>Config</h2><details><summary>config.yaml</summary><pre class=\"config\">{esc(path.read_text())}</pre></details>"


def render(run: RunFiles, with_models: bool = False) -> str:
    """The whole page as a string."""
    notes: list[str] = []
    title = (run.metrics or {}).get("model") or (run.config or {}).get("model", {}).get("source") or run.directory.name
    kind = "sweep" if run.sweep and not run.metrics else "report"
    body = [f"<h1>fairprune {kind}: {esc(title)}</h1>", _meta(run), _summary(run), _plots(run, with_models, notes),
            _sweep(run), _generations(run), _evaluators(run), _config(run)]
    notes += run.notes
    if notes:
        body.append("<h2>Notes</h2>" + "".join(f"<p class=\"note\">{esc(n)}</p>" for n in dict.fromkeys(notes)))
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>fairprune {kind}: {esc(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(b for b in body if b) + "</body></html>\n")


def build_report(run_dir: str | Path, *, with_models: bool = False, model: Any = None) -> Path:
    """Write ``report.html`` into ``run_dir`` from its files and return its path.

    The PCA and token plots are drawn from the data the run stored (the
    ``activation_pictures`` evaluator); for a run without it, ``with_models`` draws
    them by reloading the base and pruned models (slower; ``fairprune report`` does).
    ``model`` is the run's pruned model, when the run writes its own report: the
    importance of every neuron is then read from it, not from a reloaded copy.
    """
    run = load_run(run_dir)
    run.model = model
    page = render(run, with_models=with_models)
    path = run.directory / "report.html"
    with atomic_file(path, Where("report.html", "")) as staging:  # a full disk leaves the old page, in one line
        staging.write_text(page, encoding="utf-8")
    logger.debug("wrote %s", path)  # inside a run this is the staging copy; the run logs where its output went
    return path
