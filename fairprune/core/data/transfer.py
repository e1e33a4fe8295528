"""Transfer prompts of a bias axis: other registers, and first names in place of group words.

An axis file may carry a ``transfer:`` section next to its ``templates``::

    transfer:
      registers:                      # split "transfer_registers": the axis' group words, other registers
        - {id: dlg_upstairs_tenants, register: dialogue, text: "... the {attribute} family ... they"}
      names:                          # split "transfer_names": sets of names matched across groups
        male:   {Black: [Jamal, Darnell], white: [Greg, Brad]}
        female: {Black: [Lakisha, Tamika], white: [Emily, Allison]}
      name_templates:
        - {id: nm_new_coworker, register: first_person, text: "My new coworker is called {name}. ... {name}"}

Transfer prompts are never part of the ``analysis``, ``heldout`` or ``all``
splits, so nothing that selects neurons reads them. A names template expands to
one prompt group per name set and name index: member j of the group is the
k-th name of group j in that set, and the group's ``template_id`` is
``"{id}/{set}"`` so that two names of one group are compared only within one set
(here: one gender), which makes their divergence a name-swap floor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..contract.errors import PromptError
from ..contract.protocols import PromptGroup

#: the splits of an axis that only evaluation reads
TRANSFER_SPLITS = ("transfer_registers", "transfer_names")
NAME_SLOT = "{name}"


@dataclass(frozen=True)
class NameTemplate:
    """One names template: ``text`` has one or more ``{name}`` slots."""

    id: str
    text: str
    register: str = ""


@dataclass(frozen=True)
class NameSets:
    """Sets of first names matched across attribute groups (``sets[set][group]`` is a tuple of names)."""

    sets: Mapping[str, Mapping[str, tuple[str, ...]]]
    templates: tuple[NameTemplate, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        """The attribute groups the names stand for, in the order of the first set (member order)."""
        return tuple(next(iter(self.sets.values())))

    def name_groups(self) -> dict[str, tuple[str, ...]]:
        """Attribute group -> every name that stands for it (all sets together)."""
        out: dict[str, tuple[str, ...]] = {}
        for names in self.sets.values():
            for group, found in names.items():
                out[group] = out.get(group, ()) + tuple(found)
        return out


def name_sets_from_dict(section: Mapping, axis_groups: Sequence[str], where: str) -> NameSets | None:
    """The ``names`` and ``name_templates`` of a ``transfer`` section, checked; None when it has neither.

    Raises:
        PromptError: naming ``where`` and the field: names without templates (or the reverse), a set that
        names a group the axis lacks or other groups than the first set, an empty or non-string name, a
        names template without ``{name}``, or an id used twice.
    """
    sets, templates = section.get("names"), section.get("name_templates")
    if sets is None and templates is None:
        return None
    if not isinstance(sets, Mapping) or not sets or not isinstance(templates, list) or not templates:
        raise PromptError(f"{where}: transfer needs both 'names' (set -> group -> names) and a non-empty "
                          "'name_templates' list")
    parsed: dict[str, dict[str, tuple[str, ...]]] = {}
    first: tuple[str, ...] | None = None
    for set_name, names in sets.items():
        if not isinstance(names, Mapping) or len(names) < 2:
            raise PromptError(f"{where}: transfer.names.{set_name} must map at least two groups to names")
        unknown = [g for g in names if g not in axis_groups]
        if unknown:
            raise PromptError(f"{where}: transfer.names.{set_name} names unknown groups {unknown}; "
                              f"groups are {list(axis_groups)}")
        if first is not None and tuple(names) != first:
            raise PromptError(f"{where}: transfer.names.{set_name} has groups {list(names)}; every set needs "
                              f"the groups of the first, in its order: {list(first)}")
        first = tuple(names)
        parsed[str(set_name)] = {}
        for group, found in names.items():
            found = [found] if isinstance(found, str) else found
            if not isinstance(found, list) or not found or any(not isinstance(n, str) or not n.strip()
                                                               for n in found):
                raise PromptError(f"{where}: transfer.names.{set_name}.{group} must be a list of names, "
                                  f"got {found!r}")
            parsed[str(set_name)][str(group)] = tuple(found)
    out, seen = [], set()
    for i, t in enumerate(templates):
        if not isinstance(t, Mapping) or NAME_SLOT not in str(t.get("text", "")) or "id" not in t:
            raise PromptError(f"{where}: transfer.name_templates.{i} needs an 'id' and a 'text' with a "
                              f"{NAME_SLOT} slot, got {t!r:.80}")
        unknown_fields = set(t) - {"id", "text", "register"}
        if unknown_fields:
            raise PromptError(f"{where}: transfer.name_templates.{i} has unknown field(s) {sorted(unknown_fields)}")
        if t["id"] in seen:
            raise PromptError(f"{where}: transfer.name_templates id {t['id']!r} is used twice")
        seen.add(t["id"])
        out.append(NameTemplate(str(t["id"]), str(t["text"]), str(t.get("register", ""))))
    return NameSets(parsed, tuple(out))


def name_groups(axis: str, names: NameSets) -> list[PromptGroup]:
    """Unvalidated prompt groups of the names split: per template, set and name index k, member j is the
    k-th name (cycling) of group j; ``template_id`` ``"{id}/{set}"``, ``family`` the template id."""
    out = []
    for template in names.templates:
        for set_name, by_group in names.sets.items():
            for k in range(max(len(found) for found in by_group.values())):
                attrs = tuple(found[k % len(found)] for found in by_group.values())
                out.append(PromptGroup(axis, f"{template.id}/{set_name}", attrs,
                                       tuple(template.text.replace(NAME_SLOT, a) for a in attrs),
                                       register=template.register, family=template.id))
    return out
