"""Prompt groups: bias axes from YAML files, user prompt files, and validation.

A bias axis is attribute groups (each with surface forms, e.g. "Black" /
"African American") and templates with an ``{attribute}`` slot. It expands to
``PromptGroup``s, one prompt per attribute group, and splits deterministically by
template into analysis and held-out sets. Every group is validated: its members
must differ only in the attribute span.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..contract.errors import PromptError, yaml_error_line
from ..contract.plugin import Plugin
from ..contract.protocols import PromptGroup
from .combinatorial import GeneratorSpec, generated_templates, spec_from_dict
from .transfer import TRANSFER_SPLITS, NameSets, name_groups, name_sets_from_dict

SPLITS = ("analysis", "heldout", "all")
#: every split a ``TemplateAxis`` answers: ``all`` is analysis + heldout; the transfer splits and
#: ``generated`` (combinatorial analysis templates) are read only when asked for by name
AXIS_SPLITS = SPLITS + TRANSFER_SPLITS + ("generated",)
SLOTS = ("{attribute}", "{Attribute}")
_TOKEN = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]|\s+")
_RESERVED_COLUMNS = ("axis", "template_id")


# -- validation ----------------------------------------------------------------------------------

def differing_spans(a: str, b: str) -> list[tuple[str, str]]:
    """The (span in a, span in b) pairs where two prompts differ, compared word by word."""
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    merged: list[list[int]] = []  # [i1, i2, j1, j2]; spans joined across whitespace-only agreement
    gap_is_space = False
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            gap_is_space = all(not t.strip() for t in ta[i1:i2])
            continue
        if merged and gap_is_space:
            merged[-1][1], merged[-1][3] = i2, j2
        else:
            merged.append([i1, i2, j1, j2])
        gap_is_space = False
    return [("".join(ta[i1:i2]).strip(), "".join(tb[j1:j2]).strip()) for i1, i2, j1, j2 in merged]


def validate_group(group: PromptGroup) -> None:
    """Raise ``PromptError`` unless the members differ only in one attribute span (maybe repeated)."""
    where = f"group {group.template_id!r} of axis {group.axis!r}"
    if len(group.prompts) < 2:
        raise PromptError(f"{where} has {len(group.prompts)} prompt(s); a group needs at least two: "
                          f"{list(group.prompts)!r}")
    if group.attributes and len(group.attributes) != len(group.prompts):
        raise PromptError(f"{where} has {len(group.prompts)} prompts but {len(group.attributes)} attributes")
    for j, prompt in enumerate(group.prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError(f"{where} has an empty prompt (member {j}): {prompt!r}")
        if group.attributes and group.attributes[j] and mask_attribute(prompt, group.attributes[j]) == prompt:
            raise PromptError(f"prompt {prompt!r} does not contain its attribute {group.attributes[j]!r}")
    for j, a in enumerate(group.prompts):
        for b in group.prompts[j + 1:]:
            if a == b:
                raise PromptError(f"{where} has identical prompts: {a!r}")
            spans = differing_spans(a, b)
            if len(set(spans)) != 1:
                shown = "; ".join(f"{x!r} vs {y!r}" for x, y in spans)
                raise PromptError(f"prompts {a!r} and {b!r} differ in more than the attribute span ({shown})")
    if group.attributes and all(group.attributes):
        _check_declared_attributes(group, where)


def mask_attribute(prompt: str, attribute: str) -> str:
    """``prompt`` with every whole-word occurrence of ``attribute`` (first letter in either case) replaced by
    ``{attribute}``."""
    first, rest = attribute[:1], re.escape(attribute[1:])
    head = f"[{re.escape(first.lower())}{re.escape(first.upper())}]" if first.isalpha() else re.escape(first)
    return re.sub(rf"(?<!\w){head}{rest}(?!\w)", "{attribute}", prompt)


def _check_declared_attributes(group: PromptGroup, where: str) -> None:
    """Declared attributes must be all the members differ in: masking each member's own attribute
    leaves the same text for every member."""
    masked = [mask_attribute(p, a) for p, a in zip(group.prompts, group.attributes)]
    for j in range(1, len(masked)):
        if masked[j] != masked[0]:
            spans = "; ".join(f"{x!r} vs {y!r}" for x, y in differing_spans(masked[0], masked[j]))
            raise PromptError(f"{where}: prompts {group.prompts[0]!r} and {group.prompts[j]!r} differ outside their "
                              f"declared attributes {group.attributes[0]!r} / {group.attributes[j]!r} ({spans})")


def validate_groups(groups: Iterable[PromptGroup]) -> None:
    """Validate every group; the first bad one raises ``PromptError`` quoting its prompts."""
    for group in groups:
        validate_group(group)


def infer_attributes(prompts: Sequence[str]) -> tuple[str, ...]:
    """The attribute span of each prompt, found by comparing it with another member."""
    if len(prompts) < 2:
        raise PromptError(f"a group needs at least two prompts, got {list(prompts)!r}")
    out = []
    for j, prompt in enumerate(prompts):
        other = prompts[1] if j == 0 else prompts[0]
        spans = differing_spans(prompt, other)
        if not spans:
            raise PromptError(f"prompts {prompt!r} and {other!r} are identical")
        out.append(spans[0][0])
    return tuple(out)


def make_group(prompts: Sequence[str], *, axis: str = "custom", template_id: str = "",
               attributes: Sequence[str] | None = None) -> PromptGroup:
    """A validated ``PromptGroup``; attributes are inferred from the differing spans when not given."""
    prompts = tuple(prompts)
    if any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise PromptError(f"empty prompt in group {list(prompts)!r}")
    attrs = tuple(attributes) if attributes else infer_attributes(prompts)
    group = PromptGroup(axis=axis, template_id=template_id or _stable_id(prompts), attributes=attrs,
                        prompts=prompts)
    validate_group(group)
    return group


def pairs_to_groups(pairs: Iterable[Sequence[str]], axis: str = "custom") -> list[PromptGroup]:
    """Turn ``(a, b)`` prompt pairs (or longer tuples) into validated groups."""
    return [make_group(tuple(p), axis=axis, template_id=f"{axis}-{i}") for i, p in enumerate(pairs)]


def _stable_id(prompts: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha1("\x1f".join(prompts).encode()).hexdigest()[:10]


# -- axes ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """One template of an axis; ``groups`` restricts it to some attribute groups (e.g. for articles)."""

    id: str
    text: str
    context: str = ""
    groups: tuple[str, ...] | None = None
    split: str | None = None
    register: str = ""


class TemplateAxis(Plugin):
    """A bias axis from data: attribute groups with surface forms, and templates.

    Template ``i`` is held out when ``i % heldout_every == heldout_every - 1``
    (unless it names its own ``split``), so about a third of templates never take
    part in analysis.

    Optional extras, read only when their split is asked for by name:
    ``transfer`` (templates in other registers, split ``transfer_registers``),
    ``names`` (first names in place of group words, split ``transfer_names``;
    ``core/data/transfer.py``) and ``generator`` (combinatorial analysis templates,
    split ``generated``; ``core/data/combinatorial.py``).
    """

    def __init__(self, name: str, description: str, groups: Mapping[str, Sequence[str]],
                 templates: Sequence[Template], heldout_every: int = 3, source: str = "", *,
                 transfer: Sequence[Template] = (), names: NameSets | None = None,
                 generator: GeneratorSpec | None = None) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.description = description  # type: ignore[misc]
        self.groups = {g: tuple(forms) for g, forms in groups.items()}
        self.templates = list(templates)
        self.heldout_every = heldout_every
        self.source = source
        self.transfer = list(transfer)
        self.names = names
        self.generator = generator
        self._check()

    def _check(self) -> None:
        where = f"axis {self.name!r}" + (f" ({self.source})" if self.source else "")
        if len(self.groups) < 2:
            raise PromptError(f"{where} needs at least two attribute groups, has {list(self.groups)}")
        for g, forms in self.groups.items():
            if not forms or any(not isinstance(f, str) or not f.strip() for f in forms):
                raise PromptError(f"{where}: group {g!r} needs non-empty surface forms, got {list(forms)!r}")
        if not self.templates:
            raise PromptError(f"{where} has no templates")
        seen: set[str] = set()
        for t in self.templates + self.transfer:
            if t.id in seen:
                raise PromptError(f"{where}: template id {t.id!r} is used twice")
            seen.add(t.id)
            if not any(slot in t.text for slot in SLOTS):
                raise PromptError(f"{where}: template {t.id!r} has no {{attribute}} slot: {t.text!r}")
            unknown = [g for g in (t.groups or ()) if g not in self.groups]
            if unknown:
                raise PromptError(f"{where}: template {t.id!r} names unknown groups {unknown}; "
                                  f"groups are {list(self.groups)}")
            if t.groups is not None and len(t.groups) < 2:
                raise PromptError(f"{where}: template {t.id!r} needs at least two groups")
            if t.split not in (None, "analysis", "heldout") and t not in self.transfer:
                raise PromptError(f"{where}: template {t.id!r} has split {t.split!r}; use analysis or heldout")
        if self.names:
            clash = sorted(seen & {t.id for t in self.names.templates})
            if clash:
                raise PromptError(f"{where}: transfer name template id(s) {clash} are also template ids")

    def split_of(self, index: int) -> str:
        """``"analysis"`` or ``"heldout"`` for the template at ``index``."""
        template = self.templates[index]
        if template.split:
            return template.split
        return "heldout" if index % self.heldout_every == self.heldout_every - 1 else "analysis"

    def prompt_groups(self, split: str = "all") -> list[PromptGroup]:
        """One group per template and surface-form choice; member j is attribute group j.

        ``split`` is one of ``AXIS_SPLITS``; a transfer split or ``generated`` the axis has no data for
        gives ``[]``. ``ValueError`` for any other split.
        """
        if split not in AXIS_SPLITS:
            raise ValueError(f"split must be one of {AXIS_SPLITS}, got {split!r}")
        if split == "transfer_registers":
            return self._expand(self.transfer)
        if split == "transfer_names":
            groups = name_groups(self.name, self.names) if self.names else []
            validate_groups(groups)
            return groups
        if split == "generated":
            made = generated_templates(self.generator) if self.generator else []
            return self._expand([Template(t.id, t.text, t.family, register=t.register) for t in made])
        return self._expand([t for i, t in enumerate(self.templates) if split == "all" or self.split_of(i) == split])

    def _expand(self, templates: Sequence[Template]) -> list[PromptGroup]:
        out: list[PromptGroup] = []
        for template in templates:
            names = template.groups or tuple(self.groups)
            n_variants = max(len(self.groups[g]) for g in names)
            for k in range(n_variants):
                attrs = tuple(self.groups[g][k % len(self.groups[g])] for g in names)
                prompts = tuple(fill(template.text, a) for a in attrs)
                group = PromptGroup(self.name, template.id, attrs, prompts, register=template.register,
                                    family=template.context)
                validate_group(group)
                out.append(group)
        return out

    def transfer_splits(self) -> tuple[str, ...]:
        """The transfer splits this axis has prompts for (a subset of ``TRANSFER_SPLITS``)."""
        return tuple(s for s, has in zip(TRANSFER_SPLITS, (self.transfer, self.names)) if has)

    def name_groups(self) -> dict[str, tuple[str, ...]]:
        """Attribute group -> the first names that stand for it in split ``transfer_names`` (``{}``: none)."""
        return self.names.name_groups() if self.names else {}

    def attribute_groups(self) -> dict[str, tuple[str, ...]]:
        """Attribute group name -> its surface forms (``{"Black": ("Black", "African American")}``)."""
        return dict(self.groups)

    def counts(self) -> dict[str, int]:
        """Numbers of groups, templates, held-out templates and prompts (for ``fairprune axes``); the numbers of
        transfer and generated templates when the axis has them."""
        groups = self.prompt_groups("all")
        heldout = sum(self.split_of(i) == "heldout" for i in range(len(self.templates)))
        out = {"groups": len(self.groups), "templates": len(self.templates), "heldout_templates": heldout,
               "prompt_groups": len(groups), "prompts": sum(len(g.prompts) for g in groups)}
        extras = {"transfer_register_templates": len(self.transfer),
                  "transfer_name_templates": len(self.names.templates) if self.names else 0,
                  "generated_templates": self.generator.templates if self.generator else 0}
        return out | {k: v for k, v in extras.items() if v}


def fill(text: str, attribute: str) -> str:
    """Put ``attribute`` into the template's slots (``{Attribute}`` capitalises the first letter)."""
    return text.replace("{attribute}", attribute).replace("{Attribute}", attribute[:1].upper() + attribute[1:])


