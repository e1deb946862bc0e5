"""Config fields that carry their own command-line flag, help and checks, and the glue.

Every config in the project is a frozen dataclass whose fields are declared with `arg()`: the
flag (by default `--` + the field name, so the flag, the field and the result column share one
name), its help, its allowed values, the old names it still answers to, and how to read it from
text. The checks live once, in the dataclass's `__post_init__` (`check_choices` for `choices`).

`config_from` builds a config from parsed flags, so commands hand typed values on and never a
Namespace; `to_json` / `from_json` carry a config to another process (the sweep's server)
without rebuilding a command line. The parser glue (`harness.cli.add_config`, old flag names)
sits with the commands: nothing here parses flags, and a flag type raises ConfigError.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, field, fields, is_dataclass
from typing import Any

from core.errors import ConfigError


def arg(
    default: Any = MISSING,
    *,
    help: str,
    flag: str | None = None,
    choices: tuple | None = None,
    aliases: tuple[str, ...] = (),
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    negate: tuple[str, ...] = (),
    short: str | None = None,
    repeat: bool = False,
    display: str | None = None,
    cli: bool = True,
    default_factory: Any = MISSING,
) -> Any:
    """A config field with its flag.

    `aliases`: old flag names, still accepted for one release (a run that uses one says so);
    `parse`: text -> value (lists, sizes); `negate`: flags that set a boolean field to False;
    `short`: a one-letter flag beside the long one; `repeat`: the flag may be given many times
    (a tuple of values); `display`: the default as the flag takes it, when it is stored
    otherwise (MB for bytes); `cli=False`: a field the commands fill in themselves (no flag).
    """
    meta = {
        "help": help,
        "flag": flag,
        "choices": choices,
        "aliases": tuple(aliases),
        "parse": parse,
        "metavar": metavar,
        "negate": tuple(negate),
        "short": short,
        "repeat": repeat,
        "display": display,
        "cli": cli,
    }
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f: Field) -> str:
    """A field's flag: its own, or `--` + its name with dashes."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def check_choices(config: Any) -> None:
    """Refuse, in one line naming the flag, a field whose value is not one of its `choices`."""
    for f in fields(config):
        choices, value = f.metadata.get("choices"), getattr(config, f.name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{flag_of(f)} must be one of {', '.join(choices)}; got {value!r}")


def at_least(config: Any, minimum: float, *names: str) -> None:
    """Refuse, naming the flag, any of the fields `names` that is set and below `minimum`."""
    by_name = {f.name: f for f in fields(config)}
    for name in names:
        value = getattr(config, name)
        if value is None:
            continue
        values = value if isinstance(value, tuple) else (value,)
        if any(v < minimum for v in values):
            raise ConfigError(f"{flag_of(by_name[name])} must be >= {minimum:g}; got {value}")


# flag types


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"expected integers >= 1, got {text!r}")
    return values


def _number(text: str, ok: Callable[[float], bool], expected: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"expected a number, got {text!r}") from None
    if not ok(v):
        raise ConfigError(f"expected {expected}, got {text!r}")
    return v


def positive_float(text: str) -> float:
    return _number(text, lambda v: v > 0, "a number > 0")


def share(text: str) -> float:
    """A flag type: a share in [0, 1), like 0.2."""
    return _number(text, lambda v: 0 <= v < 1, "a share in [0, 1)")


def choice_list(choices: tuple[str, ...]):
    """A flag type: one of `choices`, or a comma list of them (kept as the string)."""

    def parse(text: str) -> str:
        for item in text.split(","):
            if item.strip() not in choices:
                raise ConfigError(
                    f"invalid choice: {item.strip()!r} (choose from {', '.join(choices)})"
                )
        return text

    return parse


_SIMPLE = {int: int, float: float, str: str}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base(tp: Any) -> Any:
    """`int | None` -> int; other types as they are."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _nested(tp: Any) -> type | None:
    tp = _base(tp)
    return tp if isinstance(tp, type) and is_dataclass(tp) else None


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def config_from(cls: type, ns: Any, **overrides: Any) -> Any:
    """The config `cls` from parsed flags (a parsed-flags namespace or a mapping; nested configs
    built the same way); fields without a flag keep their defaults unless given in `overrides`.
    Invalid values raise ConfigError."""
    values = dict(ns) if isinstance(ns, Mapping) else vars(ns)
    hints = _hints(cls)
    kw: dict[str, Any] = {}
    for f in fields(cls):
        nested = _nested(hints[f.name])
        if f.name in overrides:
            kw[f.name] = overrides[f.name]
        elif nested is not None:
            kw[f.name] = config_from(nested, values)
        elif f.metadata.get("cli", False) and f.name in values:
            value = values[f.name]
            kw[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kw)


def to_json(config: Any) -> str:
    return json.dumps(dataclasses.asdict(config), sort_keys=True)


def from_json(cls: type, text: str | Mapping[str, Any]) -> Any:
    """The config `cls` from `to_json`'s text (lists back to tuples, nested configs built)."""
    data = json.loads(text) if isinstance(text, str) else dict(text)
    hints = _hints(cls)
    kw = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value, nested = data[f.name], _nested(hints[f.name])
        if nested is not None and value is not None:
            value = from_json(nested, value)
        elif isinstance(value, list):
            value = _tuple(value)
        kw[f.name] = value
    return cls(**kw)


def _tuple(value: list) -> tuple:
    return tuple(_tuple(v) if isinstance(v, list) else v for v in value)
