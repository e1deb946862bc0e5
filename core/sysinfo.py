"""What a run ran on: host, library versions, git sha. Read once, recorded in every row."""

from __future__ import annotations

import functools
import importlib.metadata as md
import platform
import socket
from pathlib import Path

from core.processes.base import capture

_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "numpy",
    "onnxruntime",
    "onnxruntime-gpu",
    "tensorrt",
    "torch-neuronx",
    "tritonclient",
    "billionbench",
)


@functools.lru_cache(maxsize=1)
def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


@functools.lru_cache(maxsize=1)
def _git(*args: str) -> str | None:
    """Output of a git command in this checkout, or None when git or the checkout is missing."""
    root = Path(__file__).resolve().parent.parent
    try:
        done = capture(["git", *args], cwd=root, timeout_s=5)
    except TimeoutError:
        return None
    return done[1].strip() if done is not None and done[0] == 0 else None


def git_sha() -> str | None:
    sha = _git("rev-parse", "--short=12", "HEAD")
    if sha is None:
        return None
    return sha + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")


def host_name() -> str:
    return socket.gethostname()
