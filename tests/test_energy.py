"""Energy meters against a fake powercap tree, a stubbed NVML and a stubbed neuron-monitor; and a
run on this machine, whose columns stay empty where no meter reads."""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
import types
from pathlib import Path

import pandas as pd
import pytest

from core import energy
from core.energy import (
    MEASURED,
    NOT_MEASURED,
    RELATIVE,
    DeviceMeter,
    NeuronMonitorMeter,
    NvmlMeter,
    RaplMeter,
    Reading,
    energy_columns,
    neuron_power_percent,
)
from harness.results import COLUMNS, SCHEMA


# ----------------------------------------------------------------------------- fake sysfs
def zone(root: Path, name: str, label: str, uj: int, max_uj: int = 262143328850) -> Path:
    z = root / name
    z.mkdir(parents=True)
    (z / "name").write_text(label + "\n")
    (z / "energy_uj").write_text(f"{uj}\n")
    (z / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return z


def set_uj(z: Path, uj: int) -> None:
    """Replace the counter atomically: the poll thread never sees a half-written file."""
    tmp = z / "energy_uj.tmp"
    tmp.write_text(f"{uj}\n")
    os.replace(tmp, z / "energy_uj")


def test_rapl_sums_package_domains_only(tmp_path):
    (tmp_path / "intel-rapl").mkdir()  # the control type: no counter of its own
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    p1 = zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000)
    core = zone(tmp_path, "intel-rapl:0:0", "core", 0)  # part of package-0
    mmio = zone(tmp_path, "intel-rapl-mmio:0", "package-0", 0)  # package-0 again
    meter = RaplMeter.open(tmp_path, poll_s=0)
    assert meter is not None
    assert [z.name for z in meter.zones] == ["intel-rapl:0", "intel-rapl:1"]
    meter.start()
    set_uj(p0, 3_500_000)
    set_uj(p1, 6_000_000)
    set_uj(core, 9_000_000)
    set_uj(mmio, 9_000_000)
    r = meter.stop()
    assert r.joules == pytest.approx(3.5)
    assert r.kind == MEASURED
    assert "package-0" in r.source and "package-1" in r.source and "rapl" in r.source


def test_rapl_counts_across_a_wrap(tmp_path):
    max_uj = 10_000_000
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 9_000_000, max_uj)
    meter = RaplMeter.open(tmp_path, poll_s=0)
    meter.start()
    set_uj(p0, 9_800_000)
    meter.sample()  # what the poll thread does between start and stop
    set_uj(p0, 500_000)  # wrapped past max_energy_range_uj
    assert meter.stop().joules == pytest.approx(0.8 + (10.0 - 9.8) + 0.5)


def test_rapl_poll_thread_samples_long_windows(tmp_path):
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 0, 10_000_000)
    meter = RaplMeter.open(tmp_path, poll_s=0.01)
    meter.start()
    set_uj(p0, 8_000_000)
    # wait until the poll thread has seen 8 J, then wrap twice in total across two polls
    for _ in range(500):
        if meter._last == [8.0]:
            break
        time.sleep(0.01)
    assert meter._last == [8.0]
    set_uj(p0, 3_000_000)
    assert meter.stop().joules == pytest.approx(8.0 + 2.0 + 3.0)


def test_unreadable_rapl_is_no_meter(tmp_path):
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 1)
    (p0 / "energy_uj").unlink()
    (p0 / "energy_uj").mkdir()  # reading it fails, as a root-only file does for a user
    assert RaplMeter.open(tmp_path) is None
    garbled = zone(tmp_path, "intel-rapl:1", "package-1", 1)
    (garbled / "max_energy_range_uj").write_text("n/a")
    assert RaplMeter.open(tmp_path) is None
    assert RaplMeter.open(tmp_path / "absent") is None
    assert energy.meter_for("cpu", powercap_root=tmp_path / "absent") is None


@pytest.mark.not_root
def test_root_only_energy_uj_is_no_meter(tmp_path):
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 1)
    (p0 / "energy_uj").chmod(0)
    assert RaplMeter.open(tmp_path) is None


