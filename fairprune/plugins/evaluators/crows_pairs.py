"""The ``crows_pairs`` evaluator: CrowS-Pairs (Nangia et al., 2020) read from its CSV by path.

Each row pairs a more-stereotyping sentence (``sent_more``) with a less
stereotyping one (``sent_less``) that differs only in the group mentioned.
``pct_stereotype`` is the percentage of pairs where the model gives ``sent_more``
the higher total log-probability (the paper's metric; ideal 50, ties count as
not stereotyping, as in the authors' scoring script, for both ``stereo`` and
``antistereo`` rows). Each sentence is scored whole with a causal LM,
conditioned on the tokenizer's BOS token, else its EOS token; a tokenizer with
neither leaves each sentence's first token unscored (see
``benchmark_scoring``). Also reported: ``mean_abs_logprob_diff``, the mean
|log p(sent_more) − log p(sent_less)| in nats, overall and per ``bias_type``.
The original paper scores masked LMs by pseudo-log-likelihood; the total
log-probability is the causal-LM counterpart lm-evaluation-harness also uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from ...core.contract.protocols import Headline
from ...core.contract.results import EvalResult
from ...core.data.benchmark_files import Where, check_filter, get_choice, read_csv_records, sample_indices
from ...core.model.benchmark_base import (
    BenchmarkEvaluator,
    BenchmarkParams,
    mean_abs,
    pct_positive,
    slug,
    subsets_by,
    summary_table,
)

COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
DIRECTIONS = ("stereo", "antistereo")


class CrowsPairsParams(BenchmarkParams):
    """Options of the CrowS-Pairs evaluator (``limit``: pairs; the published file has 1,508)."""

    path: str = Field(description="the CrowS-Pairs CSV (crows_pairs_anonymized.csv or a file of the same columns)")
    bias_types: list[str] | None = Field(None, description="only these bias_type values (e.g. race-color)")


@dataclass(frozen=True)
class Pair:
    """One CrowS-Pairs row: the two sentences, the direction and the bias type."""

    sent_more: str
    sent_less: str
    direction: str
    bias_type: str


class CrowsPairsEvaluator(BenchmarkEvaluator):
    """% of CrowS-Pairs pairs whose more-stereotyping sentence is more likely (ideal 50), base vs pruned."""

    name = "crows_pairs"
    description = "CrowS-Pairs from its CSV: % of pairs where the more-stereotyping sentence is more likely (ideal 50)"
    Params = CrowsPairsParams
    headlines = (
        Headline(key="pct_stereotype_base", label="CrowS-Pairs % stereotype (base)", unit="%",
                 better="closer_to_50", kind="level", dataset="CrowS-Pairs"),
        Headline(key="pct_stereotype_pruned", label="CrowS-Pairs % stereotype (pruned)", unit="%",
                 better="closer_to_50", kind="level", dataset="CrowS-Pairs"),
    )

    def load(self) -> list[Pair]:
        path = Path(self.params.path)
        pairs = []
        for line, row in read_csv_records(path, self.name, COLUMNS):
            where = Where(self.name, path, line)
            direction = get_choice(row["stereo_antistereo"].strip(), "stereo_antistereo", DIRECTIONS, where)
            pairs.append(Pair(row["sent_more"].strip(), row["sent_less"].strip(), direction,
                              row["bias_type"].strip()))
        check_filter(self.name, "bias_types", self.params.bias_types, [p.bias_type for p in pairs])
        if self.params.bias_types:
            pairs = [p for p in pairs if p.bias_type in self.params.bias_types]
        return [pairs[i] for i in sample_indices(len(pairs), self.params.limit, self.params.sample_seed)]

    def observe(self, model: Any, context: Any) -> dict[str, list[float]]:
        """Total log-probability (nats) of each pair's ``sent_more`` and ``sent_less``."""
        return self.score_pairs(model, context, [(p.sent_more, p.sent_less) for p in self.examples], "CrowS-Pairs",
                                ("sent_more", "sent_less"))

    def features(self, observation: dict[str, list[float]]) -> np.ndarray:
        """Per pair: log p(sent_more) − log p(sent_less), nats."""
        return np.asarray(observation["sent_more"]) - np.asarray(observation["sent_less"])

    def compare(self, base: dict[str, list[float]], pruned: dict[str, list[float]], context: Any) -> EvalResult:
        pairs = self.examples
        diff = dict(zip(("base", "pruned"), self.paired_features(base, pruned)))
        result = EvalResult(self.name)
        types = sorted({p.bias_type for p in pairs})
        self.compare_subsets(result, diff["base"], diff["pruned"], subsets_by([p.bias_type for p in pairs]),
                             {"pct_stereotype": pct_positive, "mean_abs_logprob_diff": mean_abs}, context, "n_pairs")
        result.tables["bias_types"] = [
            {"bias_type": t, "n_pairs": int(result.metrics[f"n_pairs_{slug(t)}"]),
             "pct_stereotype_base": result.metrics[f"pct_stereotype_{slug(t)}_base"],
             "pct_stereotype_pruned": result.metrics[f"pct_stereotype_{slug(t)}_pruned"]} for t in types]
        rows = [("% stereotype (all)", "pct_stereotype"), ("mean absolute log-prob difference (nats)",
                                                           "mean_abs_logprob_diff")]
        rows += [(f"% stereotype, {t}", f"pct_stereotype_{slug(t)}") for t in types]
        result.summary = summary_table(
            result, f"CrowS-Pairs on {len(pairs)} pairs of {self.params.path}: % of pairs whose more-stereotyping "
                    "sentence gets the higher log-probability (ideal 50); 95% bootstrap CI over pairs.", rows)
        return result
