"""`python -m harness.perf_analyzer prepare`: get a runnable perf_analyzer once.

The benchmark itself is `python -m harness.run --engine triton --load perf_analyzer`.
"""

from __future__ import annotations

import sys

from engines.processes.perf_analyzer import find_binary, prepare, version
from harness.cli import run_command


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] != ["prepare"]:
        print("usage: python -m harness.perf_analyzer prepare", file=sys.stderr)
        return 2
    return run_command(_prepare)


def _prepare(console) -> int:
    binary = prepare()
    b, env = find_binary()
    console.print(f"{version(b, env)} ready: {binary}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
