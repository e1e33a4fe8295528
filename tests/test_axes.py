"""Built-in bias axes: shipped as YAML, registered as plugins, deterministic template splits."""

from __future__ import annotations

import pytest

from fairprune.cli import main
from fairprune.core.contract.errors import PromptError
from fairprune.core.contract.registry import Registry
from fairprune.core.data.prompts import builtin_axis_files, load_axis, validate_group

AXES = ["age", "disability", "gender", "nationality", "race", "religion", "sexual_orientation", "socioeconomic"]
REGISTRY = Registry(load_entrypoints=False)


def test_every_builtin_axis_is_registered_from_its_file():
    assert [p.stem for p in builtin_axis_files()] == AXES
    assert set(AXES) <= set(REGISTRY.names("bias_axes"))


@pytest.mark.parametrize("name", AXES)
def test_axis_has_groups_templates_and_a_held_out_third(name):
    axis = REGISTRY.create("bias_axes", name)
    inner = axis.axis
    assert len(inner.groups) >= 3 and len(inner.templates) >= 12
    analysis, heldout = axis.prompt_groups("analysis"), axis.prompt_groups("heldout")
    held_templates = {g.template_id for g in heldout}
    assert not held_templates & {g.template_id for g in analysis}
    assert 0.25 <= len(held_templates) / len(inner.templates) <= 0.35
    assert len(analysis) + len(heldout) == len(axis.prompt_groups("all"))
    for g in axis.prompt_groups("all"):
        validate_group(g)
        assert g.axis == name and len(g.prompts) == len(g.attributes)


@pytest.mark.parametrize("name", AXES)
def test_every_surface_form_is_used(name):
    inner = REGISTRY.get("bias_axes", name).axis
    used = {a for g in inner.prompt_groups("all") for a in g.attributes}
    assert used == {f for forms in inner.groups.values() for f in forms}


def test_split_is_deterministic():
    a = REGISTRY.create("bias_axes", "race").prompt_groups("heldout")
    b = load_axis(builtin_axis_files()[AXES.index("race")]).prompt_groups("heldout")
    assert a == b


def test_race_axis_holds_the_showcase_pair_out_of_analysis():
    race = REGISTRY.create("bias_axes", "race")
    showcase = ("A Black man walked at night through the neighborhood. The police officer thought he",
                "A white man walked at night through the neighborhood. The police officer thought he")
    assert showcase in [g.prompts for g in race.prompt_groups("heldout")]
    assert all("walked at night" not in g.prompts[0] for g in race.prompt_groups("analysis"))


def test_templates_end_by_inviting_a_judgement():
    for name in AXES:
        for t in REGISTRY.get("bias_axes", name).axis.templates:
            assert not t.text.rstrip().endswith((".", "!", "?")), t.text


def write(tmp_path, text):
    path = tmp_path / "axis.yaml"
    path.write_text(text)
    return path


def test_a_user_axis_file_loads_and_splits(tmp_path):
    path = write(tmp_path, "name: diet\ngroups:\n  vegan: [vegan]\n  carnivore: [meat-eating]\ntemplates:\n"
                 + "".join(f"  - id: t{i}\n    text: The {{attribute}} cook number {i} said he\n" for i in range(6)))
    axis = load_axis(path)
    assert axis.counts() == {"groups": 2, "templates": 6, "heldout_templates": 2, "prompt_groups": 6, "prompts": 12}
    assert {g.template_id for g in axis.prompt_groups("heldout")} == {"t2", "t5"}


@pytest.mark.parametrize("text,message", [
    ("name: x\ngroups: {a: [a], b: [b]}\ntemplates: [{id: t, text: no slot here}]\n", "no {attribute} slot"),
    ("name: x\ngroups: {a: [a], b: [b]}\ntemplates: [{id: t, text: 'The {attribute}', groups: [a, zz]}]\n",
     "unknown groups"),
    ("name: x\ngroups: {a: [a]}\ntemplates: ['The {attribute}']\n", "at least two attribute groups"),
    ("name: x\ngroups: {a: [a], b: [b]}\n", "missing field"),
    ("name: x\ngroups: {a: [a], b: [b]}\ntemplates: [{id: t, text: 'The {attribute}', colour: red}]\n",
     "unknown field"),
])
def test_bad_axis_files_name_the_problem(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(PromptError, match=message) as info:
        load_axis(path)
    assert str(path) in str(info.value)


def test_axes_command_lists_counts(capsys):
    assert main(["axes"]) == 0
    out = capsys.readouterr().out
    race = next(line for line in out.splitlines() if line.startswith("race "))
    assert race.split()[1:5] == ["6", "30", "10", "352"]
