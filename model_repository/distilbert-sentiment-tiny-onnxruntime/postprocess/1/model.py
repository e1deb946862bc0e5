"""Triton python-backend model; the code lives in billionbench (engines/triton/backend.py)."""

from engines.triton.backend import PostprocessModel as TritonPythonModel  # noqa: F401
