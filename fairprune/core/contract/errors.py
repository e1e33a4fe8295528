"""Exceptions raised by fairprune; each names what was wrong and how to fix it.

A ``FairpruneError`` is a user error: the CLI prints its message as ``error: ...``
on one line and exits 1. Its message names the config field (``output.dir``),
the flag (``--out``) or the file and line where the problem is. Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class FairpruneError(Exception):
    """Base class of every error fairprune raises on purpose."""


class UnknownPluginError(FairpruneError, LookupError):
    """A plugin name that no registered plugin of that kind carries.

    A LookupError subclass rather than KeyError, because KeyError quotes its
    message and mangles the newlines of the list of known names.
    """

    def __init__(self, kind: str, name: str, known: list[str], suggestion: str | None):
        self.kind, self.name, self.known, self.suggestion = kind, name, known, suggestion
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        listing = ", ".join(known) if known else "(none registered)"
        super().__init__(f"Unknown {kind} {name!r}.{hint} Available: {listing}")


class DuplicatePluginError(FairpruneError):
    """Two plugins registered the same name within one kind."""


class PluginContractError(FairpruneError):
    """A plugin registered an object that does not satisfy its kind's protocol."""


class ConfigError(FairpruneError, ValueError):
    """A run configuration that is invalid; the message names the field."""


class PlanError(FairpruneError, ValueError):
    """A pruning plan that cannot be applied; the model is left untouched."""


class ArchitectureError(FairpruneError, TypeError):
    """A model that no registered architecture adapter understands."""


class PromptError(FairpruneError, ValueError):
    """Prompts of a group that do not differ only in the attribute span."""


class ModelSourceError(FairpruneError):
    """A model that cannot be found or loaded; says how to get it."""


class PersistError(FairpruneError):
    """A saved directory that is incomplete or does not match its sidecar."""


class NonFiniteError(FairpruneError, FloatingPointError):
    """A NaN or infinite activation, logit or metric; never turned into a score.

    The message names where (evaluator or site, base/pruned model, layer) and
    suggests a wider dtype, since overflow in float16 is the usual cause.
    """


class DistributedError(FairpruneError):
    """Another process of a torch.distributed run failed; the message is that process's."""


class OutputError(FairpruneError):
    """An output path that cannot be written now: a file, not writable, not empty without overwrite,
    or being written by another process. Raised before any work."""


def yaml_error_line(path: object, exc: Exception, lines: bool = True) -> str:
    """``file:line: not valid YAML: problem`` for a ``yaml.YAMLError`` (one line; PyYAML's own message has five);
    without ``lines`` (a one-line value such as a ``--set``'s) no line number."""
    mark = getattr(exc, "problem_mark", None)
    line = f":{mark.line + 1}" if mark is not None and lines else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{path}{line}: not valid YAML: {problem}"
