"""Attribution selection sharded over torch.distributed (gloo, torchrun) reaches the plan of one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from distributed_helpers import PAIRS, torchrun

from fairprune.core.method.bias import BiasReport
from fairprune.testing.faults import save_model_with_inf_token


def write_config(tmp_path: Path, source: Path, prompts: Path, **method) -> Path:
    config = {"model": {"source": str(source)}, "bias": {"axes": [], "prompts": str(prompts), "batch_size": 4},
              "method": {"name": "attribution", "rounds": 3, "guard_fraction": 0.25, "min_improvement_pct": 0.0,
                         "max_perplexity_increase_pct": 50.0, "target_reduction_pct": 60,
                         "capability": {"name": "capability_cost",
                                        "params": {"chunk_tokens": 16, "max_tokens": 160, "window_tokens": 4,
                                                   "check_tokens": 80}},
                         **method},
              "pruning": {"budget": {"neurons": 24}}, "evaluation": {"evaluators": ["parameters"]},
              "output": {"save_model": False}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def race_plans(tiny_dir: Path, tmp_path: Path, **method) -> dict[int, dict]:
    """``plan.json`` of one and of two processes selecting on the bundled race axis with ``method`` added."""
    config = {"model": {"source": str(tiny_dir)}, "bias": {"axes": ["race"], "batch_size": 8},
              "method": {"name": "attribution", "rounds": 2, "guard_fraction": 0.25, "min_improvement_pct": 0.0,
                         "max_perplexity_increase_pct": 50.0,
                         "capability": {"name": "capability_cost",
                                        "params": {"chunk_tokens": 16, "max_tokens": 160, "check_tokens": 80}},
                         **method},
              "pruning": {"budget": {"neurons": 16}}, "evaluation": {"evaluators": ["parameters"]},
              "output": {"save_model": False}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = {}
    for n in (1, 2):
        done = torchrun(n, "-m", "fairprune", "run", str(path), "--quiet", "--set", f"output.dir={tmp_path / str(n)}")
        assert done.returncode == 0, done.stderr[-3000:]
        runs[n] = json.loads((tmp_path / str(n) / "plan.json").read_text())
    return runs


@pytest.fixture(scope="module")
def tiny_dir(tiny_llama_dir):
    return tiny_llama_dir  # the session's saved tiny Llama (fairprune.testing.fixtures)


def test_two_processes_select_what_one_selects(tiny_dir, tmp_path):
    prompts = tmp_path / "pairs.json"
    prompts.write_text(json.dumps({"axis": "race", "pairs": PAIRS}))
    config = write_config(tmp_path, tiny_dir, prompts, folds=2)
    runs = {}
    for n in (1, 2):
        done = torchrun(n, "-m", "fairprune", "run", str(config), "--quiet", "--set", f"output.dir={tmp_path / str(n)}")
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("run written to") <= 1, "only rank 0 writes"
        runs[n] = json.loads((tmp_path / str(n) / "plan.json").read_text())
    one, two = runs[1], runs[2]
    assert one["n_neurons"] > 0, "the test must select something"
    assert (one["settings"]["processes"], two["settings"]["processes"]) == (1, 2)
    assert two["removed"] == one["removed"]
    assert [(r["layer"], r["neuron"], r["round"]) for r in two["records"]] == \
        [(r["layer"], r["neuron"], r["round"]) for r in one["records"]]
    log1, log2 = one["settings"]["round_log"], two["settings"]["round_log"]
    assert len(log1) >= 2, "several rounds, so the sharded checks were exercised"
    assert [(r["neurons"], r["accepted"]) for r in log2] == [(r["neurons"], r["accepted"]) for r in log1]
    for a, b in zip(log1, log2):
        for key in ("objective_before", "objective_after", "predicted_change", "calibration_loss"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    assert two["settings"]["calibration_loss_base"] == pytest.approx(one["settings"]["calibration_loss_base"],
                                                                     abs=1e-6)
    b1, b2 = BiasReport.load(tmp_path / "1" / "bias"), BiasReport.load(tmp_path / "2" / "bias")
    for table in ("scores", "magnitude", "mean"):
        for layer, tensor in getattr(b1, table).items():
            torch.testing.assert_close(getattr(b2, table)[layer], tensor, atol=1e-5, rtol=0)
    for layer, tensor in b1.extra["capability_cost"].items():
        torch.testing.assert_close(b2.extra["capability_cost"][layer], tensor, atol=1e-5, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2", "pairs.json", "run.yaml"]


def test_a_failure_in_one_process_stops_selection_in_both(tmp_path):
    """A broken embedding row (inf) poisons only the last group, whose batch process 1 attributes."""
    save_model_with_inf_token(tmp_path / "broken")
    prompts = tmp_path / "pairs.json"
    prompts.write_text(json.dumps({"axis": "race", "pairs": PAIRS[:3] + [["a ~ b c", "a ~ c d"]]}))
    config = write_config(tmp_path, tmp_path / "broken", prompts)
    done = torchrun(2, "-m", "fairprune", "run", str(config), "--quiet", "--set", f"output.dir={tmp_path / 'out'}", timeout=240)
    assert done.returncode != 0
    assert "process 1 of 2 failed: NonFiniteError" in done.stderr  # what rank 0 says
    assert not (tmp_path / "out").exists()


def test_two_processes_reach_the_floor_guard_of_one(tiny_dir, tmp_path):
    # the bundled race axis: its groups have several surface forms, so there is a word-swap floor to read
    runs = race_plans(tiny_dir, tmp_path, floor_guard=True)
    one, two = runs[1]["settings"]["floor_guard"], runs[2]["settings"]["floor_guard"]
    assert one["checks"], "the rounds must have been checked"
    assert runs[2]["removed"] == runs[1]["removed"]
    assert (two["guarded"], two["of"], len(two["checks"])) == (one["guarded"], one["of"], len(one["checks"]))
    for key in ("between_js", "within_js"):
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-9), key
    for a, b in zip(one["checks"], two["checks"]):
        assert (b["neurons"], b["passed"]) == (a["neurons"], a["passed"])
        for key in ("between_before", "within_before", "between_after", "within_after"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-9), key


def test_two_processes_share_the_cloze_and_recall_checks_and_reach_the_figures_of_one(tiny_dir, tmp_path):
    # both guards' backward passes and every round's checks are split among the processes; the figures that
    # decide a round (last-word NLL, recall) must be the one-process figures, and so must the plan
    runs = race_plans(tiny_dir, tmp_path, cloze_check={"guard_fraction": 0.1, "max_increase_pct": 50.0, "limit": 24},
                      recall={"guard_fraction": 0.1, "max_drop_pts": 50.0})
    one, two = runs[1]["settings"], runs[2]["settings"]
    assert runs[1]["n_neurons"] > 0 and one["cloze_check"]["checks"], "the rounds must have been checked"
    assert runs[2]["removed"] == runs[1]["removed"]
    assert two["cloze_check"]["base_nll"] == pytest.approx(one["cloze_check"]["base_nll"], rel=1e-6)
    assert [(c["neurons"], c["kept"]) for c in two["cloze_check"]["checks"]] == \
        [(c["neurons"], c["kept"]) for c in one["cloze_check"]["checks"]]
    for a, b in zip(one["cloze_check"]["checks"], two["cloze_check"]["checks"]):
        assert b["increase_pct"] == pytest.approx(a["increase_pct"], rel=1e-5, abs=1e-9)
    assert two["recall"]["recall_base_pct"] == pytest.approx(one["recall"]["recall_base_pct"], abs=1e-6)
    for a, b in zip(one["round_log"], two["round_log"]):
        assert b["recall_pct"] == pytest.approx(a["recall_pct"], abs=1e-6)
