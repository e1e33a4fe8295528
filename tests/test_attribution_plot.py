"""On an attribution run the neuron picture draws what selection used: estimated reduction vs capability cost
and the guard, never the activation method's scorer line."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

import fairprune as fp
from fairprune.core.contract.errors import ConfigError
from fairprune.testing import tiny_char_tokenizer, tiny_model
from fairprune.viz.attribution import attribution_cost_plot, attribution_points, cost_guard
from fairprune.viz.run_plots import PLOTS, figure_for
from fairprune.viz.rundata import load_run


def test_guard_is_the_costliest_fraction_of_each_layer():
    cost = torch.tensor([0.5, 3.0, 0.1, 2.0, 1.0])
    assert cost_guard(cost, 0.4).tolist() == [False, True, False, True, False]
    assert cost_guard(cost, 0.5).tolist() == [False, True, False, True, True]  # ceil(2.5) = 3
    assert not cost_guard(cost, 0.0).any()


def test_points_rank_cost_within_layer_and_mark_removed_and_guarded():
    gain = {0: torch.tensor([0.2, -0.1, 0.05]), 1: torch.tensor([0.3, 0.01, -0.2])}
    cost = {0: torch.tensor([1.0, 5.0, 3.0]), 1: torch.tensor([10.0, 20.0, 30.0])}
    pts = attribution_points(gain, cost, {1: [0]}, guard_fraction=0.34)
    np.testing.assert_allclose(pts["x"], [0.2, -0.1, 0.05, 0.3, 0.01, -0.2])
    np.testing.assert_allclose(pts["y"], [0.0, 1.0, 0.5, 0.0, 0.5, 1.0])
    assert pts["selected"].tolist() == [False, False, False, True, False, False]
    assert pts["guarded"].tolist() == [False, True, True, False, True, True]  # ceil(0.34 * 3) = 2 per layer
    with pytest.raises(ConfigError, match="layers \\[2\\]"):
        attribution_points(gain, cost, {}, 0.5, layer=2)
    with pytest.raises(ConfigError, match="guard_fraction"):
        attribution_cost_plot(gain, cost, {}, guard_fraction=1.0)


@pytest.fixture(scope="module")
def attribution_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("attr-plot")
    source = root / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), source)
    config = {"model": {"source": str(source)},
              "bias": {"axes": ["race"], "batch_size": 12},
              "method": {"name": "attribution", "rounds": 2, "guard_fraction": 0.25,
                         "max_perplexity_increase_pct": None,
                         "capability": {"name": "capability_cost", "params": {"chunk_tokens": 64, "max_tokens": 256}}},
              "pruning": {"budget": {"neurons": 6}},
              "evaluation": {"evaluators": [{"name": "activation_bias", "params": {"n_boot": 50}},
                                            {"name": "activation_pictures", "params": {"n_boot": 50}},
                                            "parameters"]},
              "output": {"dir": str(root / "run")}}
    return fp.run(config, progress=False).output_dir


def test_attribution_run_scatter_shows_cost_and_guard_not_a_scorer_line(attribution_run):
    run = load_run(attribution_run)
    plan = json.loads((attribution_run / "plan.json").read_text())
    assert plan["n_neurons"] > 0
    ax = figure_for("scatter", run).axes[0]
    texts = [ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), *(t.get_text() for t in ax.get_legend().get_texts())]
    assert ax.get_title() == "Attribution vs capability cost, all layers"
    assert not any("bias_weight" in t or "linear" in t or "score =" in t for t in texts)
    assert "guard: costliest 25% of each layer" in texts
    guard_line = [line for line in ax.get_lines() if line.get_label().startswith("guard")][0]
    assert set(np.asarray(guard_line.get_ydata(), dtype=float)) == {0.75}
    removed = [c for c in ax.collections if c.get_label().startswith("removed")][0]
    assert len(removed.get_offsets()) == plan["n_neurons"]
    guarded = [c for c in ax.collections if c.get_label().startswith("guarded")][0]
    # every guarded point lies on or above the guard line: the costliest quarter of its layer
    assert (np.asarray(guarded.get_offsets())[:, 1] >= 0.75 - 1e-9).all()
    n_neurons = sum(plan["widths_before"])
    assert sum(len(c.get_offsets()) for c in ax.collections) == n_neurons


def test_attribution_run_report_embeds_five_pictures_with_the_attribution_caption(attribution_run):
    page = (attribution_run / "report.html").read_text().replace("&#x27;", "'")
    assert re.findall(r'<figure id="plot-(\w+)"><img', page) == ["profile", "neurons", "scatter", "pca", "tokens"]
    assert PLOTS["scatter"].attribution_caption in page
    assert PLOTS["scatter"].caption not in page
