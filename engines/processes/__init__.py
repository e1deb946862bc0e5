"""Every external process billionbench starts, in one place, each behind start(), stop() and
log_file() (the shape of Model Analyzer's triton/server):

- `base`: `ManagedProcess`, what they share: own process group, parent-death signal, a log file,
  a readiness poll, TERM then KILL;
- `tritonserver`: a real tritonserver on loopback (and where its binary comes from);
- `serve`: our own server, `python -m harness.serve`, started from a config file;
- `perf_analyzer`: NVIDIA's perf_analyzer binary (found or prepared once) and one run of it.
"""
