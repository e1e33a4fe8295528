"""Output directories and files: claimed with a lock, written beside the target, swapped into place.

Every command that writes a directory goes through this module, so that

- a non-empty directory is replaced only when the user asked for it (``overwrite``);
- two processes never write one directory at once: ``claim_output_dir`` takes an
  exclusive lock (``.NAME.lock`` beside the directory, holding the pid) that lasts
  until the claim is released; a lock left by a process that died is taken over
  with a warning;
- a reader never sees half a directory: the new content is written into a hidden
  sibling (``.NAME.tmp-PID-XXXX``) and swapped with the old one in one step
  (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames, the old copy
  kept as ``.NAME.old-PID-XXXX`` until the new one is in place);
- what a killed save leaves behind is cleaned (or, for an old copy whose target
  is gone, put back) by the next write into the same parent directory.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import functools
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..contract.errors import OutputError

try:
    import fcntl
except ImportError:  # not POSIX: the lock falls back to checking the recorded pid
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: hidden siblings a save leaves while it runs: ``.NAME.tmp-PID-XXXX`` (new content), ``.NAME.old-PID-XXXX``
LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[^.]+$")


@dataclass
class Where:
    """How a message names the output: the config field or flag, and how to allow a replacement."""

    field: str = "output.dir"
    allow: str = "set output.overwrite: true (--overwrite on the command line)"


CONFIG = Where()


# -- the lock ------------------------------------------------------------------------------------------
@dataclass
class _Claim:
    target: Path
    lockfile: Path
    fd: int
    thread: int


_CLAIMS: dict[Path, _Claim] = {}
_GUARD = threading.Lock()
_SCOPES = threading.local()


def lock_path(target: Path) -> Path:
    """The lock file of an output directory: ``.NAME.lock`` beside it."""
    return target.parent / f".{target.name}.lock"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs (a process of another user counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def _lock(target: Path, where: Where) -> _Claim:
    """Take the exclusive lock of ``target``; ``OutputError`` when a running process holds it."""
    lockfile = lock_path(target)
    while True:
        try:
            fd = os.open(lockfile, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{where.field}: cannot write into {target.parent}: {exc.strerror}") from None
        holder = _read_pid(fd)
        if not _try_flock(fd, holder):
            if not _is_current(lockfile, fd):  # its holder is just removing it: try the new one
                os.close(fd)
                continue
            os.close(fd)
            raise OutputError(f"{where.field}: {target} is being written by another fairprune process "
                              f"(pid {holder if holder is not None else '?'}, lock {lockfile}); wait for it to "
                              "finish or choose another directory")
        if _is_current(lockfile, fd):
            break
        os.close(fd)  # its holder finished and removed it between our open and lock
    if holder is not None and holder != os.getpid():
        logger.warning("taking over the lock %s left by process %d, which is no longer running", lockfile, holder)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}\n".encode())
    return _Claim(target, lockfile, fd, threading.get_ident())


def _is_current(lockfile: Path, fd: int) -> bool:
    """Whether ``fd`` is still the file at ``lockfile`` (not one unlinked by a finishing holder)."""
    try:
        return os.stat(lockfile).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _try_flock(fd: int, holder: int | None) -> bool:
    """Lock ``fd`` (flock: the kernel drops it when its process dies); without fcntl, trust the recorded pid."""
    if fcntl is None:
        return holder is None or holder == os.getpid() or not pid_alive(holder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


#: a non-empty directory is replaced (overwrite) only if it holds one of these: a run's manifest, plan or metrics,
#: a saved or exported model's sidecar, an analysis' or a sweep's record (not config.json: any Hugging Face
#: directory, or a project, holds one)
OUTPUT_MARKERS = ("manifest.json", "plan.json", "metrics.json", "fairprune.json", "bias_report.json", "sweep.json")


def claim_output_dir(path: str | Path, overwrite: bool, where: Where = CONFIG,
                     reads: Sequence[str | Path] = ()) -> Path:
    """Check an output directory before any long work and lock it for this process; returns its absolute path.

    Refused (``OutputError``, one line naming ``where.field``): a path that is a
    file, a non-empty directory without ``overwrite`` (or, with it, one that holds
    none of ``OUTPUT_MARKERS``), a path that is or holds one of the inputs the
    command ``reads`` (``refuse_reading_from``), a parent that cannot be created
    or written, a directory another running process has claimed. The
    claim lasts until ``release_output_dir``, the end of the enclosing
    ``releasing_claims`` scope, or the process's exit.
    """
    target = Path(path).expanduser().absolute()
    with _GUARD:
        if target in _CLAIMS:
            if _CLAIMS[target].thread != threading.get_ident():
                raise OutputError(f"{where.field}: {target} is being written by another thread of this process")
            return target
    refuse_reading_from(target, reads, where)
    _check_target(target, overwrite, where)
    claim = _lock(target, where)
    with _GUARD:
        _CLAIMS[target] = claim
    scopes = getattr(_SCOPES, "stack", None)
    if scopes:
        scopes[-1].append(target)
    return target


def refuse_reading_from(target: str | Path, reads: Sequence[str | Path], where: Where = CONFIG) -> None:
    """``OutputError`` when output ``target`` is, or holds, a local path the command reads (a model directory,
    a run): the output replaces the directory whole, so it would delete its own input. Inputs that are not
    local paths (hub ids, bundled model names) are ignored."""
    resolved = Path(target).expanduser().resolve()
    for given in reads:
        source = Path(given).expanduser()
        if source.exists() and (source.resolve() == resolved or resolved in source.resolve().parents):
            raise OutputError(f"{where.field}: {target} is where the input {given} is read from, and an output "
                              "directory is replaced whole; name a new directory")


def _check_target(target: Path, overwrite: bool, where: Where) -> None:
    # replacing the directory a user works in (``output.dir=.`` or ``..``, or an empty path) would delete it
    resolved, here, home = target.resolve(), Path.cwd().resolve(), Path.home().resolve()
    kept = {here: "the current directory", home: "your home directory"}
    kept.update({p: "a directory that holds the current one" for p in here.parents if p not in kept})
    if resolved in kept:
        raise OutputError(f"{where.field}: {target} is {kept[resolved]}, which a run would replace whole; name a "
                          "new directory for the output")
    if target.exists() and not target.is_dir():
        raise OutputError(f"{where.field}: {target} is a file, not a directory; choose a directory path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise OutputError(f"{where.field}: {target} exists and is not empty; choose another directory or "
                          f"{where.allow} to replace it")
    if target.is_dir() and not any((target / name).exists() for name in OUTPUT_MARKERS) and any(target.iterdir()):
        # overwrite replaces the directory whole: only one that holds what fairprune writes (a config whose
        # overwrite is on would otherwise delete any directory output.dir is pointed at)
        raise OutputError(f"{where.field}: {target} holds files fairprune did not write (none of "
                          f"{', '.join(OUTPUT_MARKERS)}), and an output directory is replaced whole; name a new "
                          "directory")
    if target.is_dir() and not os.access(target, os.W_OK):
        raise OutputError(f"{where.field}: {target} is not writable")
    _check_parent(target, where)


def _check_parent(target: Path, where: Where) -> None:
    """The directory that will hold ``target`` exists (created here when missing) and is writable."""
    parent = next((p for p in target.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise OutputError(f"{where.field}: {parent} is a file, so {target} cannot be created")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{where.field}: cannot create {target.parent}: {exc.strerror}") from None
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{where.field}: {target.parent} is not writable")


def release_output_dir(path: str | Path) -> None:
    """Give up the claim on an output directory: its lock file is removed."""
    target = Path(path).expanduser().absolute()
    with _GUARD:
        claim = _CLAIMS.pop(target, None)
    if claim is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(claim.lockfile)
    os.close(claim.fd)


def holds_claim(path: str | Path) -> bool:
    """Whether this process has claimed ``path``."""
    return Path(path).expanduser().absolute() in _CLAIMS


@contextlib.contextmanager
def _scope() -> Iterator[None]:
    stack = _SCOPES.__dict__.setdefault("stack", [])
    stack.append([])
    try:
        yield
    finally:
        for target in stack.pop():
            release_output_dir(target)


def releasing_claims(func: F) -> F:
    """Decorate a function so that the output directories it claims are released when it returns or raises."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _scope():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@atexit.register
