"""Triton python-backend model; the code lives in billionbench (engines/triton_backend.py)."""

from engines.triton_backend import PostprocessModel as TritonPythonModel  # noqa: F401
