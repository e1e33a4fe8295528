"""The ``attribute_recall`` evaluator: can the model still say which group a prompt stated?

A model that treats groups more alike need not forget which group it was told
about; a model that stopped hearing the demographic word does. Each recall
prompt states an attribute with one of the axis' words, then asks it back
("Intake form. Occupation: nurse. Race: Black. Age: 41. Q: What race is the
nurse? A: The nurse is"). The prompts are built combinatorially from the frames
of ``fairprune/data/evidence/recall.yaml`` (statements x questions x the axis'
words; mixed registers, written for fairprune, never an axis' templates).

**The choice rule.** A group's score is the log of the total probability that
the model continues the prompt with any of the group's words:
log Σ_w p(" " + w | prompt), over the group's surface forms w as the axis lists
them and with their first letter capitalised ("white" and "White"). Each word is
scored whole (the sum of its tokens' log-probabilities), so a word of two tokens
is not penalised for its length beyond what the model itself assigns, and not
rewarded for a near-certain second token as a per-token mean would. The model
*recalls* the prompt when the stated group's score is strictly higher than every
other group's (a tie is not a recall).

Metrics (paired bootstrap over prompts, 95% intervals): ``accuracy_{base,pruned}``
(% of prompts recalled) and ``accuracy_change`` (points), and
``stated_logprob_{base,pruned,change}``: the mean score of the stated group, in
nats. With several axes, each also per axis (``accuracy_<axis>_change``, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...core.contract.errors import ConfigError
from ...core.contract.plugin import Plugin, StrictParams
from ...core.contract.protocols import Headline
from ...core.contract.results import EvalContext, EvalResult
from ...core.data.benchmark_files import sample_indices
from ...core.model.benchmark_base import add_compared, subsets_by, summary_table
from ..evidence_text import figure, recall_sentence
from .data import bundled_path

#: the bundled recall frames, relative to the ``fairprune`` package
RECALL_FRAMES = "data/evidence/recall.yaml"
PLACEHOLDERS = ("word", "person", "a", "A")


class AttributeRecallParams(StrictParams):
    """Options of the attribute-recall evaluator."""

    model_config = ConfigDict(extra="forbid")
    axes: list[str] | None = Field(None, min_length=1, description="axes to test (None: the held-out groups' axes "
                                                                     "that the frames file covers)")
    path: str | None = Field(None, description="a frames file of the bundled format (None: the bundled one)")
    limit: int | None = Field(None, ge=1, description="a seeded sample of N prompts per axis (None: all)")
    sample_seed: int = Field(0, description="seed of the sample taken when limit is set")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples")

    @field_validator("path")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"no such frames file {value!r}")
        return value


@dataclass(frozen=True)
class RecallPrompt:
    """One recall prompt: its axis, the text, and the group its statement stated."""

    axis: str
    text: str
    stated: str


@dataclass(frozen=True)
class AxisFrames:
    """The statements and questions of one axis (each a ``str.format`` frame)."""

    statements: tuple[str, ...]
    questions: tuple[str, ...]


def read_frames(path: str | Path | None = None) -> tuple[tuple[str, ...], dict[str, AxisFrames]]:
    """``(people, {axis: AxisFrames})`` of a frames file (the bundled one when None).

    Raises ``ConfigError`` naming the file and the axis for a missing section, an
    empty list, or a frame with an unknown placeholder or a statement without ``{word}``.
    """
    from ...core.data.prompts import parse_data_file, read_text_file

    file = Path(path) if path else bundled_path(RECALL_FRAMES)
    data = parse_data_file(read_text_file(file, "recall frames file"), file)
    where = f"attribute_recall: {file}"
    if not isinstance(data, dict) or not isinstance(data.get("axes"), dict) or not data["axes"]:
        raise ConfigError(f"{where}: needs an 'axes' mapping of axis -> {{statements, questions}}")
    people = data.get("people")
    if not isinstance(people, list) or not people or not all(isinstance(p, str) and p.strip() for p in people):
        raise ConfigError(f"{where}: 'people' must be a non-empty list of role nouns")
    axes = {}
    for axis, section in data["axes"].items():
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: axis {axis!r} must map 'statements' and 'questions' to lists")
        lists = {}
        for key in ("statements", "questions"):
            frames = section.get(key)
            if not isinstance(frames, list) or not frames or not all(isinstance(f, str) for f in frames):
                raise ConfigError(f"{where}: axis {axis!r} needs a non-empty list of {key}")
            for frame in frames:
                _check_frame(frame, where, axis, needs_word=key == "statements")
            lists[key] = tuple(frames)
        axes[str(axis)] = AxisFrames(lists["statements"], lists["questions"])
    return tuple(people), axes


def _check_frame(frame: str, where: str, axis: str, needs_word: bool) -> None:
    from string import Formatter

    try:
        fields = {name for _, name, _, _ in Formatter().parse(frame) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"{where}: axis {axis!r}: frame {frame!r}: {exc}") from None
    unknown = sorted(fields - set(PLACEHOLDERS))
    if unknown:
        raise ConfigError(f"{where}: axis {axis!r}: frame {frame!r} has unknown placeholders {unknown} "
                          f"(known: {', '.join(PLACEHOLDERS)})")
    if needs_word and "word" not in fields:
        raise ConfigError(f"{where}: axis {axis!r}: statement {frame!r} does not state the attribute ({{word}})")


def article(word: str) -> str:
    """``"an"`` before a vowel letter, else ``"a"`` (the attribute words of the bundled axes need no more)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def build_prompts(axis: str, frames: AxisFrames, people: tuple[str, ...],
                  groups: dict[str, tuple[str, ...]]) -> list[RecallPrompt]:
    """Every statement x question x surface form of one axis, in that order; ``{person}`` is taken in turn."""
    out = []
    for statement in frames.statements:
        for question in frames.questions:
            for group, forms in groups.items():
                for word in forms:
                    person = people[len(out) % len(people)]
                    values = {"word": word, "person": person, "a": article(word), "A": article(word).capitalize()}
                    text = statement.format(**values) + " " + question.format(**values)
                    out.append(RecallPrompt(axis, text, group))
    return out


