"""The ```python blocks of CONTRIBUTING.md and README.md run, so the docs cannot rot.

Convention (documented in CONTRIBUTING.md): every ```python block runs, in
order, in one namespace per file, in a temporary working directory; a block
preceded by the line ``<!-- no-run -->`` is only compiled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("CONTRIBUTING.md", "README.md")
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Snippet:
    """One ```python block: where it starts, its code, and whether it runs."""

    doc: str
    line: int
    code: str
    runs: bool


def snippets(text: str, doc: str) -> list[Snippet]:
    """The python blocks of a markdown text, each marked by the ``<!-- no-run -->`` line before it."""
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        line = text.count("\n", 0, match.start()) + 1
        found.append(Snippet(doc, line, match.group(1), before != NO_RUN))
    return found


def doc_snippets(doc: str) -> list[Snippet]:
    path = ROOT / doc
    return snippets(path.read_text(encoding="utf-8"), doc) if path.is_file() else []


def test_extraction_follows_the_convention() -> None:
    text = ("intro\n```python\na = 1\n```\n\n<!-- no-run -->\n```python\nraise SystemExit\n```\n"
            "```sh\nmake test\n```\n```python\nb = a + 1\n```\n")
    found = snippets(text, "x.md")
    assert [(s.line, s.code, s.runs) for s in found] == [(2, "a = 1\n", True), (7, "raise SystemExit\n", False),
                                                          (13, "b = a + 1\n", True)]


def test_contributing_has_runnable_snippets() -> None:
    assert sum(s.runs for s in doc_snippets("CONTRIBUTING.md")) >= 8


@pytest.mark.parametrize("doc", DOCS)
def test_every_snippet_compiles(doc: str) -> None:
    for snippet in doc_snippets(doc):
        compile(snippet.code, f"{doc}:{snippet.line}", "exec")


@pytest.mark.parametrize("doc", DOCS)
def test_snippets_run_in_order(doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runnable = [s for s in doc_snippets(doc) if s.runs]
    if not runnable:
        pytest.skip(f"{doc} has no runnable python blocks")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{Path(doc).stem.lower()}"}
    for snippet in runnable:
        code = compile(snippet.code, f"{doc}:{snippet.line}", "exec")
        try:
            exec(code, namespace)  # noqa: S102 - the point of this test
        except Exception as exc:
            pytest.fail(f"{doc}, python block at line {snippet.line} failed: {type(exc).__name__}: {exc}")
