"""A small base class that gives a plugin a validated ``params`` object.

A plugin declares its options as a nested pydantic model ``Params`` (with
``extra="forbid"``); ``configure`` returns a copy carrying validated params, so
a typo in a config is a validation error that names the field, never a
``TypeError`` deep inside a constructor.
"""

from __future__ import annotations

import copy
from types import UnionType
from typing import Any, ClassVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _number_not_bool(annotation: Any) -> bool:
    """Whether a field of this annotation takes a number and not a bool (``int``, ``float | None``, ...)."""
    if annotation is bool or annotation is Any:
        return False
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (Union, UnionType):
        args = get_args(annotation)
        return any(_number_not_bool(a) for a in args) and bool not in args and Any not in args
    return False


class StrictParams(BaseModel):
    """Base of plugin ``Params`` and of every config section: unknown keys are errors, and so is a bool where
    a number is expected (pydantic alone would read ``check_limit: true`` as 1)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None \
                and _number_not_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number, not a boolean")
        return value


class NoParams(StrictParams):
    """The options of a plugin that takes none."""


class Plugin:
    """Base of built-in plugins: a ``name``, a one-line ``description``, typed ``params``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel | None = None) -> None:
        self.params = params if params is not None else self.Params()

    def configure(self, params: dict[str, Any] | BaseModel | None = None) -> "Plugin":
        """Return a copy of this plugin with ``params`` validated against ``Params``."""
        if params is None:
            params = {}
        validated = params if isinstance(params, self.Params) else self.Params.model_validate(
            params.model_dump() if isinstance(params, BaseModel) else params
        )
        clone = copy.copy(self)
        clone.params = validated
        return clone

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def configure(plugin: Any, params: dict[str, Any] | None) -> Any:
    """Configure any registered object: ``Plugin`` subclasses or duck-typed objects with ``Params``."""
    if hasattr(plugin, "configure"):
        return plugin.configure(params or {})
    if params:
        params_model = getattr(plugin, "Params", NoParams)
        validated = params_model.model_validate(params)
        clone = copy.copy(plugin)
        clone.params = validated
        return clone
    return plugin
