"""Passes selection no longer runs twice: the recall before any removal is read from the recall cost's forwards."""

from __future__ import annotations

import pytest
import torch

from fairprune.core.method import attribution as attr
from fairprune.core.method.recall_guard import recall_guard
from fairprune.testing.models import tiny_model
from fairprune.testing.tokenizer import TINY_RECALL_FILE, tiny_tokenizer

RECALL_FILE = TINY_RECALL_FILE


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    model = tiny_model("llama")
    path = tmp_path_factory.mktemp("recall") / "race.yaml"
    path.write_text(RECALL_FILE)
    return model, tiny_tokenizer(), attr.resolve_adapter(model), path


def test_a_second_objective_read_from_the_attribution_forwards_equals_its_own_pass(setup) -> None:
    model, tok, adapter, path = setup
    guard = recall_guard(model, tok, prompts=path, guard_fraction=0.1, max_drop_pts=1.0, batch_size=4)
    removed = {1: [3, 7]}
    both = attr.attribute_objective(model, guard.batches, guard.loss, adapter, removed=removed, also=guard.share)
    alone = attr.attribute_objective(model, guard.batches, guard.loss, adapter, removed=removed)
    share = attr.objective_values(model, guard.batches, guard.share, adapter, removed=removed)
    assert both.also == pytest.approx(share, rel=1e-6) and len(share) == 3
    assert both.values == alone.values  # the objective and its gradients are untouched by the extra one
    for layer in alone.sums.grad:
        assert torch.equal(both.sums.grad[layer], alone.sums.grad[layer])
    assert alone.also is None


def test_the_recall_after_the_cost_pass_costs_no_forward_and_equals_a_measured_one(setup, monkeypatch) -> None:
    model, tok, adapter, path = setup
    guard = recall_guard(model, tok, prompts=path, guard_fraction=0.1, max_drop_pts=1.0, batch_size=4)
    fresh = recall_guard(model, tok, prompts=path, guard_fraction=0.1, max_drop_pts=1.0, batch_size=4)
    want = fresh.measure(model, adapter)
    calls = []
    real = attr.objective_values
    monkeypatch.setattr(attr, "objective_values", lambda *a, **k: calls.append(1) or real(*a, **k))
    guard.cost(model, adapter)
    assert guard.measure(model, adapter) == pytest.approx(want, rel=1e-6)
    assert calls == []  # read from the cost pass
    assert guard.measure(model, adapter) == pytest.approx(want, rel=1e-6)
    assert len(calls) == 1  # read once only: a later measurement runs its own forwards
    guard.cost(model, adapter)
    other = guard.measure(model, adapter, removed={0: [1, 2, 3]})  # another removed set is never read from it
    assert len(calls) == 2 and other != pytest.approx(want, rel=1e-9)
