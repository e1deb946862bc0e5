"""harness.report on result rows generated here: two hardware types, in-process and HTTP rows,
an engine pair, random-weight and fake-engine rows, a duplicate, an older file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import schema_row

from analysis import reporting as report
from harness.report import main
from harness.results import COLUMNS

ROOT = Path(__file__).resolve().parent.parent
PRICE = {"cpu": 0.5, "l4": 0.8}


def row(**kw) -> dict:
    """One result row; 1B_cost follows the cost model from price and throughput."""
    r = schema_row(
        device_name="AMD EPYC (2 cores)",
        mode="http",
        inputs_per_request=1,
        vus=1,
        total_requests=100,
        successful_requests=100,
        invalid_embeddings=0,
        git_sha="abc1234",
        tool_versions='{"torch": "2.13.0+cpu"}',
        timestamp="2026-11-25T06:00:00+0000",
    )
    r.update(kw)
    thr = r.setdefault("throughput_req_per_sec", 10.0) or 10.0
    price = PRICE[r["hw_type"]]
    if r.get("1B_cost") is None:
        r["1B_cost"] = price * 1e9 / (3600 * thr)
    r["cost_per_1m_inf"] = r["1B_cost"] / 1000
    r.setdefault("floor_1B_cost", None)
    for q in ("avg", "p50", "p95", "p99"):
        r.setdefault(f"{q}_latency_ms", None)
        if r[f"{q}_latency_ms"] is None:
            r[f"{q}_latency_ms"] = 1000.0 * r["batch_size"] * r["vus"] / thr
    r["config_key"] = r.get("config_key") or "k" + "-".join(
        str(r[c]) for c in ("hw_type", "mode", "engine", "image", "batch_size", "vus", "weights")
    )
    return r


def cpu_rows() -> list[dict]:
    rows = []
    # HTTP, batch 8: throughput still rising at the largest VUs -> flagged
    rows += [row(vus=v, throughput_req_per_sec=t) for v, t in ((1, 10), (2, 20), (4, 30), (8, 40))]
    # HTTP, batch 32: plateaued -> not flagged
    rows += [
        row(batch_size=32, vus=v, throughput_req_per_sec=t)
        for v, t in ((1, 10), (2, 20), (4, 25), (8, 25))
    ]
    # in process, an engine pair at the same batch and concurrency: onnx 25 % cheaper
    for engine, thr in (("eager", 30.0), ("onnx", 40.0)):
        rows.append(
            row(
                mode="inprocess",
                engine=engine,
                image=f"{engine}/fp32/sdpa" if engine == "eager" else "onnx/int8",
                batch_size=32,
                inputs_per_request=32,
                vus=1,
                n_models=1,
                workers_per_model=1,
                throughput_req_per_sec=thr,
                throughput_avg=thr,
                latency_ms_p50=900.0,
                latency_ms_p99=1000.0,
                p95_latency_ms=1100.0,
                p99_latency_ms=1200.0,
                avg_tokens=97.3,
                max_tokens=263,
                floor_1B_cost=1000.0,
            )
        )
    # the fake engine: cheapest on paper, labelled everywhere
    rows.append(
        row(
            engine="fake",
            image="fake",
            weights="none (fake engine)",
            vus=16,
            throughput_req_per_sec=100.0,
        )
    )
    return rows


def l4_rows() -> list[dict]:
    common = dict(
        hw_type="l4",
        host_name="gpu-box",
        device_name="NVIDIA L4",
        engine="trt",
        image="trt/fp16",
        batch_size=32,
    )
    return [
        row(**common, vus=4, throughput_req_per_sec=4000.0, p95_latency_ms=40.0, floor_1B_cost=5.0),
        row(
            **common,
            vus=16,
            throughput_req_per_sec=8000.0,
            p95_latency_ms=150.0,
            floor_1B_cost=5.0,
            weights="random",
        ),
    ]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("results")
    (d / "cpu").mkdir()
    (d / "l4").mkdir()
    cpu, l4 = pd.DataFrame(cpu_rows(), columns=COLUMNS), pd.DataFrame(l4_rows(), columns=COLUMNS)
    cpu.to_csv(d / "cpu" / "results.csv", index=False)
    cpu.to_parquet(d / "cpu" / "results.parquet", index=False)  # its twin: read once, not twice
    l4.to_parquet(d / "l4" / "results.parquet", index=False)
    # the same configuration measured again on another machine: shown, never averaged
    again = cpu.iloc[[0]].assign(host_name="cpu-box-2", throughput_req_per_sec=12.0)
    again.to_csv(d / "again.csv", index=False)
    # an older file: fewer columns (no config_key, no floor, no mode)
    old = pd.DataFrame([row(batch_size=1, vus=1, throughput_req_per_sec=5.0)])
    old[
        ["task", "hw_type", "engine", "image", "batch_size", "vus", "1B_cost", "p95_latency_ms"]
    ].to_csv(d / "old.csv", index=False)
    return {
        "dir": d,
        "cpu": d / "cpu",
        "l4": d / "l4",
        "again": d / "again.csv",
        "old": d / "old.csv",
    }


@pytest.fixture(scope="module")
def df(inputs):
    return report.load([inputs["cpu"], inputs["l4"], inputs["again"]])


def test_pareto_front_on_a_hand_checked_set():
    pts = pd.DataFrame(
        {
            "name": list("ABCDEFG"),
            "p95_latency_ms": [10, 20, 15, 30, 40, 50, 20],
            "1B_cost": [100, 80, 120, 80, 50, 60, 90],
        }
    )
    # C is beaten by A, D ties B's cost at higher latency, F is beaten by E, G by B
    front = report.pareto_front(pts, "p95_latency_ms")
    assert front["name"].tolist() == ["A", "B", "E"]
    # a faster, cheaper row whose answers failed the quality gate is on no front
    failing = pts.assign(quality_passed=[True] * 6 + [None])
    failing.loc[len(failing)] = ["H", 5, 10, False]
    assert report.pareto_front(failing, "p95_latency_ms")["name"].tolist() == ["A", "B", "E"]


def test_merge_keeps_hosts_reads_twins_once_and_shows_duplicates(df):
    assert len(df) == len(cpu_rows()) + len(l4_rows()) + 1  # the Parquet twin is skipped
    assert set(df["host_name"]) == {"cpu-box", "cpu-box-2", "gpu-box"}
    dup = report.duplicates(df)
    assert len(dup) == 2 and dup["config_key"].nunique() == 1
    assert sorted(dup["host_name"]) == ["cpu-box", "cpu-box-2"]
    assert sorted(dup["throughput_req_per_sec"]) == [10.0, 12.0]  # both kept, not averaged


def test_monotonic_vu_flag(df):
    groups = report.vu_groups(df)
    cpu = groups[groups["hw_type"] == "cpu"]
    by_batch = {b: g["still_rising"].tolist() for b, g in cpu.groupby("batch_size")}
    assert by_batch[8] == [True]  # 10 -> 40 inputs/s, still rising at 8 VUs
    assert by_batch[32] == [False]  # 25 -> 25: peaked
    # l4: 4000 -> 8000 inputs/s from 4 to 16 VUs, a random-weight run among them
    l4 = groups[groups["hw_type"] == "l4"].iloc[0]
    assert l4["still_rising"] and l4["label"] == " [random weights]"


def test_best_and_best_under_latency_limit(df):
    best = report.best_configs(df, "p95").set_index("hw_type")
    # on the l4 the cheapest is the 8000 inputs/s run; on the cpu the fake engine row (16 VUs)
    assert best.loc["l4", "throughput_req_per_sec"] == 8000.0
    assert best.loc["cpu", "engine"] == "fake"
    within = report.best_configs(df, "p95", limit_ms=100.0).set_index("hw_type")
    assert list(within.index) == ["l4"]  # no cpu run is that fast
    assert within.loc["l4", "vus"] == 4 and within.loc["l4", "p95_latency_ms"] == 40.0
    p99 = report.best_configs(df, "p99", limit_ms=1250.0).set_index("hw_type")
    # cpu within p99 <= 1250 ms: the in-process onnx row (1200 ms) beats everything HTTP allows
    assert p99.loc["cpu", "engine"] == "onnx"


def test_hardware_comparison_numbers(df):
    hw = report.hardware_comparison(df).set_index("hw_type")
    l4_cost = 0.8 * 1e9 / (3600 * 8000.0)
    assert hw.loc["l4", "best_1B_cost"] == pytest.approx(l4_cost)
    assert hw.loc["l4", "cost_over_floor"] == pytest.approx(l4_cost / 5.0)
    assert hw.loc["l4", "efficiency"] == pytest.approx(5.0 / l4_cost)
    fake_cost = 0.5 * 1e9 / (3600 * 100.0)
    assert hw.loc["cpu", "best_1B_cost"] == pytest.approx(fake_cost)
    # a CPU measurement is never labelled as another device
    assert hw.loc["cpu", "devices"] == "AMD EPYC (2 cores)"
    assert hw.loc["l4", "devices"] == "NVIDIA L4"
    assert hw.loc["l4", "label"] == " [random weights]"
    assert hw.loc["cpu", "label"] == " [fake engine]"


def test_engine_savings(df):
    s = report.engine_savings(df)
    assert len(s) == 1
    r = s.iloc[0]
    assert r["cheaper"].startswith("onnx/int8") and r["than"].startswith("eager/fp32")
    assert r["savings_pct"] == pytest.approx(25.0)  # 30 -> 40 inputs/s


def test_html_is_offline_and_labels_synthetic_rows(inputs, tmp_path):
    html_path, md_path = report.write_report(
        [inputs["cpu"], inputs["l4"], inputs["again"], inputs["old"]],
        tmp_path / "report.html",
        latency_limit_ms=100.0,
    )
    assert md_path == tmp_path / "report.md"
    html = html_path.read_text()
    md = md_path.read_text()
    network = re.compile(
        r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//|<link[^>]*\bhref\s*=\s*[\"']?(https?:)?//"
        r"|@import\s+url\(\s*[\"']?(https?:)?//",
        re.I,
    )
    assert not network.search(html)
    assert html.count("<script type='text/javascript'>") == 1  # plotly.js inlined once
    assert "Plotly.newPlot" in html
    for text in (html, md):
        assert "[random weights]" in text and "[fake engine]" in text
        assert "Duplicate configurations (1)" in text
        assert "Pareto front" in text and "Did we try enough VUs?" in text
        assert "STILL RISING" in text and "cpu-box-2" in text
        assert "with p95 latency ≤ 100 ms" in text
    assert "$ per 1B inputs" in html and "latency (ms)" in html
    # every table row of the random-weight l4 run says so
    l4_lines = [ln for ln in md.splitlines() if "trt/fp16" in ln and "| 16 VUs" in ln]
    assert l4_lines and all("[random weights]" in ln for ln in l4_lines)
    # the older file's rows are read with its missing columns empty
    assert "old.csv" in md


def test_without_plotly_markdown_is_still_written(inputs, tmp_path, monkeypatch, capsys):
    from rich.console import Console

    import analysis.reporting as rep

    monkeypatch.setattr(rep, "charts_or_none", lambda: None)
    html_path, md_path = rep.write_report([inputs["l4"]], tmp_path / "r.html")
    assert html_path is None and md_path.exists() and not (tmp_path / "r.html").exists()
    assert "billionbench[report]" in md_path.read_text()
    code = main([str(inputs["l4"]), "--out", str(tmp_path / "x.html")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "pip install 'billionbench[report]'" in err and "\n" not in err
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.csv").write_bytes((inputs["cpu"] / "results.csv").read_bytes())
    rep.report_for_run(Console(), run_dir)
    assert "pip install 'billionbench[report]'" in capsys.readouterr().out


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda d: d / "missing.csv", "no such file"),
        (lambda d: _write(d / "empty.csv", ""), "empty"),
        (lambda d: _write(d / "header.csv", ",".join(COLUMNS) + "\n"), "no rows"),
        (lambda d: _write(d / "junk.parquet", "not parquet"), "cannot read"),
        (lambda d: _write(d / "notes.txt", "x"), "not a .csv or .parquet"),
        (lambda d: _write(d / "other.csv", "a,b\n1,2\n"), "not a results file"),
        (lambda d: (d / "nothing").mkdir() or d / "nothing", "no .csv or .parquet"),
    ],
)
def test_cli_errors_are_one_line_exit_2(make, expect, tmp_path, capsys):
    path = make(tmp_path)
    code = main([str(path), "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and str(path) in err and expect in err, err
    assert not (tmp_path / "r.html").exists()


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_cli_end_to_end_and_bad_flags(inputs, tmp_path):
    out = tmp_path / "rep" / "report.html"
    r = subprocess.run(
        [sys.executable, "-m", "harness.report", str(inputs["dir"]), "--out", str(out),
         "--max-p99-ms", "200"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out.exists() and (out.parent / "report.md").exists()
    assert "with p99 latency ≤ 200 ms" in (out.parent / "report.md").read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "harness.report", str(inputs["dir"]), "--latency-metric", "p42"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0


def test_harness_run_writes_its_report(tmp_path, capsys):
    from harness.run import main as run_main

    code = run_main(
        ["--engine", "fake", "--model", "distilbert-sentiment-tiny", "--num-samples", "16",
         "--inputs-per-request", "2", "--duration", "0.2", "--min-calls", "2",
         "--output-dir", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.md").exists()
    assert f"report: {tmp_path / 'report.html'}" in out.replace("\n", "")
    assert "[fake engine]" in (tmp_path / "report.md").read_text()


def test_rows_under_the_quality_gate_are_listed_failing_and_never_best(tmp_path):
    right = row(hw_type="cpu", engine="onnx", throughput_req_per_sec=50.0, p95_latency_ms=90.0)
    wrong = row(hw_type="cpu", engine="remote", throughput_req_per_sec=80.0, p95_latency_ms=60.0)
    right.update(quality_n=256, quality_min_cosine=0.9999, quality_gate=0.99, quality_passed=True)
    wrong.update(quality_n=256, quality_min_cosine=0.912, quality_gate=0.99, quality_passed=False)
    csv = tmp_path / "rows" / "results.csv"
    csv.parent.mkdir()
    pd.DataFrame([right, wrong]).to_csv(csv, index=False)
    df = report.load([csv])
    assert report.best_configs(df, "p95").iloc[0]["engine"] == "onnx"
    assert report.pareto_front(df, "p95_latency_ms")["engine"].tolist() == ["onnx"]
    _, md = report.write_report([csv], tmp_path / "report.html")
    section = md.read_text().split("## Output quality", 1)[1].split("\n## ", 1)[0]
    assert "1 of 2 checked rows are FAILING QUALITY" in section
    failing = [line for line in section.splitlines() if "FAILING QUALITY |" in line]
    assert len(failing) == 1 and "0.91200" in failing[0]
