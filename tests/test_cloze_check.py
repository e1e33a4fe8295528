"""The long-range cloze check: its measurement against a pruned copy, rounds it halves or rejects, its files."""

from __future__ import annotations

import contextlib
import copy
import json
import math

import pytest
import torch

from fairprune.core.contract.config import AttributionParams, Budget
from fairprune.core.contract.errors import ConfigError
from fairprune.core.method import attribution as attr
from fairprune.core.method import selection as sel
from fairprune.core.method.cloze_check import BUNDLED_PASSAGES, ClozeCheck, cloze_check, read_passages
from fairprune.plugins.capability_cost import CapabilityCost
from fairprune.plugins.objectives import NextTokenJS
from fairprune.testing.models import tiny_model
from fairprune.testing.prompts import tiny_race_groups
from fairprune.testing.tokenizer import tiny_tokenizer

PASSAGES = ("the old doctor walked into the room and the nurse said that the doctor",
            "my friend has a new job at the school because the teacher is very often at the school",
            "the family went home and the child said that the family",
            "the young worker lives in the city and he works in the city",
            "the girl said that her friend is kind and that her friend")

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    model = tiny_model("llama").double()
    tok = tiny_tokenizer()
    path = tmp_path_factory.mktemp("cloze") / "passages.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in PASSAGES))
    return model, tok, attr.resolve_adapter(model), path


