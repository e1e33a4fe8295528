"""Each plot drawn from a tiny model's real analysis (collection, bias, plan, pruning, evaluation), checking what it drew."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from fairprune.core.contract.errors import ConfigError
from fairprune.testing.runs import tiny_analysis
from fairprune.viz import (
    bias_importance_plot,
    bias_profile_plot,
    neuron_map_plot,
    pareto_plot,
    pca_plot,
    save_figure,
    token_distances,
    token_heatmap_plot,
)
from fairprune.viz.neurons import decision_points


@pytest.fixture(scope="module")
def tiny():
    return tiny_analysis(neurons=12)


def test_bias_profile_draws_base_and_pruned_per_site(tiny, tmp_path):
    rows = tiny.evaluations["activation_bias"].tables["layers"]
    fig = bias_profile_plot(rows)
    ax = fig.axes[0]
    labels = sorted(line.get_label() for line in ax.get_lines())
    assert labels == ["mlp_out — base", "mlp_out — pruned", "residual — base", "residual — pruned"]
    by_label = {line.get_label(): line for line in ax.get_lines()}
    residual = [r for r in rows if r["site"] == "residual"]
    np.testing.assert_allclose(by_label["residual — pruned"].get_ydata(), [r["pruned"] for r in residual])
    assert list(by_label["residual — base"].get_xdata()) == [0, 1, 2]
    assert ax.get_xlabel() == "layer"
    assert save_figure(fig, tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")


def test_neuron_map_has_one_cell_per_neuron_and_marks_removed(tiny):
    fig = neuron_map_plot(tiny.bias.scores, tiny.plan.removed)
    ax = fig.axes[0]
    image = ax.get_images()[0].get_array()
    assert image.shape == (3, 64)
    assert np.nanmin(image) == 0.0 and np.nanmax(image) == 1.0  # min-max within each layer
    marks = ax.collections[0].get_offsets()
    assert len(marks) == tiny.plan.n_neurons == 12
    expected = {(n, row) for row, layer in enumerate(sorted(tiny.bias.scores)) for n in tiny.plan.removed.get(layer, [])}
    assert {(int(x), int(y)) for x, y in marks} == expected


def test_scatter_highlights_selected_beyond_the_decision_line(tiny):
    fig = bias_importance_plot(tiny.bias.scores, tiny.importance, tiny.plan.removed, bias_weight=0.8)
    ax = fig.axes[0]
    kept, removed = ax.collections[0].get_offsets(), ax.collections[1].get_offsets()
    assert len(kept) + len(removed) == 3 * 64 and len(removed) == 12
    line = ax.get_lines()[0]
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    threshold = min(r["score"] for r in tiny.plan.records)
    np.testing.assert_allclose(0.8 * x + 0.2 * (1 - y), threshold, atol=1e-6)
    # every removed neuron scores at least the threshold: on or beyond the line
    for bx, by in removed:
        assert 0.8 * bx + 0.2 * (1 - by) >= threshold - 1e-6
    pts = decision_points(tiny.bias.scores, tiny.importance, tiny.plan.removed, bias_weight=0.8)
    recorded = sorted(r["score"] for r in tiny.plan.records)
    np.testing.assert_allclose(sorted(pts["score"][pts["selected"]]), recorded, atol=1e-5)


def test_scatter_of_one_layer_and_unknown_scorer(tiny):
    layer = max(tiny.plan.removed, key=lambda k: len(tiny.plan.removed[k]))
    fig = bias_importance_plot(tiny.bias.scores, tiny.importance, tiny.plan.removed, layer=layer)
    assert len(fig.axes[0].collections[1].get_offsets()) == len(tiny.plan.removed[layer])
    assert f"layer {layer}" in fig.axes[0].get_title()
    with pytest.raises(ConfigError, match="geometric"):
        bias_importance_plot(tiny.bias.scores, tiny.importance, tiny.plan.removed, scorer="geometric")


def test_pca_panels_share_a_plane_with_one_arrow_per_group(tiny):
    from fairprune.core.method.collect import collect_pooled

    pooled = [collect_pooled(m, tiny.tokenizer, tiny.groups, site="residual", pooling="mean", layers=[2],
                             progress=False).pooled[2] for m in (tiny.base, tiny.pruned)]
    fig = pca_plot(pooled[0], pooled[1], members=["black", "white"], layer=2)
    base_ax, pruned_ax = fig.axes[:2]
    n = len(tiny.groups)
    for ax in (base_ax, pruned_ax):
        assert [len(c.get_offsets()) for c in ax.collections] == [n, n]
        assert len(ax.texts) == n  # one arrow per group
    assert base_ax.get_xlim() == pruned_ax.get_xlim()
    assert base_ax.get_xlabel().startswith("PC1")
    expected = np.abs(pooled[1][:, 1] - pooled[1][:, 0]).mean().item()
    assert f"{expected:.4f}" in pruned_ax.get_title()


def test_token_heatmap_is_zero_before_the_attribute_word(tiny):
    a, b = tiny.groups[0].prompts
    result = token_distances(tiny.base, tiny.tokenizer, a, b)
    assert result.tokens[:2] == ["the", "black / white"]
    assert result.distances.shape == (4, len(result.tokens))  # embeddings + 3 layers
    assert np.all(result.distances[:, :result.diverge_at] < 1e-6)
    assert np.all(result.distances[:, result.diverge_at] > 1e-3)
    fig = token_heatmap_plot(result)
    ax = fig.axes[0]
    assert ax.get_images()[0].get_array().shape == result.distances.shape
    assert [t.get_text() for t in ax.get_xticklabels()] == result.tokens


def test_pareto_joins_the_front_and_stars_the_chosen_point():
    points = [{"bias_weight": w, "budget": {"neurons": n}, "bias_reduction_pct": r, "capability_loss_pct": c,
               "params_removed_pct": 0.1, "pareto": p, "chosen": ch}
              for w, n, r, c, p, ch in [(0.8, 8, 5.0, 1.0, True, False), (0.8, 16, 9.0, 3.0, True, True),
                                        (0.5, 8, 2.0, 2.0, False, False), (0.5, 16, 10.0, 8.0, True, False)]]
    fig = pareto_plot(points)
    ax = fig.axes[0]
    front = ax.get_lines()[0]
    assert list(front.get_xdata()) == [1.0, 3.0, 8.0] and list(front.get_ydata()) == [5.0, 9.0, 10.0]
    dominated, chosen = ax.collections
    assert [tuple(p) for p in dominated.get_offsets()] == [(2.0, 2.0)]
    assert [tuple(p) for p in chosen.get_offsets()] == [(3.0, 9.0)]
    assert "w=0.8, neurons=16" in [t.get_text() for t in ax.texts]
    with pytest.raises(ConfigError, match="no sweep point"):
        pareto_plot([{"bias_weight": 0.8}])


def test_save_figure_refuses_unknown_suffix(tiny, tmp_path):
    fig = neuron_map_plot(tiny.bias.scores)
    assert save_figure(fig, tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError, match="m.jpg"):
        save_figure(fig, tmp_path / "m.jpg")