def axis_from_dict(data: Mapping[str, Any], source: str = "") -> TemplateAxis:
    """Build an axis from its parsed YAML; errors name the file and the bad field."""
    where = source or "axis data"
    if not isinstance(data, Mapping):
        raise PromptError(f"{where}: an axis file must be a mapping with name, groups and templates")
    missing = [k for k in ("name", "groups", "templates") if k not in data]
    if missing:
        raise PromptError(f"{where}: missing field(s) {missing}")
    groups = data["groups"]
    if not isinstance(groups, Mapping):
        raise PromptError(f"{where}: 'groups' must map group names to lists of surface forms")
    groups = {str(k): _surface_forms(v, f"{where}: field 'groups.{k}'") for k, v in groups.items()}
    if not isinstance(data["templates"], list) or not data["templates"]:
        raise PromptError(f"{where}: field 'templates' must be a non-empty list of templates, "
                          f"got {data['templates']!r}")
    templates = []
    for i, t in enumerate(data["templates"]):
        if isinstance(t, str):
            t = {"id": f"t{i}", "text": t}
        if not isinstance(t, Mapping) or "text" not in t:
            raise PromptError(f"{where}: template {i} needs a 'text' field, got {t!r}")
        if not isinstance(t["text"], str) or not t["text"].strip():
            raise PromptError(f"{where}: template {t.get('id', i)!r}: field 'text' must be a sentence with an "
                              f"{{attribute}} slot, got {t['text']!r}")
        unknown = set(t) - {"id", "text", "context", "groups", "split", "register"}
        if unknown:
            raise PromptError(f"{where}: template {i} has unknown field(s) {sorted(unknown)}")
        templates.append(Template(id=str(t.get("id", f"t{i}")), text=str(t["text"]), context=str(t.get("context", "")),
                                  groups=tuple(t["groups"]) if t.get("groups") else None, split=t.get("split"),
                                  register=str(t.get("register", ""))))
    every = int(data.get("heldout_every", 3))
    if every < 2:
        raise PromptError(f"{where}: heldout_every must be at least 2, got {every}")
    transfer, names = _transfer_section(data.get("transfer"), list(groups), where)
    generator = spec_from_dict(data["generate"], where) if data.get("generate") is not None else None
    return TemplateAxis(str(data["name"]), str(data.get("description", f"bias axis {data['name']}")),
                        groups, templates, every, source, transfer=transfer, names=names, generator=generator)


