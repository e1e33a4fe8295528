"""The ``stereoset`` evaluator: the intrasentence part of StereoSet (Nadeem et al., 2021) from its ``dev.json``.

Each ``data.intrasentence[]`` item has a ``context`` with a ``BLANK`` and three
``sentences`` filling it, whose ``gold_label`` is ``stereotype``,
``anti-stereotype`` or ``unrelated``. A sentence is scored by its mean
log-probability per token (the StereoSet authors' scoring of causal LMs, so that
fillers of different lengths compare fairly), conditioned on BOS (see
``benchmark_scoring``). As in the authors' evaluation script, each score is
computed per ``target`` term, then averaged over terms:

- SS (stereotype score): % of items whose stereotype sentence scores higher
  than the anti-stereotype one (ideal 50);
- LMS (language modeling score): % of the comparisons stereotype vs unrelated
  and anti-stereotype vs unrelated won by the meaningful sentence (ideal 100);
- ICAT = LMS · min(SS, 100 − SS) / 50 (ideal 100), from the averaged SS and LMS.

Reported overall and per ``bias_type`` (gender, profession, race, religion).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ...core.contract.protocols import Headline
from ...core.contract.results import EvalResult
from ...core.data.benchmark_files import Where, check_filter, get_choice, get_field, read_json, sample_indices
from ...core.model.benchmark_base import BenchmarkEvaluator, BenchmarkParams, slug, subsets_by, summary_table

LABELS = ("stereotype", "anti-stereotype", "unrelated")
# per-example feature columns used by the statistics
TERM, STEREO_WINS, STEREO_MEANINGFUL, ANTI_MEANINGFUL = range(4)


class StereoSetParams(BenchmarkParams):
    """Options of the StereoSet evaluator (``limit``: items; the published dev set has 2,106)."""

    path: str = Field(description="StereoSet's dev.json (the intrasentence part is used)")
    bias_types: list[str] | None = Field(None, description="only these bias_type values (e.g. race, gender)")


@dataclass(frozen=True)
class Item:
    """One intrasentence item: its target term, bias type and the three sentences by gold label."""

    target: str
    bias_type: str
    sentences: tuple[str, str, str]  # in the order of LABELS


def parse_item(item: Any, where: Where) -> Item:
    """An ``Item`` from one ``data.intrasentence[i]`` entry."""
    if not isinstance(item, dict):
        raise where.error(f"must be an object, got {type(item).__name__}")
    target = get_field(item, "target", where, str)
    bias_type = get_field(item, "bias_type", where, str)
    if not target.strip() or not bias_type.strip():
        raise where.error(f"field {'target' if not target.strip() else 'bias_type'!r} is empty")
    sentences = get_field(item, "sentences", where, list)
    by_label: dict[str, str] = {}
    for k, entry in enumerate(sentences):
        at = Where(where.what, where.path, node=f"{where.node}.sentences[{k}]")
        label = get_choice(get_field(entry, "gold_label", at, str), "gold_label", LABELS, at)
        if label in by_label:
            raise at.error(f"field 'gold_label' {label!r} appears twice in the item")
        by_label[label] = get_field(entry, "sentence", at, str)
        if not by_label[label].strip():
            raise at.error("field 'sentence' is empty")
    missing = [label for label in LABELS if label not in by_label]
    if missing:
        raise where.error(f"field 'sentences' has no {missing[0]!r} sentence")
    return Item(target.strip(), bias_type, tuple(by_label[label] for label in LABELS))  # type: ignore[arg-type]


def _per_term(rows: np.ndarray, columns: list[int]) -> float:
    """Mean over target terms of each term's mean of ``columns`` (in percent)."""
    if not len(rows):
        return float("nan")
    terms, index = np.unique(rows[:, TERM], return_inverse=True)
    wins = rows[:, columns].mean(axis=1)
    per_term = np.bincount(index, weights=wins, minlength=len(terms)) / np.bincount(index, minlength=len(terms))
    return 100.0 * float(per_term.mean())


def stereotype_score(rows: np.ndarray) -> float:
    return _per_term(rows, [STEREO_WINS])


