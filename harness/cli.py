"""What the commands share: one-line errors, logging, consoles and exit codes.

The flags themselves are typed configs (`harness.config`); each command builds its parser from
them beside its own `main`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable

from engines.errors import BillionbenchError

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
    for ours in ("billionbench", "engines", "exporters", "harness"):
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
    from engines.config import renamed

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