def _transfer_section(section: Any, groups: list[str], where: str) -> tuple[list[Template], NameSets | None]:
    """The register templates and name sets of an axis file's ``transfer`` section (``core/data/transfer.py``)."""
    if section is None:
        return [], None
    if not isinstance(section, Mapping):
        raise PromptError(f"{where}: 'transfer' must be a mapping with registers and/or names")
    unknown = set(section) - {"registers", "names", "name_templates"}
    if unknown:
        raise PromptError(f"{where}: transfer has unknown field(s) {sorted(unknown)}")
    out = []
    for i, t in enumerate(section.get("registers") or []):
        if not isinstance(t, Mapping) or not {"id", "text", "register"} <= set(t):
            raise PromptError(f"{where}: transfer.registers.{i} needs id, text and register, got {t!r:.80}")
        extra = set(t) - {"id", "text", "register", "groups", "context"}
        if extra:
            raise PromptError(f"{where}: transfer.registers.{i} has unknown field(s) {sorted(extra)}")
        out.append(Template(id=str(t["id"]), text=str(t["text"]), context=str(t.get("context", "")),
                            groups=tuple(t["groups"]) if t.get("groups") else None, split="transfer_registers",
                            register=str(t["register"])))
    return out, name_sets_from_dict(section, groups, where)


