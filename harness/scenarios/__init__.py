"""Ways of measuring, each a config, its points and measure(point) -> row (see harness.runner).

- inprocess: model copies x worker threads x batch sizes in this process (neuronperf-style)
- http: our server (or any URL) under k6-style virtual users, with a VU search (double, then bisect)
  or a rate search under a p99 target (rate_search: the bisection and the early stopping, pure)
- triton: Model Analyzer-style config search through a real tritonserver
- perf_analyzer: NVIDIA's perf_analyzer against a Triton ensemble, after our own output checks
"""
