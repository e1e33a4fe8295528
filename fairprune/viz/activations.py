"""Activation-space pictures: PCA of group members' pooled activations, and token-by-layer distances of one pair."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.contract.errors import ConfigError
from .base import CYCLE, as_array, new_figure


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, the two principal directions ``[2, d]``, their explained-variance ratios) via numpy's SVD."""
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s ** 2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    basis = np.zeros((2, x.shape[1]))
    basis[:min(2, vt.shape[0])] = vt[:2]
    return mean, basis, np.pad(ratio, (0, 2 - ratio.size))


@dataclass
class PCAProjection:
    """Points of one or more models in one shared PCA plane, with what the plot's labels need.

    ``points[label]`` is ``[n_groups, n_members, 2]``; ``ratio`` the explained-variance
    ratio of the two axes; ``distance[label]`` the mean |a − b| between members in the
    full space (member 0 against each other member).
    """

    points: dict[str, np.ndarray]
    ratio: np.ndarray
    distance: dict[str, float]

    def to_rows(self) -> list[dict[str, Any]]:
        """One plain row per model (nested lists), for a JSON table; ``from_rows`` reads it back."""
        return [{"model": label, "distance": self.distance[label], "pc1_variance": float(self.ratio[0]),
                 "pc2_variance": float(self.ratio[1]), "points": xy.tolist()} for label, xy in self.points.items()]

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]]) -> PCAProjection:
        if not rows:
            raise ConfigError("PCA data: no rows")
        return cls({r["model"]: np.asarray(r["points"], dtype=np.float64) for r in rows},
                   np.array([rows[0]["pc1_variance"], rows[0]["pc2_variance"]], dtype=np.float64),
                   {r["model"]: float(r["distance"]) for r in rows})


def pca_projection(panels: dict[str, Any]) -> PCAProjection:
    """Fit one PCA on every model's ``[n_groups, n_members, width]`` points together and project each on it."""
    arrays = {label: as_array(x) for label, x in panels.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[1] < 2:
        raise ConfigError(f"PCA plot needs [n_groups, n_members>=2, width] arrays of one shape, got {sorted(shapes)}")
    n_groups, n_members, width = next(iter(shapes))
    mean, basis, ratio = pca_2d(np.concatenate([a.reshape(-1, width) for a in arrays.values()]))
    points = {label: ((a.reshape(-1, width) - mean) @ basis.T).reshape(n_groups, n_members, 2)
              for label, a in arrays.items()}
    distance = {label: float(np.abs(a[:, 1:, :] - a[:, :1, :]).mean()) for label, a in arrays.items()}
    return PCAProjection(points, ratio, distance)


def pca_plot(base: Any, pruned: Any | None = None, members: Sequence[str] | None = None,
             layer: int | None = None, site: str = "residual", labels: Sequence[str] | None = None,
             title: str | None = None) -> Any:
    """Group members' pooled activations projected on two principal axes, base and pruned side by side.

    ``base``/``pruned`` are ``[n_groups, n_members, width]``. One PCA is fitted on
    both models' points together so the panels share coordinates; an arrow runs
    from member 0 to each other member of every group: shorter arrows = less bias.
    ``labels`` (one per group, e.g. the tokens of two aligned prompts) are written
    beside member 0's points; ``title`` replaces the default figure title.
    """
    panels = {"base": base, **({"pruned": pruned} if pruned is not None else {})}
    return pca_projection_plot(pca_projection(panels), members, layer, site, labels, title)


def pca_projection_plot(projection: PCAProjection, members: Sequence[str] | None = None, layer: int | None = None,
                        site: str = "residual", labels: Sequence[str] | None = None, title: str | None = None) -> Any:
    """Draw a ``PCAProjection`` (computed now by ``pca_plot``, or read back from a run's data): a panel per model."""
    panels = list(projection.points.items())
    n_groups, n_members, _ = panels[0][1].shape
    members = list(members or [f"member {j}" for j in range(n_members)])
    ratio = projection.ratio
    fig, axes = new_figure(5.2 * len(panels), 4.6, ncols=len(panels), sharex=True, sharey=True, squeeze=False)
    for ax, (label, xy) in zip(axes[0], panels):
        for j in range(n_members):
            ax.scatter(xy[:, j, 0], xy[:, j, 1], s=18, color=CYCLE[j % len(CYCLE)], label=members[j], zorder=3)
        for g in range(n_groups):
            for j in range(1, n_members):
                ax.annotate("", xy=tuple(xy[g, j]), xytext=tuple(xy[g, 0]),
                            arrowprops={"arrowstyle": "->", "color": "#555555", "lw": 0.8, "alpha": 0.7})
            if labels is not None and g < len(labels):
                ax.annotate(str(labels[g]).strip(), tuple(xy[g, 0]), fontsize=7, alpha=0.8,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_title(f"{label}: mean |a − b| = {projection.distance[label]:.4f}")
        ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}% of variance)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"PC2 ({100 * ratio[1]:.0f}% of variance)")
    axes[0][0].legend(fontsize=8)
    where = f"layer {layer} " if layer is not None else ""
    fig.suptitle(title or f"PCA of {site} activations, {where}({n_groups} groups): arrows join members of a group")
    return fig


