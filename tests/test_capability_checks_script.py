"""``benchmarks/capability_checks.py``'s helpers: the plans it reads and the rank agreement it reports."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "capability_checks.py"


@pytest.fixture(scope="module")
def checks():
    spec = importlib.util.spec_from_file_location("capability_checks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spearman_follows_ranks_not_values(checks):
    assert checks.spearman([1.0, 2.0, 30.0, 4.0], [10.0, 20.0, 40.0, 30.0]) == pytest.approx(1.0)
    assert checks.spearman([1.0, 2.0, 3.0], [0.3, 0.2, 0.1]) == pytest.approx(-1.0)
    # ranks (0, 2, 1, 3) against (0, 1, 2, 3): 1 - 6 * 2 / (4 * 15) = 0.8
    assert checks.spearman([1.0, 3.0, 2.0, 4.0], [1.0, 2.0, 3.0, 4.0]) == pytest.approx(0.8)
    assert math.isnan(checks.spearman([1.0, 2.0], [2.0, 1.0]))
    # a tie shares its ranks: (0.5, 0.5, 2) against (0, 1, 2)
    assert checks.spearman([5.0, 5.0, 9.0], [1.0, 2.0, 3.0]) == pytest.approx(math.sqrt(3) / 2)


def test_removed_sets_reads_a_run_directory_whole_and_by_round(checks, tmp_path):
    run = tmp_path / "my-run"
    run.mkdir()
    records = [{"layer": 0, "neuron": 3, "round": 1}, {"layer": 1, "neuron": 5, "round": 2},
               {"layer": 0, "neuron": 7, "round": 2}]
    (run / "plan.json").write_text(json.dumps({"removed": {"0": [3, 7], "1": [5]}, "records": records}))

    assert checks.removed_sets(run, by_round=False) == {"my-run": {0: [3, 7], 1: [5]}}
    sets = checks.removed_sets(run / "plan.json", by_round=True)
    assert sets == {"my-run": {0: [3, 7], 1: [5]}, "my-run, round 1": {0: [3]}, "my-run, round 2": {1: [5], 0: [7]}}
