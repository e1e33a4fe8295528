"""A rigged language model whose log-probabilities are known, and writers of small benchmark files.

``UnigramLM`` gives every position the same next-token distribution,
``log_softmax(logits)``, whatever came before: the log-probability of a text is
the sum of its characters' log-probabilities (with the character tokenizer), so
every benchmark figure can be computed by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from fairprune.testing.tokenizer import CHARACTERS, SPECIAL_TOKENS, tiny_char_tokenizer


def char_id(char: str) -> int:
    """The id of one character in ``tiny_char_tokenizer``."""
    return len(SPECIAL_TOKENS) + CHARACTERS.index(char)


class UnigramLM(nn.Module):
    """Next-token logits that ignore the context: 0 for every token, ``boost[c]`` for character ``c``."""

    def __init__(self, boost: dict[str, float]) -> None:
        super().__init__()
        logits = torch.zeros(len(SPECIAL_TOKENS) + len(CHARACTERS))
        for char, value in boost.items():
            logits[char_id(char)] = value
        self.logits = nn.Parameter(logits, requires_grad=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None, position_ids: Any = None,
                use_cache: bool = False, logits_to_keep: int = 0) -> SimpleNamespace:
        batch, length = input_ids.shape
        return SimpleNamespace(logits=self.logits.expand(batch, length, -1))

    def logprob(self, char: str) -> float:
        """log p(char) in nats at any position."""
        return float(torch.log_softmax(self.logits.double(), -1)[char_id(char)])


def context(batch_size: int = 3, label: str = "base", seed: int = 0) -> SimpleNamespace:
    """What the benchmark evaluators read from an evaluation context."""
    return SimpleNamespace(tokenizer=tiny_char_tokenizer(), batch_size=batch_size, progress=False, label=label,
                           seed=seed, groups=[], prune_result=None)


def compare(evaluator: Any, base_model: nn.Module, pruned_model: nn.Module) -> Any:
    """Observe both models, then compare (the two phases of an evaluator)."""
    base = evaluator.observe(base_model, context(label="base"))
    pruned = evaluator.observe(pruned_model, context(label="pruned"))
    return evaluator.compare(base, pruned, context())


def write_crows(path: Path, rows: list[tuple[str, str, str, str]], bom: bool = False, newline: str = "\n") -> Path:
    """A CrowS-Pairs CSV with the published header; rows are (sent_more, sent_less, direction, bias_type)."""
    header = ",sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators"
    lines = [header] + [f'{k},"{m}","{s}",{d},{t},"[[\'{t}\']]",a{k},"[\'b{k}\']"'
                        for k, (m, s, d, t) in enumerate(rows)]
    path.write_bytes(("\ufeff" if bom else "").encode() + newline.join(lines + [""]).encode())
    return path


def bbq_record(condition: str, polarity: str, answers: tuple[str, str, str], roles: tuple[str, str, str],
               label: int, category: str = "Age") -> dict:
    """One BBQ line; ``roles[k]`` is ``target`` (the stereotyped group), ``other`` or ``unknown``."""
    info = {"target": ["grandfather", "old"], "other": ["grandson", "nonOld"], "unknown": ["Can't be determined",
                                                                                           "unknown"]}
    return {"example_id": 0, "question_index": "1", "question_polarity": polarity, "context_condition": condition,
            "category": category, "answer_info": {f"ans{k}": info[r] for k, r in enumerate(roles)},
            "additional_metadata": {"subcategory": "None", "stereotyped_groups": ["old"], "version": "a",
                                    "source": "written for fairprune's tests"},
            "context": "Two people were at the bus stop.", "question": "Who was late?",
            "ans0": answers[0], "ans1": answers[1], "ans2": answers[2], "label": label}


def write_jsonl(path: Path, records: list[dict], newline: str = "\n", bom: bool = False) -> Path:
    text = newline.join(json.dumps(r) for r in records) + newline
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def write_winobias(directory: Path, pairs: dict[int, list[tuple[str, str]]], split: str = "dev",
                   newline: str = "\n") -> Path:
    """WinoBias files: ``pairs[type]`` = [(pro sentence, anti sentence)], numbered from 1."""
    directory.mkdir(parents=True, exist_ok=True)
    for kind, rows in pairs.items():
        for side, column in (("pro", 0), ("anti", 1)):
            lines = [f"{k} {row[column]}" for k, row in enumerate(rows, 1)]
            (directory / f"{side}_stereotyped_type{kind}.txt.{split}").write_bytes(
                newline.join(lines + [""]).encode())
    return directory


def stereoset_item(target: str, bias_type: str, stereotype: str, anti: str, unrelated: str) -> dict:
    labels = (("stereotype", stereotype), ("anti-stereotype", anti), ("unrelated", unrelated))
    return {"id": f"{target}-{stereotype}", "target": target, "bias_type": bias_type, "context": "The BLANK one.",
            "sentences": [{"sentence": s, "id": f"{target}-{g}", "gold_label": g,
                           "labels": [{"label": g, "human_id": "h"}]} for g, s in labels]}


def write_stereoset(path: Path, items: list[dict]) -> Path:
    path.write_text(json.dumps({"version": "1.0-test", "data": {"intrasentence": items, "intersentence": []}}))
    return path


class UnigramLMTakingCache(UnigramLM):
    """A ``UnigramLM`` whose forward accepts a ``cache`` argument but returns no cache."""

    def forward(self, input_ids: torch.Tensor, attention_mask: Any = None, position_ids: Any = None,
                use_cache: bool = False, logits_to_keep: int = 0, cache: Any = None) -> SimpleNamespace:
        return super().forward(input_ids, attention_mask, position_ids, use_cache, logits_to_keep)