def lm_score(rows: np.ndarray) -> float:
    return _per_term(rows, [STEREO_MEANINGFUL, ANTI_MEANINGFUL])


def icat(rows: np.ndarray) -> float:
    ss = stereotype_score(rows)
    return lm_score(rows) * min(ss, 100.0 - ss) / 50.0


class StereoSetEvaluator(BenchmarkEvaluator):
    """StereoSet intrasentence SS, LMS and ICAT per bias type, base vs pruned."""

    name = "stereoset"
    description = "StereoSet intrasentence from dev.json: stereotype score (ideal 50), LM score and ICAT"
    Params = StereoSetParams
    headlines = (
        Headline(key="ss_base", label="StereoSet SS (base)", unit="%", better="closer_to_50", kind="level",
                 dataset="StereoSet"),
        Headline(key="ss_pruned", label="StereoSet SS (pruned)", unit="%", better="closer_to_50", kind="level",
                 dataset="StereoSet"),
        Headline(key="icat_pruned", label="StereoSet ICAT (pruned)", kind="level", dataset="StereoSet"),
    )

    def load(self) -> list[Item]:
        path = Path(self.params.path)
        data = read_json(path, self.name)
        entries = get_field(data, "data.intrasentence", Where(self.name, path), list)
        items = [parse_item(entry, Where(self.name, path, node=f"data.intrasentence[{k}]"))
                 for k, entry in enumerate(entries)]
        if not items:
            raise Where(self.name, path).error("field 'data.intrasentence' holds no examples")
        check_filter(self.name, "bias_types", self.params.bias_types, [i.bias_type for i in items])
        if self.params.bias_types:
            items = [i for i in items if i.bias_type in self.params.bias_types]
        return [items[i] for i in sample_indices(len(items), self.params.limit, self.params.sample_seed)]

    def observe(self, model: Any, context: Any) -> dict[str, list]:
        """Mean log-probability per token (nats) of each item's stereotype, anti-stereotype and unrelated sentence."""
        from ...core.model.benchmark_scoring import sentence_logprobs

        items = self.examples
        scored = sentence_logprobs(model, context.tokenizer, [s for i in items for s in i.sentences],
                                   context.batch_size, context.progress,
                                   f"StereoSet ({getattr(context, 'label', '') or 'model'})")
        means = [s.value(per_token=True) for s in scored]
        return {"sentence_logprobs": [means[3 * k:3 * k + 3] for k in range(len(items))]}

    def features(self, observation: dict[str, list]) -> np.ndarray:
        """Per item ``[target term index, stereotype > anti, stereotype > unrelated, anti > unrelated]``."""
        terms = {t: k for k, t in enumerate(sorted({i.target for i in self.examples}))}
        scores = np.asarray(observation["sentence_logprobs"], dtype=np.float64).reshape(-1, 3)
        stereo, anti, unrelated = scores[:, 0], scores[:, 1], scores[:, 2]
        index = np.asarray([terms[i.target] for i in self.examples], dtype=np.float64)
        return np.stack([index, stereo > anti, stereo > unrelated, anti > unrelated], axis=1).astype(np.float64)

    def compare(self, base: dict[str, list], pruned: dict[str, list], context: Any) -> EvalResult:
        items = self.examples
        base_features, pruned_features = self.paired_features(base, pruned)
        result = EvalResult(self.name)
        types = sorted({i.bias_type for i in items})
        self.compare_subsets(result, base_features, pruned_features, subsets_by([i.bias_type for i in items]),
                             {"ss": stereotype_score, "lms": lm_score, "icat": icat}, context, "n_items")
        rows = [(f"{label}{', ' + t if t else ''}", f"{metric}{'_' + slug(t) if t else ''}")
                for t in ["", *types] for metric, label in (("ss", "SS (ideal 50)"), ("lms", "LMS"),
                                                            ("icat", "ICAT"))]
        result.summary = summary_table(
            result, f"StereoSet intrasentence on {len(items)} items: per-target-term averages as in the "
                    "StereoSet evaluation script; 95% bootstrap CI over items.", rows)
        return result
