"""Triton python-backend model; the code lives in billionbench (engines/triton_backend.py)."""

from engines.triton_backend import TokenizerModel as TritonPythonModel  # noqa: F401
