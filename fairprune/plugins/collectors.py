"""Built-in activation sites and token poolings (the ``collectors`` plugin kind).

Sites say where an activation is read (the role is passed to the architecture
adapter); poolings say which token positions of a prompt are averaged into the
one vector per prompt that bias metrics compare.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..core.contract.hookspecs import hookimpl
from ..core.contract.plugin import Plugin

if TYPE_CHECKING:
    import torch


class SitePlugin(Plugin):
    """An activation site: ``role`` is what ``adapter.site(model, layer, role)`` understands."""

    collector_kind: ClassVar[str] = "site"
    role: ClassVar[str] = ""
    fixed_width: ClassVar[bool] = False


class NeuronSite(SitePlugin):
    """The GLU neuron activations, the input of down_proj: what pruning removes."""

    name = "neuron"
    description = "input of down_proj: act(gate)*up, one value per prunable neuron (default)"
    role = "neuron"


class GateSite(SitePlugin):
    """The gate_proj output before the activation function (as optipfair reads it)."""

    name = "gate"
    description = "output of gate_proj, before the activation function (optipfair's gate_proj)"
    role = "gate"


class UpSite(SitePlugin):
    """The up_proj output (as optipfair reads it)."""

    name = "up"
    description = "output of up_proj (optipfair's up_proj)"
    role = "up"


class MLPOutSite(SitePlugin):
    """The MLP block output: hidden-size wide, so comparable before and after pruning."""

    name = "mlp_out"
    description = "output of the MLP block (hidden size; comparable across pruning)"
    role = "mlp_out"
    fixed_width = True


class ResidualSite(SitePlugin):
    """The decoder layer output (residual stream): hidden-size wide."""

    name = "residual"
    description = "output of the decoder layer, the residual stream (hidden size; comparable across pruning)"
    role = "residual"
    fixed_width = True


class PoolingPlugin(Plugin):
    """A token pooling; subclasses choose positions with ``_select`` and get normalised weights."""

    collector_kind: ClassVar[str] = "pooling"

    def weights(self, mask: torch.Tensor, content_pos: torch.Tensor, diverge_at: torch.Tensor) -> torch.Tensor:
        """``Float[B, T]`` weights over positions, rows summing to 1, zero on padding."""
        chosen = self._select(mask, content_pos, diverge_at) & mask
        weights = chosen.float()
        counts = weights.sum(dim=1, keepdim=True)
        if bool((counts == 0).any()):
            raise ValueError(f"pooling {self.name!r} selected no token for a prompt; every prompt needs a real token")
        return weights / counts

    def _select(self, mask: torch.Tensor, content_pos: torch.Tensor,
                diverge_at: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class MeanPooling(PoolingPlugin):
    """Every real token (optipfair-compatible); dilutes the attribute with the shared prefix."""

    name = "mean"
    description = "mean over all real tokens of the prompt (optipfair-compatible)"

    def _select(self, mask, content_pos, diverge_at):
        return mask


class SuffixPooling(PoolingPlugin):
    """From the first token where the group's prompts diverge to the end.

    Before that token a causal model's activations are identical across members,
    so including them only dilutes the difference.
    """

    name = "suffix"
    description = "tokens from the first one where the group's prompts diverge to the end (default)"

    def _select(self, mask, content_pos, diverge_at):
        return content_pos >= diverge_at[:, None]


class LastPooling(PoolingPlugin):
    """The last real token: the position whose state predicts the continuation."""

    name = "last"
    description = "the last real token of the prompt (the one predicting the continuation)"

    def _select(self, mask, content_pos, diverge_at):
        last = mask.sum(dim=1, keepdim=True) - 1
        return content_pos == last


@hookimpl
def fairprune_register_collectors(register):
    for cls in (NeuronSite, GateSite, UpSite, MLPOutSite, ResidualSite, MeanPooling, SuffixPooling, LastPooling):
        register(cls())
