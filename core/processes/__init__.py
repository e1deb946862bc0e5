"""Every outside process billionbench starts, in one place (Model Analyzer's triton/server shape).

- `base`: `ManagedProcess` (own process group, parent-death signal, a log file, a readiness
  poll, TERM then KILL), `PipedProcess` (a helper child read line by line), `capture` (a short
  command run to completion);
- `bench_server`: our own server, from the command line the harness gives it;
- `tritonserver`: a real tritonserver on loopback (and where its binary comes from);
- `perf_analyzer`: NVIDIA's perf_analyzer binary (found or prepared once) and one run of it;
- `k6`: Grafana k6's binary, one run of it;
- `noop_server`: the no-op HTTP server the load generator measures its ceiling on;
- neuron-monitor runs as a `PipedProcess` under `core.energy`'s meter, git under
  `core.sysinfo`.

No module here names a command module: the caller builds the command line.
"""
