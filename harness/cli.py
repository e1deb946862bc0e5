"""What the commands share: parsers, the flag glue, one-line errors, logging, consoles, exit codes.

The flags themselves are typed configs (`core.config.arg` fields); `add_config` gives a parser
one flag per field and `core.config.config_from` builds the config back. A flag's old name
still works for one release: `renamed(ns)` lists the ones a run used, for the command to say so
once at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from core.config import _SIMPLE, _base, _hints, _is_list, _nested, flag_of
from core.errors import BillionbenchError, ConfigError

log = logging.getLogger("billionbench")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in --help as the flag takes them: lists comma-separated, MB for bytes."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        shown = getattr(action, "display", None)
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS
        if "%(default)" in text or unset or (isinstance(default, (list, tuple)) and not default):
            return text
        if shown is None:
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2, no usage dump) and defaults in --help."""

    def __init__(self, **kw):
        kw.setdefault("formatter_class", _Help)
        super().__init__(**kw)

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see: python -m {self.prog} --help)\n")


def print_error(console, error: object) -> None:
    """The CLIs' one-line error: no traceback, never wrapped."""
    from rich.markup import escape

    # escaped: rich would eat `[vision]` in 'pip install -e ".[vision]"' as a style tag
    console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)


def setup_logging(console, verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    # third-party libraries speak at WARNING and up; ours at INFO (DEBUG with -v)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler], force=True)
    for ours in (
        "billionbench", "core", "engines", "exporters", "workloads", "loadgen",
        "analysis", "harness",
    ):  # fmt: skip
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("transformers", "urllib3", "filelock", "huggingface_hub", "datasets"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def consoles():
    """(stdout console, stderr console); 160 columns when not a terminal (logs, CI)."""
    from rich.console import Console

    out = Console(stderr=False)
    width = None if out.is_terminal else 160
    if width:
        out = Console(stderr=False, width=width)
    return out, Console(stderr=True, width=width)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def command_main(parser: argparse.ArgumentParser, body, argv: list[str] | None) -> int:
    """A benchmark command's main: parse, then body(flags, console) under `run_command`, saying
    at the end which old flag names the run used."""
    ns = parser.parse_args(argv)
    return run_command(
        lambda console: body(ns, console),
        verbose=ns.verbose,
        output_dir=ns.output_dir,
        notes=renamed(ns),
    )


def run_command(
    body: Callable[[object], int],
    *,
    verbose: bool = False,
    output_dir: str = "results",
    notes: list[str] | None = None,
) -> int:
    """Run a command's body(console): one-line errors with exit code 2, 130 on Ctrl-C, and at
    the end of a run that succeeded, `notes` (old flag names it used)."""
    console, err = consoles()
    setup_logging(err, verbose)
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM cleans up (servers, engines) the way Ctrl-C does
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = body(console)
        for note in notes or []:
            err.print(f"[yellow]note:[/] {note}", highlight=False)
        return code
    except BillionbenchError as e:
        print_error(err, e)
        return 2
    except OSError as e:
        print_error(err, e)
        return 2
    except KeyboardInterrupt:
        err.print(
            f"[yellow]interrupted[/]: measured rows are in {output_dir}/results.csv; "
            "run the same command again to resume"
        )
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# the flag glue

_RENAMED = "_bb_renamed"  # Namespace attribute: [(old flag, new flag)] a run used


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
        parse = flag_type(parse)
    metavar = m.get("metavar") or ("N,N,..." if _is_list(tp) else None)
    group.add_argument(
        *names, *old, action=_Store, type=parse, choices=m.get("choices"), metavar=metavar, **kw
    )


def flag_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag parser whose ConfigError reaches the one-line error as it is (argparse would
    say only "invalid value")."""

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    checked.__name__ = getattr(parse, "__name__", "value")
    return checked


def renamed(ns: argparse.Namespace) -> list[str]:
    """One line per old flag name the run used."""
    pairs = dict.fromkeys(getattr(ns, _RENAMED, None) or [])
    return [f"{old} is now {new}; the old name works until the next release" for old, new in pairs]
