"""Fault tests of saves, reusable by plugin authors: a save killed at chosen points, and a save onto a full disk.

Both run the real ``fairprune`` command in a subprocess. A kill is driven by test
hooks, never by sleeps: ``FAIRPRUNE_TEST_KILL_AFTER_WRITES=N`` sends the process
SIGKILL when its save opens the (N+1)-th file for writing (so after N complete
files), and ``FAIRPRUNE_TEST_KILL_AT=before-swap`` / ``after-swap`` at the step
that puts the new directory in place (``fairprune.core.io.outputs``). A full disk
is a small ``RLIMIT_FSIZE``: a write past it fails with ``EFBIG`` ("File too
large"), as a full disk fails with ``ENOSPC``, and CPython ignores the
``SIGXFSZ`` signal that would otherwise end the process.

Typical use, in a test that has written a config whose output directory already
holds a previous run::

    for point in kill_points(6):
        check_killed_save(["run", str(config)], output)
    check_disk_full_save(["run", str(config)], output, limit_bytes=200_000)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.io.outputs import KILL_AFTER_ENV, KILL_AT_ENV, LEFTOVER, lock_path
from .disk import snapshot

#: where a save can be killed besides after a number of files
SWAP_POINTS: tuple[str, ...] = ("before-swap", "after-swap")


@dataclass(frozen=True)
class KillPoint:
    """One place to kill a save: after ``writes`` files, or at a named step (``SWAP_POINTS``)."""

    writes: int | None = None
    step: str | None = None

    def env(self) -> dict[str, str]:
        return {KILL_AFTER_ENV: str(self.writes)} if self.writes is not None else {KILL_AT_ENV: str(self.step)}

    def __str__(self) -> str:
        return f"after {self.writes} files" if self.writes is not None else self.step or "?"


def kill_points(files: int) -> Iterator[KillPoint]:
    """After 0, 1, ... ``files`` - 1 written files, then before and after the swap into place."""
    yield from (KillPoint(writes=n) for n in range(files))
    yield from (KillPoint(step=s) for s in SWAP_POINTS)


def run_fairprune(args: Sequence[str], *, env: Mapping[str, str] | None = None, file_size_limit: int | None = None,
                  cwd: str | Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m fairprune ARGS`` in a subprocess (text output captured).

    ``env`` is added to this process's environment; ``file_size_limit`` (bytes)
    sets ``RLIMIT_FSIZE`` in the child only (POSIX), so any write past it fails
    with "File too large".
    """

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    full_env = {**os.environ, "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "fairprune", *args], env=full_env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False, preexec_fn=limit if file_size_limit is not None else None)


def leftovers(parent: Path) -> list[str]:
    """Hidden staging or old copies a save left in ``parent`` (``.NAME.tmp-PID-*``, ``.NAME.old-PID-*``)."""
    return sorted(p.name for p in Path(parent).iterdir() if LEFTOVER.match(p.name))


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The ``error: …`` lines of a command's stderr."""
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def check_killed_save(args: Sequence[str], output: str | Path, point: KillPoint, *,
                      env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> None:
    """Kill ``fairprune ARGS`` at ``point`` of its save into ``output``; the previous ``output`` must be
    byte-identical (or, killed after the swap, be the complete new one) and the next run must succeed.

    Raises ``AssertionError`` naming the point.
    """
    output = Path(output)
    before = snapshot(output)
    killed = run_fairprune(args, env={**(env or {}), **point.env()}, cwd=cwd)
    assert killed.returncode == -9, f"{point}: not killed (exit {killed.returncode}): {killed.stderr[-2000:]}"
    after = snapshot(output)
    if point.step == "after-swap":  # the new directory is in place, whole; the old copy is what is left over
        assert after.keys() == before.keys(), f"{point}: the directory in place is not a complete run"
    else:
        assert after == before, f"{point}: the previous output changed"
    again = run_fairprune(args, env=env, cwd=cwd)
    assert again.returncode == 0, f"{point}: the next run failed: {again.stderr[-2000:]}"
    assert not leftovers(output.parent), f"{point}: left {leftovers(output.parent)}"
    assert not lock_path(output.absolute()).exists(), f"{point}: the lock file stayed"


def check_disk_full_save(args: Sequence[str], output: str | Path, limit_bytes: int, *,
                         env: Mapping[str, str] | None = None, cwd: str | Path | None = None,
                         words: Sequence[str] = ("too large",)) -> str:
    """Run ``fairprune ARGS`` with files limited to ``limit_bytes``: it must exit 1 with one ``error:`` line
    holding ``words`` and the output path, leave ``output`` byte-identical with no leftovers, and the next
    run (no limit) must succeed. Returns the error line.
    """
    output = Path(output)
    before = snapshot(output) if output.exists() else None
    full = run_fairprune(args, env=env, file_size_limit=limit_bytes, cwd=cwd)
    lines = error_lines(full)
    assert full.returncode == 1 and len(lines) == 1, f"exit {full.returncode}: {full.stderr[-3000:]}"
    assert "Traceback" not in full.stderr, full.stderr[-3000:]
    assert all(w in lines[0] for w in words) and str(output.absolute()) in lines[0], lines[0]
    assert (snapshot(output) if output.exists() else None) == before, "the previous output changed"
    assert not leftovers(output.parent), f"left {leftovers(output.parent)}"
    again = run_fairprune(args, env=env, cwd=cwd)
    assert again.returncode == 0, f"the next run failed: {again.stderr[-2000:]}"
    return lines[0]


def save_model_with_inf_token(directory: Path, token: str = "~") -> Path:
    """Save a tiny Llama with a character tokenizer whose ``token`` embeds to ``inf``: any prompt holding it
    poisons its batch (NaN logits), the others run clean; for tests of failures in one process of several."""
    import torch

    import fairprune as fp

    from .models import tiny_model
    from .tokenizer import tiny_char_tokenizer

    model = tiny_model("llama", max_position_embeddings=512)
    tok = tiny_char_tokenizer()
    with torch.no_grad():
        model.model.embed_tokens.weight[tok.convert_tokens_to_ids(token)] = float("inf")
    fp.save_pretrained(model, tok, directory)
    return directory
