"""perf_analyzer as an optional load generator for Triton (`harness.run --load perf_analyzer`).

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
from pathlib import Path

from engines import contract
from engines.errors import BillionbenchError, EngineError

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
    from engines.triton.server import cache_dir

    return cache_dir() / "perf_analyzer"


def _libs_dir() -> Path | None:
    from engines.triton.server import _pytriton_root

    root = _pytriton_root()
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


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] != ["prepare"]:
        print("usage: python -m harness.perf_analyzer prepare", file=sys.stderr)
        return 2
    try:
        binary = prepare()
        b, env = find_binary()
        print(f"{version(b, env)} ready: {binary}")
        return 0
    except BillionbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------- harness.run --load


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


def run_harness(args, console) -> int:
    """`harness.run --engine triton --load perf_analyzer`: validated perf_analyzer rows."""
    from dataclasses import asdict

    from engines.errors import ConfigError
    from engines.registry import create_engine
    from harness.results import TRITON_CONFIG_COLUMNS, ResultsStore, config_key, context_columns
    from harness.run import load_setup, prepare_artifact

    if args.engine != "triton":
        raise ConfigError("--load perf_analyzer drives Triton; add --engine triton")
    binary, env = find_binary()
    pa_version = version(binary, env)
    setup = load_setup(args)
    spec, profile, detected, engine_cfg = (
        setup.spec,
        setup.profile,
        setup.detected,
        setup.engine_cfg,
    )
    wl_spec, workload, max_len = setup.wl_spec, setup.workload, setup.max_len
    flops, peak = setup.flops, setup.peak
    stats = workload.stats
    parity_metric = None
    if not engine_cfg.url:
        b = sorted(args.batch_sizes)
        engine_cfg, parity_metric = prepare_artifact(
            args,
            "triton",
            engine_cfg,
            profile,
            batch_range=(b[0], b[len(b) // 2], max(b[-1], 8)),
            seq_range=(8, min(128, max_len), max_len),
            console=console,
        )
    store = ResultsStore(args.output_dir, fresh=not args.resume)
    done = store.done_keys()
    rows = []
    with create_engine(engine_cfg) as engine:
        bad, problem = validate_sample(engine, workload.texts)
        if bad:
            raise EngineError(
                f"perf_analyzer does not check outputs, and {bad} of 16 responses we checked "
                f"were wrong ({problem}); refusing to report its numbers"
            )
        console.print(
            f"[bold]billionbench[/] · {spec.name} through Triton at {engine.url} · {pa_version} · "
            f"16/16 sampled responses valid · workload {workload.source} (avg {stats.avg:.1f} "
            f"tokens) · weights={engine.info.get('weights')}",
            highlight=False,
        )
        url, transport = engine.url, engine_cfg.transport or "http"  # url is the transport's
        for batch in args.batch_sizes:
            key_cfg = {
                "mode": "http",
                "load": "perf_analyzer",
                "engine": engine_cfg.as_dict(),
                "hw": profile.name,
                "price": profile.price_per_hour,
                "workload": asdict(wl_spec),
                "batch": batch,
                "concurrency": list(args.concurrency),
                "measurement_ms": int(args.duration * 1000),
                "stability_percentage": STABILITY_PCT,
            }
            key = config_key(key_cfg)
            if key in done:
                console.print(f"batch {batch}: already measured (resume)", highlight=False)
                continue
            with console.status(f"perf_analyzer: batch {batch}, concurrency {args.concurrency}"):
                pa_rows = run(
                    binary,
                    env,
                    url=url,
                    model=spec.name,
                    texts=workload.texts,
                    concurrency=list(args.concurrency),
                    batch=batch,
                    transport=transport,
                    measurement_ms=int(args.duration * 1000),
                )
            for pa in pa_rows:
                row = to_row(pa, batch)
                row.update(
                    context_columns(
                        spec=spec,
                        engine_cfg=engine_cfg,
                        info=engine.info,
                        profile=profile,
                        detected=detected,
                        workload=workload,
                        flops=flops,
                        peak=peak,
                        inputs_per_sec=row["throughput_req_per_sec"],
                        parity_metric=parity_metric,
                    ),
                    batch_size=batch,
                    vendor="triton",
                    protocol=f"triton-{transport}",
                    load_generator=pa_version,
                    **{k: engine.info.get(k) for k in TRITON_CONFIG_COLUMNS},
                    config_key=config_key({**key_cfg, "row": row["vus"]}),
                    config_json=json.dumps(key_cfg, sort_keys=True, default=str),
                )
                store.append(row)
                rows.append(row)
    from rich.table import Table

    t = Table(title=f"perf_analyzer ({pa_version}); latency per request, throughput inputs/s")
    for head in (
        "batch",
        "concurrency",
        "inputs/s",
        "p50 ms",
        "p99 ms",
        "queue ms",
        "infer ms",
        "$/1B",
    ):
        t.add_column(head, justify="right")
    for r in rows:
        t.add_row(
            str(r["batch_size"]),
            str(r["vus"]),
            f"{r['throughput_req_per_sec']:,.1f}",
            f"{r['p50_latency_ms']:,.2f}",
            f"{r['p99_latency_ms']:,.2f}",
            f"{r['server_queue_ms'] or 0:,.2f}",
            f"{r['server_compute_infer_ms'] or 0:,.2f}",
            f"{r['1B_cost']:,.2f}",
        )
    console.print(t)
    console.print(f"results: {store.csv}", highlight=False)
    from harness.report import report_for_run

    report_for_run(console, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
