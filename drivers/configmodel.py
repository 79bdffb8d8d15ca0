"""The base of every model validated from a cell file: booleans and numbers are not interchangeable.

pydantic's lax mode takes ``True`` for ``1`` in an ``int``/``float`` field and ``1``, ``"yes"``, ``"on"`` for
``True`` in a ``bool`` field.  In YAML 1.1 ``yes/no/on/off/true/false`` are booleans, so ``speed: yes`` would
silently become 1 m/s.  :class:`ConfigModel` refuses a boolean wherever only a number fits and anything but a
boolean where only a boolean fits, everywhere inside a field (lists, tuples, mappings, unions, nested models that
do not derive from it), before pydantic coerces the value.  Everything else stays lax (``2`` for a float, a list
for a tuple).

It lives with the driver contracts so that drivers, skills, the simulator and the cell all share it.
"""

from __future__ import annotations

import collections.abc as cabc
import decimal
import fractions
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

__all__ = ["ConfigModel", "bool_problem", "MIXUP"]

MIXUP = "bool_number_mixup"
"""pydantic error type of a boolean given for a number or a non-boolean for a boolean."""

_NUMBERS = (int, float, decimal.Decimal, fractions.Fraction, complex)
_SEQUENCES = (list, tuple, set, frozenset, cabc.Sequence, cabc.Set, cabc.MutableSequence, cabc.MutableSet,
              cabc.Iterable, cabc.Collection)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)

NOT_A_NUMBER = "expected a number, got a boolean (YAML reads yes/no/on/off/true/false as booleans)"
NOT_A_BOOL = "expected a boolean: true or false"


def _arms(ann: Any) -> tuple[Any, ...] | None:
    """The members of a union annotation (``X | Y``, ``Optional[X]``), else None."""
    origin = typing.get_origin(ann)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(ann)
    return None


def _strip(ann: Any) -> Any:
    while typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    return ann


def _kind(ann: Any) -> tuple[bool, bool]:
    """(takes a boolean as a boolean, takes a number) for a scalar position."""
    ann = _strip(ann)
    if ann is Any or ann is object or isinstance(ann, (typing.TypeVar, str, typing.ForwardRef)):
        return True, True
    arms = _arms(ann)
    if arms is not None:
        kinds = [_kind(a) for a in arms]
        return any(k[0] for k in kinds), any(k[1] for k in kinds)
    if typing.get_origin(ann) is Literal:
        vals = typing.get_args(ann)
        return (any(isinstance(v, bool) for v in vals),
                any(isinstance(v, _NUMBERS) and not isinstance(v, bool) for v in vals))
    if ann is bool:
        return True, False
    if isinstance(ann, type) and issubclass(ann, _NUMBERS):
        return False, True
    return False, False


def bool_problem(ann: Any, value: Any, where: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str] | None:
    """``(where, message)`` when ``value`` mixes up booleans and numbers for annotation ``ann``, else None.

    ``where`` is the position inside the value (``(1,)``, ``("x", 2)``), empty for the value itself.
    """
    ann = _strip(ann)
    arms = _arms(ann)
    if isinstance(value, bool):
        takes_bool, takes_number = _kind(ann)
        return (where, NOT_A_NUMBER) if takes_number and not takes_bool else None
    if arms is not None:
        if value is None:
            return None
        if _only_bool(ann):
            return where, NOT_A_BOOL
        found = None
        for arm in arms:
            if _fits(arm, value):
                p = bool_problem(arm, value, where)
                if p is None:
                    return None
                found = found or p
        return found
    if ann is bool:
        return where, NOT_A_BOOL
    origin = typing.get_origin(ann) or ann
    args = typing.get_args(ann)
    sub = (lambda k: where + (k,))
    if isinstance(value, (list, tuple)) and isinstance(origin, type) and issubclass(origin, _SEQUENCES) \
            and not issubclass(origin, (str, bytes)):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            pairs = zip(args, value)
        else:
            item = args[0] if args else Any
            pairs = ((item, v) for v in value)
        for i, (a, v) in enumerate(pairs):
            p = bool_problem(a, v, sub(i))
            if p:
                return p
        return None
    if isinstance(value, dict) and isinstance(origin, type) and issubclass(origin, _MAPPINGS):
        item = args[1] if len(args) == 2 else Any
        for k, v in value.items():
            p = bool_problem(item, v, sub(k))
            if p:
                return p
        return None
    if isinstance(value, dict) and isinstance(ann, type) and issubclass(ann, BaseModel) \
            and not issubclass(ann, ConfigModel):
        # a plain pydantic model inside a ConfigModel: check its fields here (a ConfigModel checks its own)
        for name, f in ann.model_fields.items():
            key = f.alias if f.alias and f.alias in value else name
            if key in value:
                p = bool_problem(f.annotation, value[key], sub(key))
                if p:
                    return p
    return None


def _only_bool(ann: Any) -> bool:
    arms = _arms(_strip(ann))
    if arms is None:
        return _strip(ann) is bool
    real = [a for a in arms if a is not type(None)]
    return bool(real) and all(_only_bool(a) for a in real)


def _fits(ann: Any, value: Any) -> bool:
    """Roughly: could this union member be the one meant for ``value`` (so its verdict counts)?"""
    ann = _strip(ann)
    origin = typing.get_origin(ann) or ann
    if ann is Any or ann is object:
        return True
    if value is None:
        return ann is type(None)
    if isinstance(value, bool):
        return _kind(ann)[0]
    if isinstance(value, (list, tuple)):
        return isinstance(origin, type) and issubclass(origin, _SEQUENCES) and not issubclass(origin, (str, bytes))
    if isinstance(value, dict):
        return isinstance(origin, type) and (issubclass(origin, _MAPPINGS) or issubclass(origin, BaseModel))
    return True


_UNSEEN: Any = object()
_SCALAR_VERDICTS: dict[tuple[type, str, type], Any] = {}


class ConfigModel(BaseModel):
    """A model read from a cell file: unknown keys refused, booleans and numbers never confused."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_number_mixup(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is None:
            return value
        if isinstance(value, (list, tuple, dict, set, frozenset)):
            p = bool_problem(field.annotation, value)
        else:
            # for a scalar the verdict depends only on the field and the value's type (see bool_problem):
            # remembered, since skill parameters are validated every time a skill runs
            key = (cls, info.field_name, type(value))
            p = _SCALAR_VERDICTS.get(key, _UNSEEN)
            if p is _UNSEEN:
                p = _SCALAR_VERDICTS[key] = bool_problem(field.annotation, value)
        if p:
            where, message = p
            at = ".".join(str(k) for k in where)
            # ``where``/``bad`` let a caller that reports locations (cell.config) point at the item itself
            raise PydanticCustomError(MIXUP, "{at}{message}", {"at": f"at {at}: " if at else "", "message": message,
                                                               "where": list(where), "bad": _dig(value, where)})
        return value


def _dig(value: Any, where: tuple[Any, ...]) -> Any:
    for k in where:
        value = value[k]
    return value
