"""The device check on this CPU, so the script cannot rot.

Every run: each stage in process, in --smoke mode, with the benchmark commands it would start
parsed by the real command parsers (a renamed flag fails here) and their rows stood in for;
the probe and report commands run for real. The whole smoke (every command run, about three
minutes) is marked `full_smoke` and runs only when asked (BILLIONBENCH_FULL_SMOKE=1).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GPU_ONLY = ("3", "5", "6")  # flash-attention-2, AOTInductor CUDA, ONNX CUDA / TensorRT
STAGES = tuple(str(n) for n in range(10))


def full_smoke(test):
    """The whole smoke's tests: only when asked, with the smoke's own budget (960 s)."""
    return pytest.mark.full_smoke(pytest.mark.timeout(1200)(test))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("device-check")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "device_check.sh"), str(out), "--smoke"],
        env=dict(os.environ, PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=1100,
    )
    return proc, out


def verdicts(out: Path) -> dict[str, list[str]]:
    """Stage number -> [name, status, key figure, seconds, limit] from verdicts.md's table."""
    rows = {}
    for line in (out / "verdicts.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0][:1].isdigit():
            rows[cells[0].split()[0]] = cells
    return rows


@full_smoke
def test_smoke_passes_within_the_output_limits(smoke):
    proc, out = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = [p for p in out.iterdir()]
    assert all(p.is_file() for p in files)
    assert len(files) <= 8
    assert all(p.stat().st_size <= 16 * 2**20 for p in files)
    names = {p.name for p in files}
    assert {"results.csv", "results.parquet", "verdicts.md", "report.md"} <= names
    assert "device_check.log" in names


@full_smoke
def test_a_verdict_per_stage_printed_and_tabled(smoke):
    proc, out = smoke
    table = verdicts(out)
    assert sorted(table) == list(STAGES)
    for n in STAGES:
        assert table[n][1] in ("ran", "skipped"), table[n]
        assert f"[device-check] {table[n][0]}: {table[n][1]}" in proc.stdout


@full_smoke
def test_gpu_only_stages_are_skipped_with_a_reason(smoke):
    _, out = smoke
    gpu_only_skipped(out)


def gpu_only_skipped(out: Path) -> None:
    table = verdicts(out)
    for n in GPU_ONLY:
        status, reason = table[n][1], table[n][2]
        assert status == "skipped" and "GPU-only" in reason, table[n]
    # the packed token layout runs on CPU too: both layouts, each with a throughput
    assert table["7"][1] == "ran" and "packed" in table["7"][2], table["7"]


@full_smoke
def test_results_hold_rows_from_the_stages_that_ran(smoke):
    _, out = smoke
    rows_from_the_stages(out)


def rows_from_the_stages(out: Path) -> None:
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    engines = {(r["engine"], r["mode"]) for r in rows}
    assert ("eager", "inprocess") in engines  # stage 2
    assert ("compile", "inprocess") in engines  # stage 4
    assert ("eager", "http") in engines  # stage 8
    assert {r["model_name"] for r in rows} == {
        "distilbert-sentiment-tiny",
        "gte-modernbert-tiny",
    }
    assert {r["precision"] for r in rows} == {"fp32"}
    assert "# " in (out / "report.md").read_text()


# ------------------------------------------------------------------ every run: in process


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("device_check", ROOT / "scripts/device_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = module
    spec.loader.exec_module(module)
    return module


def _stand_in_rows(command: str, args: list[str]) -> list[dict]:
    """Rows a parsed benchmark command would write: one per batch size (and VU count)."""
    from helpers import schema_row

    from core.config import config_from
    from harness.config import TargetConfig
    from harness.run import build_parser as run_parser
    from harness.sweep import build_parser as sweep_parser

    ns = (run_parser() if command == "harness.run" else sweep_parser()).parse_args(args)
    target = config_from(TargetConfig, ns)
    task = "embedding" if "modernbert" in target.model else "classification"
    common = dict(model_name=target.model, engine=target.engine, precision=target.precision)
    common.update(task=task, image=f"{target.engine}/{target.precision}/sdpa", weights="random")
    # what a measured row always has: latencies, a price and its costs, a key
    common.update(p50_latency_ms=4.0, p95_latency_ms=5.0, p99_latency_ms=6.0, price_per_hour=1.0)
    common.update(cost_per_1m_inf=0.5, floor_1B_cost=100.0, successful_requests=10)
    if command == "harness.sweep":
        return [
            schema_row(
                **common,
                mode="http",
                max_batch_size=b,
                batch_size=b,
                vus=v,
                throughput_req_per_sec=10.0 * v,
            )
            for b in ns.max_batch_sizes
            for v in (1, 2)
        ]
    return [
        schema_row(
            **common,
            mode="inprocess",
            batch_size=b,
            throughput_req_per_sec=10.0 * b,
            padding_ratio=0.0 if "packed" in args else 0.3,
            config_json='{"engine_info": {"compile_seconds": 1.5}}',
        )
        for b in ns.inputs_per_request
    ]


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """Every stage of `device_check.py OUT --smoke`, its benchmarks stood in for."""
    import pandas as pd

    dc = _load_script()
    real_run_cmd = dc.run_cmd

    def run_cmd(ctx, argv, label, cwd=ROOT):
        if argv[1:3] in (["-m", "harness.run"], ["-m", "harness.sweep"]):
            args = argv[3:]
            folder = Path(args[args.index("--output-dir") + 1])
            folder.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(_stand_in_rows(argv[2], args)).to_csv(folder / "results.csv", index=False)
            return 0, ""
        return real_run_cmd(ctx, argv, label, cwd)  # the probes and the report, for real

    dc.run_cmd = run_cmd
    out = tmp_path_factory.mktemp("device-check-in-process")
    code = dc.main([str(out), "--smoke"])
    return code, out


def test_every_stage_has_a_verdict_in_process(in_process, capsys):
    code, out = in_process
    table = verdicts(out)
    assert sorted(table) == list(STAGES)
    assert all(table[n][1] in ("ran", "skipped") for n in STAGES), table
    assert code == 0
    assert {"results.csv", "results.parquet", "verdicts.md", "report.md"} <= {
        p.name for p in out.iterdir()
    }
    assert len(list(out.iterdir())) <= 8


def test_in_process_skips_gpu_stages_and_keeps_every_stage_row(in_process):
    _, out = in_process
    gpu_only_skipped(out)
    rows_from_the_stages(out)
    table = verdicts(out)
    assert "server b32: best 20 inputs/s at 2 VUs" in table["8"][2], table["8"]