def _release_all() -> None:
    for target in list(_CLAIMS):
        release_output_dir(target)


# -- writing -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False, where: Where = CONFIG) -> Iterator[Path]:
    """Yield a not-yet-existing staging path beside ``path`` (create it, or let a saver create it).

    On success the staging directory takes the place of ``path`` in one step and
    the old copy, if any, is removed afterwards; on error everything written
    vanishes and ``path`` is untouched. The directory is claimed for the
    duration unless this process holds the claim already.
    """
    target = Path(path).expanduser().absolute()
    claimed_here = not holds_claim(target)
    claim_output_dir(target, overwrite, where)
    _count_writes_for_tests()
    try:
        clean_leftovers(target.parent)
        container = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
        staging = container / target.name
        try:
            yield staging
            staging.mkdir(exist_ok=True)
            fault_point("before-swap")
            old = _swap_into_place(staging, target)
            fault_point("after-swap")
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except Exception as exc:
            full = disk_full_reason(exc)
            if full is None:
                raise
            written = _file_written(exc, staging, target)
            raise DiskFullError(f"{where.field}: {full} while writing {written}; {_unchanged(target)}", full,
                                written) from None
        finally:
            shutil.rmtree(container, ignore_errors=True)
    finally:
        if claimed_here:
            release_output_dir(target)


