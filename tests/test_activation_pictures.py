"""The ``activation_pictures`` evaluator: the plugin contract, what it stores, and its errors."""

from __future__ import annotations

import json

import pytest

import fairprune as fp
from fairprune.core.contract.errors import ConfigError
from fairprune.plugins.evaluators.activation_pictures import ActivationPicturesEvaluator
from fairprune.testing.contracts import EvaluatorContract
from fairprune.testing.runs import tiny_analysis


class TestActivationPicturesContract(EvaluatorContract):
    evaluator = ActivationPicturesEvaluator()

    def test_registers_without_clashing_with_builtins(self) -> None:  # it is a built-in: registered by fairprune
        assert isinstance(fp.get_registry().get("evaluators", "activation_pictures"), ActivationPicturesEvaluator)


@pytest.fixture(scope="module")
def tiny():
    return tiny_analysis()


def test_stores_a_shared_projection_and_one_pair_per_model_as_small_plain_data(tiny):
    result = fp.evaluate(tiny.base, tiny.pruned, tiny.tokenizer, groups=tiny.groups,
                         evaluators=["activation_pictures"], params={"activation_pictures": {"layer": 2, "n_boot": 20}},
                         progress=False)["activation_pictures"]
    pca = result.tables["pca"]
    assert [row["model"] for row in pca] == ["base", "pruned"]
    assert all(row["layer"] == 2 and row["members"] == ["black", "white"] for row in pca)
    n_groups = len(tiny.groups)
    assert [len(row["points"]) for row in pca] == [n_groups, n_groups] and len(pca[0]["points"][0][0]) == 2
    # the paired metric is the per-group mean of what the PCA panel titles show
    assert result.metrics["layer_distance_base"] == pytest.approx(pca[0]["distance"])
    assert result.metrics["layer_distance_pruned"] == pytest.approx(pca[1]["distance"])
    (tokens,) = result.tables["tokens"]
    assert (tokens["prompt_a"], tokens["prompt_b"]) == tiny.groups[0].prompts
    assert len(tokens["base"]) == len(tokens["pruned"]) == 4  # embeddings + 3 layers
    assert tokens["tokens"][tokens["diverge_at"]] == "black / white"
    assert len(json.dumps(result.to_dict())) < 20_000  # projected points, not activations


def test_a_layer_beyond_the_model_is_a_config_error(tiny):
    with pytest.raises(ConfigError, match="activation_pictures.layer 3 is out of range: the model has 3 layers"):
        fp.evaluate(tiny.base, tiny.pruned, tiny.tokenizer, groups=tiny.groups, evaluators=["activation_pictures"],
                    params={"activation_pictures": {"layer": 3}}, progress=False)
