"""The recall guard: its loss on hand-computed cases, its answer tokens, and rounds it halves or rejects."""

from __future__ import annotations

import math

import pytest
import torch

from fairprune.core.contract.config import AttributionParams, Budget
from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.protocols import ObjectiveInputs
from fairprune.core.method import attribution as attr
from fairprune.core.method import selection as sel
from fairprune.core.method.recall_guard import RecallGuard, RecallLoss, answer_tokens, bundled_recall_file, recall_guard
from fairprune.plugins.capability_cost import CapabilityCost
from fairprune.plugins.objectives import NextTokenJS
from fairprune.testing.models import tiny_model
from fairprune.testing.prompts import tiny_race_groups
from fairprune.testing.tokenizer import TINY_RECALL_FILE, VOCAB, tiny_tokenizer

RECALL_FILE = TINY_RECALL_FILE

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    model = tiny_model("llama").double()
    tok = tiny_tokenizer()
    path = tmp_path_factory.mktemp("recall") / "race.yaml"
    path.write_text(RECALL_FILE)
    return model, tok, attr.resolve_adapter(model), path


def test_recall_loss_is_minus_log_share_of_the_stated_group() -> None:
    # vocabulary of 4: groups A -> tokens {0, 1}, B -> {2}; token 3 belongs to no group
    answers = {"A": [0, 1], "B": [2]}
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.1, 0.1, 0.3]], dtype=torch.float64)
    inputs = ObjectiveInputs([2], p.log(), None, [("A", "B")])
    # member 0 stated A: share of A = 0.3 / (0.3 + 0.3) = 0.5; member 1 stated B: 0.1 / (0.6 + 0.1) = 1/7
    want_loss = -(math.log(0.5) + math.log(1 / 7)) / 2
    assert float(RecallLoss(answers).value(inputs)[0]) == pytest.approx(want_loss, rel=1e-9)
    assert float(RecallLoss(answers, share=True).value(inputs)[0]) == pytest.approx((0.5 + 1 / 7) / 2, rel=1e-9)


def test_answer_tokens_drop_ids_two_groups_share(setup) -> None:
    _, tok, _, _ = setup
    got = answer_tokens(tok, {"Black": ["black"], "white": ["white", "man"], "Asian": ["asian", "man"]})
    # "man" is in two groups: dropped from both; "Black" and "black" are one id (the tokenizer lowercases)
    assert got == {"Black": [VOCAB["black"]], "white": [VOCAB["white"]], "Asian": [VOCAB["asian"]]}
    with pytest.raises(ConfigError, match="shared with another group"):
        answer_tokens(tok, {"a": ["man"], "b": ["man"]})


def test_recall_cost_matches_a_real_removal_to_first_order(setup) -> None:
    model, tok, adapter, path = setup
    guard = recall_guard(model, tok, prompts=path, guard_fraction=0.1, max_drop_pts=1.0, batch_size=6)
    cost = guard.cost(model, adapter)
    base = attr.objective_values(model, guard.batches, guard.loss, adapter)
    layer = 1
    neuron = int(cost[layer].abs().argmax())
    after = attr.objective_values(model, guard.batches, guard.loss, adapter, removed={layer: [neuron]})
    real = sum(after) / len(after) - sum(base) / len(base)
    assert real * float(cost[layer][neuron]) > 0  # the estimate has the sign of the real change
    assert float(cost[layer][neuron]) == pytest.approx(real, rel=0.5)
    # the guard protects the neurons whose removal raises the loss most, and only those
    mask = guard.protected(cost)
    assert int(mask[layer].sum()) <= round(0.1 * cost[layer].numel())
    assert bool((cost[layer][mask[layer]] > 0).all())
    assert float(cost[layer][mask[layer]].min()) >= float(cost[layer][~mask[layer]].max()) or not mask[layer].any()


def select(setup, guard, rounds: int = 1):
    model, tok, adapter, _ = setup
    settings = AttributionParams(rounds=rounds, guard_fraction=0.0, max_perplexity_increase_pct=None,
                                 min_improvement_pct=0.0)
    return sel.select_by_attribution(model, tok, tiny_race_groups(), objective=NextTokenJS(),
                                     capability=CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 64}),
                                     budget=Budget(neurons=12), settings=settings, batch_size=6, adapter=adapter,
                                     progress=False, recall=guard)


class Counting(RecallGuard):
    """A guard whose measured recall falls 1 point per removed neuron (the estimates are left real)."""

    def measure(self, model, adapter, *, removed=None, fill=None) -> float:
        return 90.0 - sum(len(v) for v in (removed or {}).values())


