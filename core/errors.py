"""Errors the CLI turns into one-line messages. Each says what is wrong and what to do."""

from __future__ import annotations


class BillionbenchError(Exception):
    """Base class: anything the user can fix, reported in one line without a traceback."""


class ConfigError(BillionbenchError, ValueError):
    """A flag or config value is invalid; the message names the field and allowed values."""


class EngineError(BillionbenchError, RuntimeError):
    """An engine could not load or run."""


class HardwareMismatch(BillionbenchError):
    """The requested hardware is not what this machine has, or lacks a needed capability."""


class MissingDependency(BillionbenchError, ImportError):
    """An optional dependency is missing; the message names the pip extra that installs it."""

    def __init__(self, package: str, extra: str):
        hint = f'pip install -e ".[{extra}]"' if extra else f"pip install {package}"
        super().__init__(f"{package} is not installed; install it with: {hint}")
        self.package = package
        self.extra = extra


def require(module: str, package: str, extra: str):
    """`import module`, or a MissingDependency naming `package` and the pip `extra`."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(package, extra) from e


class ArtifactRefused(BillionbenchError):
    """An artifact exists but may not be benchmarked (failed or skipped its parity gate)."""
