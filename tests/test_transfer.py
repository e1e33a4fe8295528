"""Transfer splits (other registers, first names), their per-split output-bias figures, generated analysis
templates and folds by register."""

from __future__ import annotations

import copy
import itertools
import re

import pytest

import fairprune as fp
from fairprune.core.contract.config import RunConfig
from fairprune.core.contract.errors import ConfigError, PromptError
from fairprune.core.contract.protocols import PromptGroup
from fairprune.core.contract.registry import get_registry
from fairprune.core.contract.results import EvalContext
from fairprune.core.data.groups import run_groups, run_transfer_groups, transfer_groups
from fairprune.core.data.prompts import AXIS_SPLITS, builtin_axis_files, load_axis
from fairprune.core.data.transfer import TRANSFER_SPLITS
from fairprune.core.method.attribution import template_folds
from fairprune.core.model.lm_scoring import last_token_logprobs
from fairprune.core.run.evaluation import compare_all, configure_evaluators, observe_all
from fairprune.plugins.evaluators.output_bias import js_divergence
from fairprune.testing import tiny_char_tokenizer, tiny_model

REGISTRY = get_registry()
RACE = load_axis(next(p for p in builtin_axis_files() if p.stem == "race"))
AXES_WITH_TRANSFER = [load_axis(p) for p in builtin_axis_files() if load_axis(p).transfer_splits()]


def texts(groups):
    return {p for g in groups for p in g.prompts}


def masked_templates(groups):
    """Each group's prompt with its member's attribute masked: the template text it came from."""
    return {p.replace(a, "{x}") for g in groups for a, p in zip(g.attributes, g.prompts)}


# -- the splits ----------------------------------------------------------------------------------

def test_race_has_every_transfer_split_with_seven_registers():
    assert RACE.transfer_splits() == TRANSFER_SPLITS
    registers = {g.register for g in RACE.prompt_groups("transfer_registers")}
    assert registers == {"dialogue", "news", "qa", "first_person", "form", "social_media", "fiction"}
    assert {g.register for g in RACE.prompt_groups("transfer_names")} >= {"dialogue", "news", "form", "narrative"}


@pytest.mark.parametrize("axis", AXES_WITH_TRANSFER, ids=lambda a: a.name)
def test_transfer_splits_share_no_template_id_or_text_with_analysis_or_heldout(axis):
    seen = axis.prompt_groups("analysis") + axis.prompt_groups("heldout")
    if axis.generator:
        seen += axis.prompt_groups("generated")
    for split in axis.transfer_splits():
        found = axis.prompt_groups(split)
        assert found, split
        ids = {g.template_id.split("/")[0] for g in found}
        assert not ids & {g.template_id for g in seen}, split
        assert not texts(found) & texts(seen), split
        assert not masked_templates(found) & masked_templates(seen), split
    assert not texts(axis.prompt_groups("transfer_registers")) & texts(axis.prompt_groups("transfer_names"))


@pytest.mark.parametrize("axis", AXES_WITH_TRANSFER, ids=lambda a: a.name)
def test_all_is_still_analysis_and_heldout_only(axis):
    everything = texts(axis.prompt_groups("all"))
    assert everything == texts(axis.prompt_groups("analysis")) | texts(axis.prompt_groups("heldout"))
    for split in axis.transfer_splits():
        assert not texts(axis.prompt_groups(split)) & everything


def test_race_heldout_split_keeps_its_templates():
    """Transfer prompts sit outside ``templates``, so the held-out templates (and old figures) are unchanged."""
    assert [g.template_id for g in RACE.prompt_groups("heldout")][::2] == [
        "police_night_walk", "apartment_viewing", "sentencing", "restaurant_service", "kitchen_fire_claim",
        "basketball_tryouts", "bail_hearing", "bakery_loan", "triage_chest_pain", "hotel_lobby"]
    assert len(RACE.prompt_groups("analysis")) == 40


def test_name_groups_match_sets_across_groups_and_member_order():
    groups = RACE.prompt_groups("transfer_names")
    by_name = {n: g for g, names in RACE.name_groups().items() for n in names}
    sets = RACE.names.sets
    assert list(by_name.values()).count("Black") == 8 and set(by_name.values()) == {"Black", "white", "Hispanic",
                                                                                     "Asian"}
    for g in groups:
        template, set_name = g.template_id.split("/")
        assert g.family == template and set_name in sets
        assert [by_name[a] for a in g.attributes] == ["Black", "white", "Hispanic", "Asian"]
        assert all(a in sets[set_name][by_name[a]] for a in g.attributes)  # one set: male or female names only
    assert len(groups) == len(RACE.names.templates) * sum(4 for _ in sets)  # 4 names per group and set


