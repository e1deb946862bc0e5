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
def git_sha() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        r = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return r.stdout.strip() + ("-dirty" if dirty else "")


def host_name() -> str:
    return socket.gethostname()
