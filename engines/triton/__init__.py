"""Triton: the client engine and the python-backend models.

- `client`: `TritonEngine` (tritonclient, HTTP or gRPC) and the statistics counters;
- `backend`: the tokenizer, encoder and postprocess models Triton's python backend runs.

The tritonserver process itself is `core.processes.tritonserver`, beside every other process
billionbench starts.
"""
