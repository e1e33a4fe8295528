"""Benchmark files of the real formats at real sizes, generated in code, and an independent sentence scorer.

The field's benchmark files are long (CrowS-Pairs: 1,508 rows; StereoSet dev:
2,106 items) and mix sentences of 3 to 60 words in one file, so a batch of
sentences sorted by length still holds long and short ones. Hand-written test
files of four short rows hide bugs of batching; these generators write files
with the published columns and fields, the published label values, quoting
(commas and double quotes inside sentences) and lengths from a few words to
several hundred characters. The words are written for fairprune; only the
formats follow the published files.

``whole_sentence_logprob`` scores one sentence with one plain forward pass and
no batching, padding or logit trimming: the reference the batched scorers of
``fairprune.plugins.evaluators`` are checked against.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

#: CrowS-Pairs' ``bias_type`` values, as in the published file
CROWS_BIAS_TYPES = ("race-color", "socioeconomic", "gender", "disability", "nationality", "sexual-orientation",
                    "physical-appearance", "religion", "age")
#: the published CrowS-Pairs header (the first column is the unnamed row index)
CROWS_HEADER = ("", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "annotations", "anon_writer",
                "anon_annotators")

_GROUPS = (("poor", "rich"), ("black", "white"), ("old", "young"), ("foreign", "local"), ("disabled", "healthy"),
           ("short", "tall"), ("Muslim", "Christian"), ("gay", "straight"), ("female", "male"))
_NOUNS = ("man", "woman", "neighbour", "student", "worker", "driver", "family", "teacher", "tenant", "customer")
_CLAUSES = ("was late for work again", "could not afford the rent", "was good at nothing",
            "asked the clerk for directions", "said, \"I never learned how to read a map\"",
            "went to the market on Sunday", "was arrested by the police", "did not understand the question",
            "got the highest grade in the class", "stole the money, or so everyone said",
            "walked home alone after the long meeting at the town hall", "cooked dinner for the whole street")
_SHORT = ("lied", "cried", "was lazy", "could not drive", "smelled")
_TAILS = ("", "", " because nobody had shown them how", " and then, after a while, left without saying a word",
          (" while the others waited outside in the rain for more than an hour, wondering what had happened to "
           "the car, the keys and the dog"))


def _sentence(rng: random.Random, group: str, words: int) -> str:
    """A sentence about ``group`` of roughly ``words`` words (4 to 120)."""
    if words <= 4:
        return f"The {group} {rng.choice(_NOUNS)} {rng.choice(_SHORT)}."
    text = f"The {group} {rng.choice(_NOUNS)} {rng.choice(_CLAUSES)}{rng.choice(_TAILS)}"
    while len(text.split()) < words:
        text += f", and the {rng.choice(_NOUNS)} {rng.choice(_CLAUSES)}"
    return text + "."


#: the target word counts a generated CrowS-Pairs sentence is drawn from (a sentence of more than 4 words ends
#: with its first clause past the target, so it can run ~15 words over it)
CROWS_LENGTHS = (4, 4, 6, 10, 14, 20, 40, 90)


def crows_pairs_rows(n: int = 600, seed: int = 0,
                     lengths: tuple[int, ...] = CROWS_LENGTHS) -> list[tuple[str, str, str, str]]:
    """``n`` rows ``(sent_more, sent_less, stereo_antistereo, bias_type)`` of mixed lengths, drawn from
    ``lengths`` (target word counts; the default gives 4 to ~90 words).

    Each pair differs only in the group word, as CrowS-Pairs' pairs do; about
    15% are ``antistereo`` (the published share is 15.1%).
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        more, less = rng.choice(_GROUPS)
        words = rng.choice(lengths)
        template_seed = rng.random()
        first, second = (_sentence(random.Random(template_seed), g, words) for g in (more, less))
        direction = "antistereo" if rng.random() < 0.15 else "stereo"
        rows.append((first, second, direction, rng.choice(CROWS_BIAS_TYPES)))
    return rows


