"""Triton in one place: the client engine, the tritonserver wrapper, the python-backend models.

- `client`: `TritonEngine` (tritonclient, HTTP or gRPC) and the statistics counters;
- `server`: `TritonServer` (a real tritonserver on loopback) and the `prepare|serve` command;
- `backend`: the tokenizer, encoder and postprocess models Triton's python backend runs.
"""
