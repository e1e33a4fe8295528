"""Sharded analysis, selection and evaluation over torch.distributed: split the work among processes, gather
rows in order.

``torchrun --nproc_per_node=N -m fairprune analyze|run ...`` starts N
processes; each holds a replica of the model, runs a contiguous share of the
prompt groups, and the per-prompt rows are gathered in group order on every
process. Totals are then summed in that fixed order, so the report equals a
one-process run. gloo serves CPUs, NCCL serves GPUs (one per process). Only
the main process (rank 0) writes files. An error on one process is announced to
all at the next synchronisation point, and every process stops with its message.

Evaluation is shared the same way: within ``sharing(world)`` (a run's observe
passes), the scoring helpers of ``lm_scoring`` and ``benchmark_scoring`` and the
evaluators that call ``map_shared`` split their batches (or items) into one
contiguous share per process and gather the results in batch order on every
process, so each process holds the whole observation a single process would
have computed. Without a world (one process) they run every batch themselves and
call no collective.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from ..contract.errors import DistributedError, PromptError

logger = logging.getLogger(__name__)

#: seconds a process waits for the others at a synchronisation point (rank 0 writing the run can be long)
TIMEOUT_ENV = "FAIRPRUNE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 4 * 3600


@dataclass(frozen=True)
class World:
    """The processes of a distributed run: this one's ``rank``, their number ``size``, the device to gather on.

    Every collective method must be called by all processes in the same order.
    """

    rank: int
    size: int
    device: Any  # torch.device: cuda:<local rank> under NCCL, cpu under gloo

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def check(self, error: BaseException | None = None) -> None:
        """Synchronise and fail together: every process learns whether any failed.

        A failing process passes its ``error`` (and re-raises it itself); the
        others raise ``DistributedError`` with the first failing rank's message.
        """
        import torch.distributed as dist

        message = None if error is None else f"{type(error).__name__}: {error}"
        reports: list[Any] = [None] * self.size
        dist.all_gather_object(reports, message)
        failed = [(rank, m) for rank, m in enumerate(reports) if m is not None]
        if failed and error is None:
            rank, first = failed[0]
            raise DistributedError(f"process {rank} of {self.size} failed: {first}")

    @contextmanager
    def failures_stop_all(self) -> Iterator[None]:
        """Run a block that may fail on some processes only; afterwards all continue or all stop."""
        try:
            yield
        except BaseException as exc:
            logger.debug("process %d failed:\n%s", self.rank, traceback.format_exc())
            announce(self, exc)
            raise
        try:
            self.check()
        except DistributedError as exc:
            exc.announced = True  # type: ignore[attr-defined]
            raise

    def gather_rows(self, rows: Mapping[Any, Any], n_rows: int) -> dict[Any, Any]:
        """Concatenate every process's ``rows`` (key -> ``Tensor[n_rows, width]``) in rank order.

        Keys and widths must agree across processes; row counts may differ.
        One collective carries all tensors (concatenated along the width).
        Returns CPU float32 tensors ``[sum of n_rows, width]``.
        """
        import torch
        import torch.distributed as dist

        keys = sorted(rows, key=repr)
        widths = [int(rows[k].shape[-1]) for k in keys]
        counts: list[Any] = [None] * self.size
        dist.all_gather_object(counts, (n_rows, widths))
        if any(c[1] != widths for c in counts):
            raise DistributedError("processes collected different sites or widths; all must load the same model")
        most = max(c[0] for c in counts)
        flat = torch.zeros(most, sum(widths), dtype=torch.float32, device=self.device)
        if n_rows:
            flat[:n_rows] = torch.cat([rows[k].float() for k in keys], dim=1).to(self.device)
        parts = [torch.empty_like(flat) for _ in range(self.size)]
        dist.all_gather(parts, flat)
        joined = torch.cat([part[:count[0]] for part, count in zip(parts, counts)]).cpu()
        return dict(zip(keys, joined.split(widths, dim=1)))


    def gather_objects(self, items: list[Any]) -> list[Any]:
        """Every process's ``items`` (picklable, any number, possibly none) concatenated in rank order."""
        import torch.distributed as dist

        parts: list[Any] = [None] * self.size
        dist.all_gather_object(parts, list(items))
        return [item for part in parts for item in part]

    def broadcast_from_main(self, tensors: Sequence[Any], record: Any = None) -> Any:
        """Overwrite ``tensors`` (in place, every process the same list) with rank 0's values and return rank 0's
        ``record`` (picklable): what makes replicas equal after each process changed them alike, whatever the
        device's arithmetic did differently."""
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in tensors:
                moved = tensor.detach().to(self.device)
                dist.broadcast(moved, src=0)
                if moved is not tensor:
                    tensor.copy_(moved)
        box = [record]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def ordered_sum(self, rows: Any, width: int) -> Any:
        """The sum, in rank then row order, of every process's ``rows`` (``Tensor[n_rows, width]``, float32;
        ``n_rows`` may differ and be 0): the left fold one process would compute over all rows, bit for bit.
        Returns ``Tensor[width]`` on the CPU (zeros when no process has a row)."""
        import torch

        gathered = self.gather_rows({"rows": rows.reshape(-1, width)}, int(rows.shape[0]))["rows"]
        total = torch.zeros(width, dtype=torch.float32)
        for k, row in enumerate(gathered):
            total = row.clone() if k == 0 else total + row
        return total


def announce(world: World, error: BaseException) -> None:
    """Tell the other processes that this one failed with ``error``, once per error."""
    if not getattr(error, "announced", False):
        error.announced = True  # type: ignore[attr-defined]
        world.check(error)


