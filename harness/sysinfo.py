"""What a run ran on: host, library versions, git sha. Read once, recorded in every row."""

from __future__ import annotations

import functools
import importlib.metadata as md
import platform
import socket
import subprocess
from pathlib import Path

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
        r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_sha() -> str | None:
    sha = _git("rev-parse", "--short=12", "HEAD")
    if sha is None:
        return None
    return sha + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")


def host_name() -> str:
    return socket.gethostname()
