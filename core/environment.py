"""The process environment, read in one place: every variable billionbench looks at is named here.

Library code asks `var(NAME)`; a child process gets `child_env(...)` (this environment plus what
it needs). `recorded()` is what a result row keeps of it (the variables below that are set,
secrets left out).
"""

from __future__ import annotations

import os

#: every variable we read, and why
VARIABLES = {
    "BILLIONBENCH_CACHE": "where prepared tools (tritonserver's stub env, perf_analyzer) live",
    "BILLIONBENCH_SEAL_KEY": "the key that seals artifact manifests (secret: never recorded)",
    "XDG_CACHE_HOME": "the user's cache folder (the seal key's default home)",
    "HF_HUB_OFFLINE": "1: never try the Hugging Face Hub",
    "TRANSFORMERS_OFFLINE": "1: never try the Hugging Face Hub",
    "HF_ENDPOINT": "the Hub's address (a mirror)",
    "TRITONSERVER": "a tritonserver binary to use instead of the bundled one",
    "TRITON_BACKENDS": "that binary's backends folder",
    "PERF_ANALYZER": "a perf_analyzer binary to use instead of the prepared one",
    "NEURON_RT_VISIBLE_CORES": "the NeuronCores this process may use",
    "NEURON_RT_NUM_CORES": "how many NeuronCores this process may use",
    "CUDA_VISIBLE_DEVICES": "the GPUs this process may use (the energy meter reads the first)",
    "BILLIONBENCH_HOST_PROBE": "0: no CPU probe before and after each point (no `disturbed`)",
    "RAY_ADDRESS": "the Ray cluster --executor ray joins when --ray-address is not given",
}
_SECRET = {"BILLIONBENCH_SEAL_KEY"}


def var(name: str, default: str | None = None) -> str | None:
    """One variable (a name from VARIABLES, or one the user named, like --token-env's)."""
    return os.environ.get(name, default)


def flag(name: str) -> bool:
    """A yes/no variable: set to anything but '', '0' or 'false'."""
    return (os.environ.get(name) or "0").strip().lower() not in ("", "0", "false")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this one, plus `extra`."""
    return {**os.environ, **extra}


def set_var(name: str, value: str) -> None:
    """Set a variable for this process and its children (a Triton python-backend stub's threads)."""
    os.environ[name] = value


def recorded() -> dict[str, str]:
    """The variables above that are set, for a result row (secrets left out)."""
    return {k: os.environ[k] for k in VARIABLES if k in os.environ and k not in _SECRET}
