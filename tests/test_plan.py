"""harness.plan on rows written here: the arithmetic by hand, the latency filter, each refusal,
the price bases, two machines' folders, the JSON shape, and published rows kept apart."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from helpers import manifest, schema_row

from analysis import frames as loading
from analysis import planner as planning
from analysis import render
from analysis.planner import Demand, PlanError, instances_needed, make_plan, parse_rate
from analysis.references import EXTRA_COLUMNS, MARKER
from harness import hardware
from harness.plan import main
from harness.results import COLUMNS, ResultsStore

CPU, L4 = hardware.PROFILES["cpu"].price_per_hour, hardware.PROFILES["l4"].price_per_hour
MONTH = 730.0


def row(**kw) -> dict:
    base = dict(precision="fp32", mode="inprocess", workers_per_model=1, price_per_hour=CPU)
    r = schema_row(**base, config_json=json.dumps({"engine": {"artifact": None}}))
    r.update(kw)
    thr = r["throughput_req_per_sec"]
    r["1B_cost"] = r["price_per_hour"] * 1e9 / (3600 * thr)
    r["config_key"] = r["config_key"] or f"k-{r['hw_type']}-{r['engine']}-{r['batch_size']}"
    return r


def frame(*rows: dict) -> pd.DataFrame:
    return loading.prepare(pd.DataFrame(list(rows), columns=COLUMNS))


def cpu_rows() -> list[dict]:
    return [
        row(batch_size=1, throughput_req_per_sec=30.0, p95_latency_ms=40.0, p99_latency_ms=50.0),
        # faster, but its p99 is over a 100 ms limit while its p95 is within it
        row(batch_size=8, throughput_req_per_sec=50.0, p95_latency_ms=90.0, p99_latency_ms=180.0),
    ]


def l4_rows() -> list[dict]:
    common = dict(hw_type="l4", host_name="gpu-box", engine="onnx", precision="fp16")
    return [
        row(
            **common,
            image="onnx/fp16",
            batch_size=32,
            throughput_req_per_sec=1000.0,
            p95_latency_ms=30.0,
            p99_latency_ms=40.0,
            price_per_hour=L4,
            floor_1B_cost=5.0,
        )
    ]


def write_store(folder: Path, rows: list[dict]) -> Path:
    store = ResultsStore(folder)
    for r in rows:
        store.append(r)
    return folder


@pytest.fixture()
def machines(tmp_path) -> list[Path]:
    """Two machines' folders as they come back: a CPU box and a GPU box (device_check layout)."""
    cpu = write_store(tmp_path / "cpu-box", cpu_rows())
    gpu = write_store(tmp_path / "gpu-box", l4_rows())
    (gpu / "verdicts.md").write_text("| stage | status |\n")  # what device_check leaves beside
    (gpu / "report.md").write_text("# report\n")
    return [cpu, gpu]


def demand(**kw) -> Demand:
    base = dict(rate=100.0, limit_ms=100.0, peak=2.0, headroom=0.2)
    return Demand(**{**base, **kw})


# -- the arithmetic -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,per_s",
    [
        ("11574", 11574.0),
        ("11574/s", 11574.0),
        ("1e9/day", 1e9 / 86400),
        ("1,000,000/day", 1e6 / 86400),
        ("60/min", 1.0),
        ("7200/h", 2.0),
        ("3e10/month", 3e10 / (730 * 3600)),
        ("6.048e5/week", 1.0),
    ],
)
def test_rate_units(text, per_s):
    assert parse_rate(text) == pytest.approx(per_s)


@pytest.mark.parametrize("text", ["", "fast", "-5/s", "0/day", "1e9/fortnight", "nan", "1e9/"])
def test_bad_rate_is_refused(text):
    with pytest.raises(PlanError, match="--rate"):
        parse_rate(text)


@pytest.mark.parametrize(
    "peak_rate,throughput,headroom,expected",
    [
        (1000, 100, 0.2, 13),  # 1000 / 80 = 12.5 -> 13
        (800, 100, 0.2, 10),  # exactly 10, not 11 (no float creep)
        (1000, 100, 0.0, 10),
        (1, 1000, 0.5, 1),  # never fewer than one
        (34722.22, 18.258, 0.2, 2378),
    ],
)
def test_instances_at_peak_with_headroom(peak_rate, throughput, headroom, expected):
    assert instances_needed(peak_rate, throughput, headroom) == expected


