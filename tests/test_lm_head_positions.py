"""The LM head runs only at the positions a pass reads, as one matmul: scoring, checks and attribution passes."""

from __future__ import annotations

import torch

from fairprune.core.contract.protocols import PromptGroup
from fairprune.core.method import attribution as attr
from fairprune.core.model.lm_scoring import contiguous_head, forward_left_padded, last_token_logprobs
from fairprune.testing.models import tiny_model
from fairprune.testing.tokenizer import tiny_tokenizer


class HeadInputs:
    """Records the shape and contiguity of every input the model's output head computed on (after its pre-hooks)."""

    def __init__(self, model) -> None:
        self.seen: list[tuple[tuple[int, ...], bool]] = []
        self.handle = model.get_output_embeddings().register_forward_hook(self.hook)

    def hook(self, module, args, output):
        self.seen.append((tuple(args[0].shape), args[0].is_contiguous()))

    def close(self) -> None:
        self.handle.remove()


def test_scoring_runs_the_head_on_the_kept_positions_only_with_the_full_forwards_values() -> None:
    torch.manual_seed(0)
    model = tiny_model("llama")
    sequences = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [14, 15, 16, 17]]
    watch = HeadInputs(model)
    try:
        got = forward_left_padded(model, sequences, 2, pad=0)
    finally:
        watch.close()
    assert watch.seen == [((3, 2, 32), True)]  # 2 positions of 3 rows, contiguous: a plain matmul
    for row, seq in enumerate(sequences):  # each sequence alone, all positions: the same last two logits
        full = model(input_ids=torch.tensor([seq])).logits[0, -2:].float()
        torch.testing.assert_close(got[row], full, rtol=1e-5, atol=1e-5)
    head = model.get_output_embeddings()
    with contiguous_head(model):
        assert len(head._forward_pre_hooks) == 1
    assert not head._forward_pre_hooks  # removed after the block


def test_attribution_passes_and_next_token_scoring_read_one_position_per_prompt() -> None:
    torch.manual_seed(0)
    model, tok = tiny_model("llama"), tiny_tokenizer()
    adapter = attr.resolve_adapter(model)
    groups = [PromptGroup("race", str(i), ("black", "white"), tuple(t.format(a) for a in ("black", "white")))
              for i, t in enumerate(("the {} man walked into the room and", "the {} doctor said that the"))]
    batches = attr.group_batches(model, tok, groups, 4)
    watch = HeadInputs(model)
    try:
        attr.attribute_objective(model, batches, attr_objective(), adapter)
        attr.objective_values(model, batches, attr_objective(), adapter)
        last_token_logprobs(model, tok, [p for g in groups for p in g.prompts], batch_size=4)
    finally:
        watch.close()
    assert watch.seen and all(shape[1] == 1 and contiguous for shape, contiguous in watch.seen)


def attr_objective():
    from fairprune.plugins.objectives import NextTokenJS

    return NextTokenJS()
