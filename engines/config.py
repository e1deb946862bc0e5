"""Config fields that carry their own command-line flag, help and checks, and the glue.

Every config in the project is a frozen dataclass whose fields are declared with `arg()`: the
flag (by default `--` + the field name, so the flag, the field and the result column share one
name), its help, its allowed values, the old names it still answers to, and how to read it from
text. The checks live once, in the dataclass's `__post_init__` (`check_choices` for `choices`).

`add_config` gives a parser one flag per field (a nested config field: its own group);
`config_from` builds the config back from the parsed flags, so commands hand typed values on and
never a Namespace; `to_json` / `from_json` carry a config to another process (the sweep's server)
without rebuilding a command line. A flag's old name still works for one release: `renamed(ns)`
lists the ones a run used, for the command to say so once at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, field, fields, is_dataclass
from typing import Any

from engines.errors import ConfigError


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
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _number(text: str, ok: Callable[[float], bool], expected: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
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
                raise argparse.ArgumentTypeError(
                    f"invalid choice: {item.strip()!r} (choose from {', '.join(choices)})"
                )
        return text

    return parse


_RENAMED = "_bb_renamed"  # Namespace attribute: [(old flag, new flag)] a run used
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


class _Store(argparse.Action):
    """argparse's store (or store_const), remembering when an old flag name was used."""

    def __init__(self, option_strings, dest, new: str = "", old=(), const=None, display=None, **kw):
        self.new, self.old, self.display = new, tuple(old), display
        if const is not None:
            kw["nargs"] = 0
        super().__init__(option_strings, dest, const=const, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        if option_string in self.old:
            getattr(namespace, _RENAMED, None) or setattr(namespace, _RENAMED, [])
            getattr(namespace, _RENAMED).append((option_string, self.new))


def add_config(
    parser: argparse.ArgumentParser,
    cls: type,
    title: str | None = None,
    *,
    only: tuple[str, ...] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """One flag per field of `cls` (fields with `cli=False` have none; a nested config field
    adds its own group). A dest the parser already has is skipped, so two configs that share a
    field (`--inputs-per-request`) share its flag; `only` limits the fields, `defaults` overrides
    the shown default."""
    seen: set[str] = parser.__dict__.setdefault("_bb_dests", set())
    group = parser.add_argument_group(title) if title else parser
    hints = _hints(cls)
    for f in fields(cls):
        if only is not None and f.name not in only:
            continue
        nested = _nested(hints[f.name])
        if nested is not None:
            add_config(parser, nested, f.metadata.get("help"))
            continue
        if not f.metadata.get("cli", False) or f.name in seen:
            continue
        seen.add(f.name)
        given = defaults or {}
        required = f.name not in given and _default(f) is _REQUIRED
        default = given.get(f.name, None if required else _default(f))
        _add_flag(group, f, _base(hints[f.name]), default, required)


_REQUIRED = object()  # a field with no default: its flag must be given


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _REQUIRED


def _add_flag(group, f: dataclasses.Field, tp: Any, default: Any, required: bool) -> None:
    m = f.metadata
    flag, old = flag_of(f), m.get("aliases", ())
    names = (m["short"], flag) if m.get("short") else (flag,)
    help_ = m["help"]
    if old:
        help_ += f" (old name {', '.join(old)}: works until the next release)"
    kw: dict[str, Any] = dict(
        dest=f.name, default=default, help=help_, new=flag, old=old, display=m.get("display")
    )
    if required:
        kw["required"] = True
    if tp is bool:
        group.add_argument(*names, *old, action=_Store, const=True, **kw)
        for neg in m.get("negate", ()):
            group.add_argument(
                neg, action="store_const", const=False, dest=f.name, help=f"turns {flag} off"
            )
        return
    if m.get("repeat"):
        group.add_argument(
            *names,
            action="append",
            type=m["parse"],
            default=[],
            metavar=m.get("metavar"),
            dest=f.name,
            help=help_,
        )
        return
    parse = m.get("parse") or _SIMPLE.get(tp)
    if parse is None:
        raise TypeError(f"{f.name}: give arg(parse=...) for type {tp!r}")
    if m.get("parse"):
        parse = _keeps_message(parse)
    metavar = m.get("metavar") or ("N,N,..." if _is_list(tp) else None)
    group.add_argument(
        *names, *old, action=_Store, type=parse, choices=m.get("choices"), metavar=metavar, **kw
    )


def _keeps_message(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag parser whose ConfigError reaches the one-line error as it is (argparse would
    say only "invalid value")."""

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    checked.__name__ = getattr(parse, "__name__", "value")
    return checked


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def config_from(cls: type, ns: argparse.Namespace | Mapping[str, Any], **overrides: Any) -> Any:
    """The config `cls` from parsed flags (nested configs built the same way); fields without a
    flag keep their defaults unless given in `overrides`. Invalid values raise ConfigError."""
    values = vars(ns) if isinstance(ns, argparse.Namespace) else dict(ns)
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


def renamed(ns: argparse.Namespace) -> list[str]:
    """One line per old flag name the run used."""
    pairs = dict.fromkeys(getattr(ns, _RENAMED, None) or [])
    return [f"{old} is now {new}; the old name works until the next release" for old, new in pairs]


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
