"""Result rows: one per measured configuration, appended to CSV and Parquet as soon as measured."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The seeds' columns first (so their analyses run unchanged), then neuronperf's, then ours.
SEED_COLUMNS = [
    "total_requests",
    "successful_requests",
    "failed_requests",
    "test_duration_sec",
    "avg_latency_ms",
    "p50_latency_ms",
    "p90_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "throughput_req_per_sec",
    "throughput_peak",
    "hw_type",
    "batch_size",
    "vus",
    "engine",
    "image",
    "vendor",
    "n_models",
    "workers_per_model",
    "avg_num_vectors",
    "min_num_vectors",
    "max_num_vectors",
    "invalid_embeddings",
    "seconds_per_billion",
    "cost_per_sec",
    "cost_per_1m_inf",
    "1B_cost",
    "cost_per_1m_tokens",
    "inputs_per_request",
]
NEURONPERF_COLUMNS = [
    "latency_ms_p0",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p95",
    "latency_ms_p99",
    "latency_ms_p100",
    "throughput_avg",
]
EXTRA_COLUMNS = [
    "task",
    "model_name",
    "model_id",
    "weights",
    "tokenizer",
    "precision",
    "attn",
    "mode",
    "protocol",
    "dataset",
    "avg_tokens",
    "p50_tokens",
    "min_tokens",
    "max_tokens",
    "padding_ratio",
    "truncated_inputs",
    "accuracy",
    "parity_metric",
    "flops_per_input",
    "achieved_tflops",
    "peak_tflops",
    "peak_source",
    "floor_1B_cost",
    "efficiency",
    "price_per_hour",
    "price_source",
    "throughput_method",
    "cpu_percent",
    "peak_rss_mb",
    "peak_gpu_mem_mb",
    # HTTP runs: failures by kind, open-loop lateness, and the load generator's own budget
    "http_4xx",
    "http_429",
    "http_5xx",
    "timeouts",
    "connection_errors",
    "dropped_requests",
    "late_requests",
    "max_late_ms",
    "client_cpu_percent",
    "loadgen_ceiling_rps",
    "load_generator",
    "server_batch_size",
    "repeat",
    "host_name",
    "device_name",
    "cpu_name",
    "tool_versions",
    "git_sha",
    "timestamp",
    "config_key",
    "config_json",
    # vision models: decoded pixels and merged visual tokens per image
    "avg_pixels",
    "avg_visual_tokens",
    # where the point ran: the executor (local | ray), the node (host name, or Ray node id),
    # and why it was not measured (a point recorded as failed; measured again on resume)
    "executor",
    "node",
    "error",
]
# Triton: the serving config of the measured point and the server's own latency breakdown
# (per request, from its statistics endpoint), as perf_analyzer and seed 003 report them
TRITON_CONFIG_COLUMNS = [
    "triton_instances",
    "triton_max_batch",
    "triton_dynamic_batching",
    "triton_queue_delay_us",
]
TRITON_COLUMNS = TRITON_CONFIG_COLUMNS + [
    "server_requests",
    "server_executions",
    "server_inferences",
    "server_avg_batch",
    "server_queue_ms",
    "server_compute_input_ms",
    "server_compute_infer_ms",
    "server_compute_output_ms",
    "server_request_ms",
    "server_rss_mb",
]
COLUMNS = SEED_COLUMNS + NEURONPERF_COLUMNS + EXTRA_COLUMNS + TRITON_COLUMNS


def config_key(config: dict[str, Any]) -> str:
    """Stable id of what was measured; a rerun skips rows whose key is already stored."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _cell(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, default=str)
    return v