def test_plan_by_hand_on_two_hardware_types():
    plan = make_plan(frame(*cpu_rows(), *l4_rows()), demand())
    cpu, l4 = plan.options  # ranked by $/month: 5 cpus are cheaper than 1 l4
    assert (cpu.hw_type, cpu.rank, l4.hw_type, l4.rank) == ("cpu", 1, "l4", 2)
    # cpu: p99 <= 100 leaves the 30 inputs/s point; peak 200 / (30 * 0.8) = 8.33 -> 9
    assert (cpu.throughput, cpu.instances) == (30.0, 9)
    assert cpu.monthly_cost == pytest.approx(9 * CPU * MONTH)
    assert cpu.effective_cost_per_1b == pytest.approx(9 * CPU * MONTH / (100 * MONTH * 3600 / 1e9))
    assert cpu.utilisation_mean == pytest.approx(100 / 270)
    assert cpu.utilisation_peak == pytest.approx(200 / 270)
    assert cpu.free_at_peak == pytest.approx(1 - 200 / 270)
    # l4: 200 / 800 -> 1 instance at $0.80/hr; its floor $5/1B at the rows' price
    assert (l4.instances, l4.monthly_cost) == (1, pytest.approx(L4 * MONTH))
    assert l4.floor_cost_per_1b == pytest.approx(5.0)
    assert l4.cost_over_floor == pytest.approx(l4.effective_cost_per_1b / 5.0)
    assert l4.full_load_cost_per_1b == pytest.approx(L4 * 1e9 / (3600 * 1000))
    assert cpu.artifact["describe"] == "in-memory model (no artifact)"


def test_latency_filter_p99_and_p95():
    rows = frame(*cpu_rows())
    p99 = make_plan(rows, demand(metric="p99")).options[0]
    assert (p99.throughput, p99.latency_ms, p99.latency_column) == (30.0, 50.0, "p99_latency_ms")
    p95 = make_plan(rows, demand(metric="p95")).options[0]  # the 50 inputs/s point's p95 is 90
    assert (p95.throughput, p95.latency_ms, p95.instances) == (50.0, 90.0, 5)


def test_excluded_rows_are_never_a_plan():
    rows = frame(
        row(batch_size=1, throughput_req_per_sec=30.0, p99_latency_ms=50.0),
        row(batch_size=2, throughput_req_per_sec=900.0, p99_latency_ms=5.0, error="OOM"),
        row(batch_size=4, throughput_req_per_sec=900.0, p99_latency_ms=5.0, failed_requests=3),
        row(
            batch_size=8,
            engine="fake",
            image="fake",
            weights="none (fake engine)",
            throughput_req_per_sec=9000.0,
            p99_latency_ms=1.0,
        ),
        row(
            batch_size=16,
            engine="onnx",
            image="onnx/int8",
            throughput_req_per_sec=900.0,
            p99_latency_ms=5.0,
            parity_metric="FAILED",
        ),
    )
    plan = make_plan(rows, demand())
    assert [o.throughput for o in plan.options] == [30.0]
    assert plan.excluded == {
        "recorded as failed (error set)": 1,
        "failed requests > 0": 1,
        "computes no model (fake engine)": 1,
        "parity FAILED (never ranked)": 1,
    }


def test_artifact_manifest_and_parity_verdict(tmp_path, monkeypatch):
    from engines.artifact import write_manifest

    monkeypatch.setenv("BILLIONBENCH_SEAL_KEY", str(tmp_path / "seal.key"))
    art = tmp_path / "artifacts" / "onnx-int8"
    art.mkdir(parents=True)
    (art / "model.onnx").write_bytes(b"onnx")
    m = manifest(
        model="distilbert-sentiment",
        task="classification",
        precision="int8",
        output_names=["logits"],
        parity={"passed": True, "metric": "top1=1.000"},
    )
    write_manifest(art, m)
    cfg = json.dumps({"engine": {"artifact": str(art)}})
    o = make_plan(
        frame(row(throughput_req_per_sec=40.0, p99_latency_ms=9.0, config_json=cfg)), demand()
    ).options[0]
    assert o.artifact["manifest"]["format"] == "onnx" and o.artifact["manifest"]["sealed"]
    assert o.parity == "passed (top1=1.000)"
    assert o.artifact["describe"] == f"{art} (onnx int8, parity passed)"


# -- refusals (exit 2, one line) ------------------------------------------------------------


