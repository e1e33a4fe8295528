"""Race prompt groups in the tiny tokenizer's vocabulary, for tests of selection on tiny models."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.contract.protocols import PromptGroup

#: templates whose words are all in ``tokenizer.VOCAB``; ``{}`` is the group word
TINY_TEMPLATES = ("the {} man walked into the room and", "the {} woman has a new job at the",
                  "the {} doctor said that the", "the {} family lives in the")


def tiny_race_groups(templates: Sequence[str] = TINY_TEMPLATES,
                     words: Sequence[str] = ("black", "white", "asian")) -> list[PromptGroup]:
    """One group per template (id: its index) holding one prompt per group word."""
    return [PromptGroup("race", str(i), tuple(words), tuple(t.format(w) for w in words))
            for i, t in enumerate(templates)]