@dataclass
class TokenDistances:
    """How far two prompts' hidden states are apart, per aligned token (columns) and layer (rows).

    Row 0 is the embedding output, row i the output of decoder layer i. Columns are
    the shared prefix tokens, one column for the differing span, then the shared suffix.
    """

    tokens: list[str]
    distances: np.ndarray  # [n_layers + 1, n_columns]
    diverge_at: int  # index of the differing-span column

    def to_dict(self) -> dict[str, Any]:
        """Plain data (nested lists) for a JSON table; ``from_dict`` reads it back."""
        return {"tokens": list(self.tokens), "distances": self.distances.tolist(), "diverge_at": int(self.diverge_at)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenDistances:
        return cls(list(data["tokens"]), np.asarray(data["distances"], dtype=np.float64), int(data["diverge_at"]))


@dataclass
class AlignedStates:
    """Two prompts' hidden states, token-aligned: the shared prefix, one column for the differing span, the suffix.

    ``states[l, c, m]`` is prompt ``m``'s (0 = a, 1 = b) hidden state after layer ``l``
    (row 0: the embedding output) at aligned column ``c``; the differing span's column
    is the mean over the span's tokens.
    """

    tokens: list[str]
    states: np.ndarray  # [n_layers + 1, n_columns, 2, hidden]
    diverge_at: int  # index of the differing-span column

    def distances(self) -> TokenDistances:
        """Relative distance ‖a − b‖ / mean(‖a‖, ‖b‖) per layer and column."""
        a, b = self.states[:, :, 0], self.states[:, :, 1]
        scale = 0.5 * (np.linalg.norm(a, axis=-1) + np.linalg.norm(b, axis=-1))
        return TokenDistances(self.tokens, np.linalg.norm(a - b, axis=-1) / np.maximum(scale, 1e-12), self.diverge_at)


def aligned_states(model: Any, tokenizer: Any, prompt_a: str, prompt_b: str) -> AlignedStates:
    """Hidden states of both prompts at every layer, aligned token by token (one forward pass per prompt)."""
    import torch

    ids = [tokenizer(p, return_tensors="pt")["input_ids"] for p in (prompt_a, prompt_b)]
    a_ids, b_ids = ids[0][0].tolist(), ids[1][0].tolist()
    if a_ids == b_ids:
        raise ConfigError(f"token heatmap: the prompts {prompt_a!r} and {prompt_b!r} tokenize identically")
    prefix = next((i for i, (x, y) in enumerate(zip(a_ids, b_ids)) if x != y), min(len(a_ids), len(b_ids)))
    suffix = 0
    while suffix < min(len(a_ids), len(b_ids)) - prefix and a_ids[-1 - suffix] == b_ids[-1 - suffix]:
        suffix += 1
    device = next(model.parameters()).device
    with torch.inference_mode():
        states = [torch.stack(model(input_ids=x.to(device), output_hidden_states=True).hidden_states)[:, 0].double().cpu()
                  for x in ids]  # [n_layers + 1, seq, hidden]
    columns = torch.stack([_aligned(states[0], prefix, suffix), _aligned(states[1], prefix, suffix)], 2)

    def word(toks: list[int]) -> str:
        return tokenizer.decode(toks).strip() or "∅"

    span_a, span_b = a_ids[prefix:len(a_ids) - suffix], b_ids[prefix:len(b_ids) - suffix]
    labels = ([tokenizer.decode([t]) for t in a_ids[:prefix]] + [f"{word(span_a)} / {word(span_b)}"]
              + [tokenizer.decode([t]) for t in a_ids[len(a_ids) - suffix:]])
    return AlignedStates([t.replace("\n", "\\n") for t in labels], columns.numpy(), prefix)


def token_distances(model: Any, tokenizer: Any, prompt_a: str, prompt_b: str) -> TokenDistances:
    """Relative distance ‖a − b‖ / mean(‖a‖, ‖b‖) of the two prompts' hidden states, per aligned token and layer."""
    return aligned_states(model, tokenizer, prompt_a, prompt_b).distances()


def _aligned(states: Any, prefix: int, suffix: int) -> Any:
    """Prefix columns, the mean of the differing span (the last prefix state if the span is empty), suffix columns."""
    import torch

    seq = states.shape[1]
    span = states[:, prefix:seq - suffix]
    middle = span.mean(1, keepdim=True) if span.shape[1] else states[:, max(prefix - 1, 0):prefix]
    return torch.cat([states[:, :prefix], middle, states[:, seq - suffix:]], 1)


def token_heatmap_plot(result: TokenDistances, title: str | None = None, pruned: TokenDistances | None = None) -> Any:
    """Heatmap of ``token_distances``: layers on y, tokens on x; the columns before the attribute stay at zero.

    With ``pruned`` (the same pair through the pruned model) the two heatmaps stand side by side on one colour scale.
    """
    panels = [("base", result)] + ([("pruned", pruned)] if pruned is not None else [])
    n_rows, n_cols = result.distances.shape
    vmax = max(float(np.nanmax(r.distances)) for _, r in panels) or 1.0
    fig, axes = new_figure(len(panels) * max(5.0, 0.5 * n_cols + 2.5), max(3.0, 0.25 * n_rows + 1.8),
                           ncols=len(panels), squeeze=False, sharey=True)
    for ax, (label, panel) in zip(axes[0], panels):
        image = ax.imshow(panel.distances, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                          vmin=0.0, vmax=vmax)
        ax.set_xticks(range(panel.distances.shape[1]), panel.tokens, rotation=60, ha="right", fontsize=8)
        ax.axvline(panel.diverge_at - 0.5, color="white", linestyle=":", linewidth=1)
        ax.set_xlabel("token (the differing words share one column)")
        if len(panels) > 1:
            ax.set_title(label)
    axes[0][0].set_yticks(range(n_rows), ["emb"] + [str(i) for i in range(n_rows - 1)], fontsize=7)
    axes[0][0].set_ylabel("layer output")
    fig.colorbar(image, ax=list(axes[0]), label="‖a − b‖ / mean ‖·‖")
    fig.suptitle(title or "Where the two prompts' hidden states differ")
    return fig