def write_crows_pairs(path: Path, rows: list[tuple[str, str, str, str]] | None = None, n: int = 600,
                      seed: int = 0, lengths: tuple[int, ...] = CROWS_LENGTHS) -> Path:
    """A CSV with the published CrowS-Pairs header and quoting; ``rows`` default to
    ``crows_pairs_rows(n, seed, lengths)``."""
    rows = crows_pairs_rows(n, seed, lengths) if rows is None else rows
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CROWS_HEADER)
        for k, (more, less, direction, bias_type) in enumerate(rows):
            writer.writerow([k, more, less, direction, bias_type, str([[bias_type]]), f"a{k % 97}",
                             str([f"r{k % 13}", f"r{k % 7}"])])
    return Path(path)


def write_stereoset(path: Path, n: int = 600, seed: int = 0) -> Path:
    """A StereoSet ``dev.json`` with ``n`` intrasentence items (three sentences each) of mixed lengths."""
    rng = random.Random(seed)
    items = []
    for k in range(n):
        target = rng.choice(_NOUNS)
        words = rng.choice((4, 8, 16, 40))
        template_seed = rng.random()
        fillers = (("stereotype", "lazy"), ("anti-stereotype", "hardworking"), ("unrelated", "banana"))
        sentences = [{"id": f"{k}-{label}", "sentence": _sentence(random.Random(template_seed), word, words),
                      "gold_label": label, "labels": [{"label": label, "human_id": f"h{k % 5}"}]}
                     for label, word in fillers]
        rng.shuffle(sentences)
        items.append({"id": str(k), "target": target, "bias_type": rng.choice(("gender", "profession", "race",
                                                                                "religion")),
                      "context": f"The BLANK {target} {rng.choice(_CLAUSES)}.", "sentences": sentences})
    Path(path).write_text(json.dumps({"version": "1.0-generated", "data": {"intrasentence": items,
                                                                           "intersentence": []}}), encoding="utf-8")
    return Path(path)


def whole_sentence_logprob(model: Any, tokenizer: Any, sentence: str) -> float:
    """log p(sentence) in nats from one unbatched forward pass of ``[prefix] + tokens``.

    The prefix is the tokenizer's BOS, else its EOS, else nothing (then the first
    token is not scored): the convention of the benchmark evaluators, written
    out again without their batching.
    """

    ids = list(tokenizer(sentence, add_special_tokens=False)["input_ids"])
    prefix = next(([v] for v in (tokenizer.bos_token_id, tokenizer.eos_token_id) if isinstance(v, int)), [])
    return continuation_logprob(model, prefix, ids) if prefix else continuation_logprob(model, ids[:1], ids[1:])


def whole_sentence_logprobs(model: Any, tokenizer: Any, sentences: list[str],
                            max_logits: int = 2**26) -> list[float]:
    """``whole_sentence_logprob`` of each sentence (nats), with sentences of equal token count stacked into one
    forward pass: no padding, no attention mask, no logit trimming, so each row is the unbatched pass.

    A forward pass holds at most ``max_logits`` logits (``max_logits // (tokens * vocab)`` sentences, at least
    one). Fewer calls than one per sentence: half the time of ``whole_sentence_logprob`` on Gemma-3-270M.
    Raises ``ValueError`` for a sentence with no token to score.
    """
    import torch

    prefix = next(([v] for v in (tokenizer.bos_token_id, tokenizer.eos_token_id) if isinstance(v, int)), [])
    sequences = [prefix + list(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in sentences]
    by_length: dict[int, list[int]] = {}
    for i, sequence in enumerate(sequences):
        if len(sequence) < 2:
            raise ValueError(f"nothing to score in the sentence {sentences[i]!r}")
        by_length.setdefault(len(sequence), []).append(i)
    vocab = int(model.config.vocab_size)
    out = [0.0] * len(sequences)
    for length, rows in by_length.items():
        step = max(1, max_logits // (length * vocab))
        for start in range(0, len(rows), step):
            part = rows[start:start + step]
            ids = torch.tensor([sequences[i] for i in part])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), dim=-1)
            sums = logprobs.gather(2, ids[:, 1:, None])[..., 0].double().sum(1)
            for i, value in zip(part, sums.tolist()):
                out[i] = float(value)
    return out


def continuation_logprob(model: Any, context: list[int], target: list[int]) -> float:
    """log p(target | context) in nats from one unbatched, unpadded forward pass of ``context + target``."""
    import torch

    sequence = torch.tensor([list(context) + list(target)])
    with torch.no_grad():
        logits = model(input_ids=sequence).logits[0, -len(target) - 1:-1]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    return float(logprobs.gather(1, torch.tensor(target)[:, None]).double().sum())