def last_word_nll(model, tok, removed) -> float:
    """The last words' mean NLL per token on a copy whose removed neurons' down_proj columns are zeroed."""
    pruned = copy.deepcopy(model)
    for layer, neurons in removed.items():
        pruned.model.layers[layer].mlp.down_proj.weight.data[:, neurons] = 0
    total, count = 0.0, 0
    for text in PASSAGES:
        context, _, word = text.rpartition(" ")
        ids, target = tok(context)["input_ids"], tok(" " + word, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(pruned(torch.tensor([ids + target])).logits[0], -1)
        for k, t in enumerate(target):
            total -= float(logprobs[len(ids) - 1 + k, t])
            count += 1
    return total / count


def test_the_last_word_nll_with_neurons_removed_equals_a_pruned_copy(setup) -> None:
    model, tok, adapter, path = setup
    check = cloze_check(tok, passages=path, max_increase_pct=1.0, batch_size=2)
    removed = {0: [1, 4], 1: [2]}
    assert check.nll(model, adapter) == pytest.approx(last_word_nll(model, tok, {}), rel=1e-6)
    assert check.nll(model, adapter, removed) == pytest.approx(last_word_nll(model, tok, removed), rel=1e-6)
    assert check.nll(model, adapter, removed) != pytest.approx(check.nll(model, adapter), rel=1e-9)
    check.measure_base(model, adapter)
    rise = check.increase_pct(check.nll(model, adapter, removed))
    assert rise == pytest.approx(100 * (math.exp(last_word_nll(model, tok, removed) - check.base_nll) - 1), rel=1e-5)


def test_the_cost_is_the_derivative_of_the_last_word_loss_along_removal(setup) -> None:
    model, tok, adapter, path = setup
    check = cloze_check(tok, passages=path, max_increase_pct=None, guard_fraction=0.1, batch_size=2)
    cost = check.cost(model, adapter)
    assert all(torch.allclose(cost[k], v, rtol=1e-5, atol=1e-9)
               for k, v in cloze_check(tok, passages=path, max_increase_pct=None, batch_size=5)
               .cost(model, adapter).items())  # batching does not change it
    eps, layer = 1e-3, 1
    neuron = int(cost[layer].abs().argmax())
    site = adapter.site(model, layer, "neuron").module
    moved = []
    for sign in (1, -1):
        def pre_hook(module, args, scale=sign * eps):
            h = args[0].clone()
            h[..., neuron] = h[..., neuron] * (1 - scale)  # h -> h + scale * (0 - h)
            return (h, *args[1:])
        handle = site.register_forward_pre_hook(pre_hook)
        try:
            moved.append(check.nll(model, adapter))
        finally:
            handle.remove()
    assert (moved[0] - moved[1]) / (2 * eps) == pytest.approx(float(cost[layer][neuron]), rel=1e-3)
    # a real removal moves the loss the way the estimate says
    real = check.nll(model, adapter, {layer: [neuron]}) - check.nll(model, adapter)
    assert real * float(cost[layer][neuron]) > 0
    mask = check.protected(cost)
    assert int(mask[layer].sum()) <= round(0.1 * cost[layer].numel()) and bool((cost[layer][mask[layer]] > 0).all())


def test_the_guard_pass_reads_the_base_nll_a_separate_measurement_would(setup) -> None:
    model, tok, adapter, path = setup
    check = cloze_check(tok, passages=path, max_increase_pct=1.0, guard_fraction=0.2, batch_size=2)
    mask = check.guard(model, adapter)
    assert check.base_nll == pytest.approx(last_word_nll(model, tok, {}), rel=1e-6)
    assert all(torch.equal(mask[k], v) for k, v in check.protected(check.cost(model, adapter)).items())
    measured = cloze_check(tok, passages=path, max_increase_pct=1.0, batch_size=2)
    assert check.base_nll == pytest.approx(measured.measure_base(model, adapter), rel=1e-6)


def test_a_limit_scores_a_seeded_sample_of_the_passages_in_file_order(setup) -> None:
    _, tok, _, path = setup
    whole = cloze_check(tok, passages=path, max_increase_pct=1.0)
    sample = cloze_check(tok, passages=path, max_increase_pct=1.0, limit=3, sample_seed=1)
    assert len(sample.requests) == 3 and all(r in whole.requests for r in sample.requests)
    assert [whole.requests.index(r) for r in sample.requests] == sorted(whole.requests.index(r) for r in sample.requests)
    assert sample.requests == cloze_check(tok, passages=path, max_increase_pct=1.0, limit=3, sample_seed=1).requests
    assert {tuple(map(tuple, cloze_check(tok, passages=path, max_increase_pct=1.0, limit=3, sample_seed=k).requests[0]))
            for k in range(8)} != {tuple(map(tuple, sample.requests[0]))}  # the seed picks the sample
    assert "a sample of 3, seed 1" in sample.record()["passages"] and sample.record()["n_passages"] == 3
    with pytest.raises(ConfigError, match=r"method.cloze_check.limit: 5 is not below the 5 passages of .*passages."
                                          r"jsonl, so it samples nothing"):
        cloze_check(tok, passages=path, max_increase_pct=1.0, limit=5)


def test_a_check_limit_measures_a_sample_while_the_guard_reads_every_passage(setup) -> None:
    model, tok, adapter, path = setup
    whole = cloze_check(tok, passages=path, max_increase_pct=1.0, guard_fraction=0.2, batch_size=2)
    sampled = cloze_check(tok, passages=path, max_increase_pct=1.0, guard_fraction=0.2, batch_size=2,
                          check_limit=2, sample_seed=4)
    assert sampled.requests == whole.requests and len(sampled.check_rows) == 2
    checked = [PASSAGES[i] for i in sampled.check_rows]
    # the guard is the one every passage gives; the base is read from its forwards, over the sample only
    assert all(torch.equal(whole.guard(model, adapter)[k], v) for k, v in sampled.guard(model, adapter).items())
    alone = ClozeCheck([whole.requests[i] for i in sampled.check_rows], 1.0, whole.pad, 2)
    assert sampled.base_nll == pytest.approx(alone.measure_base(model, adapter), rel=1e-6)
    assert sampled.base_nll != pytest.approx(whole.base_nll, rel=1e-6)
    removed = {0: [1, 4], 1: [2]}
    assert sampled.nll(model, adapter, removed) == pytest.approx(alone.nll(model, adapter, removed), rel=1e-9)
    record = sampled.record()
    assert record["n_passages"] == len(PASSAGES) and record["checked_passages"] == 2
    assert record["check_sample"] == "a sample of 2, seed 4" and whole.record()["check_sample"] is None
    assert checked == [PASSAGES[i] for i in sorted(sampled.check_rows)]  # file order
    with pytest.raises(ConfigError, match="method.cloze_check.check_limit: 99 is not below the 5 passages"):
        cloze_check(tok, passages=path, max_increase_pct=1.0, check_limit=99)
    with pytest.raises(ConfigError, match="check_limit: 336 is not below the 336 passages of the bundled file"):
        cloze_check(tok, passages=None, max_increase_pct=1.0, check_limit=336)


class HalfOfTwo:
    """Process ``rank`` of two, run one after the other in this process: rank 1 first records what it gathers,
    then rank 0's k-th gather returns its own items followed by rank 1's k-th (what gloo would return)."""

    def __init__(self, rank: int, pool: dict[int, list[list]]) -> None:
        self.rank, self.size, self.pool = rank, 2, pool
        self.is_main = rank == 0
        self.calls = 0

    @contextlib.contextmanager
    def failures_stop_all(self):
        yield

    def gather_objects(self, items: list) -> list:
        mine = self.pool.setdefault(self.rank, [])
        mine.append(list(items))
        if self.rank == 1:
            return list(items)  # not read: only rank 0's result is checked
        return list(items) + self.pool[1][len(mine) - 1]


def test_two_processes_each_run_half_the_passages_and_reach_the_one_process_figures(setup) -> None:
    model, tok, adapter, path = setup
    forwards = []
    handle = model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        results = {}
        for who, world in (("one", None), *((r, HalfOfTwo(r, pool)) for pool in [{}] for r in (1, 0))):
            forwards.clear()
            check = cloze_check(tok, passages=path, max_increase_pct=1.0, batch_size=1)
            check.world = world
            # rank 1 runs first and so gathers its own scores only: its figures are incomplete and not read
            cost = nll = measured = None
            with contextlib.suppress(KeyError) if who == 1 else contextlib.nullcontext():
                cost, nll = check.cost_and_nll(model, adapter, removed={1: [2]})
            with contextlib.suppress(AttributeError) if who == 1 else contextlib.nullcontext():
                measured = check.nll(model, adapter, {0: [1]})
            results[who] = (cost, nll, measured, len(forwards))
    finally:
        handle.remove()
    one, first, second = results["one"], results[0], results[1]
    assert 0 < first[3] < one[3] and 0 < second[3] < one[3] and first[3] + second[3] == one[3]
    assert all(torch.equal(first[0][k], v) for k, v in one[0].items())  # summed in the same order: bit for bit
    assert (first[1], first[2]) == (one[1], one[2])


class Counting(ClozeCheck):
    """A check whose measured last-word NLL rises 0.01 nats (about 1%) per removed neuron."""

    def nll(self, model, adapter, removed=None, fill=None) -> float:
        return 2.0 + 0.01 * sum(len(v) for v in (removed or {}).values())


def select(setup, check):
    model, tok, adapter, _ = setup
    settings = AttributionParams(rounds=1, guard_fraction=0.0, max_perplexity_increase_pct=None,
                                 min_improvement_pct=0.0)
    return sel.select_by_attribution(model, tok, tiny_race_groups(), objective=NextTokenJS(),
                                     capability=CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 64}),
                                     budget=Budget(neurons=12), settings=settings, batch_size=6, adapter=adapter,
                                     progress=False, cloze=check)


