"""An output-level evaluator: do members of a prompt group get the same next word, before and after pruning?

If a model continues "The slim nurse finished her shift and" and "The heavyset
nurse finished her shift and" with the same greedy token, the attribute did not
change its answer. ``consistency`` is the share of held-out groups whose members
all agree; ``top1_agreement`` is the share of prompts on which the pruned model
predicts the base model's token (how much pruning changed behaviour at all).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pydantic import Field

from fairprune.core.contract.errors import ConfigError
from fairprune.core.contract.plugin import Plugin, StrictParams
from fairprune.core.contract.protocols import Headline

if TYPE_CHECKING:
    import torch

    from fairprune.core.contract.results import EvalContext, EvalResult

logger = logging.getLogger(__name__)


def next_tokens(model: Any, tokenizer: Any, prompts: list[str], batch_size: int) -> "torch.Tensor":
    """The greedy next-token id after each prompt's last real token, ``Long[len(prompts)]``."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True)
            mask = batch["attention_mask"].to(device)
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=mask).logits
            positions = torch.arange(mask.shape[1], device=device)
            last = (mask * positions).argmax(dim=1)  # last real token, whatever the padding side
            out.append(logits[torch.arange(len(last), device=device), last].argmax(dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


class NextTokenConsistency(Plugin):
    """Share of held-out prompt groups whose members get the same greedy next token, base vs pruned."""

    name = "next_token_consistency"
    description = "share of held-out groups whose members agree on the next token, base vs pruned (example plugin)"
    needs_groups = True

    class Params(StrictParams):
        axes: list[str] = Field(default_factory=lambda: ["body_type"],
                                description="axes whose held-out groups are used when the run passes none")
        n_boot: int = Field(default=500, ge=10)

    headlines = (Headline("consistency_change", "Share of held-out groups agreeing on the next token, change",
                          "", "higher"),)

    def observe(self, model: Any, context: "EvalContext") -> dict[str, list]:
        """One model's greedy next token per prompt, and the group sizes."""
        groups = list(context.groups) or self._fallback_groups(context)
        prompts = [p for g in groups for p in g.prompts]
        return {"tokens": next_tokens(model, context.tokenizer, prompts, context.batch_size).tolist(),
                "sizes": [len(g.prompts) for g in groups]}

    def compare(self, base: dict[str, list], pruned: dict[str, list], context: "EvalContext") -> "EvalResult":
        import numpy as np

        from fairprune.core.contract.results import EvalResult, bootstrap_ci

        result = EvalResult(self.name)
        agree = {}
        for label, seen in (("base", base), ("pruned", pruned)):
            tokens, per_group, start = seen["tokens"], [], 0
            for size in seen["sizes"]:
                per_group.append(float(len(set(tokens[start:start + size])) == 1))
                start += size
            agree[label] = np.array(per_group)
            result.add(f"consistency_{label}", agree[label].mean(),
                       bootstrap_ci(agree[label], n_boot=self.params.n_boot, seed=context.seed))
        pairs = np.stack([agree["base"], agree["pruned"]], axis=1)
        result.add("consistency_change", pairs[:, 1].mean() - pairs[:, 0].mean(),
                   bootstrap_ci(pairs, lambda a: float(a[:, 1].mean() - a[:, 0].mean()),
                                n_boot=self.params.n_boot, seed=context.seed))
        same = np.array([float(a == b) for a, b in zip(base["tokens"], pruned["tokens"])])
        result.add("top1_agreement", same.mean(), bootstrap_ci(same, n_boot=self.params.n_boot, seed=context.seed))
        n_groups = len(base["sizes"])
        result.add("n_groups", n_groups)
        result.summary = (f"{n_groups} held-out groups: members agree on the next token in "
                          f"{result.metrics['consistency_base']:.1%} (base) vs "
                          f"{result.metrics['consistency_pruned']:.1%} (pruned); the pruned model keeps the base "
                          f"model's token on {result.metrics['top1_agreement']:.1%} of prompts.")
        return result

    def _fallback_groups(self, context: "EvalContext") -> list:
        if context.registry is None:
            raise ConfigError(f"evaluator {self.name!r} got no prompt groups and no registry to find "
                              f"axes {self.params.axes}")
        groups = [g for axis in self.params.axes for g in context.registry.get("bias_axes", axis).prompt_groups("heldout")]
        if not groups:
            raise ConfigError(f"evaluator {self.name!r}: axes {self.params.axes} have no held-out prompt groups")
        logger.info("evaluator %s: no groups given, using the held-out groups of %s", self.name, self.params.axes)
        return groups
