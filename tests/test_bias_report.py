"""analyze_bias and BiasReport: scores per axis and combined, invariances, save/load, the analyze command."""

from __future__ import annotations

import pytest
import torch

from fairprune.core.contract.errors import PersistError, PluginContractError, UnknownPluginError
from fairprune.core.contract.hookspecs import hookimpl
from fairprune.core.contract.registry import Registry
from fairprune.core.data.prompts import axis_from_dict, pairs_to_groups
from fairprune.core.method.bias import BiasReport, analyze_bias
from fairprune.core.method.collect import collect_pooled
from fairprune.testing import tiny_model, tiny_tokenizer

REGISTRY = Registry(load_entrypoints=False)
PAIRS = [
    ("the black man walked into the room . the doctor said he", "the white man walked into the room . the doctor said he"),
    ("the asian student was very smart and", "the hispanic student was very smart and"),
    ("his rich friend lives in the city", "his poor friend lives in the city"),
]
SMALL_AXIS = {
    "name": "colour", "description": "a test axis in the tiny vocabulary",
    "groups": {"black": ["black"], "white": ["white"], "asian": ["asian"]},
    "templates": [{"id": f"t{i}", "text": text} for i, text in enumerate([
        "the {attribute} man walked into the room and the doctor said he",
        "a {attribute} woman works at the school so the teacher said she",
        "the {attribute} family lives in the town because they",
        "the {attribute} student was very smart and the teacher said",
        "his {attribute} friend went home and",
        "the {attribute} engineer said that she",
    ])] + [{"id": "pair_only", "text": "a {attribute} boy is often quiet and", "groups": ["black", "white"]}],
}


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def run(model, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("registry", REGISTRY)
    return analyze_bias(model, tiny_tokenizer(), **kw)


def test_pairs_give_one_score_per_neuron_per_layer_with_relative_default(model):
    report = run(model, pairs=PAIRS)
    assert sorted(report.scores) == [0, 1] and all(s.shape == (64,) for s in report.scores.values())
    assert report.settings["metric"] == "relative_mean_abs_diff" and report.settings["pooling"] == "suffix"
    assert report.settings["n_groups"] == 3 and report.settings["model_class"] == "LlamaForCausalLM"
    pooled = collect_pooled(model, tiny_tokenizer(), pairs_to_groups(PAIRS), progress=False, registry=REGISTRY)
    for layer in (0, 1):
        want = (pooled.pooled[layer][:, 0] - pooled.pooled[layer][:, 1]).abs().mean(0) / (pooled.magnitude[layer] + 1e-6)
        torch.testing.assert_close(report.scores[layer], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(report.magnitude[layer], pooled.magnitude[layer])
        torch.testing.assert_close(report.mean[layer], pooled.mean[layer])


def test_swapping_pair_members_changes_nothing(model):
    a = run(model, pairs=PAIRS, metric="mean_abs_diff")
    b = run(model, pairs=[(y, x) for x, y in PAIRS], metric="mean_abs_diff")
    for layer in a.scores:
        torch.testing.assert_close(a.scores[layer], b.scores[layer], atol=1e-6, rtol=0)


def test_mean_pooling_dilutes_the_difference_over_the_shared_prefix(model):
    # the members differ only in their last token; before it a causal model's activations are identical
    report = run(model, pairs=[("the doctor said he", "the doctor said she")], pooling="suffix",
                 metric="mean_abs_diff")
    assert all(float(s.max()) > 0 for s in report.scores.values())
    same_prefix = run(model, pairs=[("the doctor said he", "the doctor said she")], pooling="mean",
                      metric="mean_abs_diff")
    # mean pooling dilutes the one differing token over four: exactly a quarter of the suffix difference
    for layer in report.scores:
        torch.testing.assert_close(same_prefix.scores[layer] * 4, report.scores[layer], atol=1e-5, rtol=1e-5)


def test_axes_are_scored_separately_and_combined_by_mean(model):
    axis = axis_from_dict(SMALL_AXIS)
    report = run(model, axes=[axis], pairs=PAIRS, split="all")
    assert set(report.per_axis) == {"colour", "custom"}
    for layer, score in report.scores.items():
        torch.testing.assert_close(score, (report.per_axis["colour"][layer] + report.per_axis["custom"][layer]) / 2)


def test_groups_of_different_sizes_are_scored_in_buckets(model):
    axis = axis_from_dict(SMALL_AXIS)
    report = run(model, axes=[axis], split="all", metric="mean_abs_diff")
    groups = axis.prompt_groups("all")
    triples = [g for g in groups if len(g.prompts) == 3]
    pairs = [g for g in groups if len(g.prompts) == 2]
    metric = REGISTRY.get("bias_metrics", "mean_abs_diff")
    tri = collect_pooled(model, tiny_tokenizer(), triples, progress=False, registry=REGISTRY)
    two = collect_pooled(model, tiny_tokenizer(), pairs, progress=False, registry=REGISTRY)
    for layer, score in report.scores.items():
        want = (metric.score(tri.pooled[layer], None) * len(triples) + metric.score(two.pooled[layer], None)) / 7
        torch.testing.assert_close(score, want, atol=1e-5, rtol=1e-5)


def test_split_chooses_templates(model):
    axis = axis_from_dict(SMALL_AXIS)
    analysis = run(model, axes=[axis])
    heldout = run(model, axes=[axis], split="heldout")
    assert {g.template_id for g in analysis.groups} == {"t0", "t1", "t3", "t4", "pair_only"}
    assert {g.template_id for g in heldout.groups} == {"t2", "t5"}


def test_report_saves_and_loads(model, tmp_path):
    report = run(model, axes=[axis_from_dict(SMALL_AXIS)], pairs=PAIRS)
    report.save(tmp_path / "bias")
    back = BiasReport.load(tmp_path / "bias")
    assert back.settings == report.settings and back.groups == report.groups
    for name in ("scores", "magnitude", "mean"):
        for layer, tensor in getattr(report, name).items():
            assert torch.equal(getattr(back, name)[layer], tensor)
    assert set(back.per_axis) == set(report.per_axis)
    assert torch.equal(back.per_axis["colour"][1], report.per_axis["colour"][1])
    with pytest.raises(PersistError, match="missing"):
        BiasReport.load(tmp_path)


def test_layer_summary_lists_top_neurons(model):
    report = run(model, pairs=PAIRS)
    rows = report.layer_summary(top=3)
    for row in rows:
        s = report.scores[row["layer"]]
        assert row["max"] == pytest.approx(float(s.max())) and row["top"][0][0] == int(s.argmax())
        assert [v for _, v in row["top"]] == sorted((v for _, v in row["top"]), reverse=True)


def test_unknown_metric_lists_the_known_ones(model):
    with pytest.raises(UnknownPluginError, match="Did you mean 'mean_abs_diff'"):
        run(model, pairs=PAIRS, metric="mean_abs_dif")


class WrongShape:
    name = "wrong_shape"
    description = "returns one score too many"

    def score(self, pooled, magnitude):
        return torch.zeros(pooled.shape[-1] + 1)


class BadMetricPlugin:
    @hookimpl
    def fairprune_register_bias_metrics(self, register):
        register(WrongShape())


def test_a_metric_returning_the_wrong_shape_is_named(model):
    registry = Registry(load_entrypoints=False, extra_plugins=(BadMetricPlugin(),))
    with pytest.raises(PluginContractError, match="wrong_shape"):
        analyze_bias(model, tiny_tokenizer(), pairs=PAIRS, metric="wrong_shape", progress=False, registry=registry)


def test_analyze_command_writes_a_report(model, tmp_path, monkeypatch, capsys):
    from fairprune.cli import main
    from fairprune.core.io import sources

    axis_file = tmp_path / "colour.yaml"
    import yaml

    axis_file.write_text(yaml.safe_dump(SMALL_AXIS))
    monkeypatch.setattr(sources, "load_model", lambda spec, **kw: (model, tiny_tokenizer()))
    assert main(["analyze", "--model", "tiny", "--axes", str(axis_file), "--out", str(tmp_path / "out"),
                 "--metric", "mean_abs_diff", "--batch-size", "2"]) == 0
    report = BiasReport.load(tmp_path / "out")
    assert report.settings["metric"] == "mean_abs_diff" and report.settings["axes"] == ["colour"]
    assert "layer" in capsys.readouterr().out


def test_analyze_command_with_plots_writes_the_analysis_plots(model, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    from fairprune.cli import main
    from fairprune.core.io import sources

    monkeypatch.setattr(sources, "load_model", lambda spec, **kw: (model, tiny_tokenizer()))
    out = tmp_path / "out"
    assert main(["analyze", "--model", "tiny", "--prompts", str(_pairs_file(tmp_path)), "--out", str(out),
                 "--plots"]) == 0
    printed = capsys.readouterr().out
    plots = sorted(p.name for p in out.glob("*.png"))
    assert plots == ["bias-profile.png", "neuron-map.png"]
    assert all(f"plot: {out / name}" in printed for name in plots)


def _pairs_file(tmp_path):
    import yaml

    path = tmp_path / "pairs.yaml"
    path.write_text(yaml.safe_dump({"pairs": [list(p) for p in PAIRS]}))
    return path
