"""Small explicit tables that turn a config string into a component, once, at the edge.

Each entry is a factory whose keyword arguments are the component's options. Options are validated against the
factory's signature and type hints, so a typo or a wrong type is reported with the field's dotted path. Arguments
named in ``context`` (e.g. ``event_shape`` or ``dataset``) are supplied by genbits, not by the user.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

from genbits.errors import ConfigError


def closest(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def describe(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a --set string) to ``annotation`` or raise a ConfigError naming ``where``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any or annotation is inspect.Parameter.empty:
        return value
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(
            f"{where}: {value!r} is not allowed; use {describe(annotation)}{closest(str(value), map(str, args))}"
        )
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            with contextlib.suppress(ConfigError):
                return coerce(value, arg, where)
        raise ConfigError(f"{where}: {value!r} is not a {describe(annotation)}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [
                v for v in value.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(",") if v
            ]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {value!r} is not a list; write it as [a, b] or a,b")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: {value!r} needs exactly {len(args)} values")
            return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        item = args[0] if args else Any
        return origin(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: {value!r} is not a bool; use true or false")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not an int")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
        raise ConfigError(f"{where}: {value!r} is not an int")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: {value!r} is not a number")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: {value!r} is not a string")
    if origin is dict or annotation is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{where}: {value!r} is not a mapping")
    return value


class Registry:
    """A named table of factories for one kind of component (datasets, models, objectives, update rules)."""

    def __init__(self, kind: str, context: tuple[str, ...] = ()):
        self.kind = kind
        self.context = context
        self._table: dict[str, Callable[..., Any]] = {}
        self._retired: dict[str, list[tuple[str, Any, str]]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def add(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._table:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._table[name] = factory
            return factory

        return add

    def retire(self, name: str, option: str, message: str, value: Any = ...) -> None:
        """Refuse a form of ``name``'s options that used to be valid (``option`` with any value, or only with
        ``value``) with ``message`` saying what to write now, rather than a closest match that may point elsewhere."""
        self._retired.setdefault(name, []).append((option, value, message))

    def names(self) -> list[str]:
        return sorted(self._table)

    def __contains__(self, name: str) -> bool:
        return name in self._table

    def __getitem__(self, name: str) -> Callable[..., Any]:
        if name not in self._table:
            raise ConfigError(
                f"{self.kind}: unknown name {name!r}{closest(name, self._table)}; registered: {', '.join(self.names())}"
            )
        return self._table[name]

    def options(self, name: str) -> dict[str, inspect.Parameter]:
        """The user-settable keyword arguments of ``name`` (context arguments excluded)."""
        factory = self[name]
        return {
            k: p
            for k, p in inspect.signature(factory).parameters.items()
            if k not in self.context and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    def validate(self, name: str, options: dict[str, Any], where: str | None = None) -> dict[str, Any]:
        """Coerce ``options`` to the factory's annotated types; unknown keys are errors with a suggestion."""
        where = where or self.kind
        allowed = self.options(name)
        factory = self[name]  # a class is validated against its __init__, not its class-level annotations
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
        checked = {}
        for key, value in options.items():
            for option, old, message in self._retired.get(name, ()):
                if key == option and (old is ... or value == old):
                    raise ConfigError(f"{where}.{key}: {message}")
            if key not in allowed:
                raise ConfigError(
                    f"{where}.{key}: unknown option for {self.kind} {name!r}{closest(key, allowed)}; "
                    f"allowed: {', '.join(allowed) or 'none'}"
                )
            checked[key] = coerce(value, hints.get(key, Any), f"{where}.{key}")
        return checked

    def build(self, name: str, options: dict[str, Any], where: str | None = None, **context: Any) -> Any:
        """Validate ``options`` and call the factory; a ValueError from the factory becomes a ConfigError."""
        where = where or self.kind
        checked = self.validate(name, options, where)
        factory = self[name]
        wanted = inspect.signature(factory).parameters
        supplied = {k: v for k, v in context.items() if k in wanted}
        try:
            return factory(**supplied, **checked)
        except ValueError as e:
            raise ConfigError(f"{where} ({name}): {e}") from None


DATASETS = Registry("data", context=("split", "seed"))
MODELS = Registry("model", context=("event_shape", "num_classes", "dataset"))
OBJECTIVES = Registry("objective", context=("dataset",))
RULES = Registry("optim.rule", context=("players", "optim", "field"))
