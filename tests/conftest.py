"""The one place hardware-gated tests are skipped, always with a visible reason."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

from harness.hardware import has_cuda, has_neuron, has_tensorrt  # noqa: E402


def _triton_missing() -> str | None:
    """Why no tritonserver can run here (naming the package), or None when one can."""
    from engines.errors import BillionbenchError
    from engines.tritonserver import find_installation

    try:
        find_installation()
    except BillionbenchError as e:
        return str(e)
    return None


def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


GATES = {
    "gpu": (has_cuda, "needs an NVIDIA GPU with CUDA; none visible on this machine"),
    "trt": (has_tensorrt, "needs TensorRT (pip install -e '.[gpu]') and a CUDA GPU"),
    "neuron": (has_neuron, "needs an AWS Inferentia2 device (/dev/neuron0) and torch-neuronx"),
    "triton": (lambda: _triton_missing() is None, _triton_missing),
    "ray": (_has_ray, 'needs Ray: pip install -e ".[ray]"'),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for marker, (available, reason) in GATES.items():
            if item.get_closest_marker(marker) is not None and not available():
                why = reason() if callable(reason) else reason
                item.add_marker(pytest.mark.skip(reason=f"[{marker}] {why}"))


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from engines.models import get_spec, load_tokenizer

    return load_tokenizer(get_spec("distilbert-sentiment-tiny")).tokenizer
