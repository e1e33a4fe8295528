"""Broken benchmark and axis files are refused by the CLI before the model loads, in one line naming the file,
the line (or JSON node, or template) and the field, with nothing written.

Each case starts from a valid file of the real format and removes or empties one
required field. The model source of every config does not exist, so reaching the
model would end in another message: the message asserted proves the file was
read first.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from benchmark_helpers import bbq_record, stereoset_item, write_jsonl, write_stereoset, write_winobias

from fairprune.cli import main as cli_main
from fairprune.testing import snapshot
from fairprune.testing.benchmarks import crows_pairs_rows, write_crows_pairs


def run_cli(tmp_path: Path, capsys, evaluator: str, path: Path, extra: dict | None = None) -> str:
    """``fairprune run`` on a config whose one evaluator reads ``path``; the single stderr line (exit 1)."""
    config = {"model": {"source": str(tmp_path / "no-model")}, "output": {"dir": str(tmp_path / "out")},
              "evaluation": {"evaluators": [{"name": evaluator, "params": {"path": str(path), **(extra or {})}}]}}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli_main(["run", str(config_file)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert snapshot(tmp_path) == before
    return lines[0]


# -- CrowS-Pairs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("column", ["sent_more", "sent_less", "stereo_antistereo", "bias_type"])
def test_crows_pairs_without_a_column_names_it(tmp_path, capsys, column):
    good = write_crows_pairs(tmp_path / "good.csv", n=30).read_text().splitlines()
    header = good[0].split(",")
    bad = tmp_path / "crows.csv"
    bad.write_text("\n".join([",".join(c if c != column else "other" for c in header), *good[1:]]) + "\n")
    message = run_cli(tmp_path, capsys, "crows_pairs", bad)
    assert str(bad) in message and "line 1" in message and f"missing column {column!r}" in message


@pytest.mark.parametrize("column", [0, 1, 2, 3])
def test_crows_pairs_with_an_empty_field_names_its_line(tmp_path, capsys, column):
    rows = crows_pairs_rows(30)
    rows[17] = tuple("" if k == column else v for k, v in enumerate(rows[17]))  # type: ignore[assignment]
    bad = write_crows_pairs(tmp_path / "crows.csv", rows)
    message = run_cli(tmp_path, capsys, "crows_pairs", bad)
    name = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")[column]
    assert str(bad) in message and "line 19" in message and f"{name!r}" in message


def test_crows_pairs_with_an_unknown_direction_names_the_allowed_values(tmp_path, capsys):
    rows = crows_pairs_rows(30)
    rows[4] = (*rows[4][:2], "stereotype", rows[4][3])
    message = run_cli(tmp_path, capsys, "crows_pairs", write_crows_pairs(tmp_path / "crows.csv", rows))
    assert "line 6" in message and "'stereo_antistereo'" in message and "'antistereo'" in message


# -- BBQ ----------------------------------------------------------------------------------------------

BBQ_FIELDS = ["context", "question", "ans0", "ans1", "ans2", "label", "context_condition", "question_polarity",
              "answer_info", "answer_info.ans1", "additional_metadata", "additional_metadata.stereotyped_groups"]


def bbq_file(path: Path, broken: int | None = None, drop: str | None = None, value: object = None) -> Path:
    records = [bbq_record("ambig", "neg", ("The grandfather", "The grandson", "Unknown"),
                          ("target", "other", "unknown"), 2) for _ in range(40)]
    if broken is not None and drop is not None:
        record = copy.deepcopy(records[broken])
        *parents, last = drop.split(".")
        node = record
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
        records[broken] = record
    return write_jsonl(path, records)


@pytest.mark.parametrize("field", BBQ_FIELDS)
def test_bbq_without_a_field_names_file_line_and_field(tmp_path, capsys, field):
    bad = bbq_file(tmp_path / "Age.jsonl", broken=23, drop=field)
    message = run_cli(tmp_path, capsys, "bbq", bad)
    assert str(bad) in message and "line 24" in message and f"missing field '{field}" in message


@pytest.mark.parametrize(("field", "value", "words"), [
    ("ans2", " ", "field 'ans2' is empty"), ("context", "", "field 'context' is empty"),
    ("label", 3, "field 'label' has 3"), ("context_condition", "vague", "'ambig', 'disambig'"),
    ("label", "1", "field 'label' must be int")])
def test_bbq_with_a_bad_value_names_file_line_and_field(tmp_path, capsys, field, value, words):
    bad = bbq_file(tmp_path / "Age.jsonl", broken=5, drop=field, value=value)
    message = run_cli(tmp_path, capsys, "bbq", bad)
    assert str(bad) in message and "line 6" in message and words in message


# -- StereoSet ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("drop", "words"), [
    ("target", "missing field 'target'"), ("bias_type", "missing field 'bias_type'"),
    ("sentences", "missing field 'sentences'"), ("sentences.1.sentence", "sentences[1]: missing field 'sentence'"),
    ("sentences.2.gold_label", "sentences[2]: missing field 'gold_label'"),
    ("sentences.0.sentence=", "sentences[0]: field 'sentence' is empty")])
def test_stereoset_without_a_field_names_the_node_and_field(tmp_path, capsys, drop, words):
    items = [stereoset_item("chess player", "profession", "The nerdy one.", "The cool one.", "The blue one.")
             for _ in range(20)]
    item = items[11]
    empty = drop.endswith("=")
    parts = drop.rstrip("=").split(".")
    node = item
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if empty:
        node[parts[-1]] = ""
    else:
        del node[parts[-1]]
    bad = write_stereoset(tmp_path / "dev.json", items)
    message = run_cli(tmp_path, capsys, "stereoset", bad)
    assert str(bad) in message and "data.intrasentence[11]" in message and words in message


def test_stereoset_without_the_intrasentence_part_names_it(tmp_path, capsys):
    bad = tmp_path / "dev.json"
    bad.write_text(json.dumps({"version": "1", "data": {"intersentence": []}}))
    assert "missing field 'data.intrasentence'" in run_cli(tmp_path, capsys, "stereoset", bad)


# -- WinoBias -----------------------------------------------------------------------------------------

PAIRS = {1: [(f"[The mechanic] fixed car {k} because [he] was paid.",
              f"[The mechanic] fixed car {k} because [she] was paid.") for k in range(30)],
         2: [("[The clerk] told [him] a story.", "[The clerk] told [her] a story.")] * 30}


@pytest.mark.parametrize(("line", "words"), [
    ("[The mechanic] fixed the car because [he] was paid.", "line 8: field 'sentence' must be '<number> <sentence>'"),
    ("8 The mechanic fixed the car because he was paid.", "line 8: field 'sentence' must mark the entity"),
    ("8", "line 8: field 'sentence' must be '<number> <sentence>'")])
def test_winobias_with_a_broken_line_names_file_line_and_field(tmp_path, capsys, line, words):
    directory = write_winobias(tmp_path / "wino", PAIRS, split="test")
    bad = directory / "anti_stereotyped_type1.txt.test"
    lines = bad.read_text().splitlines()
    lines[7] = line
    bad.write_text("\n".join(lines) + "\n")
    message = run_cli(tmp_path, capsys, "winobias", directory)
    assert str(bad) in message and words in message


def test_winobias_without_a_file_of_the_split_names_it(tmp_path, capsys):
    directory = write_winobias(tmp_path / "wino", PAIRS, split="test")
    (directory / "pro_stereotyped_type2.txt.test").unlink()
    message = run_cli(tmp_path, capsys, "winobias", directory)
    assert "pro_stereotyped_type2.txt.test" in message and "missing" in message


def test_winobias_with_a_misnumbered_line_names_the_real_line(tmp_path, capsys):
    directory = write_winobias(tmp_path / "wino", PAIRS, split="test")
    bad = directory / "anti_stereotyped_type1.txt.test"
    lines = bad.read_text().splitlines()
    lines[9] = "99" + lines[9][2:]
    bad.write_text("\n\n".join(lines) + "\n")  # blank lines between: line 10 of the data is line 19 of the file
    message = run_cli(tmp_path, capsys, "winobias", directory)
    assert str(bad) in message and "line 19" in message and "field 'number' is 99" in message


# -- axis files ---------------------------------------------------------------------------------------

AXIS = {"name": "mine", "groups": {"a": ["tall"], "b": ["short"]},
        "templates": [{"id": "t1", "text": "The {attribute} man ran."}, {"id": "t2", "text": "The {attribute} cat sat."}]}


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: d["templates"][1].update(text="The man sat."), ["template 't2' has no {attribute} slot"]),
    (lambda d: d["templates"][1].update(text=None), ["template 't2'", "field 'text'"]),
    (lambda d: d["groups"].update(b=[]), ["field 'groups.b' has no words"]),
    (lambda d: d["groups"].update(b=None), ["field 'groups.b' has no words"]),
    (lambda d: d["groups"].update(b=[" "]), ["field 'groups.b' needs non-empty words"]),
    (lambda d: d["groups"].update(b={"x": 1}), ["field 'groups.b' has no words"]),
    (lambda d: d.update(templates=None), ["field 'templates' must be a non-empty list"]),
    (lambda d: d.update(templates="The {attribute} man"), ["field 'templates' must be a non-empty list"]),
    (lambda d: d.pop("groups"), ["missing field(s) ['groups']"]),
])
def test_a_broken_axis_file_is_refused_by_the_cli_naming_file_template_and_field(tmp_path, capsys, change, words):
    data = copy.deepcopy(AXIS)
    change(data)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli_main(["analyze", "--model", str(tmp_path / "no-model"), "--axes", str(path),
                     "--out", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and all(w in lines[0] for w in words), lines
    assert snapshot(tmp_path) == before