def run_command(func: Any, args: Any) -> int:
    """Run a CLI subcommand in every process of the torchrun world; rank 0 alone prints and writes.

    A failure on any process, at any point, makes every process stop with that
    process's message (exit status 1) instead of waiting for the others.
    """
    import sys

    world = init_from_env()
    assert world is not None
    stdout = sys.stdout
    if not world.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        try:
            code = int(func(args) or 0)
        except BaseException as exc:
            announce(world, exc)
            raise
        world.check()  # the last synchronisation: wait until rank 0 has finished writing
        return code
    finally:
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout
        shutdown()


def shard_range(n_items: int, world: World) -> range:
    """The contiguous share of ``n_items`` (prompt groups) that process ``world.rank`` runs.

    Shares differ by at most one item and, concatenated in rank order, give the
    original order. ``PromptError`` when there are fewer items than processes.
    """
    if n_items < world.size:
        raise PromptError(f"{n_items} prompt groups cannot be shared among {world.size} processes; "
                          "use fewer processes or more groups")
    return range(world.rank * n_items // world.size, (world.rank + 1) * n_items // world.size)


def share(n_items: int, world: World | None) -> range:
    """The contiguous share of ``n_items`` work units (batches) that this process runs: all of them without a
    ``world``; otherwise like ``shard_range`` but a share may be empty (fewer units than processes)."""
    if world is None:
        return range(n_items)
    return range(world.rank * n_items // world.size, (world.rank + 1) * n_items // world.size)


#: the world the observe passes of a run share their batches with (``sharing``); None: every batch here
_SHARING: ContextVar[World | None] = ContextVar("fairprune_sharing", default=None)

T = TypeVar("T")


@contextmanager
def sharing(world: World | None) -> Iterator[None]:
    """Within the block, ``map_shared`` and ``map_shared_rows`` (and the scoring helpers built on them) split
    their units among the processes of ``world``; ``None`` (one process) changes nothing.

    Every process must then make the same calls with the same inputs in the same order: a run enters this
    around the evaluators' observe passes, which all processes run on the same model and prompts.
    """
    token = _SHARING.set(world)
    try:
        yield
    finally:
        _SHARING.reset(token)


def sharing_world() -> World | None:
    """The world of the enclosing ``sharing`` block, or None (not sharing, or inside a share already)."""
    return _SHARING.get()


def shows_progress(progress: bool) -> bool:
    """Whether this process draws a progress bar: ``progress``, and, while sharing, only on rank 0."""
    world = _SHARING.get()
    return progress and (world is None or world.is_main)


@contextmanager
def _alone() -> Iterator[None]:
    """Within a share, helpers run whole in this process: no collective that the others would not call."""
    token = _SHARING.set(None)
    try:
        yield
    finally:
        _SHARING.reset(token)


def map_shared(n_units: int, run: Callable[[range], list[T]]) -> list[T]:
    """``run(units)`` over ``range(n_units)``, shared: the results of every unit, in unit order.

    ``run`` gets a range of unit indices and returns a list (any length, picklable items) for them in order.
    Not sharing (one process), this is ``run(range(n_units))``, with no collective. Under ``sharing(world)``
    each process runs its contiguous share (``share``; possibly empty) and the lists are concatenated in rank
    order on every process (``World.gather_objects``). A failure in any process's share stops all with that
    process's message (``World.failures_stop_all``); the failing one raises its own error.
    """
    world = _SHARING.get()
    if world is None or n_units == 0:
        return run(range(n_units))
    with world.failures_stop_all(), _alone():
        mine = run(share(n_units, world))
    return world.gather_objects(mine)


def map_shared_rows(n_units: int, run: Callable[[range], Any]) -> Any:
    """Like ``map_shared`` for tensors: ``run(units)`` returns ``Tensor[rows of those units, width]`` (or None
    for no rows); the result is every unit's rows in unit order.

    Not sharing, ``run(range(n_units))`` itself. Under ``sharing(world)``: float32 ``Tensor[total rows, width]``
    on the CPU, gathered with ``World.gather_rows`` (the width must agree across processes; None when no
    process had a row). Failures stop all, as in ``map_shared``.
    """
    import torch

    world = _SHARING.get()
    if world is None or n_units == 0:
        return run(range(n_units))
    with world.failures_stop_all(), _alone():
        mine = run(share(n_units, world))
    widths = {w for w in world.gather_objects([None if mine is None else int(mine.shape[-1])]) if w is not None}
    if not widths:
        return None
    if len(widths) > 1:
        raise DistributedError(f"processes scored rows of different widths {sorted(widths)}; all must load the "
                               "same model")
    rows = mine if mine is not None else torch.zeros(0, widths.pop())
    return world.gather_rows({"rows": rows}, int(rows.shape[0]))["rows"]


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when absent)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env() -> World | None:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), once; None for a single process.

    NCCL when CUDA is available (each process uses GPU ``LOCAL_RANK``), gloo otherwise.
    """
    import torch
    import torch.distributed as dist

    if env_world_size() <= 1:
        return None
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
        logger.info("process %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), dist.get_backend())
    return current()


def current() -> World | None:
    """The active world of more than one process, or None."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), device)


def is_main_process(init: bool = False) -> bool:
    """True in a single-process run and on rank 0 of a distributed one: the process that writes files.

    With ``init``, first join the torchrun world the environment describes, if any.
    """
    world = init_from_env() if init else current()
    return world is None or world.is_main


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
