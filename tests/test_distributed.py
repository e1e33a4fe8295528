"""Sharded analysis with torch.distributed (gloo, two processes started by torchrun) equals a one-process run."""

from __future__ import annotations

import json

import pytest
import torch
from distributed_helpers import torchrun
from hypothesis import given
from hypothesis import strategies as st

import fairprune as fp
from fairprune.cli import main as cli_main
from fairprune.core.contract.errors import PromptError
from fairprune.core.method.bias import BiasReport
from fairprune.core.model.distributed import World, shard_range
from fairprune.testing import tiny_char_tokenizer, tiny_model
from fairprune.testing.faults import save_model_with_inf_token

PAIRS = [["The Black man walked into the room and", "The white man walked into the room and"],
         ["A Black woman works at the school as a", "A white woman works at the school as a"],
         ["The Asian student was very", "The Hispanic student was very"],
         ["My Arab neighbour is known as a", "My Jewish neighbour is known as a"],
         ["The Black doctor said that the", "The white doctor said that the"]]


@given(n=st.integers(0, 200), size=st.integers(1, 9))
def test_shares_are_contiguous_balanced_and_cover_every_group_once(n, size):
    if n < size:
        with pytest.raises(PromptError, match="cannot be shared"):
            shard_range(n, World(0, size, torch.device("cpu")))
        return
    shares = [shard_range(n, World(rank, size, torch.device("cpu"))) for rank in range(size)]
    assert [i for share in shares for i in share] == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1




def assert_same_report(got: BiasReport, want: BiasReport, atol: float = 1e-5) -> None:
    assert got.settings["n_groups"] == want.settings["n_groups"]
    assert got.settings["n_tokens"] == want.settings["n_tokens"]
    for table in ("scores", "magnitude", "mean"):
        for layer, tensor in getattr(want, table).items():
            torch.testing.assert_close(getattr(got, table)[layer], tensor, atol=atol, rtol=0)
    for axis, per_layer in want.per_axis.items():
        for layer, tensor in per_layer.items():
            torch.testing.assert_close(got.per_axis[axis][layer], tensor, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), path)
    return path


def test_two_processes_equal_one_on_a_tiny_model(tiny_dir, tmp_path):
    assert cli_main(["analyze", "--model", str(tiny_dir), "--axes", "race", "--out", str(tmp_path / "one")]) == 0
    done = torchrun(2, "-m", "fairprune", "analyze", "--model", str(tiny_dir), "--axes", "race", "--out", str(tmp_path / "two"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("saved to") == 1, "only rank 0 prints and writes"
    one, two = BiasReport.load(tmp_path / "one"), BiasReport.load(tmp_path / "two")
    assert_same_report(two, one)


def test_a_failure_in_one_process_stops_both_with_its_message(tmp_path):
    """A broken embedding row (inf) poisons only the last group, which process 1 runs."""
    save_model_with_inf_token(tmp_path / "broken")
    prompts = tmp_path / "pairs.json"
    prompts.write_text(json.dumps({"pairs": PAIRS[:3] + [["a ~ b", "a ~ c"]]}))
    done = torchrun(2, "-m", "fairprune", "analyze", "--model", str(tmp_path / "broken"), "--prompts", str(prompts),
                    "--out", str(tmp_path / "out"), timeout=240)
    assert done.returncode != 0
    assert "process 1 of 2 failed: NonFiniteError: site 'neuron'" in done.stderr  # what rank 0 says
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_two_processes_equal_one_on_smollm2(tmp_path):
    prompts = tmp_path / "pairs.json"
    prompts.write_text(json.dumps({"axis": "race", "pairs": PAIRS}))
    args = ["analyze", "--model", "smollm2-135m", "--prompts", str(prompts), "--batch-size", "4"]
    assert cli_main([*args, "--out", str(tmp_path / "one")]) == 0
    done = torchrun(2, "-m", "fairprune", *args, "--out", str(tmp_path / "two"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_report(BiasReport.load(tmp_path / "two"), BiasReport.load(tmp_path / "one"))


@pytest.mark.integration  # two whole runs and a torchrun start-up: about a minute on two busy cores
def test_two_process_run_writes_once_and_equals_a_one_process_run(tiny_dir, tmp_path):
    import yaml

    config = {"model": {"source": str(tiny_dir)}, "bias": {"axes": ["race"], "batch_size": 8},
              "pruning": {"budget": {"neurons": 8}},
              "evaluation": {"evaluators": ["activation_bias", "parameters"]}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli_main(["run", str(path), "--quiet", "--set", f"output.dir={tmp_path / 'one'}"]) == 0
    done = torchrun(2, "-m", "fairprune", "run", str(path), "--quiet", "--set", f"output.dir={tmp_path / 'two'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run written to") <= 1
    assert_same_report(BiasReport.load(tmp_path / "two" / "bias"), BiasReport.load(tmp_path / "one" / "bias"))
    assert (json.loads((tmp_path / "two" / "plan.json").read_text())["removed"]
            == json.loads((tmp_path / "one" / "plan.json").read_text())["removed"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "run.yaml", "two"], "no locks or staging left"
