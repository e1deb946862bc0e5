"""HTTP load generation: k6-style closed loop (shared iterations) and Poisson open loop.

Both drive one `Target` (a URL plus a protocol adapter) with aiohttp, validate every response
(status, output count, dimension, NaN/Inf, norm, labels) and summarise with the same `Latency` and
`Throughput` types as the in-process benchmark. Throughput counts *inputs*: a request carrying 32
texts counts 32. The generator measures its own ceiling against a no-op server
(`measure_ceiling`) and warns when a run comes within 50% of it; `run_k6` produces the same
closed-loop scenario with a k6 binary when one is installed.

Modules: `protocols` (adapters, Target), `validation` (output checks), `client` (aiohttp client,
preflight, warm-up), `loops` (closed and open loop, LoadResult), `ceiling`, `k6`.
"""

from loadgen.ceiling import measure_ceiling
from loadgen.client import TargetError, TargetUnreachable
from loadgen.k6_script import K6Missing, k6_available, k6_script, parse_k6_summary, run_k6
from loadgen.loops import (
    CEILING_FRACTION,
    FAILURE_KINDS,
    LoadResult,
    Samples,
    arun_closed_loop,
    arun_open_loop,
    merge_results,
    run_closed_loop,
    run_open_loop,
)
from loadgen.protocols import (
    PROTOCOLS,
    TASKS,
    Classify,
    HFEndpoint,
    KServe,
    Noop,
    OpenAIEmbeddings,
    Parsed,
    Protocol,
    Request,
    Target,
    TritonKServe,
)

__all__ = [
    "CEILING_FRACTION",
    "FAILURE_KINDS",
    "PROTOCOLS",
    "TASKS",
    "Classify",
    "HFEndpoint",
    "K6Missing",
    "KServe",
    "LoadResult",
    "Noop",
    "OpenAIEmbeddings",
    "Parsed",
    "Protocol",
    "Request",
    "Samples",
    "Target",
    "TargetError",
    "TargetUnreachable",
    "TritonKServe",
    "arun_closed_loop",
    "arun_open_loop",
    "k6_available",
    "k6_script",
    "measure_ceiling",
    "merge_results",
    "parse_k6_summary",
    "run_closed_loop",
    "run_k6",
    "run_open_loop",
]