def answer_forms(forms: tuple[str, ...]) -> list[str]:
    """The continuations that count for a group: each form as written and with its first letter capitalised."""
    return list(dict.fromkeys([w for f in forms for w in (f, f[:1].upper() + f[1:])]))


def group_scores(word_logprobs: np.ndarray, owners: list[int], n_groups: int) -> np.ndarray:
    """``[n_prompts, n_groups]``: log Σ exp of the word log-probabilities each group owns (``owners[w]``)."""
    out = np.full((word_logprobs.shape[0], n_groups), -math.inf)
    for g in range(n_groups):
        cols = [w for w, owner in enumerate(owners) if owner == g]
        out[:, g] = np.logaddexp.reduce(word_logprobs[:, cols], axis=1)
    return out


def recall_features(scores: np.ndarray, stated: np.ndarray) -> np.ndarray:
    """``[n, 2]`` per prompt: 1.0 when the stated group strictly beats every other group (else 0.0), and the
    stated group's score (nats)."""
    own = scores[np.arange(len(stated)), stated]
    others = scores.copy()
    others[np.arange(len(stated)), stated] = -math.inf
    return np.stack([(own > others.max(axis=1)).astype(np.float64), own], axis=1)


def accuracy_pct(rows: np.ndarray) -> float:
    """% of rows recalled (first feature)."""
    return 100.0 * float(rows[:, 0].mean()) if len(rows) else float("nan")


def mean_stated_logprob(rows: np.ndarray) -> float:
    """Mean stated-group score in nats (second feature)."""
    return float(rows[:, 1].mean()) if len(rows) else float("nan")