def test_meter_for_cpu_reads_the_given_powercap_root(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0", 1)
    assert isinstance(energy.meter_for("cpu", powercap_root=tmp_path), RaplMeter)


# ----------------------------------------------------------------------------- stubbed NVML
class NVMLError(Exception):
    pass


def fake_nvml(counters: dict[int, list[int]], *, supported: bool = True, init_ok: bool = True):
    """A pynvml stand-in: per GPU index, the millijoule values successive reads return."""
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError
    m.calls = {"shutdown": 0}
    reads = {i: iter(v) for i, v in counters.items()}
    uuids = {f"GPU-{i:04d}": i for i in counters}

    def init():
        if not init_ok:
            raise NVMLError("NVML Shared Library Not Found")

    def energy_mj(h):
        if not supported:
            raise NVMLError("Not Supported")
        return next(reads[h])

    def shutdown():
        m.calls["shutdown"] += 1

    m.nvmlInit = init
    m.nvmlShutdown = shutdown
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetHandleByUUID = lambda u: uuids[u]
    m.nvmlDeviceGetIndex = lambda h: h
    m.nvmlDeviceGetName = lambda h: b"NVIDIA L4"
    m.nvmlDeviceGetTotalEnergyConsumption = energy_mj
    return m


def test_nvml_reads_the_total_energy_counter_in_millijoules(monkeypatch):
    nvml = fake_nvml({0: [1_000, 1_000, 251_000]})  # probe, start, stop
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    meter = NvmlMeter.open(env={})
    assert meter is not None
    meter.start()
    r = meter.stop()
    assert r.joules == pytest.approx(250.0)
    assert r.source == "nvml total energy: GPU 0 (NVIDIA L4) (whole GPU)"
    meter.close()
    assert nvml.calls["shutdown"] == 1


def test_nvml_meters_cuda0_of_cuda_visible_devices(monkeypatch):
    nvml = fake_nvml({0: [0], 2: [0, 0, 5_000], 3: [0]})
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    meter = NvmlMeter.open(env={"CUDA_VISIBLE_DEVICES": "2,3"})
    meter.start()
    assert meter.stop().joules == pytest.approx(5.0)
    assert "GPU 2" in meter.source
    nvml = fake_nvml({3: [0, 0, 7_000]})
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    meter = NvmlMeter.open(env={"CUDA_VISIBLE_DEVICES": "GPU-0003"})
    meter.start()
    assert meter.stop().joules == pytest.approx(7.0)


@pytest.mark.parametrize("kw", [{"supported": False}, {"init_ok": False}])
def test_nvml_without_a_counter_is_no_meter(monkeypatch, kw):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml({0: [0, 0]}, **kw))
    assert NvmlMeter.open(env={}) is None


