"""The one Jensen–Shannon divergence of fairprune: what the attribution method optimises (``bias_objectives``)
and what the reports show (``output_bias``) come from these functions, so the two figures agree.

Inputs are log-probabilities over the last dimension; the divergence is computed in log space in float32 (or
in the input's dtype when wider), with log-probabilities floored at ``LOG_FLOOR`` so that a zero-probability
token contributes 0·log 0 = 0 instead of NaN. Units: nats, in [0, ln 2].
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

#: log-probabilities below this are treated as this (exp(-80) ~ 1.8e-35: zero at float32 precision)
LOG_FLOOR = -80.0


def widened(t: "torch.Tensor") -> "torch.Tensor":
    """``t`` as float32, or unchanged when its dtype is already wider."""
    import torch

    return t.to(torch.promote_types(t.dtype, torch.float32))


def js_divergence(logp: "torch.Tensor", logq: "torch.Tensor") -> "torch.Tensor":
    """JS(p, q) in nats for log-probabilities ``logp``, ``logq`` of the same shape ``[..., vocab]`` -> ``[...]``
    (float32 or wider), differentiable. Symmetric; zero for equal distributions."""
    import torch

    a, b = widened(logp).clamp_min(LOG_FLOOR), widened(logq).clamp_min(LOG_FLOOR)
    logm = torch.logaddexp(a, b) - math.log(2.0)
    return (0.5 * ((a.exp() * (a - logm)).sum(-1) + (b.exp() * (b - logm)).sum(-1))).clamp_min(0.0)


def member_pairs(n: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Row and column indices of every pair ``i < j`` of ``n`` members (``ValueError`` for fewer than 2)."""
    import torch

    if n < 2:
        raise ValueError(f"a divergence between members needs at least 2 members, got {n}")
    rows, cols = torch.triu_indices(n, n, offset=1)
    return rows, cols


def pair_js(logprobs: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """JS of every member pair: ``logprobs`` ``[n_members, vocab]`` -> (``Tensor[n_pairs]``, rows, cols), the pairs
    ``(rows[k], cols[k])`` with ``rows[k] < cols[k]``."""
    rows, cols = member_pairs(logprobs.shape[0])
    return js_divergence(logprobs[rows], logprobs[cols]), rows, cols


def mean_pair_js(logprobs: "torch.Tensor") -> "torch.Tensor":
    """Mean JS over member pairs: ``logprobs`` ``[n_members, vocab]`` -> scalar (the group's divergence)."""
    return pair_js(logprobs)[0].mean()


def between_within_js(logprobs: "torch.Tensor", labels: "Sequence[str]") -> tuple["torch.Tensor", "torch.Tensor"]:
    """Mean JS over the pairs of members of different attribute groups and over the pairs of one group's forms:
    ``logprobs`` ``[n_members, vocab]`` and one ``labels`` entry per member -> (between, within), scalars in nats
    (the second is the word-swap floor). A kind with no pair reads 0, still connected to the graph so that a
    backward pass through it is defined."""
    import torch

    js, rows, cols = pair_js(logprobs)
    same = torch.tensor([labels[i] == labels[j] for i, j in zip(rows.tolist(), cols.tolist())], dtype=torch.bool)

    def mean(mask: "torch.Tensor") -> "torch.Tensor":
        return js[mask].mean() if bool(mask.any()) else js.sum() * 0

    return mean(~same), mean(same)
