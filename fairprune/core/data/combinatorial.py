"""Analysis templates built combinatorially: registers × contexts × roles, for the split ``generated``.

A bias axis's own templates are one family of sentences (third-person
narrative, "The {attribute} X did Y. The Z thought that he"). A selection fitted
on them may fit that family. An axis file may carry a ``generate:`` section
whose parts combine into many more analysis templates in several registers::

    generate:
      templates: 240        # how many templates the split yields (each expands over the group words)
      seed: 0
      frames:               # register -> frame; slots {role} {situation} {judge} {Judge} {verb} {pronoun}
        narrative: "The {role} {situation}. {Judge} {verb} that {pronoun}"
      contexts:             # a situation, who judges it, and how
        - {id: car_rental, situation: "asked to rent a car for the weekend", judge: "the rental agent",
           verb: "suspected"}
      roles:                # who the prompt is about; {attribute} is the axis' slot
        - {id: man, text: "{attribute} man", pronoun: he}

The full product is enumerated (frame, context, role); each register's
templates are shuffled with ``seed`` and the registers are dealt round-robin,
so any prefix covers every register about equally. The result is
deterministic. Each template carries its register and its context (as the
group's ``family``), so folds can keep a register or a context together.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from ..contract.errors import PromptError

FRAME_SLOTS = ("{role}", "{situation}", "{judge}", "{Judge}", "{verb}", "{pronoun}")
_CONTEXT_FIELDS = ("id", "situation", "judge", "verb")


@dataclass(frozen=True)
class GeneratedTemplate:
    """One generated template: ``text`` has the axis' ``{attribute}`` slot; ``family`` is its context id."""

    id: str
    text: str
    register: str
    family: str


@dataclass(frozen=True)
class GeneratorSpec:
    """The parts of a ``generate:`` section (see the module docstring)."""

    templates: int
    seed: int
    frames: Mapping[str, str]
    contexts: tuple[Mapping[str, str], ...]
    roles: tuple[Mapping[str, str], ...]

    @property
    def size(self) -> int:
        """How many distinct templates the parts can make."""
        return len(self.frames) * len(self.contexts) * len(self.roles)


def spec_from_dict(section: object, where: str) -> GeneratorSpec:
    """A checked ``GeneratorSpec``; ``PromptError`` naming ``where`` and the field otherwise."""
    if not isinstance(section, Mapping):
        raise PromptError(f"{where}: 'generate' must be a mapping with frames, contexts and roles")
    unknown = set(section) - {"templates", "seed", "frames", "contexts", "roles"}
    if unknown:
        raise PromptError(f"{where}: generate has unknown field(s) {sorted(unknown)}")
    frames = section.get("frames")
    if not isinstance(frames, Mapping) or not frames:
        raise PromptError(f"{where}: generate.frames must map registers to frame texts")
    for register, frame in frames.items():
        if not isinstance(frame, str) or "{role}" not in frame:
            raise PromptError(f"{where}: generate.frames.{register} needs a {{role}} slot, got {frame!r}")
    contexts = _records(section.get("contexts"), _CONTEXT_FIELDS, "generate.contexts", where)
    roles = _records(section.get("roles"), ("id", "text", "pronoun"), "generate.roles", where)
    for i, role in enumerate(roles):
        if "{attribute}" not in role["text"] and "{Attribute}" not in role["text"]:
            raise PromptError(f"{where}: generate.roles.{i} text needs an {{attribute}} slot, got {role['text']!r}")
    size = len(frames) * len(contexts) * len(roles)
    templates = section.get("templates", size)
    if not isinstance(templates, int) or isinstance(templates, bool) or not 1 <= templates:
        raise PromptError(f"{where}: generate.templates must be a positive integer, got {templates!r}")
    seed = section.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise PromptError(f"{where}: generate.seed must be an integer, got {seed!r}")
    return GeneratorSpec(min(templates, size), seed, {str(k): v for k, v in frames.items()}, contexts, roles)


def _records(items: object, fields: tuple[str, ...], name: str, where: str) -> tuple[dict[str, str], ...]:
    if not isinstance(items, list) or not items:
        raise PromptError(f"{where}: {name} must be a non-empty list")
    out, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or any(not isinstance(item.get(f), str) or not item.get(f, "").strip()
                                                for f in fields):
            raise PromptError(f"{where}: {name}.{i} needs text fields {list(fields)}, got {item!r:.80}")
        extra = set(item) - set(fields)
        if extra:
            raise PromptError(f"{where}: {name}.{i} has unknown field(s) {sorted(extra)}")
        if item["id"] in seen:
            raise PromptError(f"{where}: {name} id {item['id']!r} is used twice")
        seen.add(item["id"])
        out.append({f: str(item[f]) for f in fields})
    return tuple(out)


def compose(frame: str, context: Mapping[str, str], role: Mapping[str, str]) -> str:
    """One template text: the frame's slots filled from a context and a role (the ``{attribute}`` slot stays)."""
    judge = context["judge"]
    values = {"{role}": role["text"], "{situation}": context["situation"], "{judge}": judge,
              "{Judge}": judge[:1].upper() + judge[1:], "{verb}": context["verb"], "{pronoun}": role["pronoun"]}
    for slot, value in values.items():
        frame = frame.replace(slot, value)
    return frame


def generated_templates(spec: GeneratorSpec) -> list[GeneratedTemplate]:
    """``spec.templates`` templates, deterministic: per register a seeded shuffle of contexts × roles, the
    registers dealt round-robin (so every register is present once ``templates >= len(frames)``)."""
    rng = random.Random(spec.seed)
    buckets = []
    for register, frame in spec.frames.items():
        bucket = [GeneratedTemplate(f"gen.{register}.{c['id']}.{r['id']}", compose(frame, c, r), register, c["id"])
                  for c in spec.contexts for r in spec.roles]
        rng.shuffle(bucket)
        buckets.append(bucket)
    dealt = [bucket[i] for i in range(max(map(len, buckets))) for bucket in buckets if i < len(bucket)]
    return dealt[:spec.templates]
