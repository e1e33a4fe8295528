"""Prompt files: read as UTF-8 with or without a BOM, strict rows, one-line errors at file:line, declared
attributes checked against the prompts."""

from __future__ import annotations

import pytest

from fairprune.cli import main as cli_main
from fairprune.core.contract.errors import PromptError
from fairprune.core.data.prompts import load_axis, load_prompt_groups, make_group
from fairprune.testing import snapshot

CSV = "axis,template_id,a,b\nrace,t1,The Black man ran,The white man ran\n"


def test_a_csv_with_a_byte_order_mark_reads_its_header(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_bytes("\ufeff".encode() + CSV.encode())
    (group,) = load_prompt_groups(path)
    assert group.axis == "race" and group.template_id == "t1"
    assert group.prompts == ("The Black man ran", "The white man ran")


@pytest.mark.parametrize(("row", "cells"), [("race,t2,The Black man sat,The white man sat,The Asian man sat", 5),
                                            ("race,t2,The Black man sat", 3)])
def test_a_csv_row_with_more_or_fewer_cells_than_the_header_is_refused_at_its_line(tmp_path, row, cells):
    path = tmp_path / "pairs.csv"
    path.write_text(CSV + row + "\n")
    with pytest.raises(PromptError) as info:
        load_prompt_groups(path)
    assert str(info.value) == (f"{path}:3: {cells} cells but the header has 4 columns (axis, template_id, a, b)")


@pytest.mark.parametrize(("name", "content", "words"), [
    ("bad.yaml", "pairs:\n  - [The Black man ran, The white man ran\n  - x: [", ["bad.yaml:", "not valid YAML"]),
    ("answer.yaml", "42\n", ["answer.yaml", "expected a list of prompt groups", "got int"]),
    ("bad.json", '{"pairs": [["a b", "a c"],]}', ["bad.json:1", "not valid JSON"]),
    ("latin1.csv", "a,b\nThe Black man ran,The white man ran caf\xe9\n".encode("latin-1"),
     ["latin1.csv:2", "not UTF-8"]),
    ("mapping.yaml", "pairs: 3\n", ["mapping.yaml", "got int"]),
    ("item.yaml", "- 7\n", ["item.yaml: group 1", "list of prompts"]),
])
def test_unreadable_prompt_files_are_one_line_naming_the_file(tmp_path, capsys, name, content, words):
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(PromptError) as info:
        load_prompt_groups(path)
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    before = snapshot(tmp_path)
    capsys.readouterr()
    # the prompts are read before the model: a missing model is never reached
    assert cli_main(["analyze", "--model", str(tmp_path / "no-model"), "--prompts", str(path),
                     "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"error: --prompts: {message}"]
    assert snapshot(tmp_path) == before


def test_an_axis_file_with_a_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "axis.yaml"
    path.write_text("name: a\ngroups:\n  x: [X]\n  y: [Y\ntemplates: ['{attribute} ran']\n")
    with pytest.raises(PromptError, match=r"axis\.yaml:\d+: not valid YAML"):
        load_axis(path)


def test_declared_attributes_must_be_all_that_differs():
    with pytest.raises(PromptError, match=r"differ outside their declared attributes 'Black' / 'white' "
                                          r"\('man' vs 'woman'\)"):
        make_group(["A Black man walked home.", "A white woman walked home."], attributes=["Black", "white"])
    group = make_group(["A Black man walked home.", "A white man walked home."], attributes=["Black", "white"])
    assert group.attributes == ("Black", "white")
    capitalised = make_group(["Black people ran.", "White people ran."], attributes=["Black", "white"])
    assert capitalised.prompts[1] == "White people ran."


def test_a_file_with_a_mismatched_group_names_its_line(tmp_path):
    path = tmp_path / "groups.jsonl"
    path.write_text('{"prompts": ["A Black man ran.", "A white man ran."], "attributes": ["Black", "white"]}\n'
                    '{"prompts": ["A Black man ran.", "A white woman ran."], "attributes": ["Black", "white"]}\n')
    with pytest.raises(PromptError, match=r"groups\.jsonl:2: .*declared attributes"):
        load_prompt_groups(path)
