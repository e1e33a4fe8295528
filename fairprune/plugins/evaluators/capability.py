"""The ``capability`` evaluator: perplexity on general text, cloze accuracy and LAMBADA, base vs pruned.

- text perplexity: exp(total NLL / total scored tokens) over sliding windows of
  a general English text (bundled, written for this project; the first
  ``text_max_tokens`` tokens by default, for speed); CI by resampling windows.
- cloze and LAMBADA: the last word of each passage is predicted from the rest.
  Accuracy counts a passage correct when greedy decoding produces every token of
  ``" " + word`` (as lm-evaluation-harness does). Last-word perplexity
  ``{task}_ppl`` is per target token, exp(total NLL / total target tokens), the
  figure benchmarks/RESULTS.md quotes (SmolLM2 LAMBADA first 400: 15.8); ``{task}_word_ppl``
  is per word, exp(mean over passages of the word's summed NLL), the figure
  lm-evaluation-harness reports. CIs resample passages.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from ...core.contract.plugin import Plugin, StrictParams
from ...core.contract.protocols import Headline
from ...core.contract.results import EvalContext, EvalResult, bootstrap_ci, change_pct


class CapabilityParams(StrictParams):
    """Options of the capability evaluator."""

    model_config = ConfigDict(extra="forbid")
    text_path: str | None = Field(None, description="plain-text file for perplexity (default: bundled text)")
    text_max_tokens: int | None = Field(2048, ge=2, description="score only the first N tokens of the text "
                                        "(None = all; the bundled text has ~7,000 SmolLM2 tokens)")
    window: int = Field(256, ge=2, description="tokens per perplexity window")
    stride: int = Field(256, ge=1, description="tokens between window starts (<= window)")
    cloze_path: str | None = Field(None, description="LAMBADA-format JSONL cloze set (default: bundled set)")
    lambada_path: str | None = Field(None, description="LAMBADA-format JSONL; LAMBADA is skipped when unset")
    lambada_limit: int | None = Field(400, ge=1, description="first N LAMBADA passages (None = all)")
    tasks: list[str] = Field(["text", "cloze", "lambada"], description="subset of text, cloze, lambada (lambada "
                                                                        "runs only with lambada_path)")
    max_length: int = Field(1024, ge=8, description="longest sequence fed to the model (left-truncated)")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples")

    @model_validator(mode="after")
    def _lambada_needs_its_file(self) -> CapabilityParams:
        # the default tasks name lambada and skip it without a file; asking for it by name must not do nothing
        asked = [key for key in ("lambada_limit", "tasks") if key in self.model_fields_set
                 and (key != "tasks" or "lambada" in self.tasks)]
        if asked and self.lambada_path is None:
            raise ValueError(f"{' and '.join(asked)} set for LAMBADA without lambada_path, so LAMBADA would not "
                             "run; set lambada_path to a LAMBADA-format JSONL file (or drop them)")
        return self


class CapabilityEvaluator(Plugin):
    """Language ability before and after pruning, each figure with a 95% bootstrap CI."""

    name = "capability"
    description = "perplexity on general text, cloze and LAMBADA last-word accuracy/perplexity, base vs pruned"
    Params = CapabilityParams

    needs_groups = False
    headlines = (
        Headline("lambada_ppl_change_pct", "LAMBADA last-word perplexity change", "%", "lower", "capability",
                 dataset="LAMBADA", split="test"),
        Headline("lambada_acc_change_pts", "LAMBADA accuracy change", " pts", "higher", dataset="LAMBADA",
                 split="test"),
        Headline("text_ppl_change_pct", "Perplexity change on the general English text", "%", "lower", "capability",
                 dataset="general English text"),
        Headline("cloze_acc_change_pts", "Cloze accuracy change", " pts", "higher", dataset="general-knowledge cloze"),
    )

    def observe(self, model, context: EvalContext) -> dict[str, list]:
        """``{task: [Score per window or passage]}`` of one model (``lm_scoring.Score``)."""
        from ...core.model.lm_scoring import pad_id, score_continuations

        pad = pad_id(context.tokenizer)
        return {task: score_continuations(model, requests, context.batch_size, pad, self.params.max_length,
                                          context.progress, f"{task} ({context.label})")
                for task, requests in self._requests(context.tokenizer).items()}

    def compare(self, base: dict[str, list], pruned: dict[str, list], context: EvalContext) -> EvalResult:
        result = EvalResult(self.name)
        rows: list[dict] = []
        for task in base:
            if task == "text":
                self._windows(context, result, base[task], pruned[task], rows)
            else:
                self._words(context, result, task, base[task], pruned[task], rows)
        result.tables["capability"] = rows
        result.summary = _summary(rows)
        return result

    def _requests(self, tok) -> dict[str, list]:
        """The scoring requests of each configured task (``ConfigError`` for bad settings or files)."""
        from ...core.contract.errors import ConfigError
        from ...core.model.lm_scoring import encode, window_requests, word_requests
        from .data import read_jsonl_texts, read_text

        p = self.params
        unknown = sorted(set(p.tasks) - {"text", "cloze", "lambada"})
        if unknown:
            raise ConfigError(f"capability.tasks: unknown task(s) {', '.join(unknown)}; known: text, cloze, lambada")
        if p.stride > p.window:
            raise ConfigError(f"capability.stride ({p.stride}) must not exceed capability.window ({p.window})")
        requests: dict[str, list] = {}
        if "text" in p.tasks:
            ids = encode(tok, read_text(p.text_path), special=False)[:p.text_max_tokens]
            requests["text"] = window_requests(ids, p.window, p.stride)
        if "cloze" in p.tasks:
            requests["cloze"] = word_requests(tok, read_jsonl_texts(p.cloze_path, what="cloze_path"))
        if "lambada" in p.tasks and p.lambada_path:
            texts = read_jsonl_texts(p.lambada_path, p.lambada_limit, what="lambada_path")
            requests["lambada"] = word_requests(tok, texts)
        return requests

    def _windows(self, context: EvalContext, result: EvalResult, base: list, pruned: list, rows: list) -> None:
        data = np.array([[b.nll, q.nll, b.n_tokens] for b, q in zip(base, pruned)])
        stats = {
            "base": lambda a: math.exp(a[:, 0].sum() / a[:, 2].sum()),
            "pruned": lambda a: math.exp(a[:, 1].sum() / a[:, 2].sum()),
            "change_pct": lambda a: change_pct(math.exp(a[:, 0].sum() / a[:, 2].sum()),
                                               math.exp(a[:, 1].sum() / a[:, 2].sum())),
        }
        for suffix, stat in stats.items():
            result.add(f"text_ppl_{suffix}", stat(data), bootstrap_ci(data, stat, self.params.n_boot, context.seed))
        result.add("text_tokens", float(data[:, 2].sum()))
        rows.append(_row(result, "text perplexity (per token)", "text_ppl", len(base)))

    def _words(self, context: EvalContext, result: EvalResult, task: str, base: list, pruned: list,
               rows: list) -> None:
        data = np.array([[b.nll, q.nll, b.greedy, q.greedy, b.n_tokens] for b, q in zip(base, pruned)],
                        dtype=np.float64)

        def token_ppl(a: np.ndarray, col: int) -> float:
            return math.exp(a[:, col].sum() / a[:, 4].sum())

        def word_ppl(a: np.ndarray, col: int) -> float:
            return math.exp(a[:, col].mean())

        ppl = {"base": lambda a: token_ppl(a, 0), "pruned": lambda a: token_ppl(a, 1),
               "change_pct": lambda a: change_pct(token_ppl(a, 0), token_ppl(a, 1))}
        wppl = {"base": lambda a: word_ppl(a, 0), "pruned": lambda a: word_ppl(a, 1),
                "change_pct": lambda a: change_pct(word_ppl(a, 0), word_ppl(a, 1))}
        acc = {"base": lambda a: a[:, 2].mean(), "pruned": lambda a: a[:, 3].mean(),
               "change_pts": lambda a: 100.0 * (a[:, 3].mean() - a[:, 2].mean())}
        for metric, stats in (("acc", acc), ("ppl", ppl), ("word_ppl", wppl)):
            for suffix, stat in stats.items():
                key = f"{task}_{metric}_{suffix}"
                result.add(key, stat(data), bootstrap_ci(data, stat, self.params.n_boot, context.seed))
        result.add(f"{task}_n", float(len(base)))
        rows.append(_row(result, f"{task} last-word accuracy", f"{task}_acc", len(base), "change_pts"))
        rows.append(_row(result, f"{task} last-word perplexity (per token)", f"{task}_ppl", len(base)))
        rows.append(_row(result, f"{task} last-word perplexity (per word)", f"{task}_word_ppl", len(base)))


def _row(result: EvalResult, label: str, prefix: str, n: int, change: str = "change_pct") -> dict[str, Any]:
    row: dict[str, Any] = {"metric": label, "n": n}
    for suffix in ("base", "pruned", change):
        key = f"{prefix}_{suffix}"
        row[suffix] = result.metrics[key]
        row[f"{suffix}_ci"] = list(result.intervals[key])
    return row


def _summary(rows: list[dict]) -> str:
    if not rows:
        return "No capability task was run."
    lines = ["| capability | n | base | pruned | change |", "|---|---|---|---|---|"]
    for row in rows:
        change_key = "change_pts" if "change_pts" in row else "change_pct"
        unit = " pts" if change_key == "change_pts" else "%"
        scale = 100.0 if "accuracy" in row["metric"] else 1.0
        lo, hi = row[f"{change_key}_ci"]
        lines.append(f"| {row['metric']} | {row['n']} | {scale * row['base']:.4g} | {scale * row['pruned']:.4g} | "
                     f"{row[change_key]:+.2f}{unit} [{lo:+.2f}, {hi:+.2f}] |")
    return "\n".join(lines)