def test_a_round_is_halved_until_its_last_word_perplexity_rise_fits(setup) -> None:
    _, tok, _, path = setup
    real = cloze_check(tok, passages=path, max_increase_pct=2.5)
    check = Counting(real.requests, 2.5, real.pad)
    selection = select(setup, check)
    # 12 ranked additions halved to 6, 3 and 1 until the rise is at most 2.5% (1 neuron: +1.0%; 3: +3.0%)
    assert [c["neurons"] for c in check.checks][:2] == [12, 6]
    assert selection.plan.n_neurons <= 2 and check.checks[-1]["kept"]
    assert all(not c["kept"] for c in check.checks[:-1])
    assert selection.rounds[0]["cloze_increase_pct_proposed"] == pytest.approx(check.checks[-1]["increase_pct"])
    record = selection.plan.settings["cloze_check"]
    assert record["base_nll"] == 2.0 and record["n_passages"] == len(PASSAGES) and record["checks"] == check.checks


def test_a_round_that_costs_beyond_the_limit_even_at_one_neuron_is_rejected(setup) -> None:
    _, tok, _, path = setup
    real = cloze_check(tok, passages=path, max_increase_pct=0.5)
    rejected = select(setup, Counting(real.requests, 0.5, real.pad))
    assert rejected.plan.n_neurons == 0
    assert "last-word perplexity on the cloze passages would rise more than 0.5%" in \
        rejected.plan.settings["stop_reason"]