def test_pairs_and_axis_files_without_transfer_give_no_transfer_groups(tmp_path):
    path = tmp_path / "diet.yaml"
    path.write_text("name: diet\ngroups: {vegan: [vegan], carnivore: [meat-eating]}\ntemplates:\n"
                    + "".join(f"  - {{id: t{i}, text: 'The {{attribute}} cook {i} said he'}}\n" for i in range(3)))
    assert transfer_groups([str(path)], REGISTRY) == {}
    assert load_axis(path).prompt_groups("transfer_names") == []


def test_run_transfer_groups_follow_evaluation_axes():
    config = RunConfig.model_validate({"model": {"source": "x"}})
    found = run_transfer_groups(config, REGISTRY)
    assert set(found) == set(TRANSFER_SPLITS) and {g.axis for gs in found.values() for g in gs} == {"race"}
    config = RunConfig.model_validate({"model": {"source": "x"}, "evaluation": {"axes": ["sexual_orientation"]}})
    assert all(g.axis == "sexual_orientation" for gs in run_transfer_groups(config, REGISTRY).values() for g in gs)


@pytest.mark.parametrize("section,message", [
    ("transfer: {names: {male: {Black: [Jamal], zz: [Greg]}}, name_templates: [{id: n, text: '{name} said'}]}",
     "unknown groups"),
    ("transfer: {names: {male: {Black: [Jamal], white: [Greg]}}}", "name_templates"),
    ("transfer: {names: {male: {Black: [Jamal], white: [Greg]}}, name_templates: [{id: n, text: 'no slot'}]}",
     "{name} slot"),
    ("transfer: {registers: [{id: r, text: 'The {attribute} said'}]}", "needs id, text and register"),
    ("transfer: {registers: [{id: t0, text: 'The {attribute} said', register: news}]}", "used twice"),
    ("transfer: {voices: []}", "unknown field"),
])
def test_bad_transfer_sections_are_refused_naming_the_field(tmp_path, section, message):
    path = tmp_path / "axis.yaml"
    path.write_text("name: x\ngroups: {Black: [Black], white: [white]}\ntemplates: [{id: t0, text: 'The {attribute} "
                    f"man said'}}]\n{section}\n")
    with pytest.raises(PromptError, match="axis.yaml") as info:
        load_axis(path)
    assert message in str(info.value)


# -- per-split output bias -----------------------------------------------------------------------

def names_group(template, names):
    return PromptGroup("race", template, names, tuple(f"Then {n} said" for n in names), register="news")


def test_output_bias_reports_each_split_on_its_own_groups_by_hand():
    base = tiny_model("llama")
    pruned = copy.deepcopy(base)
    fp.prune(pruned, {0: [0, 1, 2, 3], 1: [5, 6]})
    tok = tiny_char_tokenizer()
    heldout = RACE.prompt_groups("heldout")[:4]
    registers = RACE.prompt_groups("transfer_registers")[:4]
    names = [names_group("n1/male", ("Jamal", "Greg")), names_group("n1/male", ("Darnell", "Brad")),
             names_group("n2/male", ("Tyrone", "Todd"))]
    context = EvalContext(tokenizer=tok, groups=heldout, registry=REGISTRY, progress=False,
                          transfer={"transfer_registers": registers, "transfer_names": names})
    evaluators = configure_evaluators(REGISTRY, [("output_bias", {"n_boot": 20})])
    result = compare_all(evaluators, observe_all(evaluators, base, context, "base", None),
                         observe_all(evaluators, pruned, context, "pruned", None), context)["output_bias"]
    m = result.metrics

    def js(model, a, b):
        lp = last_token_logprobs(model, tok, [a, b], 8, False, "")
        return js_divergence(lp[0], lp[1]).item()

    for label, model in (("base", base), ("pruned", pruned)):
        between = [js(model, g.prompts[0], g.prompts[1]) for g in names]
        assert m[f"js_{label}@names"] == pytest.approx(sum(between) / 3, rel=1e-5)
        # within: two names of one group in one template and set (n1: Jamal/Darnell and Greg/Brad); n2 has none
        within = (js(model, "Then Jamal said", "Then Darnell said") + js(model, "Then Greg said", "Then Brad said")) / 2
        assert m[f"js_within_{label}@names"] == pytest.approx(within, rel=1e-5)
    assert m["n_groups@names"] == 3 and m["n_floor_templates@names"] == 1
    assert m["n_groups@registers"] == 4 and m["n_groups"] == 4
    assert m["js_reduction_pct@names"] == pytest.approx(
        100 * (m["js_base@names"] - m["js_pruned@names"]) / m["js_base@names"])
    assert m["js_base@registers"] != m["js_base"]  # measured on other prompts
    lo, hi = result.intervals["js_within_reduction_pct@names"]
    assert lo <= hi
    for key in ("js_reduction_pct@registers", "js_within_reduction_pct@registers", "js_reduction_pct@names",
                "js_within_reduction_pct@names"):
        assert key in result.intervals and any(h["key"] == key for h in result.headlines)
    assert "| first names | 3 |" in result.summary and "| other registers | 4 |" in result.summary
    assert len(result.tables["groups@names"]) == 3