class ResultsStore:
    """`<dir>/results.csv` (append-only log) and `<dir>/results.parquet` (rewritten atomically)."""

    def __init__(self, directory: str | os.PathLike, *, fresh: bool = False):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"cannot create --output-dir {self.dir}: {e.strerror}") from e
        self.csv = self.dir / "results.csv"
        self.parquet = self.dir / "results.parquet"
        if fresh:
            self._archive()

    def _archive(self) -> None:
        """--fresh never deletes data: old files are renamed with a timestamp."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for p in (self.csv, self.parquet):
            if p.exists():
                p.rename(p.with_name(f"{p.stem}.{stamp}{p.suffix}"))
                log.warning("--fresh: previous %s kept as %s.%s%s", p.name, p.stem, stamp, p.suffix)

    def read(self):
        """All stored rows as a DataFrame (CSV is the source of truth if Parquet lags)."""
        import pandas as pd

        if self.csv.exists():
            return pd.read_csv(self.csv)
        if self.parquet.exists():
            return pd.read_parquet(self.parquet)
        return pd.DataFrame(columns=COLUMNS)

    def done_keys(self) -> set[str]:
        df = self.read()
        return set(df["config_key"].dropna().astype(str)) if "config_key" in df else set()

    def append(self, row: dict[str, Any]) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise KeyError(f"result row has columns outside the contract: {sorted(unknown)}")
        values = {c: _cell(row.get(c)) for c in COLUMNS}
        self._migrate()
        new = not self.csv.exists()
        with open(self.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            if new:
                w.writeheader()
            w.writerow(values)
            f.flush()
            os.fsync(f.fileno())
        self._write_parquet()

    def _migrate(self) -> None:
        """A file written under an older column contract is rewritten to the current one
        (missing columns empty, unknown ones kept at the end) before anything is appended."""
        if not self.csv.exists():
            return
        with open(self.csv, newline="") as f:
            header = next(csv.reader(f), [])
        if header == COLUMNS or not header:
            return
        import pandas as pd

        old = pd.read_csv(self.csv)
        extra = [c for c in old.columns if c not in COLUMNS]
        if extra:
            raise KeyError(f"{self.csv} has columns outside the contract: {extra}")
        tmp = self.csv.with_suffix(".csv.tmp")
        old.reindex(columns=COLUMNS).to_csv(tmp, index=False)
        os.replace(tmp, self.csv)
        log.info("%s: migrated %d rows to the current %d columns", self.csv, len(old), len(COLUMNS))

    def _write_parquet(self) -> None:
        df = self.read()
        tmp = self.parquet.with_suffix(".parquet.tmp")
        df.to_parquet(tmp, index=False)
        os.replace(tmp, self.parquet)


def _mean(values) -> float | None:
    return float(values.mean()) if values is not None and len(values) else None


def context_columns(
    *,
    spec,
    engine_cfg,
    info: dict[str, Any],
    profile,
    detected,
    workload,
    flops: float | None,
    peak: float | None,
    inputs_per_sec: float,
    parity_metric: str | None,
) -> dict[str, Any]:
    """What every row says about where, on what and at which price it was measured, plus cost."""
    from harness.costs import cost_columns
    from harness.sysinfo import git_sha, host_name, tool_versions

    stats = workload.stats
    # attention is a runtime choice for in-memory models only; artifacts fixed it at export
    attn = info.get("attn")
    image = "/".join(
        x for x in (engine_cfg.engine, engine_cfg.precision, engine_cfg.variant, attn) if x
    )
    row = {
        "hw_type": profile.name,
        "engine": engine_cfg.engine,
        "image": image,
        "task": spec.task,
        "model_name": spec.name,
        "model_id": info.get("model_source", spec.hub_id),
        "weights": info.get("weights"),
        "tokenizer": info.get("tokenizer"),
        "precision": engine_cfg.precision,
        "attn": attn,
        "dataset": workload.source,
        "avg_tokens": stats.avg,
        "p50_tokens": stats.p50,
        "min_tokens": stats.min,
        "max_tokens": stats.max,
        "truncated_inputs": workload.truncated,
        "avg_pixels": _mean(getattr(workload, "pixels", None)),
        "avg_visual_tokens": _mean(getattr(workload, "visual_tokens", None)),
        "parity_metric": parity_metric,
        "flops_per_input": flops,
        "peak_source": profile.peak_source,
        "price_per_hour": profile.price_per_hour,
        "price_source": f"{profile.price_source} ({profile.price_date})",
        "host_name": host_name(),
        "device_name": detected.device_name,
        "cpu_name": detected.cpu_name,
        "tool_versions": {**tool_versions(), **{k: v for k, v in info.items() if k == "torch"}},
        "git_sha": git_sha(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    row.update(
        cost_columns(
            profile.price_per_hour, inputs_per_sec, inputs_per_sec * stats.avg, flops, peak
        )
    )
    return row