def continuation_logprobs(model: Any, tokenizer: Any, prompts: list[str], words: list[str], batch_size: int,
                          progress: bool, desc: str) -> np.ndarray:
    """``[n_prompts, n_words]``: log p(" " + word | prompt) in nats, each word scored whole.

    A model that takes a key/value cache (every Hugging Face causal LM) runs each prompt once and reads
    every word from it (``lm_scoring.score_continuations``: one-token words from the prompt's last position,
    longer ones continued from its cache; one that takes a cache argument but returns no cache has every word
    scored whole). Any other model gets one next-token pass for the one-token words and each longer word scored
    as a whole ``prompt + word`` sequence. Raises ``ConfigError`` for a word that encodes to no token.
    """
    from ...core.model.lm_scoring import cache_argument, encode, last_token_logprobs, pad_id, score_continuations

    ids = [encode(tokenizer, " " + w, special=False) for w in words]
    empty = [w for w, i in zip(words, ids) if not i]
    if empty:
        raise ConfigError(f"attribute_recall: the words {empty} encode to no tokens")
    out = np.zeros((len(prompts), len(words)))
    cached = cache_argument(model) is not None
    single = [] if cached else [k for k, i in enumerate(ids) if len(i) == 1]
    if single:
        next_token = last_token_logprobs(model, tokenizer, prompts, batch_size, progress, desc)
        for k in single:
            out[:, k] = next_token[:, ids[k][0]].double().numpy()
    scored = [k for k, i in enumerate(ids) if cached or len(i) > 1]
    if scored:
        encoded = [encode(tokenizer, p) for p in prompts]
        requests = [(encoded[n], ids[k]) for n in range(len(prompts)) for k in scored]
        scores = score_continuations(model, requests, batch_size, pad_id(tokenizer), progress=progress,
                                     desc=desc if cached else desc + ", words of several tokens")
        out[:, scored] = np.asarray([s.logprob for s in scores]).reshape(len(prompts), len(scored))
    return out


