"""perf_analyzer as a load generator for Triton (`harness.run --load perf_analyzer`).

The binary comes from `$PERF_ANALYZER`, `perf_analyzer` on PATH, or the `tritonclient==2.51.0`
wheel (the PyPI `perf-analyzer` wheels need glibc 2.38): `prepare()` downloads that wheel once,
extracts the binary, and links the two libraries it needs (libb64, libcudart) from
nvidia-pytriton's bundle. Its `-f` CSV becomes our result rows, server-side breakdown included.

perf_analyzer never looks at outputs (it posted good numbers here for a model answering with
empty tensors), so `validate_sample` checks a sample of real responses first and the harness
refuses the numbers when any is wrong.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

from engines import contract
from engines.errors import BillionbenchError, ConfigError, EngineError
from engines.registry import create_engine
from engines.triton.server import cache_dir, pytriton_root
from harness.results import TRITON_CONFIG_COLUMNS
from harness.runner import Measurement, Plan, Point, Progress, Scenario
from harness.setup import Setup, prepare_artifact
from harness.tables import columns, print_rows

WHEEL = "tritonclient==2.51.0"
# perf_analyzer's default (10 %) rarely settles on a busy 2-core machine; recorded in each row
STABILITY_PCT = 50
HINT = (
    "python -m harness.perf_analyzer prepare (downloads the tritonclient 2.51.0 wheel once), "
    "or set PERF_ANALYZER=/path/to/perf_analyzer"
)


class PerfAnalyzerUnavailable(BillionbenchError):
    """No runnable perf_analyzer; the message says how to get one."""


def _cache() -> Path:
    return cache_dir() / "perf_analyzer"


def _libs_dir() -> Path | None:
    root = pytriton_root()
    return root.parent / "nvidia_pytriton.libs" if root else None


def find_binary() -> tuple[Path, dict[str, str]]:
    """(binary, environment to run it with), or PerfAnalyzerUnavailable."""
    env = dict(os.environ)
    explicit = os.environ.get("PERF_ANALYZER")
    if explicit:
        if not Path(explicit).exists():
            raise PerfAnalyzerUnavailable(f"PERF_ANALYZER={explicit} does not exist")
        return Path(explicit), env
    cached = _cache() / "perf_analyzer"
    if cached.exists():
        libs = [str(_cache() / "libs")]
        if _libs_dir():
            libs.append(str(_libs_dir()))
        env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")])
        return cached, env
    on_path = shutil.which("perf_analyzer")
    if on_path:
        return Path(on_path), env
    raise PerfAnalyzerUnavailable(f"no perf_analyzer found; {HINT}")


def prepare() -> Path:
    """Extract perf_analyzer from the tritonclient 2.51.0 wheel into the cache (once)."""
    out = _cache()
    if (out / "perf_analyzer").exists():
        return out / "perf_analyzer"
    libs = _libs_dir()
    if libs is None:
        raise PerfAnalyzerUnavailable(
            "perf_analyzer 2.51 needs libb64 and libcudart from nvidia-pytriton; install it "
            '(pip install --no-deps "nvidia-pytriton==0.7.0")'
        )
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("tritonclient-*.whl"))
        if done.returncode != 0 or not wheels:
            raise PerfAnalyzerUnavailable(
                f"could not download {WHEEL}: {(done.stderr or done.stdout).strip()[-200:]}"
            )
        with zipfile.ZipFile(wheels[0]) as z:
            member = next(n for n in z.namelist() if n.endswith("/bin/perf_analyzer"))
            tmp_bin = out.with_name(out.name + ".partial")
            shutil.rmtree(tmp_bin, ignore_errors=True)
            (tmp_bin / "libs").mkdir(parents=True)
            with z.open(member) as src, open(tmp_bin / "perf_analyzer", "wb") as dst:
                shutil.copyfileobj(src, dst)
    (tmp_bin / "perf_analyzer").chmod(0o755)
    for pattern, name in (
        ("libb64-*.so.0d", "libb64.so.0d"),
        ("libcudart-*.so.12*", "libcudart.so.12"),
    ):
        found = sorted(libs.glob(pattern))
        if not found:
            raise PerfAnalyzerUnavailable(f"{libs} has no {pattern}; reinstall nvidia-pytriton")
        (tmp_bin / "libs" / name).symlink_to(found[0])
    shutil.rmtree(out, ignore_errors=True)
    tmp_bin.rename(out)
    return out / "perf_analyzer"


def version(binary: Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=env)
    text = (done.stdout + done.stderr).strip().splitlines()
    if done.returncode != 0 or not text:
        raise PerfAnalyzerUnavailable(
            f"{binary} does not run here: {text[-1] if text else done.returncode}; {HINT}"
        )
    return text[0].replace("Perf Analyzer Version", "perf_analyzer").strip()


def input_data(texts: list[str], path: Path) -> Path:
    """perf_analyzer's --input-data JSON: one step per text, TEXT as BYTES [1]."""
    steps = [{contract.TEXT: {"content": [t], "shape": [1]}} for t in texts]
    path.write_text(json.dumps({"data": steps}))
    return path