def test_passage_files_are_checked_before_any_work(tmp_path) -> None:
    texts = read_passages(BUNDLED_PASSAGES)
    for text in texts:  # every bundled passage ends with a name the passage has already used
        context, _, name = text.rpartition(" ")
        assert name.isalpha() and name[0].isupper() and name in context, text
    with pytest.raises(ConfigError, match="cloze_check.passages: no such JSONL file"):
        cloze_check(None, passages=tmp_path / "missing.jsonl", max_increase_pct=1.0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine text here"}\n{"words": "no text key"}\n')
    with pytest.raises(ConfigError, match="line 2 of .*bad.jsonl' is not a JSON object with a 'text'"):
        read_passages(bad)
    bad.write_text('{"text": "oneword"}\n')
    with pytest.raises(ConfigError, match="has no last word to predict"):
        read_passages(bad)
    bad.write_text("\n")
    with pytest.raises(ConfigError, match="holds no examples"):
        read_passages(bad)
    assert AttributionParams().cloze_check is None
    params = AttributionParams.model_validate({"cloze_check": {"max_increase_pct": 4.0}})
    assert params.cloze_check.max_increase_pct == 4.0 and params.cloze_check.passages is None
    with pytest.raises(Exception, match="max_increase_pct"):
        AttributionParams.model_validate({"cloze_check": {"max_increase_pct": 0}})
    with pytest.raises(Exception, match="does nothing"):
        AttributionParams.model_validate({"cloze_check": {"max_increase_pct": None}})
    with pytest.raises(Exception, match="sample_seed without limit or check_limit does nothing"):
        AttributionParams.model_validate({"cloze_check": {"sample_seed": 3}})
    with pytest.raises(Exception, match="limit"):
        AttributionParams.model_validate({"cloze_check": {"limit": 0}})
    assert AttributionParams.model_validate({"cloze_check": {"limit": 8, "sample_seed": 3}}).cloze_check.limit == 8
    assert AttributionParams.model_validate({"cloze_check": {"check_limit": 8, "sample_seed": 3}}).cloze_check.check_limit == 8
    with pytest.raises(Exception, match="check_limit with max_increase_pct None does nothing"):
        AttributionParams.model_validate({"cloze_check": {"check_limit": 8, "max_increase_pct": None,
                                                          "guard_fraction": 0.1}})
    with pytest.raises(Exception, match="check_limit 8 is not below limit 8"):
        AttributionParams.model_validate({"cloze_check": {"check_limit": 8, "limit": 8}})


def test_a_run_with_the_cloze_check_records_it_in_the_plan(tmp_path, setup) -> None:
    import fairprune as fp
    from fairprune.testing import tiny_char_tokenizer
    from fairprune.testing.runs import tiny_attribution_config

    source = tmp_path / "tiny-llama"
    fp.save_pretrained(tiny_model("llama", max_position_embeddings=512), tiny_char_tokenizer(), source)
    config = tiny_attribution_config(tmp_path / "run", source,
                                     cloze_check={"passages": str(setup[3]), "max_increase_pct": 50.0})
    result = fp.run(config, progress=False)
    plan = json.loads((result.output_dir / "plan.json").read_text())
    record = plan["settings"]["cloze_check"]
    assert record["passages"] == str(setup[3]) and record["n_passages"] == len(PASSAGES) and record["base_nll"] > 0
    assert record["checks"] and all(c["increase_pct"] <= 50.0 for c in record["checks"] if c["kept"])
    assert all("cloze_increase_pct_proposed" in r for r in plan["settings"]["round_log"])


def test_a_missing_passages_file_fails_before_the_model_loads(tmp_path) -> None:
    import fairprune as fp

    config = {"model": {"source": str(tmp_path / "no-such-model")}, "bias": {"axes": ["race"]},
              "method": {"name": "attribution", "cloze_check": {"passages": str(tmp_path / "none.jsonl")}},
              "pruning": {"budget": {"neurons": 4}}, "output": {"dir": str(tmp_path / "run")}}
    with pytest.raises(ConfigError, match="cloze_check.passages: no such JSONL file"):
        fp.run(config, progress=False)
    assert not (tmp_path / "run").exists()
