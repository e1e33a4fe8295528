"""The ``capability_cost`` importance metric: first-order effect of removing a neuron on a text's LM loss.

For each chunk c of a calibration text (default: the bundled general English
text) the change of the chunk's mean next-token loss when neuron i is removed is
estimated as Σ_positions (r_i − h_i)·∂L_c/∂h_i (``core.attribution``); the cost
is the mean over chunks of |·|, so a neuron that helps one chunk and hurts
another is not scored as free. With ``window_tokens`` the sum is cut into windows
of that many positions and |·| is taken per window: a neuron that helps some
tokens of a chunk and hurts others no longer nets out within the chunk (on
SmolLM2 and Gemma-3 the neurons removed that way cost less LAMBADA perplexity,
``benchmarks/RESULTS.md``). Units: nats per token. The passes that compute
it need the model and the tokenizer, so the metric reads its values from
``stats["capability_cost"]`` (filled by the attribution method) and offers
``chunks(tokenizer)`` for the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ConfigDict, Field

from ..core.contract.plugin import Plugin, StrictParams
from ..core.contract.protocols import MLPWeights

if TYPE_CHECKING:
    import torch


class CapabilityCostParams(StrictParams):
    """Options of ``capability_cost``."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="path of a calibration text file; None: the bundled general English")
    chunk_tokens: int = Field(128, ge=8, description="tokens per chunk (the context each position sees)")
    window_tokens: int | None = Field(None, ge=1, description="|·| is taken per window of this many positions "
                                                               "of a chunk, then summed; None: per chunk")
    max_tokens: int = Field(2048, ge=8, description="text tokens used at most for the cost")
    check_tokens: int = Field(1024, ge=0, description="the next tokens of the text, never used for the cost, on "
                                                      "which selection measures the real loss; 0: reuse the cost's")


class CapabilityCost(Plugin):
    """Estimated |change of the LM loss| on a calibration text when the neuron is removed (higher = keep)."""

    name = "capability_cost"
    description = "first-order |change of LM loss| per chunk of a calibration text when the neuron is removed"
    Params = CapabilityCostParams
    needs_activations: ClassVar[bool] = True

    def chunks(self, tokenizer: Any) -> Any:
        """The calibration text as ``attribution.TextChunks`` (``ConfigError`` if missing or too short)."""
        from ..core.method.attribution import text_chunks

        return text_chunks(tokenizer, self.params.text, self.params.chunk_tokens, self.params.max_tokens,
                           window=self.params.window_tokens)

    def check_chunks(self, tokenizer: Any) -> Any:
        """The text that selection's measured check reads: the ``check_tokens`` after the cost's tokens, so
        a neuron chosen for looking cheap on the cost text is judged on text it was not chosen on."""
        from ..core.method.attribution import text_chunks

        if not self.params.check_tokens:
            return self.chunks(tokenizer)
        return text_chunks(tokenizer, self.params.text, self.params.chunk_tokens, self.params.check_tokens,
                           start=self.params.max_tokens)

    def score(self, weights: MLPWeights, stats: Mapping[str, torch.Tensor] | None) -> torch.Tensor:
        if stats is None or "capability_cost" not in stats:
            raise ValueError(f"{self.name} needs stats['capability_cost'] for layer {weights.layer}: it is computed "
                             "by backward passes over a calibration text (the attribution method)")
        return stats["capability_cost"].detach().float()