def parse_csv(text: str) -> list[dict[str, float]]:
    """perf_analyzer -f CSV rows -> numbers (latencies stay in microseconds)."""
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        try:
            rows.append({k.strip(): float(v) for k, v in r.items() if k and v not in (None, "")})
        except ValueError as e:
            raise EngineError(f"unexpected perf_analyzer CSV row {r}: {e}") from None
    if not rows:
        raise EngineError("perf_analyzer wrote no measurements")
    return rows


def to_row(pa: dict[str, float], batch: int) -> dict:
    """One CSV row -> our result columns (ms; throughput in inputs/s)."""

    def ms(key: str) -> float | None:
        return pa[key] / 1000.0 if key in pa else None

    thr = pa["Inferences/Second"]
    return {
        "vus": int(pa["Concurrency"]),
        "throughput_req_per_sec": thr,
        "throughput_avg": thr,
        "throughput_method": "perf_analyzer stable window",
        "avg_latency_ms": ms("Avg latency"),
        "p50_latency_ms": ms("p50 latency"),
        "p90_latency_ms": ms("p90 latency"),
        "p95_latency_ms": ms("p95 latency"),
        "p99_latency_ms": ms("p99 latency"),
        "server_queue_ms": ms("Server Queue"),
        "server_compute_input_ms": ms("Server Compute Input"),
        "server_compute_infer_ms": ms("Server Compute Infer"),
        "server_compute_output_ms": ms("Server Compute Output"),
        "inputs_per_request": batch,
        "mode": "http",
    }


def run(
    binary: Path,
    env: dict[str, str],
    *,
    url: str,
    model: str,
    texts: list[str],
    concurrency: list[int],
    batch: int = 1,
    transport: str = "http",
    measurement_ms: int = 5000,
    timeout_s: float = 1800,
) -> list[dict[str, float]]:
    """Run perf_analyzer once per concurrency; returns its parsed CSV rows."""
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bb-pa-") as tmp:
        data = input_data(texts, Path(tmp) / "data.json")
        for c in concurrency:
            out = Path(tmp) / f"pa-{c}.csv"
            cmd = [str(binary), "-m", model, "-u", url.split("://", 1)[-1], "-i", transport]
            cmd += ["-b", str(batch), "--concurrency-range", f"{c}:{c}:1"]
            cmd += ["--input-data", str(data), "--measurement-interval", str(measurement_ms)]
            cmd += ["--stability-percentage", str(STABILITY_PCT), "--max-trials", "10"]
            cmd += ["-f", str(out), "--verbose-csv"]
            try:
                done = subprocess.run(
                    cmd, capture_output=True, text=True, env=env, timeout=timeout_s
                )
            except subprocess.TimeoutExpired:
                raise EngineError(
                    f"perf_analyzer ran past {timeout_s:.0f} s at concurrency {c}"
                ) from None
            if done.returncode != 0 or not out.exists():
                lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
                raise EngineError(
                    f"perf_analyzer failed at concurrency {c} (exit {done.returncode}): "
                    f"{lines[-1].strip() if lines else 'no output'} (a busy machine: raise --duration)"
                )
            rows += parse_csv(out.read_text())
    return rows


def validate_sample(engine, texts: list[str], n: int = 16) -> tuple[int, str | None]:
    """Send `n` inputs through the ensemble ourselves; (bad count, first problem)."""
    import numpy as np

    spec = engine.spec
    bad, first = 0, None
    for i in range(n):
        text = texts[i % len(texts)]
        try:
            pred = engine.predict_remote([text])
            v = np.asarray(pred.values, dtype=np.float64)
            if spec.task == "classification":
                problem = (
                    f"probabilities shape {v.shape}, expected (1, {spec.num_labels})"
                    if v.shape != (1, spec.num_labels)
                    else "probabilities are not finite or do not sum to 1"
                    if not np.isfinite(v).all() or abs(v.sum() - 1) > 1e-3
                    else f"label {pred.labels} not in {spec.labels}"
                    if not pred.labels or pred.labels[0] not in spec.labels
                    else None
                )
            else:
                problem = (
                    f"embedding shape {v.shape}, expected (1, {spec.dim})"
                    if v.shape != (1, spec.dim)
                    else "embedding is not finite"
                    if not np.isfinite(v).all()
                    else "embedding is not unit norm"
                    if spec.normalize and abs(np.linalg.norm(v) - 1) > 1e-3
                    else None
                )
        except BillionbenchError as e:
            problem = str(e)
        if problem:
            bad += 1
            first = first or problem
    return bad, first