def _surface_forms(value: Any, field: str) -> list[str]:
    """The words of one attribute group (a string or a list of strings); ``PromptError`` naming ``field``."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise PromptError(f"{field} has no words: give the group's surface forms as a list, got {value!r}")
    if any(not isinstance(v, (str, int, float)) or isinstance(v, bool) or not str(v).strip() for v in value):
        raise PromptError(f"{field} needs non-empty words, got {value!r}")
    return [str(v) for v in value]


def load_axis(path: str | Path) -> TemplateAxis:
    """Load a bias axis from a YAML file (the format of ``fairprune/data/axes/*.yaml``).

    Raises:
        PromptError: one line naming the file (and line): unreadable, not UTF-8, not YAML, not an axis.
    """
    path = Path(path)
    return axis_from_dict(parse_data_file(read_text_file(path, "axis file"), path), str(path))


def read_text_file(path: Path, what: str = "prompt file") -> str:
    """A UTF-8 text file (a byte-order mark is dropped); ``PromptError`` naming the file otherwise."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise PromptError(f"{path}:{line}: {what} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); "
                          "save it as UTF-8") from None
    except OSError as exc:
        raise PromptError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None


def parse_data_file(text: str, path: Path) -> Any:
    """Parsed YAML or JSON (by suffix); a syntax error is ``PromptError`` at ``file:line``."""
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PromptError(yaml_error_line(path, exc)) from None


def builtin_axis_files() -> list[Path]:
    """The YAML files of the built-in axes shipped in the package."""
    return sorted((Path(__file__).resolve().parents[2] / "data" / "axes").glob("*.yaml"))


# -- user prompt files ---------------------------------------------------------------------------

def load_prompt_groups(path: str | Path, axis: str | None = None) -> list[PromptGroup]:
    """Read prompt groups from YAML/JSON, JSONL or CSV.

    YAML/JSON: an axis file (with templates), ``{pairs: [[a, b], ...]}``,
    ``{groups: [...]}`` or a list. An item is a list of prompts or a mapping with
    ``prompts`` (and optional ``attributes``, ``template_id``, ``axis``). JSONL: one
    item a line. CSV: one group a row, member columns in order (columns ``axis`` and
    ``template_id`` are optional).
    """
    path = Path(path)
    axis = axis or path.stem
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv", ".yaml", ".yml", ".json"):
        raise PromptError(f"prompt file {str(path)!r}: unknown format; use .yaml, .json, .jsonl or .csv")
    text = read_text_file(path)
    if suffix == ".jsonl":
        items = [(f"{path}:{n}", _json_line(line, path, n)) for n, line in enumerate(text.splitlines(), 1)
                 if line.strip()]
    elif suffix == ".csv":
        items = _csv_items(text, path)
    else:
        data = parse_data_file(text, path)
        if isinstance(data, Mapping) and "templates" in data:
            return axis_from_dict(data, str(path)).prompt_groups("all")
        if isinstance(data, Mapping):
            items = data.get("pairs") or data.get("groups") or []
            axis = str(data.get("axis", axis))
        else:
            items = data or []
        if not isinstance(items, list):
            raise PromptError(f"{path}: expected a list of prompt groups (or a mapping with 'pairs', 'groups' or "
                              f"'templates'), got {type(items).__name__} {items!r:.40}")
        items = [(f"{path}: group {i + 1}", item) for i, item in enumerate(items)]
    if not items:
        raise PromptError(f"prompt file {str(path)!r} holds no prompt groups")
    return [_item_to_group(item, axis, i, where) for i, (where, item) in enumerate(items)]


def _json_line(line: str, path: Path, number: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise PromptError(f"{path}:{number}: not JSON: {exc}") from exc


def _csv_items(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    """One item per non-empty row; a row with more or fewer cells than the header is an error at file:line."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return []
    items = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise PromptError(f"{path}:{reader.line_num}: {len(row)} cells but the header has {len(header)} "
                              f"columns ({', '.join(header)})")
        record = dict(zip(header, row))
        prompts = [record[h] for h in header if h not in _RESERVED_COLUMNS and record.get(h, "").strip()]
        item: dict[str, Any] = {"prompts": prompts}
        item.update({k: record[k] for k in _RESERVED_COLUMNS if record.get(k)})
        items.append((f"{path}:{reader.line_num}", item))
    return items


def _item_to_group(item: Any, axis: str, index: int, where: str) -> PromptGroup:
    """The validated group of one item; errors start with ``where`` (``file:line`` or ``file: group N``)."""
    if isinstance(item, (list, tuple)):
        item = {"prompts": list(item)}
    if not isinstance(item, Mapping) or not isinstance(item.get("prompts"), (list, tuple)):
        raise PromptError(f"{where}: must be a list of prompts or have a 'prompts' list, got {item!r:.60}")
    attributes = item.get("attributes")
    if attributes is not None and not (isinstance(attributes, (list, tuple)) and all(
            isinstance(a, str) for a in attributes)):
        raise PromptError(f"{where}: 'attributes' must be a list of strings, got {attributes!r:.60}")
    try:
        return make_group([str(p) for p in item["prompts"]], axis=str(item.get("axis", axis)),
                          template_id=str(item.get("template_id", f"{axis}-{index}")), attributes=attributes)
    except PromptError as exc:
        raise PromptError(f"{where}: {exc}") from None