def _swap_into_place(new: Path, target: Path) -> Path | None:
    """Put directory ``new`` at ``target``; returns where the old copy now is (None when there was none)."""
    if not target.exists():
        new.rename(target)
        return None
    if _exchange(new, target):
        return new
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=target.parent))
    backup.rmdir()
    target.rename(backup)  # a kill right here leaves the old copy as .NAME.old-PID-*; the next write restores it
    try:
        new.rename(target)
    except BaseException:
        backup.rename(target)
        raise
    return backup


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where the system cannot, and nothing happened."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(b))


def clean_leftovers(parent: Path) -> list[Path]:
    """Remove what killed saves left in ``parent``; an old copy whose target is gone is put back first.

    Only leftovers of processes that no longer run are touched. Returns the paths removed or restored.
    """
    handled = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return handled
    for entry in entries:
        match = LEFTOVER.match(entry.name)
        if not match or int(match["pid"]) == os.getpid() or pid_alive(int(match["pid"])):
            continue
        target = parent / match["name"]
        if match["kind"] == "old" and not target.exists() and target.name not in ("", ".", ".."):
            entry.rename(target)
            logger.warning("restored %s from the copy %s left by an interrupted save", target, entry.name)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            logger.warning("removed %s, left by an interrupted save", entry)
        else:
            entry.unlink(missing_ok=True)
            logger.warning("removed %s, left by an interrupted save", entry)
        handled.append(entry)
    return handled


def write_file_atomic(path: str | Path, text: str, overwrite: bool, where: Where) -> Path:
    """Write a text file in one step (a hidden sibling renamed over it); an existing file needs ``overwrite``."""
    target = Path(path).expanduser().absolute()
    check_output_file(target, overwrite, where)
    with atomic_file(target, where) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