def test_a_round_that_costs_recall_beyond_its_limit_is_rejected(setup) -> None:
    model, tok, adapter, path = setup
    real = recall_guard(model, tok, prompts=path, guard_fraction=0.0, max_drop_pts=None, batch_size=6)
    rejected = select(setup, Counting(real.batches, real.loss, real.share, 0.0, 0.5))  # even one neuron costs 1
    assert rejected.plan.n_neurons == 0
    assert "recall of the stated group would fall more than 0.5 points" in rejected.plan.settings["stop_reason"]
    assert rejected.plan.settings["recall"]["recall_base_pct"] == 90.0


def test_the_real_recall_drop_of_a_guarded_selection_stays_within_its_limit(setup) -> None:
    model, tok, adapter, path = setup
    free = select(setup, recall_guard(model, tok, prompts=path, guard_fraction=0.0, max_drop_pts=50.0, batch_size=6))
    probe = recall_guard(model, tok, prompts=path, guard_fraction=0.0, max_drop_pts=None, batch_size=6)
    base = probe.measure(model, adapter)
    drop = base - probe.measure(model, adapter, removed=free.plan.removed)
    assert free.plan.n_neurons > 0 and drop > 0, "the unguarded selection must cost some recall"
    limit = drop / 2
    guarded = select(setup, recall_guard(model, tok, prompts=path, guard_fraction=0.0, max_drop_pts=limit,
                                         batch_size=6))
    assert guarded.plan.n_neurons < free.plan.n_neurons
    assert base - probe.measure(model, adapter, removed=guarded.plan.removed) <= limit + 1e-9
    assert guarded.plan.settings["recall"]["recall_base_pct"] == pytest.approx(base)


def test_a_round_is_halved_until_its_recall_drop_fits(setup) -> None:
    model, tok, adapter, path = setup
    real = recall_guard(model, tok, prompts=path, guard_fraction=0.0, max_drop_pts=None, batch_size=6)
    guard = Counting(real.batches, real.loss, real.share, 0.0, 2.5)
    selection = select(setup, guard)
    # the round's ranked additions are halved (12 -> 6 -> 3 -> 1 at most) until at most 2.5 neurons are removed
    assert 1 <= selection.plan.n_neurons <= 2
    assert selection.rounds[0]["recall_pct"] == pytest.approx(90.0 - selection.plan.n_neurons)


def test_recall_settings_and_files_are_checked(tmp_path) -> None:
    assert bundled_recall_file("race").is_file()
    with pytest.raises(ConfigError, match="no bundled recall prompts for axis 'gender'"):
        bundled_recall_file("gender")
    with pytest.raises(ConfigError, match="recall.prompts: file not found"):
        recall_guard(None, None, prompts=tmp_path / "missing.yaml", guard_fraction=0.1, max_drop_pts=1.0)
    params = AttributionParams.model_validate({"recall": {"guard_fraction": 0.2, "max_drop_pts": 2.0}})
    assert params.recall.guard_fraction == 0.2 and AttributionParams().recall is None
    with pytest.raises(Exception, match="guard_fraction"):
        AttributionParams.model_validate({"recall": {"guard_fraction": 1.5}})
    with pytest.raises(Exception, match="recall with guard_fraction 0 and max_drop_pts None does nothing"):
        AttributionParams.model_validate({"recall": {"guard_fraction": 0.0, "max_drop_pts": None}})


@pytest.mark.parametrize(("prompts", "message"), [
    ("missing.yaml", "method.recall.prompts: file not found: {t}/missing.yaml"),
    ("bad.yaml", "method.recall.prompts: {t}/bad.yaml: missing field(s) ['groups', 'templates']"),
])
def test_recall_prompts_are_read_before_the_model_loads(tmp_path, capsys, prompts, message) -> None:
    import json

    from fairprune.cli import main as cli_main
    from fairprune.testing import snapshot

    (tmp_path / "bad.yaml").write_text("name: mine\n")
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"model": {"source": str(tmp_path / "no-model")}, "output": {"dir": str(tmp_path / "out")},
                                  "method": {"name": "attribution", "recall": {"prompts": str(tmp_path / prompts)}}}))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli_main(["run", str(config), "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == "error: " + message.format(t=tmp_path)  # not the missing model
    assert snapshot(tmp_path) == before


def test_a_run_with_the_recall_guard_records_it_in_the_plan(tmp_path) -> None:
    import json

    import fairprune as fp
    from fairprune.testing import tiny_char_tokenizer
    from fairprune.testing.runs import tiny_attribution_config

    source = tmp_path / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), source)
    config = tiny_attribution_config(tmp_path / "run", source, recall={"guard_fraction": 0.2, "max_drop_pts": 100.0})
    result = fp.run(config, progress=False)
    plan = json.loads((result.output_dir / "plan.json").read_text())
    recall = plan["settings"]["recall"]
    assert recall["guard_fraction"] == 0.2 and 0.0 < recall["recall_base_pct"] < 100.0
    assert all("recall_pct" in r for r in plan["settings"]["round_log"])