def test_names_of_different_groups_at_one_position_are_no_floor():
    tok = tiny_char_tokenizer()
    model = tiny_model("llama")
    crossed = [names_group("n1/male", ("Jamal", "Greg")), names_group("n1/male", ("Brad", "Darnell"))]
    context = EvalContext(tokenizer=tok, groups=RACE.prompt_groups("heldout")[:2], registry=REGISTRY,
                          progress=False, transfer={"transfer_names": crossed})
    evaluators = configure_evaluators(REGISTRY, [("output_bias", {"n_boot": 20})])
    seen = observe_all(evaluators, model, context, "base", None)
    m = compare_all(evaluators, seen, seen, context)["output_bias"].metrics
    assert m["n_floor_templates@names"] == 0


def test_transfer_can_be_switched_off_and_evaluate_reads_the_axes_transfer_splits():
    base = tiny_model("llama")
    tok = tiny_char_tokenizer()
    off = fp.evaluate(base, base, tok, evaluators=["output_bias"], axes=["race"],
                      params={"output_bias": {"n_boot": 20, "transfer": False}}, progress=False)["output_bias"]
    assert not any("@" in k for k in off.metrics)
    on = fp.evaluate(base, base, tok, evaluators=["output_bias"], axes=["race"],
                     params={"output_bias": {"n_boot": 20}}, progress=False)["output_bias"]
    assert on.metrics["n_groups@registers"] == len(RACE.prompt_groups("transfer_registers"))
    assert on.metrics["n_groups@names"] == len(RACE.prompt_groups("transfer_names"))
    assert on.metrics["js_reduction_pct@names"] == 0.0 and on.metrics["n_floor_templates@names"] > 0


# -- generated analysis templates ----------------------------------------------------------------

def test_generator_is_deterministic_and_covers_every_register_group_and_form():
    first, again = RACE.prompt_groups("generated"), load_axis(RACE.source).prompt_groups("generated")
    assert first == again and len(first) == 2 * RACE.generator.templates
    registers = {g.register for g in first}
    assert registers == set(RACE.generator.frames)
    per_register = [sum(g.register == r for g in first) for r in registers]
    assert max(per_register) - min(per_register) <= 2
    forms = {a for g in first for a in g.attributes}
    assert forms == {f for fs in RACE.attribute_groups().values() for f in fs}
    assert all(len(g.prompts) == len(RACE.groups) for g in first)
    assert len({g.template_id for g in first}) == RACE.generator.templates


def test_generated_registers_are_not_transfer_registers_and_prompts_are_new():
    generated = RACE.prompt_groups("generated")
    assert not {g.register for g in generated} & {g.register for g in RACE.prompt_groups("transfer_registers")}
    held = RACE.prompt_groups("heldout")
    assert not texts(generated) & texts(held)
    assert not masked_templates(generated) & masked_templates(held)