@contextlib.contextmanager
def atomic_file(path: str | Path, where: Where = CONFIG) -> Iterator[Path]:
    """Yield a hidden sibling path of ``path`` to write; on success it replaces ``path`` in one step.

    On any error the sibling is removed and ``path`` keeps its old content; a full
    disk (or a file-size limit) becomes one ``OutputError`` line naming the file.
    """
    target = Path(path).expanduser().absolute()
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # the permissions a plain open() would give, not mkstemp's 0600
    try:
        yield tmp
        fault_point("before-swap")
        os.replace(tmp, target)
    except Exception as exc:
        full = disk_full_reason(exc)
        if full is None:
            raise
        raise DiskFullError(f"{where.field}: {full} while writing {target}; {_unchanged(target)}", full,
                            str(target)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# -- a full disk ----------------------------------------------------------------------------------------
#: errno values of a write that found no room: no space, a file-size limit (RLIMIT_FSIZE), a quota
_FULL = {errno.ENOSPC: "disk full (no space left on device)",
         errno.EFBIG: "file too large (over the file system's or ulimit -f's limit)",
         errno.EDQUOT: "disk quota exceeded"}
#: how libraries that do not raise OSError (safetensors, tokenizers: Rust ``os error N``) word the same errors
_FULL_TEXT = re.compile(r"os error (\d+)|No space left on device|File too large|Disk quota exceeded")
_FULL_WORDS = {"No space left on device": errno.ENOSPC, "File too large": errno.EFBIG,
               "Disk quota exceeded": errno.EDQUOT}


class DiskFullError(OutputError):
    """A save that found no room; ``reason`` says how, ``filename`` names the file being written."""

    def __init__(self, message: str, reason: str, filename: str) -> None:
        super().__init__(message)
        self.reason, self.filename = reason, filename


def disk_full_reason(exc: BaseException) -> str | None:
    """What a full disk did, when ``exc`` (or an exception it wraps) is one; None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskFullError):
            return current.reason
        if isinstance(current, OSError) and current.errno in _FULL:
            return _FULL[current.errno]
        for match in _FULL_TEXT.finditer(str(current)):
            code = int(match.group(1)) if match.group(1) else _FULL_WORDS[match.group(0)]
            if code in _FULL:
                return _FULL[code]
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Name ``path`` as the file being written when the code inside fails for a full disk (``DiskFullError``).

    For writers that do not say which file failed (safetensors and tokenizers
    report ``os error 27`` without a name, and remove their partial file).
    """
    try:
        yield
    except Exception as exc:
        full = disk_full_reason(exc)
        if full is None or isinstance(exc, DiskFullError):
            raise
        raise DiskFullError(f"{full} while writing {path}", full, str(path)) from None


def _file_written(exc: BaseException, staging: Path, target: Path) -> str:
    """The file being written when a save failed, as it would have been named under ``target`` (the error's
    file name; ``target`` itself when the error names none)."""
    name = getattr(exc, "filename", None) or getattr(exc.__context__, "filename", None)
    if isinstance(name, (str, os.PathLike)):
        with contextlib.suppress(ValueError):
            return str(target / Path(name).absolute().relative_to(staging))
    return f"into {target}"


def _unchanged(target: Path) -> str:
    if target.exists():
        return f"nothing was replaced: the previous {target} is unchanged; free some space and run again"
    return "nothing was written; free some space and run again"


# -- fault injection for tests ------------------------------------------------------------------------
#: ``FAIRPRUNE_TEST_KILL_AT=before-swap`` (or ``after-swap``) kills the process with SIGKILL at that point of a
#: save; ``fairprune.testing.faults`` drives it (and kills after each written file with an audit hook)
KILL_AT_ENV = "FAIRPRUNE_TEST_KILL_AT"


#: ``FAIRPRUNE_TEST_KILL_AFTER_WRITES=N`` kills the process with SIGKILL when a save opens its (N+1)-th file for
#: writing, so after N complete files (Python-level opens: files a native library writes are not counted)
KILL_AFTER_ENV = "FAIRPRUNE_TEST_KILL_AFTER_WRITES"
_COUNTING: list[int] = []


def _count_writes_for_tests() -> None:
    """Install, once and only under ``KILL_AFTER_ENV``, the audit hook that counts a save's file writes."""
    limit = os.environ.get(KILL_AFTER_ENV)
    if not limit or _COUNTING:
        return
    import signal
    import sys

    _COUNTING.append(0)
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        mode, flags = args[1], args[2]
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & writes)
        if writing and re.search(r"/\.[^/]+\.tmp-\d+-", os.fsdecode(args[0])):
            _COUNTING[0] += 1
            if _COUNTING[0] > int(limit):
                os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(hook)


def fault_point(name: str) -> None:
    """Kill this process here when the test hook asks for this point; nothing otherwise (one env lookup)."""
    if os.environ.get(KILL_AT_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def check_output_file(path: str | Path, overwrite: bool, where: Where) -> Path:
    """Refuse, before any work, an output file that exists (without ``overwrite``), is a directory or
    lies in a directory that cannot be created or written."""
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise OutputError(f"{where.field}: {target} is a directory; give a file path")
    if target.exists() and not overwrite:
        raise OutputError(f"{where.field}: {target} exists; choose another file or {where.allow} to replace it")
    _check_parent(target, where)
    return target
