"""Prompt validation and user prompt files: members differ only in the attribute span, clear errors otherwise."""

from __future__ import annotations

import json

import pytest

from fairprune.core.contract.errors import PromptError
from fairprune.core.contract.protocols import PromptGroup
from fairprune.core.data.groups import split_by_template
from fairprune.core.data.prompts import differing_spans, load_prompt_groups, make_group, pairs_to_groups, validate_group


def group(*prompts, attributes=()):
    return PromptGroup("test", "t0", tuple(attributes), tuple(prompts))


def test_single_word_and_multi_word_attributes_are_valid():
    validate_group(group("The Black man said he", "The African American man said he", "The white man said he",
                         attributes=("Black", "African American", "white")))
    validate_group(group("The Middle Eastern man said", "The Native American man said"))


def test_a_repeated_attribute_slot_is_valid():
    validate_group(group("The Black man saw another Black man", "The white man saw another white man"))


def test_identical_prompts_are_rejected():
    with pytest.raises(PromptError, match="identical prompts: 'The man said'"):
        validate_group(group("The man said", "The man said"))


def test_prompts_that_differ_elsewhere_are_rejected_with_both_prompts_quoted():
    a, b = "The Black man walked home. He", "The white man walked home. She"
    with pytest.raises(PromptError, match="differ in more than the attribute span") as info:
        validate_group(group(a, b))
    assert a in str(info.value) and b in str(info.value)


def test_empty_and_lonely_prompts_are_rejected():
    with pytest.raises(PromptError, match="empty prompt"):
        validate_group(group("The Black man", "   "))
    with pytest.raises(PromptError, match="at least two"):
        validate_group(group("The Black man"))


def test_an_attribute_missing_from_its_prompt_is_rejected():
    with pytest.raises(PromptError, match="does not contain its attribute 'Asian'"):
        validate_group(group("The Black man", "The white man", attributes=("Black", "Asian")))


def test_different_token_counts_are_fine_and_attributes_are_inferred():
    g = make_group(["A Black man walked", "A Middle Eastern man walked"])
    assert g.attributes == ("Black", "Middle Eastern")


def test_differing_spans_keeps_hyphenated_words_whole():
    assert differing_spans("The able-bodied man", "The wheelchair-using man") == [("able-bodied", "wheelchair-using")]


def test_pairs_become_validated_groups():
    groups = pairs_to_groups([("The Black man ran", "The white man ran")], axis="race")
    assert groups[0].axis == "race" and groups[0].attributes == ("Black", "white")
    with pytest.raises(PromptError):
        pairs_to_groups([("The Black man ran home", "The white man ran away")])


def test_load_prompt_groups_from_jsonl_csv_and_yaml(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompts": ["The Black man ran", "The white man ran"],
                                                  "template_id": "run"}) + "\n"
                                      + json.dumps(["A rich woman sat", "A poor woman sat"]) + "\n")
    (tmp_path / "p.csv").write_text("template_id,a,b,c\nx,The Black man ran,The white man ran,The Asian man ran\n")
    (tmp_path / "p.yaml").write_text("axis: wealth\npairs:\n  - [A rich woman sat, A poor woman sat]\n")
    jsonl = load_prompt_groups(tmp_path / "p.jsonl")
    assert [g.template_id for g in jsonl] == ["run", "p-1"] and jsonl[1].attributes == ("rich", "poor")
    csv_groups = load_prompt_groups(tmp_path / "p.csv")
    assert csv_groups[0].prompts[2] == "The Asian man ran" and csv_groups[0].template_id == "x"
    assert load_prompt_groups(tmp_path / "p.yaml")[0].axis == "wealth"


def test_a_bad_line_in_a_prompt_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('["A b", "A c"]\n{not json\n')
    with pytest.raises(PromptError, match="bad.jsonl:2"):
        load_prompt_groups(path)
    path.write_text('["The Black man ran", "The white man walked"]\n')
    with pytest.raises(PromptError, match="differ in more than"):
        load_prompt_groups(path)


def test_split_groups_holds_out_every_third_template_per_axis():
    groups = pairs_to_groups([(f"The Black man {w}", f"The white man {w}") for w in "abcdefghi"])
    held = split_by_template(groups, "heldout")
    analysis = split_by_template(groups, "analysis")
    assert [g.template_id for g in held] == ["custom-2", "custom-5", "custom-8"]
    assert len(analysis) == 6 and not set(map(id, held)) & set(map(id, analysis))
    assert split_by_template(groups, "all") == groups
