"""Result rows: one per measured configuration, appended to CSV and Parquet as soon as measured."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from core.costs import cost_columns
from core.errors import BillionbenchError
from core.sysinfo import git_sha, host_name, tool_versions

log = logging.getLogger(__name__)

# Column dtypes. STR and JSON are text (JSON: a serialised dict); BOOL counts as 0/1 in views.
INT, FLOAT, STR, BOOL, JSON = "int", "float", "str", "bool", "json"
DTYPES = (INT, FLOAT, STR, BOOL, JSON)

# The k6-study columns first (so existing analyses run unchanged), then neuronperf's, then ours.
_SEED = {
    "total_requests": INT,
    "successful_requests": INT,
    "failed_requests": INT,
    "test_duration_sec": FLOAT,
    "avg_latency_ms": FLOAT,
    "p50_latency_ms": FLOAT,
    "p90_latency_ms": FLOAT,
    "p95_latency_ms": FLOAT,
    "p99_latency_ms": FLOAT,
    "throughput_req_per_sec": FLOAT,
    "throughput_peak": FLOAT,
    "hw_type": STR,
    "batch_size": INT,
    "vus": INT,
    "engine": STR,
    "image": STR,
    "vendor": STR,
    "n_models": INT,
    "workers_per_model": INT,
    "avg_num_vectors": FLOAT,
    "min_num_vectors": INT,
    "max_num_vectors": INT,
    "invalid_embeddings": INT,
    "seconds_per_billion": FLOAT,
    "cost_per_sec": FLOAT,
    "cost_per_1m_inf": FLOAT,
    "1B_cost": FLOAT,
    "cost_per_1m_tokens": FLOAT,
    "inputs_per_request": INT,
}
_NEURONPERF = {
    "latency_ms_p0": FLOAT,
    "latency_ms_p50": FLOAT,
    "latency_ms_p90": FLOAT,
    "latency_ms_p95": FLOAT,
    "latency_ms_p99": FLOAT,
    "latency_ms_p100": FLOAT,
    "throughput_avg": FLOAT,
}
_EXTRA = {
    "task": STR,
    "model_name": STR,
    "model_id": STR,
    "weights": STR,
    "tokenizer": STR,
    "precision": STR,
    "attn": STR,
    "mode": STR,
    "protocol": STR,
    "dataset": STR,
    "avg_tokens": FLOAT,
    "p50_tokens": FLOAT,
    "min_tokens": INT,
    "max_tokens": INT,
    "padding_ratio": FLOAT,
    "truncated_inputs": INT,
    "accuracy": FLOAT,
    "parity_metric": STR,
    # how far the run's worst input was from failing the parity gate, on the run's own data
    "parity_margin": FLOAT,
    "flops_per_input": FLOAT,
    "achieved_tflops": FLOAT,
    "peak_tflops": FLOAT,
    "peak_source": STR,
    "floor_1B_cost": FLOAT,
    "efficiency": FLOAT,
    "price_per_hour": FLOAT,
    "price_source": STR,
    "throughput_method": STR,
    "cpu_percent": FLOAT,
    "peak_rss_mb": FLOAT,
    "peak_gpu_mem_mb": FLOAT,
    # HTTP runs: failures by kind, open-loop lateness, and the load generator's own budget
    "http_4xx": INT,
    "http_429": INT,
    "http_5xx": INT,
    "timeouts": INT,
    "connection_errors": INT,
    "dropped_requests": INT,
    "late_requests": INT,
    "max_late_ms": FLOAT,
    "client_cpu_percent": FLOAT,
    "loadgen_ceiling_rps": FLOAT,
    # our server's CPU over the point: in seconds, and the share outside the forward pass
    "server_cpu_s": FLOAT,
    "non_forward_cpu_share": FLOAT,
    # how many load generators drove the point (--load-workers), and each one's ceiling
    "load_workers": INT,
    "loadgen_ceilings_rps": JSON,
    "load_generator": STR,
    # the server's max batch (HTTP, Triton); `server_batch_size` is its old name (one release)
    "max_batch_size": INT,
    "server_batch_size": INT,
    "repeat": INT,
    "host_name": STR,
    "device_name": STR,
    "cpu_name": STR,
    # the CPU's vector and matrix-unit extensions (AVX-512, VNNI, AMX-BF16, AMX-INT8): which
    # precisions run on matrix units; compare rows only within one ISA
    "cpu_isa": STR,
    "tool_versions": JSON,
    "git_sha": STR,
    "timestamp": STR,
    "config_key": STR,
    "config_json": JSON,
    # vision models: decoded pixels and merged visual tokens per image
    "avg_pixels": FLOAT,
    "avg_visual_tokens": FLOAT,
    # where the point ran: the executor (local | ray), the node (host name, or Ray node id),
    # and why it was not measured (a point recorded as failed; measured again on resume)
    "executor": STR,
    "node": STR,
    "error": STR,
}
# Triton: the serving config of the measured point and the server's own latency breakdown
# (per request, from its statistics endpoint), as perf_analyzer reports them
_TRITON_CONFIG = {
    "triton_instances": INT,
    "triton_max_batch": INT,
    "triton_dynamic_batching": BOOL,
    "triton_queue_delay_us": INT,
}
_TRITON_SERVER = {
    "server_requests": INT,
    "server_executions": INT,
    "server_inferences": INT,
    "server_avg_batch": FLOAT,
    "server_queue_ms": FLOAT,
    "server_compute_input_ms": FLOAT,
    "server_compute_infer_ms": FLOAT,
    "server_compute_output_ms": FLOAT,
    "server_request_ms": FLOAT,
    "server_rss_mb": FLOAT,
}
# Energy of the timed window from the device's own counter (core.energy); empty = not measured
_ENERGY = {
    "energy_j_per_input": FLOAT,
    "kwh_per_1B": FLOAT,
    "energy_source": STR,
}
# Output quality: the endpoint's answers vs the fp32 reference on a sample of the run's texts
# (harness.quality); empty = not checked
_QUALITY = {
    "quality_n": INT,
    "quality_min_cosine": FLOAT,
    "quality_mean_cosine": FLOAT,
    "quality_label_agreement": FLOAT,
    "quality_gate": FLOAT,
    "quality_passed": BOOL,
    "quality_reference": STR,
    "quality_problem": STR,
}
# How sure the row is (core.stats): the throughput's 95 % interval and how it was made
# (batch-means over the run's 1-second windows, or t over repeats), each latency percentile's
# distribution-free 95 % upper bound (empty: the samples cannot bound it), whether the p99 is
# resolved and how many samples it needs; the host probes around the point (disturbed: the
# probes disagree or something else used the CPU); goodput under the point's SLO
_CONFIDENCE = {
    "n_samples": INT,
    "throughput_ci_low": FLOAT,
    "throughput_ci_high": FLOAT,
    "throughput_ci_method": STR,
    "throughput_windows": INT,
    "p50_upper_ms": FLOAT,
    "p90_upper_ms": FLOAT,
    "p95_upper_ms": FLOAT,
    "p99_upper_ms": FLOAT,
    "p99_resolved": BOOL,
    "p99_samples_needed": INT,
    "probe_before_ms": FLOAT,
    "probe_after_ms": FLOAT,
    "outside_load_cores": FLOAT,
    "disturbed": BOOL,
    "disturbed_reason": STR,
    "slo_ms": FLOAT,
    "goodput": FLOAT,
    "offered_rate": FLOAT,
}
# The one result schema: every column, in file order, with its dtype.
SCHEMA: dict[str, str] = {
    **_SEED,
    **_NEURONPERF,
    **_EXTRA,
    **_TRITON_CONFIG,
    **_TRITON_SERVER,
    **_CONFIDENCE,
    **_QUALITY,
    **_ENERGY,
}
COLUMNS: list[str] = list(SCHEMA)
TRITON_CONFIG_COLUMNS: list[str] = list(_TRITON_CONFIG)


def columns_of(*dtypes: str) -> list[str]:
    """The schema's columns of these dtypes, in column order."""
    unknown = set(dtypes) - set(DTYPES)
    if unknown:
        raise ValueError(f"dtypes are {', '.join(DTYPES)}; got {sorted(unknown)}")
    return [c for c, t in SCHEMA.items() if t in dtypes]


