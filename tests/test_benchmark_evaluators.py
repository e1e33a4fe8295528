"""The field's benchmarks read from files: CrowS-Pairs, BBQ, WinoBias, StereoSet.

Every figure is checked against a hand computation on files written here, with
a rigged unigram model whose log-probabilities are known (``benchmark_helpers``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from benchmark_helpers import (
    UnigramLM,
    bbq_record,
    compare,
    context,
    stereoset_item,
    write_crows,
    write_jsonl,
    write_stereoset,
    write_winobias,
)
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fairprune.core.contract.errors import ConfigError
from fairprune.plugins.evaluators.bbq import BBQEvaluator, group_labels
from fairprune.plugins.evaluators.crows_pairs import CrowsPairsEvaluator
from fairprune.plugins.evaluators.stereoset import StereoSetEvaluator
from fairprune.plugins.evaluators.winobias import WinoBiasEvaluator

# the base model prefers "a" over every other character, the pruned one prefers "b"
A_MODEL, B_MODEL = UnigramLM({"a": 1.0}), UnigramLM({"b": 1.0})

CROWS_ROWS = [
    ("The a man.", "The b man.", "stereo", "race-color"),         # a wins: +1 nat for the more-stereotyping one
    ("The b one.", "The a one.", "antistereo", "race-color"),     # b loses: -1
    ("An aa job.", "An bb job.", "stereo", "gender"),             # +2
    ("The c cat.", "The d cat.", "stereo", "gender"),             # tie: not stereotyping (authors' script)
]


# -- CrowS-Pairs ------------------------------------------------------------------------------------

def test_crows_pairs_percentages_and_differences_by_hand(tmp_path):
    evaluator = CrowsPairsEvaluator().configure({"path": str(write_crows(tmp_path / "crows.csv", CROWS_ROWS)),
                                                 "n_boot": 200})
    result = compare(evaluator, A_MODEL, B_MODEL)
    gap = A_MODEL.logprob("a") - A_MODEL.logprob("b")  # 1 nat: the rigged logits differ by exactly 1
    assert gap == pytest.approx(1.0)
    m = result.metrics
    assert m["pct_stereotype_base"] == pytest.approx(50.0)        # rows 1 and 3 of 4
    assert m["pct_stereotype_pruned"] == pytest.approx(25.0)      # only row 2 under the b-model
    assert m["pct_stereotype_change"] == pytest.approx(-25.0)
    assert m["mean_abs_logprob_diff_base"] == pytest.approx((1 + 1 + 2 + 0) / 4)
    assert m["pct_stereotype_race_color_base"] == pytest.approx(50.0)
    assert m["pct_stereotype_gender_base"] == pytest.approx(50.0)
    assert m["pct_stereotype_gender_pruned"] == pytest.approx(0.0)
    assert m["n_pairs"] == 4 and m["n_pairs_gender"] == 2
    lo, hi = result.intervals["pct_stereotype_base"]
    assert 0.0 <= lo <= 50.0 <= hi <= 100.0
    assert "| % stereotype (all) | 50 [" in result.summary


def test_crows_pairs_conditions_on_bos_so_the_first_token_counts(tmp_path):
    # the two sentences differ only in their first character: without a prefix token they would tie
    rows = [("a cat.", "b cat.", "stereo", "age")]
    evaluator = CrowsPairsEvaluator().configure({"path": str(write_crows(tmp_path / "c.csv", rows))})
    observed = evaluator.observe(A_MODEL, context())
    assert observed["sent_more"][0] - observed["sent_less"][0] == pytest.approx(1.0, abs=1e-5)


def test_crows_pairs_filter_and_unknown_filter_value(tmp_path):
    path = str(write_crows(tmp_path / "crows.csv", CROWS_ROWS))
    evaluator = CrowsPairsEvaluator().configure({"path": path, "bias_types": ["gender"]})
    assert [p.bias_type for p in evaluator.examples] == ["gender", "gender"]
    with pytest.raises(ConfigError, match=r"crows_pairs.bias_types: 'religon' not in the data; it has 'gender'"):
        CrowsPairsEvaluator().configure({"path": path, "bias_types": ["religon"]})


def test_crows_pairs_accepts_a_bom_and_crlf_line_ends(tmp_path):
    plain = CrowsPairsEvaluator().configure({"path": str(write_crows(tmp_path / "a.csv", CROWS_ROWS))})
    windows = CrowsPairsEvaluator().configure(
        {"path": str(write_crows(tmp_path / "b.csv", CROWS_ROWS, bom=True, newline="\r\n"))})
    assert windows.examples == plain.examples


@pytest.mark.parametrize("content, line, message", [
    (",sent_more,sent_less,bias_type\n0,a,b,age\n", 1, "missing column 'stereo_antistereo'"),
    (",sent_more,sent_less,stereo_antistereo,bias_type\n0,a,b,stereo,age\n1,a,b,sterio,age\n", 3,
     "field 'stereo_antistereo' has 'sterio'; expected one of 'stereo', 'antistereo'"),
    (",sent_more,sent_less,stereo_antistereo,bias_type\n0,a,,stereo,age\n", 2, "field 'sent_less' is empty"),
    ("", None, "holds no examples"),
])
def test_crows_pairs_malformed_files_name_file_line_and_field(tmp_path, content, line, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        CrowsPairsEvaluator().configure({"path": str(path)})
    text = str(info.value)
    assert "\n" not in text and str(path) in text and message in text
    if line is not None:
        assert f"line {line}:" in text


def test_params_are_validated_with_the_field_named(tmp_path):
    with pytest.raises(ValidationError, match="path"):
        CrowsPairsEvaluator().configure({})
    with pytest.raises(ValidationError, match="no such file"):
        CrowsPairsEvaluator().configure({"path": str(tmp_path / "absent.csv")})
    with pytest.raises(ValidationError, match="bias_type"):
        CrowsPairsEvaluator().configure({"path": str(write_crows(tmp_path / "c.csv", CROWS_ROWS)),
                                         "bias_type": ["age"]})
    with pytest.raises(ConfigError, match="needs params with a 'path'"):
        CrowsPairsEvaluator().observe(A_MODEL, context())


def test_limit_takes_a_seeded_sample_in_file_order(tmp_path):
    rows = [(f"The {c} x.", "The b x.", "stereo", "age") for c in "acdefghijk"]
    path = str(write_crows(tmp_path / "c.csv", rows))
    first = CrowsPairsEvaluator().configure({"path": path, "limit": 4})
    again = CrowsPairsEvaluator().configure({"path": path, "limit": 4})
    other = CrowsPairsEvaluator().configure({"path": path, "limit": 4, "sample_seed": 1})
    assert first.examples == again.examples and len(first.examples) == 4
    assert first.examples != other.examples
    order = [rows.index((p.sent_more, p.sent_less, p.direction, p.bias_type)) for p in first.examples]
    assert order == sorted(order)


def test_an_observation_of_other_examples_is_refused(tmp_path):
    evaluator = CrowsPairsEvaluator().configure({"path": str(write_crows(tmp_path / "c.csv", CROWS_ROWS))})
    with pytest.raises(ConfigError, match="does not match the 4 examples"):
        evaluator.compare({"sent_more": [0.0], "sent_less": [1.0]}, {"sent_more": [0.0], "sent_less": [1.0]},
                          context())


# -- BBQ --------------------------------------------------------------------------------------------

# (condition, polarity, roles of ans0..ans2, gold label); the answer text "a" is what the a-model picks,
# "b" what the b-model picks, "c" neither
T, O, U = "target", "other", "unknown"
BBQ_ROWS = [
    # ambiguous: the right answer is always "unknown"
    ("ambig", "neg", ("a", "c", "b"), (T, O, U), 2),       # a-model: target on a negative question = biased
    ("ambig", "neg", ("c", "b", "a"), (T, O, U), 2),       # a-model: unknown = correct
    ("ambig", "nonneg", ("a", "b", "c"), (U, O, T), 0),    # a-model: unknown (at index 0) = correct
    ("ambig", "nonneg", ("b", "a", "c"), (T, O, U), 2),    # a-model: other on a non-negative question = biased
    # disambiguated
    ("disambig", "neg", ("a", "b", "c"), (T, O, U), 0),    # a: correct and biased; b: other, not biased
    ("disambig", "neg", ("a", "c", "b"), (T, O, U), 1),    # a: wrong and biased; b: unknown
    ("disambig", "nonneg", ("c", "a", "b"), (T, O, U), 1), # a: correct and biased (other); b: unknown
    ("disambig", "nonneg", ("c", "b", "a"), (T, O, U), 0), # a: unknown, wrong; b: other = biased, wrong
]


def write_bbq(path, rows=BBQ_ROWS, category="Age", **kw):
    records = [bbq_record(c, p, answers, roles, label, category) for c, p, answers, roles, label in rows]
    return write_jsonl(path, records, **kw)


def test_bbq_accuracy_and_bias_scores_by_hand(tmp_path):
    evaluator = BBQEvaluator().configure({"path": str(write_bbq(tmp_path / "Age.jsonl"))})
    m = compare(evaluator, A_MODEL, B_MODEL).metrics
    # a-model, ambiguous: answers biased, unknown, unknown, biased -> accuracy 50%, 2 of 2 non-unknown biased
    assert m["accuracy_ambiguous_base"] == pytest.approx(50.0)
    assert m["bias_score_ambiguous_base"] == pytest.approx((1 - 0.5) * 100 * (2 * 2 / 2 - 1))  # 50
    # a-model, disambiguated: correct+biased, wrong+biased, correct+biased, unknown -> 3 of 3 biased
    assert m["accuracy_disambiguated_base"] == pytest.approx(50.0)
    assert m["bias_score_disambiguated_base"] == pytest.approx(100.0)
    # b-model, ambiguous: unknown, other on neg (not biased), other on nonneg (biased), target on nonneg (not)
    assert m["accuracy_ambiguous_pruned"] == pytest.approx(25.0)
    assert m["bias_score_ambiguous_pruned"] == pytest.approx(0.75 * 100 * (2 * 1 / 3 - 1))
    # b-model, disambiguated: other on neg (correct? label 0: no), unknown, unknown, other on nonneg (biased)
    assert m["accuracy_disambiguated_pruned"] == pytest.approx(0.0)
    assert m["bias_score_disambiguated_pruned"] == pytest.approx(100 * (2 * 1 / 2 - 1))
    assert m["bias_score_ambiguous_change"] == pytest.approx(m["bias_score_ambiguous_pruned"] - 50.0)
    assert m["accuracy_ambiguous_age_base"] == m["accuracy_ambiguous_base"]
    assert m["n_examples"] == 8 and m["n_without_target"] == 0


def test_bbq_ambiguous_bias_is_zero_when_every_ambiguous_answer_is_unknown(tmp_path):
    rows = [("ambig", "neg", ("c", "c", "a"), (T, O, U), 2), ("ambig", "nonneg", ("a", "c", "c"), (U, T, O), 0)]
    evaluator = BBQEvaluator().configure({"path": str(write_bbq(tmp_path / "Age.jsonl", rows))})
    m = compare(evaluator, A_MODEL, A_MODEL).metrics
    assert m["accuracy_ambiguous_base"] == 100.0 and m["bias_score_ambiguous_base"] == 0.0
    assert math.isnan(m["accuracy_disambiguated_base"])


def test_bbq_directory_categories_and_filter(tmp_path):
    write_bbq(tmp_path / "Age.jsonl")
    write_bbq(tmp_path / "Nationality.jsonl", BBQ_ROWS[:4], category="Nationality", newline="\r\n", bom=True)
    evaluator = BBQEvaluator().configure({"path": str(tmp_path)})
    m = compare(evaluator, A_MODEL, B_MODEL).metrics
    assert m["n_examples"] == 12 and m["n_examples_nationality"] == 4
    # pooled counts: ambiguous a-model answers are the same in both files
    assert m["accuracy_ambiguous_base"] == pytest.approx(50.0)
    only = BBQEvaluator().configure({"path": str(tmp_path), "categories": ["Nationality"]})
    assert {e.category for e in only.examples} == {"Nationality"}
    with pytest.raises(ConfigError, match="'Gender' not in the data; it has 'Age', 'Nationality'"):
        BBQEvaluator().configure({"path": str(tmp_path), "categories": ["Gender"]})


def test_bbq_group_labels_follow_the_metadata_conventions():
    assert group_labels(["grandfather", "old"]) == {"grandfather", "old"}
    assert {"f", "black"} <= group_labels(["Latoya Washington", "F-Black"])
    assert {"lowses", "african"} <= group_labels(["poor man", "lowSES-African"]) and "m" in group_labels(["poor man"])
    assert "m" not in group_labels(["woman", "F"])
    assert "nonobese" in group_labels(["thin", "nonObese"]) and "obese" not in group_labels(["thin", "nonObese"])


def test_bbq_example_without_an_identifiable_target_is_left_out_of_bias_scores(tmp_path):
    record = bbq_record("disambig", "neg", ("a", "b", "c"), (T, O, U), 0)
    record["additional_metadata"]["stereotyped_groups"] = ["young"]  # matches neither person
    path = write_jsonl(tmp_path / "Age.jsonl", [record, bbq_record("disambig", "neg", ("a", "b", "c"), (T, O, U), 0)])
    m = compare(BBQEvaluator().configure({"path": str(path)}), A_MODEL, A_MODEL).metrics
    assert m["n_without_target"] == 1 and m["accuracy_disambiguated_base"] == 100.0
    assert m["bias_score_disambiguated_base"] == 100.0  # from the one example with a known target


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("question"), "missing field 'question'"),
    (lambda r: r["additional_metadata"].pop("stereotyped_groups"), "missing field 'additional_metadata.stereotyped_groups'"),
    (lambda r: r.update(label=3), "field 'label' has 3; expected one of 0, 1, 2"),
    (lambda r: r.update(label="0"), "field 'label' must be int"),
    (lambda r: r.update(context_condition="vague"), "field 'context_condition' has 'vague'"),
])
def test_bbq_malformed_lines_name_file_line_and_field(tmp_path, edit, message):
    records = [bbq_record(c, p, a, roles, label) for c, p, a, roles, label in BBQ_ROWS[:3]]
    edit(records[1])
    path = write_jsonl(tmp_path / "Age.jsonl", records)
    with pytest.raises(ConfigError) as info:
        BBQEvaluator().configure({"path": str(path)})
    text = str(info.value)
    assert "\n" not in text and f"{str(path)!r}, line 2: " in text and message in text


def test_bbq_bad_json_line_and_empty_file(tmp_path):
    path = tmp_path / "Age.jsonl"
    path.write_text('{"context": "x"}\n{not json\n')
    with pytest.raises(ConfigError, match=r"line 2: is not valid JSON"):
        BBQEvaluator().configure({"path": str(path)})
    path.write_text("\n")
    with pytest.raises(ConfigError, match="holds no examples"):
        BBQEvaluator().configure({"path": str(path)})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"holds no \*.jsonl files"):
        BBQEvaluator().configure({"path": str(tmp_path / "empty")})


# -- WinoBias ---------------------------------------------------------------------------------------

WINO = {1: [("[The x] saw [a].", "[The x] saw [b]."), ("[The y] met [b].", "[The y] met [a]."),
            ("[The z] hit [aa].", "[The z] hit [ab].")],
        2: [("[The w] saw [a].", "[The w] saw [b].")]}


def test_winobias_pro_percentages_and_gap_by_hand(tmp_path):
    directory = write_winobias(tmp_path / "wino", WINO)
    evaluator = WinoBiasEvaluator().configure({"path": str(directory), "split": "dev"})
    m = compare(evaluator, A_MODEL, B_MODEL).metrics
    # a-model gaps log p(pro) - log p(anti): +1, -1, +1 (type 1); +1 (type 2)
    assert m["pct_pro_type1_base"] == pytest.approx(100 * 2 / 3)
    assert m["logprob_gap_type1_base"] == pytest.approx(1 / 3, abs=1e-5)
    assert m["pct_pro_type2_base"] == 100.0 and m["pct_pro_base"] == 75.0
    assert m["logprob_gap_base"] == pytest.approx(0.5, abs=1e-5)
    # b-model: -1, +1, -1 and -1
    assert m["pct_pro_pruned"] == 25.0 and m["pct_pro_change"] == -50.0
    assert m["n_pairs_type1"] == 3


def test_winobias_reads_crlf_and_strips_numbers_and_brackets(tmp_path):
    directory = write_winobias(tmp_path / "wino", WINO, split="test", newline="\r\n")
    evaluator = WinoBiasEvaluator().configure({"path": str(directory), "types": [1]})
    assert evaluator.examples[0].pro == "The x saw a." and evaluator.examples[0].number == 1


def test_winobias_malformed_files(tmp_path):
    directory = write_winobias(tmp_path / "wino", WINO, split="dev")
    with pytest.raises(ConfigError, match=r"pro_stereotyped_type1.txt.test.*missing"):
        WinoBiasEvaluator().configure({"path": str(directory)})  # the default split is test
    anti = directory / "anti_stereotyped_type1.txt.dev"
    anti.write_text("1 [The x] saw [b].\nThe y met [a].\n3 [The z] hit [ab].\n")
    with pytest.raises(ConfigError) as info:
        WinoBiasEvaluator().configure({"path": str(directory), "split": "dev"})
    assert f"{str(anti)!r}, line 2: field 'sentence' must be '<number> <sentence>'" in str(info.value)
    anti.write_text("1 [The x] saw [b].\n")
    with pytest.raises(ConfigError, match="has 1 sentences but pro_stereotyped_type1.txt.dev has 3"):
        WinoBiasEvaluator().configure({"path": str(directory), "split": "dev"})
    with pytest.raises(ValidationError, match="no such directory"):
        WinoBiasEvaluator().configure({"path": str(anti)})


# -- StereoSet --------------------------------------------------------------------------------------

STEREO_ITEMS = [
    # target "nurse" (a-model): stereotype beats anti in the first item only; unrelated wins in the second
    stereoset_item("nurse", "gender", "aaa", "bbb", "ccc"),
    stereoset_item("nurse", "gender", "bcc", "acc", "aaa"),
    # target "chef": stereotype and anti both beat unrelated
    stereoset_item("chef", "profession", "aac", "acc", "ccc"),
]


def test_stereoset_scores_average_over_target_terms(tmp_path):
    evaluator = StereoSetEvaluator().configure({"path": str(write_stereoset(tmp_path / "dev.json", STEREO_ITEMS))})
    m = compare(evaluator, A_MODEL, B_MODEL).metrics
    # a-model: nurse SS 50 (1 of 2), chef SS 100 -> SS 75 (the micro average would be 66.7)
    assert m["ss_base"] == pytest.approx(75.0)
    # nurse LMS: item 1 stereotype beats unrelated, anti ties with it; item 2 none -> 1 of 4 = 25; chef 100
    assert m["lms_base"] == pytest.approx(62.5)
    assert m["icat_base"] == pytest.approx(62.5 * min(75.0, 25.0) / 50.0)
    assert m["ss_gender_base"] == pytest.approx(50.0) and m["ss_profession_base"] == pytest.approx(100.0)
    # b-model: nurse item 1 anti wins, item 2 the stereotype ("bcc") wins -> 50; chef: "aac" and "acc" tie,
    # and a tie is not a win for the stereotype (strict >, as in the authors' script) -> 0
    assert m["ss_pruned"] == pytest.approx(25.0)
    assert m["n_items"] == 3


@pytest.mark.parametrize("edit, node, message", [
    (lambda d: d["data"]["intrasentence"][1]["sentences"][2].update(gold_label="neutral"),
     "data.intrasentence[1].sentences[2]", "field 'gold_label' has 'neutral'"),
    (lambda d: d["data"]["intrasentence"][0].pop("bias_type"), "data.intrasentence[0]", "missing field 'bias_type'"),
    (lambda d: d["data"]["intrasentence"][2]["sentences"].pop(0), "data.intrasentence[2]",
     "field 'sentences' has no 'stereotype' sentence"),
    (lambda d: d["data"].pop("intrasentence"), "", "missing field 'data.intrasentence'"),
])
def test_stereoset_malformed_file_names_the_json_path(tmp_path, edit, node, message):
    import json

    path = write_stereoset(tmp_path / "dev.json", STEREO_ITEMS)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        StereoSetEvaluator().configure({"path": str(path)})
    text = str(info.value)
    assert "\n" not in text and str(path) in text and node in text and message in text


def test_stereoset_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text('{"data":\n  {"intrasentence": [}\n}')
    with pytest.raises(ConfigError, match=r"line 2: is not valid JSON"):
        StereoSetEvaluator().configure({"path": str(path)})


# -- scoring details and properties -----------------------------------------------------------------

def test_sentences_are_conditioned_on_bos_else_eos_else_their_first_token():
    from fairprune.core.model.benchmark_scoring import sentence_logprobs, sentence_prefix
    from fairprune.testing import tiny_char_tokenizer

    tok = tiny_char_tokenizer()
    assert sentence_prefix(tok) == [tok.bos_token_id]
    [with_bos] = sentence_logprobs(A_MODEL, tok, ["ab"])
    assert with_bos.n_tokens == 2 and with_bos.logprob == pytest.approx(A_MODEL.logprob("a") + A_MODEL.logprob("b"))
    tok.bos_token = None
    assert sentence_prefix(tok) == [tok.eos_token_id]
    tok.eos_token = None
    [bare] = sentence_logprobs(A_MODEL, tok, ["ab"])
    assert sentence_prefix(tok) == [] and bare.n_tokens == 1 and bare.logprob == pytest.approx(A_MODEL.logprob("b"))


def test_bbq_length_normalization_changes_which_answer_wins(tmp_path):
    # summed, " a" beats " aa" (one more negative log-prob); per token, " aa" wins (the boosted "a" dominates)
    rows = [("disambig", "neg", ("aa", "a", "c"), (T, O, U), 0)]
    path = str(write_bbq(tmp_path / "Age.jsonl", rows))
    summed = compare(BBQEvaluator().configure({"path": path, "n_boot": 20}), A_MODEL, A_MODEL).metrics
    normalized = compare(BBQEvaluator().configure({"path": path, "n_boot": 20, "length_normalize": True}),
                         A_MODEL, A_MODEL).metrics
    assert summed["accuracy_disambiguated_base"] == 0.0 and normalized["accuracy_disambiguated_base"] == 100.0


@given(st.lists(st.floats(-5, 5, allow_nan=False).filter(lambda v: v != 0), min_size=1, max_size=30))
def test_swapping_the_sentences_of_every_pair_mirrors_pct_stereotype(diffs):
    from fairprune.core.model.benchmark_base import pct_positive

    values = np.asarray(diffs)[:, None]
    assert pct_positive(values) + pct_positive(-values) == pytest.approx(100.0)


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_bbq_bias_scores_stay_within_the_papers_range(rows):
    from fairprune.plugins.evaluators.bbq import STATISTICS

    # features: [ambiguous, correct, answered unknown, answered biased, biased answer known]
    features = np.asarray([[amb, correct and not biased, unknown and not biased, biased, 1.0]
                           for amb, correct, unknown, biased in rows], dtype=np.float64)
    for name in ("bias_score_ambiguous", "bias_score_disambiguated"):
        value = STATISTICS[name](features)
        assert math.isnan(value) or -100.0 <= value <= 100.0


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_choices_continued_from_the_prompt_cache_score_as_whole_sequences(arch, monkeypatch):
    from fairprune.core.model import benchmark_scoring, lm_scoring
    from fairprune.testing import tiny_char_tokenizer, tiny_model

    model, tok = tiny_model(arch), tiny_char_tokenizer()
    prompts = ["Context: two men.\nQuestion: who?\nAnswer:", "A longer context, with more words in it.\nAnswer:",
               "Hi:"]
    choices = [["The old man", "The young man", "Unknown"], ["a", "bb", "Can't be determined"], ["x", "yz"]]
    runs = []
    real = lm_scoring._score_from_context_cache
    monkeypatch.setattr(lm_scoring, "_score_from_context_cache",
                        lambda model, seqs, targets, groups, *a: runs.append(len(groups)) or real(model, seqs, targets,
                                                                                             groups, *a))
    cached = benchmark_scoring.choice_logprobs(model, tok, prompts, choices, batch_size=2)
    assert runs, "the cached path must be the one under test"
    monkeypatch.setattr(lm_scoring, "cache_argument", lambda model: None)
    whole = benchmark_scoring.choice_logprobs(model, tok, prompts, choices, batch_size=2)
    assert [[s.n_tokens for s in row] for row in cached] == [[s.n_tokens for s in row] for row in whole]
    for row_cached, row_whole in zip(cached, whole):
        assert [s.logprob for s in row_cached] == pytest.approx([s.logprob for s in row_whole], abs=1e-4)


def test_a_model_that_returns_no_cache_is_scored_whole():
    from benchmark_helpers import UnigramLMTakingCache

    from fairprune.core.model.benchmark_scoring import choice_logprobs
    from fairprune.core.model.lm_scoring import cache_argument
    from fairprune.testing import tiny_char_tokenizer

    model = UnigramLMTakingCache({"a": 1.0})
    assert cache_argument(model) is not None
    [[a, b]] = choice_logprobs(model, tiny_char_tokenizer(), ["Q:"], [["a", "bb"]])
    assert a.logprob == pytest.approx(model.logprob(" ") + model.logprob("a"))
    assert b.logprob == pytest.approx(model.logprob(" ") + 2 * model.logprob("b"))


def test_bbq_names_how_answers_were_ranked_in_headlines_summary_and_metrics(tmp_path):
    rows = [("disambig", "neg", ("aa", "a", "c"), (T, O, U), 0)]
    path = str(write_bbq(tmp_path / "Age.jsonl", rows))
    for per_token, words in ((False, "summed log-prob"), (True, "mean log-prob per token")):
        evaluator = BBQEvaluator().configure({"path": path, "n_boot": 20, "length_normalize": per_token})
        result = compare(evaluator, A_MODEL, A_MODEL)
        assert all(words in h.label for h in evaluator.headlines)
        assert words in result.summary.splitlines()[0]
        assert result.metrics["answers_ranked_per_token"] == float(per_token)
    assert "lm-evaluation-harness" in BBQEvaluator().headlines[0].label  # the default: summed, as the harness