TABLE = columns(
    """
    batch_size              | batch       | 0
    vus                     | concurrency | 0
    throughput_req_per_sec  | inputs/s    | 1
    p50_latency_ms          | p50 ms      | 2
    p99_latency_ms          | p99 ms      | 2
    server_queue_ms         | queue ms    | 2
    server_compute_infer_ms | infer ms    | 2
    1B_cost                 | $/1B        | 2
"""
)


class PerfAnalyzerScenario(Scenario):
    adaptive = False  # a fixed grid: its points may run at once, on several nodes
    """`harness.run --engine triton --load perf_analyzer`: validated perf_analyzer rows.

    One point per (client batch, concurrency); perf_analyzer never checks outputs, so a
    sample of real responses is checked first and the run refused when any is wrong.
    """

    def __init__(self, args, setup: Setup, console):
        if setup.engine_cls.remote_server != "triton":
            raise ConfigError(
                f"--load perf_analyzer drives a Triton server; --engine {args.engine} runs "
                "in process (add --engine triton)"
            )
        self.args, self.setup = args, setup
        self.binary, self.env = find_binary()
        self.version = version(self.binary, self.env)
        self.parity_metric = None
        if setup.engine_cls.needs_artifact(setup.engine_cfg):
            b = sorted(args.batch_sizes)
            prepared = prepare_artifact(
                args,
                setup,
                batch_range=(b[0], b[len(b) // 2], max(b[-1], 8)),
                seq_range=(8, min(128, setup.max_len), setup.max_len),
                console=console,
            )
            self.setup = setup = replace(setup, engine_cfg=prepared.engine_cfg)
            self.parity_metric = prepared.parity_metric
        self.engine = create_engine(setup.engine_cfg)
        self.engine.load()
        bad, problem = validate_sample(self.engine, setup.workload.texts)
        if bad:
            self.engine.close()
            raise EngineError(
                f"perf_analyzer does not check outputs, and {bad} of 16 responses we checked "
                f"were wrong ({problem}); refusing to report its numbers"
            )
        self.title = f"perf_analyzer ({self.version}); latency per request, throughput inputs/s"

    def header(self) -> list[str]:
        stats, info = self.setup.workload.stats, self.engine.info
        return [
            f"[bold]billionbench[/] · {self.setup.spec.name} through {self.engine.url}"
            f" · {self.version} · 16/16 sampled responses valid · workload "
            f"{self.setup.workload.source} (avg {stats.avg:.1f} tokens) · "
            f"weights={info.get('weights')}"
        ]

    def estimate(self) -> int:
        return len(self.args.batch_sizes) * len(self.args.concurrency)

    def plan(self) -> Plan:
        a = self.args
        for batch in a.batch_sizes:
            for c in a.concurrency:
                config = {
                    **self.setup.identity("http"),
                    "load": "perf_analyzer",
                    "batch": batch,
                    "concurrency": c,
                    "measurement_ms": int(a.duration * 1000),
                    "stability_percentage": STABILITY_PCT,
                }
                yield Point(config, f"perf_analyzer: batch {batch} · concurrency {c}", (batch, c))

    def measure(self, point: Point, progress: Progress) -> Measurement:
        batch, c = point.params
        transport = self.engine.transport
        (pa,) = run(
            self.binary,
            self.env,
            url=self.engine.url,  # the transport's own URL
            model=self.setup.spec.name,
            texts=self.setup.workload.texts,
            concurrency=[c],
            batch=batch,
            transport=transport,
            measurement_ms=int(self.args.duration * 1000),
        )[-1:]
        row = to_row(pa, batch)
        info = self.engine.info
        row.update(
            self.setup.context(info, row["throughput_req_per_sec"], self.parity_metric),
            batch_size=batch,
            # harness.serve announces backend "billionbench" in its model config
            vendor="billionbench" if info.get("triton_backend") == "billionbench" else "triton",
            protocol=f"triton-{transport}",
            load_generator=self.version,
            **{k: info.get(k) for k in TRITON_CONFIG_COLUMNS},
        )
        return Measurement(row)

    def close(self) -> None:
        self.engine.close()

    def summarize(self, console, rows, store) -> None:
        print_rows(console, self.title, TABLE, rows)
        console.print(f"results: {store.csv}", highlight=False)
