"""Parse plain mappings (TOML tables) into frozen dataclasses, strictly.

Unknown keys are rejected with the key named (and a close match suggested), values are checked
against the field's type (numbers must be finite), and nested dataclasses / tuples are parsed recursively. This is the
only place configuration is validated, so every error reads the same way.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from bench.errors import UserError, did_you_mean

T = TypeVar("T")


def parse(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from `data`; `where` is the key path used in error messages."""
    if not isinstance(data, Mapping):
        raise UserError(f"{where or 'top level'}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise UserError(f"unknown key '{_join(where, key)}'{did_you_mean(key, fields)}")
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _coerce(hints[name], data[name], _join(where, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"missing required key '{_join(where, name)}'")
    try:
        return cls(**values)
    except (ValueError, TypeError) as error:  # __post_init__ validation
        raise UserError(f"{where}: {error}" if where else str(error)) from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, where)
            except UserError as error:
                errors.append(str(error))
        if len(errors) == 1:
            raise UserError(errors[0])
        kinds = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise UserError(f"{where}: {value!r} has the wrong type (expected {kinds})")
    if origin is typing.Literal:
        if value not in args:
            raise UserError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise UserError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise UserError(f"{where}: expected a table, got {type(value).__name__}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        # TOML spells nan and inf; no parameter means anything by them, and downstream they
        # turn into crashes after the compute (selection, JSON without NaN) or silent nonsense.
        if not math.isfinite(value):
            raise UserError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint in (str, bool):
        if not isinstance(value, hint):
            raise UserError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    return value


def describe(cls: type) -> list[tuple[str, str, Any]]:
    """(name, type, default) of each parameter of a Params dataclass, for `steerbench list`."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append((f.name, _type_name(hints[f.name]), default))
    return rows


def _type_name(hint: Any) -> str:
    text = str(hint) if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
    return text.replace("typing.", "")
