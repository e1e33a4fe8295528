"""The passes of one selection, each computed once: shared among processes, remembered across budgets.

Selection reads the model through five kinds of pass: the capability estimate on
the calibration text, the text's loss (base and with a round's neurons removed),
the attribution of the objective on the folds of analysis groups (with the
neurons removed so far), and the objective measured with candidate removals.
``SelectionPasses`` runs them on one model, shared among the processes of a
``world`` when there is one, and keeps what they gave, keyed by what they read
(the text or the groups, the removed set, the fill): a sweep's budgets share the
capability estimate, the base loss and the first round's attribution, and a
measured removal is never measured twice (keys include the pass precision,
``precision.current()``). Results are exactly those of the uncached call. The memo is valid for one model state: make a new one when the
weights change (the pipeline keeps one per analysis; a sweep restores the model
before each plan).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import attribution as attr
from . import precision
from .capability import CapabilityEstimate, capability_estimate, chunk_batch


def removed_key(removed: attr.Removed | None) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """A hashable, order-free key of a removed set (empty layers dropped)."""
    return tuple(sorted((int(layer), tuple(sorted(int(n) for n in idx))) for layer, idx in (removed or {}).items()
                        if len(idx)))


def text_key(text: attr.TextChunks) -> tuple[Any, ...]:
    return (text.n_prefix, text.window, tuple(tuple(c) for c in text.chunks))


def folds_key(folds: Sequence[attr.GroupBatches], objective: Any) -> tuple[Any, ...]:
    """What an attribution or a measurement reads: the objective (by identity, it may carry state) and every
    fold's token ids, batching, positions and labels."""
    return (id(objective),) + tuple(
        (tuple(tuple(i) for i in b.ids), b.batch_groups, tuple(b.positions),
         None if b.labels is None else tuple(b.labels), tuple(len(g.prompts) for g in b.groups)) for b in folds)


class SelectionPasses:
    """The passes selection runs on ``model`` (through ``adapter``), memoized; ``world`` shares each pass.

    ``fill`` arguments are None (removal to zero) or the ``mean`` of the capability estimate this object
    returned (removal to the calibration mean); any other fill is refused with ``ValueError``.
    """

    def __init__(self, model: Any, adapter: Any, *, world: Any = None, progress: bool = False) -> None:
        self.model, self.adapter, self.world, self.progress = model, adapter, world, progress
        self.memo: dict[Any, Any] = {}
        self._objectives: list[Any] = []  # kept alive so that their ids stay theirs

    def bind(self, world: Any = None, progress: bool = False) -> SelectionPasses:
        """This memo with another world (None: this process alone) and progress setting."""
        other = SelectionPasses(self.model, self.adapter, world=world, progress=progress)
        other.memo, other._objectives = self.memo, self._objectives
        return other

    def _fill_key(self, fill: Mapping[int, Any] | None) -> str:
        if fill is None:
            return "zero"
        if any(isinstance(v, CapabilityEstimate) and v.mean is fill for v in self.memo.values()):
            return f"mean:{id(fill)}"
        raise ValueError("SelectionPasses: fill must be None or the mean of a capability estimate it returned")

    def _sharded(self) -> dict[str, Any]:
        return {} if self.world is None else {"world": self.world}

    def _remember(self, objective: Any) -> None:
        if not any(o is objective for o in self._objectives):
            self._objectives.append(objective)

    def _chunk_batch(self, text: attr.TextChunks) -> int:
        key = ("chunk_batch", len(text.chunks), len(text.chunks[0]) if text.chunks else 0)
        if key not in self.memo:  # the same for every process (the smallest), and for every later pass
            self.memo[key] = chunk_batch(self.model, text, self.adapter, self.world)
        return self.memo[key]

    def bound(self, objective: Any, tokenizer: Any) -> Any:
        """``objective.bind(tokenizer)``, once per objective plugin: the bound objective keys the memo."""
        key = ("bound", id(objective))
        if key not in self.memo:
            self._remember(objective)
            self.memo[key] = objective.bind(tokenizer)
        return self.memo[key]

    def capability(self, text: attr.TextChunks, *, compensated: bool) -> CapabilityEstimate:
        """The capability estimate of ``text`` for removal to zero or (``compensated``) to the mean."""
        key = ("capability", text_key(text), compensated, precision.current())
        if key not in self.memo:
            self.memo[key] = capability_estimate(self.model, text, self.adapter, compensated=compensated,
                                                 batch_size=self._chunk_batch(text), progress=self.progress,
                                                 world=self.world)
        return self.memo[key]

    def text_loss(self, text: attr.TextChunks, removed: attr.Removed | None = None,
                  fill: Mapping[int, Any] | None = None) -> float:
        """``attribution.text_loss`` with ``removed`` ablated to ``fill``."""
        key = ("text_loss", text_key(text), removed_key(removed), self._fill_key(fill) if removed_key(removed)
               else "any", precision.current())
        if key not in self.memo:
            self.memo[key] = attr.text_loss(self.model, text, self.adapter, removed=removed, fill=fill,
                                            batch_size=self._chunk_batch(text), **self._sharded())
        return self.memo[key]

    def attribute(self, folds: Sequence[attr.GroupBatches], objective: Any, removed: attr.Removed | None = None,
                  fill: Mapping[int, Any] | None = None) -> attr.FoldedAttribution:
        """``attribution.attribute_folds``; only the attribution with nothing removed is kept (it is the one
        every budget starts from; later rounds' differ per budget and are large)."""
        if removed_key(removed):
            return attr.attribute_folds(self.model, folds, objective, self.adapter, removed=removed, fill=fill,
                                        progress=self.progress, **self._sharded())
        key = ("attribute", folds_key(folds, objective), self._fill_key(fill), precision.current())
        if key not in self.memo:
            self._remember(objective)
            self.memo[key] = attr.attribute_folds(self.model, folds, objective, self.adapter, fill=fill,
                                                  progress=self.progress, **self._sharded())
        return self.memo[key]

    def measure(self, folds: Sequence[attr.GroupBatches], objective: Any, removed: attr.Removed | None = None,
                fill: Mapping[int, Any] | None = None) -> float:
        """The objective's mean over every group of ``folds`` with ``removed`` ablated (forward passes only)."""
        return self.measure_all(folds, (objective,), removed, fill)[0]

    def measure_all(self, folds: Sequence[attr.GroupBatches], objectives: Sequence[Any],
                    removed: attr.Removed | None = None, fill: Mapping[int, Any] | None = None) -> list[float]:
        """``measure`` of each objective; those not yet measured for this removed set share one forward per batch."""
        keys = [("measure", folds_key(folds, o), removed_key(removed), self._fill_key(fill), precision.current())
                for o in objectives]
        missing = [k for k, key in enumerate(keys) if key not in self.memo]
        if missing:
            wanted = [objectives[k] for k in missing]
            for objective in wanted:
                self._remember(objective)
            per_fold = [attr.objectives_values(self.model, b, wanted, self.adapter, removed=removed, fill=fill,
                                               **self._sharded()) for b in folds]
            for j, k in enumerate(missing):
                values = [v for fold in per_fold for v in fold[j]]
                self.memo[keys[k]] = float(sum(values) / len(values))
        return [self.memo[key] for key in keys]