def test_analysis_prompts_option_selects_generated_templates():
    default = RunConfig.model_validate({"model": {"source": "x"}})
    assert [g.template_id for g in run_groups(default, "analysis", REGISTRY).groups] == [
        g.template_id for g in RACE.prompt_groups("analysis")]
    generated = RunConfig.model_validate({"model": {"source": "x"}, "bias": {"analysis_prompts": "generated"}})
    assert run_groups(generated, "analysis", REGISTRY).groups == RACE.prompt_groups("generated")
    both = RunConfig.model_validate({"model": {"source": "x"}, "bias": {"analysis_prompts": "both"}})
    assert len(run_groups(both, "analysis", REGISTRY).groups) == 40 + 2 * RACE.generator.templates
    assert run_groups(generated, "heldout", REGISTRY).groups == RACE.prompt_groups("heldout")
    no_generator = RunConfig.model_validate({"model": {"source": "x"}, "bias": {"analysis_prompts": "generated",
                                                                                "axes": ["disability"]}})
    with pytest.raises(PromptError, match="'disability' has no prompt groups in split 'generated'"):
        run_groups(no_generator, "analysis", REGISTRY)


def test_unknown_split_is_still_an_error():
    with pytest.raises(ValueError, match="split must be one of"):
        RACE.prompt_groups("train")
    assert set(AXIS_SPLITS) >= {"analysis", "heldout", "all", "generated", *TRANSFER_SPLITS}


# -- folds ---------------------------------------------------------------------------------------

def test_folds_by_register_keep_each_register_in_one_fold():
    groups = RACE.prompt_groups("generated")
    folds = template_folds(groups, 3, by="register")
    registers = [{g.register for g in fold} for fold in folds]
    assert all(len(r) == 2 for r in registers)
    assert all(not a & b for a, b in itertools.combinations(registers, 2))
    assert sum(map(len, folds)) == len(groups)


def test_folds_by_family_keep_each_context_in_one_fold_and_template_folds_are_unchanged():
    groups = RACE.prompt_groups("generated")
    families = [{g.family for g in fold} for fold in template_folds(groups, 2, by="family")]
    assert not families[0] & families[1] and families[0] | families[1] == {c["id"] for c in RACE.generator.contexts}
    by_template = template_folds(RACE.prompt_groups("analysis"), 2)
    assert [sorted({g.template_id for g in f}) for f in by_template] == [
        sorted({g.template_id for g in f}) for f in template_folds(RACE.prompt_groups("analysis"), 2, "template")]
    templates = sorted({g.template_id for g in RACE.prompt_groups("analysis")})
    assert {g.template_id for g in by_template[0]} == set(templates[0::2])


def test_folds_by_register_fall_back_to_templates_and_refuse_too_few_units():
    plain = RACE.prompt_groups("analysis")
    assert template_folds(plain, 2, by="register") == template_folds(plain, 2)
    with pytest.raises(ConfigError, match="7 register"):
        template_folds(RACE.prompt_groups("transfer_registers"), 8, by="register")
    with pytest.raises(ConfigError, match="fold_by"):
        template_folds(plain, 2, by="color")


@pytest.mark.parametrize("axis", AXES_WITH_TRANSFER, ids=lambda a: a.name)
def test_articles_agree_with_every_group_word(axis):
    """A template written as "a {attribute}" breaks for "Asian" or "elderly": every filled prompt is checked."""
    found = [g for s in axis.transfer_splits() for g in axis.prompt_groups(s)]
    found += axis.prompt_groups("generated")
    for prompt in texts(found):
        assert not re.search(r"\b[Aa] [AEIOaeio]", prompt), prompt  # "a used car" is right
        assert not re.search(r"\b[Aa]n [^AEIOUaeiou\W]", prompt), prompt


def test_generated_analysis_prompts_missing_from_an_axis_are_refused_before_anything_runs(tmp_path):
    from fairprune.core.run.pipeline import prepare

    out = tmp_path / "out"
    config = {"model": {"source": "smollm2-135m"}, "output": {"dir": str(out)},
              "bias": {"axes": ["race", "disability"], "analysis_prompts": "both"}}
    with pytest.raises(PromptError, match=r"^bias\.analysis_prompts: bias axis 'disability' has no prompt groups"):
        prepare(config, registry=REGISTRY, progress=False)
    assert not out.exists()


def test_fold_by_is_a_param_of_the_attribution_method():
    from fairprune.core.contract.config import AttributionParams

    assert AttributionParams().fold_by == "template"
    assert AttributionParams.model_validate({"folds": 2, "fold_by": "register"}).fold_by == "register"
    with pytest.raises(Exception, match="fold_by"):
        AttributionParams.model_validate({"fold_by": "color"})