def test_nvml_not_installed_is_no_meter(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert NvmlMeter.open(env={}) is None
    assert energy.meter_for("cuda") is None


# ----------------------------------------------------------------------------- neuron-monitor
def test_neuron_power_is_a_percentage_and_gives_no_joules(tmp_path, monkeypatch):
    reports = [
        {"system_data": {"g": {"neuron_devices": [{"power_pct": 40.0}, {"power_pct": 60.0}]}}},
        {"system_data": {"g": {"neuron_devices": [{"power_pct": 50.0, "mem_ecc": 3}]}}},
    ]
    assert neuron_power_percent(reports[0]) == [40.0, 60.0]
    assert neuron_power_percent({"system_data": {"memory_info": {"used": 1}}}) == []
    script = tmp_path / "neuron-monitor"
    lines = "".join(json.dumps(r) + "\n" for r in reports)
    script.write_text(f"#!{sys.executable}\nimport sys, time\nsys.stdout.write({lines!r})\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    meter = energy.meter_for("neuron")
    assert isinstance(meter, NeuronMonitorMeter)
    meter.start()
    meter._thread.join(timeout=10)  # the stub prints its reports and exits
    r = meter.stop()
    assert r.kind == RELATIVE and r.joules is None
    assert "percentage of maximum power, not watts" in r.source and "mean 50.0 %" in r.source
    cols = energy_columns(r, 100)
    assert cols == {"energy_source": r.source}  # no joules claimed from a percentage


def test_no_neuron_monitor_is_no_meter(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert energy.meter_for("neuron") is None


# ----------------------------------------------------------------------------- columns
def test_energy_columns_per_input_and_per_billion():
    cols = energy_columns(Reading(720.0, "rapl: package-0", MEASURED, 10.0), 1000)
    assert cols["energy_j_per_input"] == pytest.approx(0.72)
    assert cols["kwh_per_1B"] == pytest.approx(0.72 * 1e9 / 3.6e6)  # 200 kWh
    assert cols["energy_source"] == "rapl: package-0"
    assert energy_columns(None, 1000) == {}
    assert energy_columns(Reading(None, "", MEASURED, 1.0), 10) == {}


def test_schema_ends_with_the_energy_columns():
    assert COLUMNS[-3:] == ["energy_j_per_input", "kwh_per_1B", "energy_source"]
    assert [SCHEMA[c] for c in COLUMNS[-3:]] == ["float", "float", "str"]


def test_describe_says_not_measured_or_the_range():
    assert energy.describe([{"energy_j_per_input": None}]) == NOT_MEASURED
    line = energy.describe(
        [
            {"energy_j_per_input": 0.5, "energy_source": "rapl: package-0"},
            {"energy_j_per_input": float("nan"), "energy_source": float("nan")},
        ]
    )
    assert line.startswith("energy: 0.5 J/input (138.9 kWh per 1B inputs; rapl: package-0)")


def test_device_meter_opens_where_it_runs_and_pickles_without_handles(tmp_path):
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    m = DeviceMeter("cpu", powercap_root=tmp_path)
    m.start()
    set_uj(p0, 2_000_000)
    assert m.stop().joules == pytest.approx(2.0)
    clone = pickle.loads(pickle.dumps(m))
    assert clone._inner is None and clone.device == "cpu"
    none = DeviceMeter("cpu", powercap_root=tmp_path / "absent")
    none.start()
    assert energy_columns(none.stop(), 10) == {}


def test_a_failing_meter_never_fails_the_run(tmp_path):
    p0 = zone(tmp_path, "intel-rapl:0", "package-0", 0)
    m = RaplMeter.open(tmp_path, poll_s=0)
    assert energy.start_meter(m) is m
    (p0 / "energy_uj").unlink()
    assert energy.stop_meter(m) is None


# ----------------------------------------------------------------------------- a run here
@pytest.fixture(scope="module")
def run_here(tmp_path_factory):
    """One fake-engine harness.run on this machine: (output dir, what it printed)."""
    import contextlib
    import io

    from harness.run import main

    out = tmp_path_factory.mktemp("energy-run")
    argv = ["--engine", "fake", "--model", "distilbert-sentiment-tiny", "--num-samples", "32"]
    argv += [
        "--inputs-per-request",
        "2,4",
        "--duration",
        "0.3",
        "--min-calls",
        "2",
        "--warmup",
        "1",
    ]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):  # rich prints to whatever sys.stdout is then
        assert main([*argv, "--output-dir", str(out)]) == 0
    return out, buf.getvalue()


def test_run_here_leaves_energy_empty_or_measured_and_report_says_so(run_here):
    """On this VM nothing is readable (no /sys/class/powercap): the columns stay empty and the
    report says "not measured". Where a meter does read, the columns are filled instead."""
    out, printed = run_here
    df = pd.read_csv(out / "results.csv")
    md = (out / "report.md").read_text()
    readable = energy.meter_for("cpu") is not None
    if readable:
        assert df["energy_j_per_input"].notna().all() and df["energy_source"].notna().all()
        assert "J/input" in printed and "Energy per input" in md
    else:
        assert df[["energy_j_per_input", "kwh_per_1B", "energy_source"]].isna().all().all()
        assert NOT_MEASURED in printed
        assert NOT_MEASURED in md


def test_report_shows_energy_beside_cost_where_rows_have_it(run_here, tmp_path):
    from analysis import reporting as report

    out, _ = run_here
    df = pd.read_csv(out / "results.csv")
    df["energy_j_per_input"] = [0.25, 0.125]
    df["kwh_per_1B"] = df["energy_j_per_input"] * 1e9 / 3.6e6
    df["energy_source"] = "rapl: package-0 (whole CPU package energy, all processes)"
    df.to_csv(tmp_path / "results.csv", index=False)
    html, md_path = report.write_report([tmp_path / "results.csv"], tmp_path / "report.html")
    md = md_path.read_text()
    assert "## Energy per input" in md and NOT_MEASURED not in md
    section = md.split("## Energy per input")[1].split("\n## ")[0]
    assert "| J / input | kWh / 1B inputs | $ / 1B inputs |" in section
    lines = [ln for ln in section.splitlines() if "rapl: package-0" in ln]
    assert [ln.split(" | ")[1] for ln in lines] == ["0.1250", "0.2500"]  # lowest first
    assert "69.4" in lines[1] or "69.4" in section  # 0.25 J/input = 69.4 kWh per 1B
    if html is not None:
        assert "Energy per input" in html.read_text()