def refusal(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_refuses_when_no_row_meets_the_limit_and_names_the_nearest(machines, capsys):
    err = refusal(capsys, [*map(str, machines), "--rate", "100", "--p99-ms", "10"])
    assert "no measured row meets p99 ≤ 10 ms" in err
    assert "l4 onnx/fp16 batch 32" in err and "p99 40.0 ms" in err


def test_refuses_a_price_basis_without_a_published_price(machines, capsys):
    err = refusal(
        capsys, [*map(str, machines), "--rate", "100", "--p99-ms", "100", "--price-basis", "spot"]
    )
    assert "no spot price for" in err and "--price" in err


def test_refuses_unknown_filter_values(machines, capsys):
    err = refusal(capsys, [*map(str, machines), "--rate", "1", "--p99-ms", "100", "--hw", "h100"])
    assert "--hw h100: no measured row has it (the rows have: cpu, l4)" in err


def test_refuses_empty_folders_and_missing_files(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = refusal(capsys, [str(tmp_path / "empty"), "--rate", "1", "--p99-ms", "100"])
    assert "no .csv or .parquet results files" in err
    err = refusal(capsys, [str(tmp_path / "nope"), "--rate", "1", "--p99-ms", "100"])
    assert "no such file or directory" in err


def test_refuses_rows_that_cannot_be_planned(tmp_path, capsys):
    fake = dict(engine="fake", image="fake", weights="none (fake engine)")
    write_store(tmp_path / "f", [row(**fake, throughput_req_per_sec=10.0, p99_latency_ms=1.0)])
    err = refusal(capsys, [str(tmp_path / "f"), "--rate", "1", "--p99-ms", "100"])
    assert "none of the 1 rows can be planned on (1 computes no model (fake engine))" in err


@pytest.mark.parametrize(
    "flags,what",
    [
        (["--rate", "1e9/fortnight", "--p99-ms", "9"], "argument --rate"),
        (["--rate", "1e9/day"], "--p99-ms --p95-ms is required"),
        (["--rate", "1", "--p99-ms", "9", "--headroom", "1"], "argument --headroom"),
        (["--rate", "1", "--p99-ms", "9", "--peak", "0.5"], "argument --peak"),
        (["--rate", "1", "--p99-ms", "9", "--price", "l4"], "argument --price"),
    ],
)
def test_bad_flags_are_one_line_errors(machines, capsys, flags, what):
    with pytest.raises(SystemExit) as e:
        main([str(machines[0]), *flags])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert what in err and len(err.splitlines()) == 1


def test_mixed_tasks_are_planned_apart_never_ranked_together():
    emb = row(task="embedding", model_name="gte-modernbert", throughput_req_per_sec=9.0)
    plan = make_plan(frame(*cpu_rows(), {**emb, "p99_latency_ms": 60.0}), demand())
    assert plan.workloads() == [
        ("classification", "distilbert-sentiment"),
        ("embedding", "gte-modernbert"),
    ]
    assert [(o.task, o.rank) for o in plan.options] == [("classification", 1), ("embedding", 1)]
    only = make_plan(
        frame(*cpu_rows(), {**emb, "p99_latency_ms": 60.0}),
        demand(),
        filters={"task": ["embedding"]},
    )
    assert [o.task for o in only.options] == ["embedding"]


# -- price bases --------------------------------------------------------------------------------


def test_price_bases_give_hand_computed_monthly_costs(monkeypatch):
    rows = frame(*l4_rows())  # 1 l4 instance for this demand
    reserved = hardware.Price(0.50, "test: a 1-yr reservation", "2026-01")
    spot = hardware.Price(0.30, "test: a spot quote", "2026-01")
    monkeypatch.setitem(
        hardware.PROFILES,
        "l4",
        replace(hardware.PROFILES["l4"], reserved=reserved, spot=spot),
    )
    got = {
        b: make_plan(rows, demand(basis=b)).options[0].monthly_cost
        for b in ("on-demand", "reserved", "spot")
    }
    assert got == pytest.approx({"on-demand": L4 * MONTH, "reserved": 365.0, "spot": 219.0})
    o = make_plan(rows, demand(basis="reserved")).options[0]
    assert o.price_source == "test: a 1-yr reservation (2026-01)"
    # the floor follows the price: $5/1B measured at $0.80/hr is $3.125/1B at $0.50/hr
    assert o.floor_cost_per_1b == pytest.approx(5.0 * 0.50 / L4)


def test_shipped_profiles_have_no_invented_reserved_or_spot_price():
    for p in hardware.PROFILES.values():
        assert p.price("on-demand").per_hour == p.price_per_hour
        # only inf2's reserved rate is published (AWS's RI-effective rate); the rest are absent
        assert p.price("spot") is None
        assert (p.price("reserved") is None) == (p.name != "inf2")
    with pytest.raises(PlanError, match="no reserved price for l4"):
        make_plan(frame(*l4_rows()), demand(basis="reserved"))


def test_price_override_applies_to_the_asked_basis():
    plan = make_plan(frame(*l4_rows()), demand(basis="spot", prices=(("l4", 0.25),)))
    o = plan.options[0]
    assert o.monthly_cost == pytest.approx(0.25 * MONTH) and "--price" in o.price_source


# -- two machines, JSON ---------------------------------------------------------------------


def test_two_machines_one_plan_as_json(machines, tmp_path, capsys):
    out = tmp_path / "plan.json"
    argv = [*map(str, machines), "--rate", "8.64e6/day", "--peak", "2", "--p99-ms", "100"]
    assert main([*argv, "--format", "json", "--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    d = printed["demand"]
    assert d["mean_inputs_per_s"] == pytest.approx(100.0) and d["hours_per_month"] == 730
    assert d["headroom"] == 0.2 and d["price_basis"] == "on-demand"
    assert {p["hw_type"]: p["host_name"] for p in printed["plans"]} == {
        "cpu": "cpu-box",
        "l4": "gpu-box",
    }
    assert {Path(f).parent.name for f in printed["files"]} == {"cpu-box", "gpu-box"}
    keys = {"instances", "monthly_cost", "effective_cost_per_1b", "utilisation_peak", "artifact"}
    assert keys <= set(printed["plans"][0]) and printed["published"] == []
    assert set(printed) == {
        "demand",
        "files",
        "plans",
        "published",
        "no_row_meets_the_limit",
        "excluded_rows",
        "floors_without_rows",
        "notes",
    }


def test_console_plan_names_instances_cost_headroom_and_artifact(machines, capsys):
    assert main([*map(str, machines), "--rate", "100", "--peak", "2", "--p99-ms", "100"]) == 0
    out = capsys.readouterr().out
    assert "deploy 9 × cpu running eager/fp32/sdpa" in out
    assert "20% of each instance's measured throughput kept free at peak" in out
    assert "artifact: in-memory model (no artifact)" in out and "$/month" in out


# -- published rows -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def refs() -> pd.DataFrame:
    return loading.read_references()


def test_reference_file_is_in_the_result_schema_and_never_measured(refs):
    raw = pd.read_csv(planning.Path(loading.references.PUBLISHED))
    assert set(raw.columns) <= set(COLUMNS) | set(EXTRA_COLUMNS)
    assert raw["measured_here"].astype(str).str.lower().eq("false").all()
    assert raw["source"].notna().all() and raw["measurement_boundary"].notna().all()
    assert raw["price_basis"].notna().all() and raw["reference_id"].is_unique
    assert set(refs["hw_type"]) >= {"l4", "t4", "inf2"}
    assert refs["published"].all()


def test_seed_000_cost_per_1b_from_its_throughput_and_price(refs):
    seed = refs[refs["reference_id"].str.startswith("seed000")].set_index("task")
    assert dict(seed["1B_cost"]) == {
        "classification": 253.82,
        "embedding": 409.44,
        "vision-embedding": 44496.51,
    }
    for _, r in seed.iterrows():  # 1B_cost = price_per_hour * 1e9 / (3600 * throughput)
        assert r["price_per_hour"] == 0.80
        assert round(0.80 * 1e9 / (3600 * r["throughput_req_per_sec"]), 2) == r["1B_cost"]
    assert list(seed["batch_size"]) == [64, 32, 4] and list(seed["vus"]) == [448, 256, 4]


def test_seed_002_cost_column_reproduced_from_throughput(refs):
    seed = refs[refs["reference_id"].str.startswith("seed002")]
    assert len(seed) == 20 and (seed["throughput_avg"] == seed["throughput_req_per_sec"]).all()
    for _, r in seed.iterrows():  # at $0.76/hr, the rounded inf2.xlarge on-demand price
        cost = 0.76 * 1e6 / (3600 * r["throughput_avg"])
        assert round(cost, 3) == pytest.approx(r["cost_per_1m_inf"], abs=1e-9)


def test_aws_inf2_cost_column_is_one_hourly_rate(refs):
    aws = refs[refs["reference_id"].str.startswith("aws-inf2")]
    assert len(aws) == 3
    # each printed $ (3 decimals) bounds the hourly rate; one rate must fit them all
    pairs = list(zip(aws.cost_per_1m_inf, aws.throughput_req_per_sec, strict=True))
    lo = max((c - 5e-4) * 3600 * t / 1e6 for c, t in pairs)
    hi = min((c + 5e-4) * 3600 * t / 1e6 for c, t in pairs)
    assert lo < hi
    assert aws["price_per_hour"].isna().all()  # the page does not print its rate: not invented


def test_nvidia_throughput_is_batch_over_average_latency(refs):
    nv = refs[refs["reference_id"].str.startswith("nvidia")]
    assert len(nv) == 12 and set(nv["hw_type"]) == {"t4", "a100"}
    for _, r in nv.iterrows():
        assert r["throughput_req_per_sec"] == pytest.approx(
            r["batch_size"] * 1000 / r["avg_latency_ms"]
        )
    t4 = nv[(nv.hw_type == "t4") & (nv.batch_size == 128) & (nv.precision == "fp16")].iloc[0]
    assert (t4.p95_latency_ms, t4.p99_latency_ms, t4.avg_latency_ms) == (145.94, 146.59, 144.20)


def test_references_are_priced_apart_and_never_enter_measured_tables(refs, tmp_path):
    measured = frame(*cpu_rows(), *l4_rows())
    plan = make_plan(measured, demand(limit_ms=200.0), references=refs)
    assert plan.published and all(o.published for o in plan.published)
    assert not any(o.published for o in plan.options)
    assert {o.hw_type for o in plan.options} == {"cpu", "l4"}
    seed = next(o for o in plan.published if o.source.startswith("seed 000"))
    assert math.isnan(seed.latency_ms) and seed.latency_column == "not published"
    # the report: measured views hold our rows only; published rows have their own section
    head, sections = render.build(
        measured, metric="p99", limit_ms=200.0, plan=plan, references=refs
    )
    by_id = {s.id: s for s in sections}
    measured_ids = ("best", "cost-latency", "hardware", "savings", "neuronperf", "provenance")
    for sid in measured_ids:
        for t in by_id[sid].tables:
            assert not any(MARKER in c or "published" in c for r in t.rows for c in r), sid
            assert "published" not in t.classes
    assert "a100" not in {c for t in by_id["hardware"].tables for r in t.rows for c in r}
    pub = by_id["published"].tables[0]
    assert len(pub.rows) == len(refs) and all(r[0] == MARKER for r in pub.rows)
    plan_tables = by_id["plan"].tables
    assert any(t.classes and set(t.classes) == {"published"} for t in plan_tables)
    assert head["rows"] == len(measured) and head["published"] == len(refs)


def test_references_only_when_asked(machines, capsys):
    argv = [*map(str, machines), "--rate", "100", "--p99-ms", "200", "--format", "json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["published"] == []
    assert main([*argv, "--references"]) == 0
    pub = json.loads(capsys.readouterr().out)["published"]
    assert {p["hw_type"] for p in pub} >= {"l4", "t4", "inf2"}
    assert all(p["published"] and p["source"] for p in pub)


def test_report_gets_the_plan_view(machines, tmp_path, capsys):
    pytest.importorskip("plotly")
    out = tmp_path / "plan.html"
    argv = [*map(str, machines), "--rate", "100", "--p99-ms", "200", "--references"]
    assert main([*argv, "--report", str(out)]) == 0
    html, md = out.read_text(), out.with_suffix(".md").read_text()
    assert "Deployment plan" in html and "month vs p99 latency per hardware" in html
    assert "limit: p99 \\u2264 200 ms" in html  # plotly's JSON escapes ≤
    assert md.index("## Deployment plan") < md.index("## Best configuration")
    assert f"## Published figures ({MARKER}, not measured here)" in md


def test_harness_report_takes_the_load_flags(machines, tmp_path, capsys):
    from harness.report import main as report_main

    out = tmp_path / "r.html"
    base = [*map(str, machines), "--out", str(out), "--rate", "100"]
    assert report_main(base) == 2
    assert "--max-p99-ms" in capsys.readouterr().err
    assert report_main([*base, "--max-p99-ms", "200", "--references"]) == 0
    md = out.with_suffix(".md").read_text()
    assert "## Deployment plan" in md and "**→** classification · distilbert-sentiment" in md
