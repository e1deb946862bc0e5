"""The device check's --smoke mode: the same stages on this CPU, so the script cannot rot."""

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

pytestmark = pytest.mark.timeout(1200)  # the smoke's own budget is 960 s; it takes ~3 min here


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


def test_a_verdict_per_stage_printed_and_tabled(smoke):
    proc, out = smoke
    table = verdicts(out)
    assert sorted(table) == list(STAGES)
    for n in STAGES:
        assert table[n][1] in ("ran", "skipped"), table[n]
        assert f"[device-check] {table[n][0]}: {table[n][1]}" in proc.stdout


def test_gpu_only_stages_are_skipped_with_a_reason(smoke):
    _, out = smoke
    table = verdicts(out)
    for n in GPU_ONLY:
        status, reason = table[n][1], table[n][2]
        assert status == "skipped" and "GPU-only" in reason, table[n]
    # the packed token layout runs on CPU too: both layouts, each with a throughput
    assert table["7"][1] == "ran" and "packed" in table["7"][2], table["7"]


def test_results_hold_rows_from_the_stages_that_ran(smoke):
    _, out = smoke
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
