"""The one way to get prompt groups: bias axes (registered names or axis files), user files, pairs, splits.

Rule for "name or file": a string that is a valid plugin name (lowercase
letters, digits, ``_`` and ``-``) names a registered bias axis; anything else
(it has a ``/``, a ``.`` or capitals) is a path to an axis or prompt file.
Groups of axes are split by their templates; groups of user files are split the
same way (``split_by_template``); pairs and ``PromptGroup`` objects given
directly are used as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract.errors import PromptError
from ..contract.protocols import PromptGroup
from .prompts import SPLITS

_AXIS_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
#: separates axis and surface form in ``GroupSet.form_to_group`` keys
SEP = "\x1f"


@dataclass
class GroupSet:
    """Prompt groups and, from the axes that produced them, surface form -> attribute group name.

    ``form_to_group[f"{axis}{SEP}{form}"]`` is the attribute group (``"Black"``)
    of a surface form (``"African American"``), so groups whose members carry
    different forms of the same attribute groups can be scored together.
    """

    groups: list[PromptGroup]
    form_to_group: dict[str, str] = field(default_factory=dict)


def is_axis_name(spec: str | Path) -> bool:
    """True when ``spec`` names a registered axis, False when it is a path (see the module docstring)."""
    return isinstance(spec, str) and bool(_AXIS_NAME.match(spec))


def resolve_axes(axes: Sequence[Any], registry: Any) -> list[Any]:
    """Axis objects for registered names, axis YAML paths or axis objects (passed through)."""
    from .prompts import load_axis

    out = []
    for axis in axes:
        if is_axis_name(axis):
            out.append(registry.create("bias_axes", axis))
        elif isinstance(axis, (str, Path)):
            if not Path(axis).is_file():
                raise PromptError(f"bias axis file not found: {axis} (a registered axis is named by a plain "
                                  f"lowercase name, e.g. 'race')")
            out.append(load_axis(axis))
        else:
            out.append(axis)
    return out


def axis_groups(axes: Sequence[Any], split: str, registry: Any) -> GroupSet:
    """The prompt groups of each axis for ``split``; an axis without groups in that split is an error."""
    out = GroupSet([])
    for axis in resolve_axes(axes, registry):
        found = list(axis.prompt_groups(split))
        if not found:
            raise PromptError(f"bias axis {axis.name!r} has no prompt groups in split {split!r}")
        out.groups.extend(found)
        for name, forms in axis.attribute_groups().items():
            out.form_to_group.update({f"{axis.name}{SEP}{form}": name for form in forms})
    return out


def split_by_template(groups: Sequence[PromptGroup], split: str = "all", heldout_every: int = 3) -> list[PromptGroup]:
    """Split groups by template, like axes: the i-th distinct template (in order of first appearance,
    per axis) is held out when ``i % heldout_every == heldout_every - 1``. ``ValueError`` for an unknown split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return list(groups)
    order: dict[tuple[str, str], int] = {}
    per_axis: dict[str, int] = {}
    for g in groups:
        key = (g.axis, g.template_id)
        if key not in order:
            order[key] = per_axis.get(g.axis, 0)
            per_axis[g.axis] = order[key] + 1
    held = {k for k, i in order.items() if i % heldout_every == heldout_every - 1}
    return [g for g in groups if ((g.axis, g.template_id) in held) == (split == "heldout")]


def gather(*, axes: Sequence[Any] | None = None, prompt_files: Sequence[str | Path] = (),
           pairs: Sequence[Sequence[str]] | None = None, groups: Sequence[PromptGroup] | None = None,
           split: str = "analysis", registry: Any) -> GroupSet:
    """Every prompt group of a request, validated once.

    ``axes``: names / axis files / axis objects (split by template); ``prompt_files``:
    user files of pairs or groups (split by template); ``pairs`` and ``groups``:
    used as given. Raises ``PromptError`` when nothing is left.
    """
    from .prompts import load_prompt_groups, pairs_to_groups, validate_groups

    out = axis_groups(axes or (), split, registry)
    for path in prompt_files:
        out.groups.extend(split_by_template(load_prompt_groups(path), split))
    if pairs:
        out.groups.extend(pairs_to_groups(pairs))
    out.groups.extend(groups or ())
    if not out.groups:
        raise PromptError(f"no prompt groups in split {split!r}: give axes, prompt files, pairs or groups")
    validate_groups(out.groups)
    return out


def attribute_key(group: PromptGroup, form_to_group: Mapping[str, str]) -> tuple[str, ...]:
    """The attribute group of each member (surface forms mapped through ``form_to_group``)."""
    return tuple(form_to_group.get(f"{group.axis}{SEP}{a}", a) for a in group.attributes)


def run_groups(config: Any, split: str, registry: Any) -> GroupSet:
    """The groups a ``RunConfig`` selects for ``split``: ``bias.axes`` and ``bias.prompts`` for the analysis;
    for the held-out split ``evaluation.axes`` when set, else the same axes and prompt file."""
    bias = config.bias
    axes, files = bias.axes, [bias.prompts] if bias.prompts else []
    if split == "heldout" and config.evaluation.axes is not None:
        axes, files = config.evaluation.axes, []
    return gather(axes=axes, prompt_files=files, split=split, registry=registry)
