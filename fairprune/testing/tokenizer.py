"""A tiny word-level tokenizer built in code, for offline tests of prompt handling.

Its vocabulary fits the tiny models (``VOCAB_SIZE`` = 128 ids): special tokens,
common English words and a few demographic words; anything else maps to
``<unk>``. It is a real ``PreTrainedTokenizerFast`` (padding side, pad token,
attention masks and ``decode`` all behave as with a hub tokenizer).
"""

from __future__ import annotations

from typing import Any

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>")

WORDS: tuple[str, ...] = tuple("""
the a an is was are were be been has have had do does did not no yes and or but if then so
of to in on at by for with from as that this these those it its he she they we you i his her
their our my your man woman person people men women boy girl child family friend doctor nurse
teacher engineer worker student black white asian hispanic latino arab jewish muslim christian
young old rich poor good bad kind smart strong quiet loud new known very often always never
works lives went said says walked into room city town job home school because who what why
""".split())

VOCAB: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(dict.fromkeys(WORDS)) + (".", ",", "?", "!"))}


def tiny_tokenizer(padding_side: str = "right", **kwargs: Any) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` with pad/bos/eos/unk set; ids < 128."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel(vocab=dict(VOCAB), unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        padding_side=padding_side, **kwargs)


#: printable ASCII, one id per character: any English prompt tokenizes, and differs where its text differs
CHARACTERS: str = "".join(chr(c) for c in range(32, 127))


def tiny_char_tokenizer(padding_side: str = "right", **kwargs: Any) -> Any:
    """A character-level ``PreTrainedTokenizerFast`` (ids < 100): the built-in axes tokenize on tiny models."""
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(CHARACTERS))}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        padding_side=padding_side, **kwargs)


#: a recall-prompt file (axis file format) in the tiny tokenizer's words: three groups, three templates that state
#: a group and ask it back; for tests of the recall guard (``method.recall.prompts``)
TINY_RECALL_FILE = """\
name: race
groups:
  Black: [black]
  white: [white]
  Asian: [asian]
templates:
  - {id: r0, text: "the {attribute} man said that he is"}
  - {id: r1, text: "my friend is {attribute} so my friend is"}
  - {id: r2, text: "the family is {attribute} and the child is"}
"""