class AttributeRecallEvaluator(Plugin):
    """% of recall prompts whose stated group the model names among the axis' groups, base vs pruned."""

    name = "attribute_recall"
    description = "whether the model still names the group a prompt stated, among the axis' groups (recall prompts)"
    Params = AttributeRecallParams
    needs_groups = False
    headlines = (
        Headline("accuracy_change", "Attribute recall change (names the stated group)", " pts", "higher"),
        Headline("accuracy_base", "Attribute recall (base)", "%", "higher", kind="level"),
        Headline("stated_logprob_change", "Log-probability of the stated group, change", " nats", "higher"),
    )

    def __init__(self, params: BaseModel | None = None) -> None:
        super().__init__(params)
        self._frames: tuple[tuple[str, ...], dict[str, AxisFrames]] | None = None

    def configure(self, params: dict[str, Any] | BaseModel | None = None) -> "AttributeRecallEvaluator":
        """A copy with validated params whose frames file is read and checked now, before any model runs."""
        clone = super().configure(params)
        clone._frames = read_frames(clone.params.path)
        clone._check_axes(clone._frames[1])
        return clone  # type: ignore[return-value]

    def observe(self, model: Any, context: EvalContext) -> dict[str, Any]:
        """Per prompt: the stated group's index and every group's score (nats), axis by axis."""
        if self._frames is None:
            self._frames = read_frames(self.params.path)
        people, frames = self._frames
        out: dict[str, Any] = {"axis": [], "stated": [], "scores": []}
        for axis in self._axes(context, frames):
            groups = self._groups(context, axis)
            prompts = self._sample(build_prompts(axis, frames[axis], people, groups))
            names = list(groups)
            words, owners = [], []
            for g, name in enumerate(names):
                for word in answer_forms(groups[name]):
                    words.append(word)
                    owners.append(g)
            lp = continuation_logprobs(model, context.tokenizer, [p.text for p in prompts], words,
                                       context.batch_size, context.progress,
                                       f"recall, {axis} ({context.label or 'model'})")
            scores = group_scores(lp, owners, len(names))
            out["axis"] += [axis] * len(prompts)
            out["stated"] += [names.index(p.stated) for p in prompts]
            out["scores"] += scores.tolist()
        return out

    def compare(self, base: dict[str, Any], pruned: dict[str, Any], context: EvalContext) -> EvalResult:
        if base["axis"] != pruned["axis"] or base["stated"] != pruned["stated"]:
            raise ConfigError("attribute_recall: the base and pruned observations hold different prompts")
        stated = np.asarray(base["stated"], dtype=np.int64)
        feats = {label: recall_features(np.asarray(obs["scores"], dtype=np.float64), stated)
                 for label, obs in (("base", base), ("pruned", pruned))}
        result = EvalResult(self.name)
        axes = sorted(set(base["axis"]))
        subsets = subsets_by(base["axis"]) if len(axes) > 1 else {"": np.ones(len(stated), dtype=bool)}
        seed = context.seed
        for suffix, mask in subsets.items():
            add_compared(result, "accuracy" + suffix, feats["base"][mask], feats["pruned"][mask], accuracy_pct,
                         seed, self.params.n_boot)
            add_compared(result, "stated_logprob" + suffix, feats["base"][mask], feats["pruned"][mask],
                         mean_stated_logprob, seed, self.params.n_boot)
            result.add("n_prompts" + suffix, float(mask.sum()))
        rows = [("% recalled (all axes)" if len(axes) > 1 else "% recalled", "accuracy"),
                ("log-probability of the stated group (nats)", "stated_logprob")]
        if len(axes) > 1:
            rows += [(f"% recalled, {a}", f"accuracy_{key[1:]}") for a, key in zip(axes, list(subsets)[1:])]
        result.summary = summary_table(
            result, f"Attribute recall on {len(stated)} prompts ({', '.join(axes)}): a statement gives the attribute, "
                    "a later clause asks it back; recalled = the stated group's words are likelier than any other "
                    "group's (95% bootstrap CI over prompts).", rows) + "\n\n" + _recall_text(result)
        result.tables["findings"] = [{"text": _recall_text(result)}]
        return result

    def _axes(self, context: EvalContext, frames: dict[str, AxisFrames]) -> list[str]:
        if self.params.axes is not None:
            self._check_axes(frames)
            return list(self.params.axes)
        axes = sorted({g.axis for g in context.groups} & set(frames))
        if not axes:
            raise ConfigError("attribute_recall: no axis to test; set params.axes to some of "
                              f"{sorted(frames)} (the held-out groups' axes have no recall frames)")
        return axes

    def _check_axes(self, frames: dict[str, AxisFrames]) -> None:
        """``ConfigError`` when ``params.axes`` names an axis the frames file has no frames for."""
        missing = [a for a in self.params.axes or [] if a not in frames]
        if missing:
            raise ConfigError(f"attribute_recall.axes: no recall frames for {missing} "
                              f"(the frames file has {sorted(frames)})")

    def _groups(self, context: EvalContext, axis: str) -> dict[str, tuple[str, ...]]:
        registry = getattr(context, "registry", None)
        if registry is None:
            from ...core.contract.registry import get_registry

            registry = get_registry()
        if axis not in registry.names("bias_axes"):
            raise ConfigError(f"attribute_recall: axis {axis!r} is not a registered bias axis, so its groups "
                              "and their words are unknown")
        groups = {name: tuple(forms) for name, forms in registry.get("bias_axes", axis).attribute_groups().items()}
        if len(groups) < 2:
            raise ConfigError(f"attribute_recall: axis {axis!r} has fewer than two groups to choose among")
        return groups

    def _sample(self, prompts: list[RecallPrompt]) -> list[RecallPrompt]:
        return [prompts[i] for i in sample_indices(len(prompts), self.params.limit, self.params.sample_seed)]



def _recall_text(result: EvalResult) -> str:
    m = result.metrics
    return recall_sentence(m["accuracy_base"], m["accuracy_pruned"], figure(m, result.intervals, "accuracy_change"))
