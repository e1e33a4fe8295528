"""What keeps a run's peak memory near its weights' size: log-probabilities by chunks of positions in the
model's dtype, a finite check without a widened copy, freed heap memory handed back, and a report that reads the
run's own model instead of reloading it."""

from __future__ import annotations

import contextlib
import ctypes
import platform
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fairprune.core.model import lm_scoring, memory
from fairprune.core.model.devices import all_finite
from fairprune.testing import tiny_model


def whole_logprobs(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unchunked reference: one float32 log-softmax of every position."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    return lp.gather(1, target[:, None])[:, 0], lp.argmax(-1) == target


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk", [1, 3, 8, 100])
def test_chunked_target_logprobs_equal_the_whole_log_softmax(dtype, chunk):
    model = tiny_model("llama").to(dtype)
    ids = torch.randint(3, 120, (1, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    target = ids[0, 1:]
    logprob, hit = lm_scoring.target_logprobs(logits, target, chunk)
    ref_logprob, ref_hit = whole_logprobs(logits, target)
    assert logprob.dtype == torch.float32 and logprob.shape == target.shape
    torch.testing.assert_close(logprob, ref_logprob, rtol=0, atol=1e-6)
    assert torch.equal(hit, ref_hit)
    assert float(-logprob.sum()) == pytest.approx(float(-ref_logprob.sum()), abs=1e-5)


def test_scores_do_not_depend_on_the_chunk_of_positions(monkeypatch):
    """The NLL of a 3-window text is the same when one position at a time is widened to float32."""
    model = tiny_model("llama").to(torch.bfloat16)
    requests = lm_scoring.window_requests(list(range(3, 90)), window=30, stride=30)
    default = lm_scoring.score_continuations(model, requests, batch_size=4)
    monkeypatch.setattr(lm_scoring, "SCORE_POSITIONS", 1)
    one = lm_scoring.score_continuations(model, requests, batch_size=4)
    for a, b in zip(default, one):
        assert (a.n_tokens, a.greedy) == (b.n_tokens, b.greedy)
        assert a.nll == pytest.approx(b.nll, abs=1e-6)


def test_next_token_logprobs_rows_keep_prompt_order():
    from fairprune.testing import tiny_tokenizer

    model, tok = tiny_model("llama"), tiny_tokenizer()
    prompts = ["the man was", "a very old doctor lives in the town and", "she"]
    together = lm_scoring.last_token_logprobs(model, tok, prompts, batch_size=2)
    for i, prompt in enumerate(prompts):
        alone = lm_scoring.last_token_logprobs(model, tok, [prompt], batch_size=1)[0]
        torch.testing.assert_close(together[i], alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@given(bad=st.sampled_from([None, float("nan"), float("inf"), -float("inf")]), where=st.integers(0, 59))
@settings(max_examples=30, deadline=None)
def test_all_finite_agrees_with_isfinite(dtype, bad, where):
    t = torch.linspace(-5, 5, 60).to(dtype).reshape(3, 20)
    if bad is not None:
        t.view(-1)[where] = bad
    assert all_finite(t) == bool(torch.isfinite(t).all()) == (bad is None)


def test_all_finite_of_an_empty_tensor():
    assert all_finite(torch.empty(0, 7, dtype=torch.bfloat16))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_memory_trims_the_glibc_heap():
    memory._malloc_trim.cache_clear()
    assert memory.release_memory() is True


@pytest.fixture
def without_glibc(monkeypatch):
    """``ctypes.CDLL`` fails as it does where there is no glibc; the cached C functions are looked up again."""
    def no_libc(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    memory._mallopt.cache_clear()
    memory._malloc_trim.cache_clear()
    yield
    memory._mallopt.cache_clear()
    memory._malloc_trim.cache_clear()


def test_release_memory_is_a_no_op_without_glibc(without_glibc):
    assert memory.release_memory() is False


def test_run_report_reads_the_runs_model_instead_of_reloading_it(tmp_path, monkeypatch):
    """A run draws its report's bias-importance plot from the model in memory (no second copy of the weights);
    a report drawn later from the directory reloads the saved model and gets the same importance."""
    import re

    import fairprune.core.io.persist as persist
    from fairprune.testing.runs import sample_run
    from fairprune.viz.rundata import full_importance, load_run

    load_pretrained = persist.load_pretrained
    monkeypatch.setattr(persist, "load_pretrained", lambda *a, **k: pytest.fail("the run's model must be used"))
    run_dir = sample_run(tmp_path)
    assert "scatter" in re.findall(r'<figure id="plot-(\w+)">', (run_dir / "report.html").read_text())
    run = load_run(run_dir)
    run.model, _ = load_pretrained(run_dir)
    in_memory = full_importance(run)
    monkeypatch.setattr(persist, "load_pretrained", load_pretrained)
    reloaded = full_importance(load_run(run_dir))
    assert reloaded is not None and in_memory is not None and sorted(reloaded) == sorted(in_memory)
    for layer in reloaded:
        torch.testing.assert_close(in_memory[layer], reloaded[layer], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_losses_by_row_equal_the_whole_batch_cross_entropy(dtype):
    """The attribution's text loss widens one chunk's logits at a time; losses and gradients are unchanged."""
    from fairprune.core.method.attribution import _chunk_losses, wide

    model = tiny_model("llama").to(dtype)
    chunks = torch.randint(3, 120, (3, 30), generator=torch.Generator().manual_seed(2)).tolist()
    ids = torch.tensor(chunks)
    with torch.no_grad():
        logits = wide(model(input_ids=ids).logits[:, :-1])
    whole = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")[:, 1:].mean(1)
    with torch.no_grad():
        torch.testing.assert_close(_chunk_losses(model, chunks, n_prefix=2), whole, rtol=0, atol=1e-6)
    weight = model.lm_head.weight
    by_row = torch.autograd.grad(_chunk_losses(model, chunks, n_prefix=2).sum(), weight)[0]
    logits = wide(model(input_ids=ids).logits[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")[:, 1:].mean(1)
    torch.testing.assert_close(by_row, torch.autograd.grad(loss.sum(), weight)[0], rtol=0, atol=1e-6)


GLIBC = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")


def _resident() -> int:
    """This process's resident set, bytes (Linux)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def _in_heap(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s data lies in the process heap (glibc's main arena, ``[heap]`` in /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        spans = [line.split()[0].split("-") for line in maps if line.rstrip().endswith("[heap]")]
    return any(int(lo, 16) <= tensor.data_ptr() < int(hi, 16) for lo, hi in spans)


def _freed_from_resident() -> int:
    """Bytes the resident set falls by when 32 touched blocks of 2 MiB, each followed by a live block of
    256 KiB, are freed."""
    blocks, live = [], []
    for _ in range(32):
        blocks.append(torch.ones(1 << 19))  # 2 MiB of float32, every page written
        live.append(torch.ones(1 << 16))  # 256 KiB: under MAPPED_BLOCK_BYTES, in the heap either way
    before = _resident()
    del blocks
    freed = before - _resident()
    del live
    return freed


@GLIBC
def test_large_blocks_mapped_hands_freed_activations_back_at_once():
    """Inside the block a 2 MiB tensor gets a mapping of its own, and freeing 64 MiB of them shrinks the
    resident set by about that much; after it (glibc's threshold at its adaptive ceiling, 32 MiB) such a
    tensor comes from the heap again, where freed blocks stay resident until the heap is trimmed. Run in a
    fresh process: glibc serves a request from a free heap chunk large enough before it maps anything, and
    after hundreds of tests the heap holds such chunks."""
    import subprocess
    import sys

    here = str(Path(__file__).resolve().parent)
    check = (
        f"import sys; sys.path[:0] = [{here!r}]\n"
        "from test_memory import _freed_from_resident, _in_heap\n"
        "import torch\n"
        "from fairprune.core.model import memory\n"
        "with memory.large_blocks_mapped() as mapped:\n"
        "    assert mapped and memory.mapped_threshold() == memory.MAPPED_BLOCK_BYTES\n"
        "    assert not _in_heap(torch.ones(1 << 19)), 'a 2 MiB block came from the heap inside the block'\n"
        "    freed = _freed_from_resident()\n"
        "    assert freed >= 56 * 2**20, freed\n"
        "assert memory.mapped_threshold() is None\n"
        "assert _in_heap(torch.ones(1 << 19)), 'a 2 MiB block was mapped after the block'\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


@GLIBC
def test_large_blocks_mapped_nests():
    with memory.large_blocks_mapped():
        with memory.large_blocks_mapped() as inner:
            assert inner
        assert memory.mapped_threshold() == memory.MAPPED_BLOCK_BYTES  # the outer block still holds
    assert memory.mapped_threshold() is None


def test_large_blocks_mapped_is_a_no_op_without_glibc(without_glibc):
    with memory.large_blocks_mapped() as mapped:
        assert mapped is False and memory.mapped_threshold() is None


@GLIBC
def test_selection_passes_run_with_large_blocks_mapped(monkeypatch):
    """Every attribution and capability pass of a selection runs inside ``large_blocks_mapped``; the plan is
    the same as the plan of a selection whose passes ran without it."""
    from fairprune.core.contract.config import AttributionParams, Budget
    from fairprune.core.contract.protocols import PromptGroup
    from fairprune.core.method import attribution as attr
    from fairprune.core.method import capability as cap
    from fairprune.core.method import selection as sel
    from fairprune.plugins.capability_cost import CapabilityCost
    from fairprune.plugins.objectives import NextTokenJS
    from fairprune.testing import tiny_tokenizer

    templates = ("the {} man walked into the room and", "the {} woman has a new job at the",
                 "the {} doctor said that the", "a {} student went to school because")
    groups = [PromptGroup("race", str(i), ("black", "white"), tuple(t.format(a) for a in ("black", "white")))
              for i, t in enumerate(templates)]
    torch.manual_seed(0)
    model, tok = tiny_model("llama"), tiny_tokenizer()

    def select():
        settings = AttributionParams(guard_fraction=0.25, rounds=2, min_improvement_pct=0.0)
        capability = CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 64, "check_tokens": 32})
        return sel.select_by_attribution(model, tok, groups, objective=NextTokenJS(), capability=capability,
                                         budget=Budget(neurons=8), settings=settings, batch_size=4,
                                         progress=False).plan

    seen = []

    def recording(func):
        def inner(*args, **kwargs):
            seen.append(memory.mapped_threshold())
            return func(*args, **kwargs)
        return inner

    monkeypatch.setattr(memory, "MAPPED_MIN_MODEL_BYTES", 0)  # the tiny model counts as large here
    monkeypatch.setattr(attr, "attribute_objective", recording(attr.attribute_objective))
    monkeypatch.setattr(attr, "text_loss", recording(attr.text_loss))
    monkeypatch.setattr(cap, "_chunk_losses", recording(cap._chunk_losses))
    mapped = select()
    assert len(seen) >= 4 and set(seen) == {memory.MAPPED_BLOCK_BYTES}
    assert memory.mapped_threshold() is None

    @contextlib.contextmanager
    def unmapped():
        yield False

    monkeypatch.setattr(memory, "large_blocks_mapped", lambda enabled=True: unmapped())
    seen.clear()
    plain = select()
    assert set(seen) == {None}
    assert plain.removed == mapped.removed and plain.removed
    assert plain.settings["round_log"] == mapped.settings["round_log"]


@GLIBC
def test_selection_on_a_small_model_leaves_the_heap_alone(monkeypatch):
    """Below ``MAPPED_MIN_MODEL_BYTES`` of weights, selection's passes run with glibc's own threshold."""
    from fairprune.core.contract.config import AttributionParams, Budget
    from fairprune.core.contract.protocols import PromptGroup
    from fairprune.core.method import attribution as attr
    from fairprune.core.method import selection as sel
    from fairprune.plugins.capability_cost import CapabilityCost
    from fairprune.plugins.objectives import NextTokenJS
    from fairprune.testing import tiny_tokenizer

    groups = [PromptGroup("race", str(i), ("black", "white"), tuple(t.format(a) for a in ("black", "white")))
              for i, t in enumerate(("the {} man walked into the room and", "the {} doctor said that the"))]
    torch.manual_seed(0)
    model, tok = tiny_model("llama"), tiny_tokenizer()
    assert memory.weight_bytes(model) < memory.MAPPED_MIN_MODEL_BYTES
    seen = []
    original = attr.attribute_objective

    def recording(*args, **kwargs):
        seen.append(memory.mapped_threshold())
        return original(*args, **kwargs)

    monkeypatch.setattr(attr, "attribute_objective", recording)
    capability = CapabilityCost().configure({"chunk_tokens": 16, "max_tokens": 64, "check_tokens": 32})
    sel.select_by_attribution(model, tok, groups, objective=NextTokenJS(), capability=capability,
                              budget=Budget(neurons=4), settings=AttributionParams(rounds=1), batch_size=4,
                              progress=False)
    assert seen and set(seen) == {None}