def read_csv(path: str | os.PathLike):
    """A results CSV read with the schema's dtypes: text and JSON columns stay text (a git sha or
    config_key made of digits is not a number); numbers and booleans are parsed."""
    import pandas as pd

    return pd.read_csv(path, dtype={c: str for c in columns_of(STR, JSON)})


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


class ResultsLocked(BillionbenchError):
    """Another run holds the output folder."""


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

    @contextlib.contextmanager
    def writing(self, what: str = ""):
        """Hold the folder's lock while a run writes into it, after repairing what an
        interrupted run may have left (a torn last CSV line, a Parquet twin behind the CSV).

        A second run into the same folder fails at once, saying who holds it.
        """
        lock_path = self.dir / ".results.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ResultsLocked(
                f"{self.dir} is being written by {holder}; wait for it to finish, or use "
                "another --output-dir"
            ) from None
        try:
            os.ftruncate(fd, 0)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            os.pwrite(
                fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp} {what}".encode(), 0
            )
            self.repair()
            yield self
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def repair(self) -> None:
        """Drop a torn last CSV line (a write cut by a crash) and rebuild the Parquet twin from
        the fsync'd CSV when it has fewer or more rows than the CSV."""
        if not self.csv.exists():
            return
        with open(self.csv, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
                log.warning(
                    "%s: dropped a torn last line (%d bytes an interrupted run left half-written)",
                    self.csv,
                    len(data) - keep,
                )
        rows = len(self.read())
        try:
            stored = pq.ParquetFile(self.parquet).metadata.num_rows if self.parquet.exists() else -1
        except Exception:  # noqa: BLE001 - an unreadable twin is rebuilt like a missing one
            stored = -1
        if stored != rows:
            self._write_parquet()
            log.warning(
                "%s: rebuilt from %s (%d rows; it had %s)",
                self.parquet.name,
                self.csv.name,
                rows,
                "none" if stored < 0 else stored,
            )

    def read(self):
        """All stored rows as a DataFrame (CSV is the source of truth if Parquet lags)."""
        import pandas as pd

        if self.csv.exists():
            return read_csv(self.csv)
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

    def annotate(self, values: dict[str, Any], where: dict[str, Any]) -> int:
        """Set `values` on the stored rows whose columns equal `where` (a check made after a
        row was written, e.g. output quality after the load); returns how many rows changed."""
        unknown = (set(values) | set(where)) - set(COLUMNS)
        if unknown:
            raise KeyError(f"columns outside the contract: {sorted(unknown)}")
        import pandas as pd

        self._migrate()
        df = self.read()
        hit = pd.Series(True, index=df.index)
        for col, want in where.items():
            if isinstance(want, (int, float)) and not isinstance(want, bool):
                hit &= pd.to_numeric(df[col], errors="coerce") == want
            else:
                hit &= df[col].astype(str) == str(want)
        if hit.any():
            for col, v in values.items():
                df[col] = df[col].astype(object)  # an empty column reads as float
                df.loc[hit, col] = _cell(v)
            tmp = self.csv.with_suffix(".csv.tmp")
            df.to_csv(tmp, index=False)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.csv)
            self._write_parquet()
        return int(hit.sum())

    def _migrate(self) -> None:
        """A file written under an older column contract is rewritten to the current one
        (missing columns empty; unknown columns are refused) before anything is appended."""
        if not self.csv.exists():
            return
        with open(self.csv, newline="") as f:
            header = next(csv.reader(f), [])
        if header == COLUMNS or not header:
            return
        old = read_csv(self.csv)
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


def quality_failed(row: Any) -> bool:
    """Whether a row's answers were checked and found under the quality gate: such a row is
    never ranked best (its speed is not a result)."""
    try:
        v = row.get("quality_passed")
    except AttributeError:
        return False
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return False
    return str(v).strip().lower() in ("false", "0", "0.0")


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
        "cpu_isa": ",".join(getattr(detected, "cpu_isa", ())) or None,
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
