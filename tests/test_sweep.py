import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis import checks
from harness.scenarios.http import Search

ROOT = Path(__file__).resolve().parent.parent


def plateau(cap: int, noise: float = 0.0):
    """Throughput that rises with VUs up to `cap`, with alternating +-noise on repeats."""
    calls = {"n": 0}

    def measure(vus: int) -> list[float]:
        out = []
        for _ in range(2):
            calls["n"] += 1
            sign = 1 if calls["n"] % 2 else -1
            out.append(100.0 * min(vus, cap) * (1 + sign * noise))
        return out

    return measure


def run(search: Search, measure) -> int:
    """Drive the search's steps as the HTTP plan does; `measure(vus)` gives the repeats'
    throughputs. Returns the best VUs."""
    steps = search.steps()
    try:
        vus = next(steps)
        while True:
            vus = steps.send(measure(vus))
    except StopIteration:
        pass
    return search.best()


def test_search_doubles_then_bisects_and_returns_a_measured_point():
    s = Search(vus_start=1, vus_max=256, improvement=0.02)
    best = run(s, plateau(12))
    assert best in s.points  # the seed returned a VU count it never measured
    assert {1, 2, 4, 8, 16} <= set(s.points)
    assert 8 < best <= 16 and s.thr(best) == max(s.thr(v) for v in s.points)


def test_noise_margin_from_repeats_stops_chasing_noise():
    # repeats differ by +-4%: a strict '>' on single runs would keep doubling on noise alone
    s = Search(vus_start=1, vus_max=1024, improvement=0.02)
    run(s, plateau(4, noise=0.04))
    assert s.margin >= 0.08 - 1e-9
    assert max(s.points) <= 16


def test_search_respects_vus_max():
    s = Search(vus_start=1, vus_max=8, improvement=0.02)
    run(s, plateau(1000))
    assert max(s.points) == 8


def rows(**kw):
    base = dict(
        hw_type="cpu",
        engine="fake",
        batch_size=8,
        inputs_per_request=1,
        vus=1,
        throughput_req_per_sec=10.0,
        failed_requests=0,
        total_requests=100,
        invalid_embeddings=0,
        task="classification",
        accuracy=0.6,
    )
    base.update(kw)
    return base


def test_checks_flag_monotonic_vus_failures_and_accuracy():
    df = pd.DataFrame(
        [rows(vus=v, throughput_req_per_sec=10 * v) for v in (1, 2, 4)]
        + [
            rows(batch_size=32, vus=v, throughput_req_per_sec=t)
            for v, t in ((1, 10), (2, 30), (4, 25))
        ]
    )
    check, table = checks.enough_vus(df)
    assert not check.passed and table["batch_size"].tolist() == [8]
    assert checks.failed_requests(df).passed
    bad = pd.concat([df, pd.DataFrame([rows(vus=8, failed_requests=3, accuracy=0.2)])])
    assert not checks.failed_requests(bad).passed
    assert "3 of" in checks.failed_requests(bad).detail
    assert not checks.accuracy_stable(bad).passed


def _cmd(out, extra=()):
    return [
        sys.executable,
        *"-m harness.sweep --engine fake --model distilbert-sentiment-tiny --max-batch-sizes 4 --vus-max 8 --iterations 40 --max-duration 5 --repeats 1 --no-ceiling --num-samples 32 --fake-latency-ms 5 --output-dir".split(),
        str(out),
        *extra,
    ]


def test_sweep_end_to_end_and_resume(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        _cmd(tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "best" in r.stdout and "sanity checks" in r.stdout and "did we try enough VUs" in r.stdout
    )
    df = pd.read_csv(tmp_path / "results.csv")
    assert (df["mode"] == "http").all() and (df["failed_requests"] == 0).all()
    assert (df["total_requests"] == 40).all() and df["padding_ratio"].notna().all()
    assert (tmp_path / "checks.json").exists()
    again = subprocess.run(
        _cmd(tmp_path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert again.returncode == 0
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(df)  # nothing measured twice


def test_interrupted_sweep_resumes_without_losing_or_repeating(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = _cmd(tmp_path, ["--vus-max", "16", "--fake-latency-ms", "20"])
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    csv = tmp_path / "results.csv"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if csv.exists() and len(pd.read_csv(csv)) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    before = pd.read_csv(csv)
    assert len(before) >= 2
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    after = pd.read_csv(csv)
    assert not after["config_key"].duplicated().any()
    assert set(before["config_key"]) <= set(after["config_key"])
    kept = after[after["config_key"].isin(before["config_key"])]
    assert kept["timestamp"].tolist() == before["timestamp"].tolist()


def test_unreachable_url_is_one_line(tmp_path):
    r = subprocess.run(
        _cmd(tmp_path, ["--url", "http://127.0.0.1:9"]),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert "cannot reach http://127.0.0.1:9" in r.stderr and "Traceback" not in r.stderr


def test_open_loop_sweep_reports_lateness(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        _cmd(tmp_path, ["--rate", "40", "--max-duration", "2"]),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "open loop at 40 req/s" in r.stdout and "sent late" in r.stdout
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == 1 and df["late_requests"].notna().all()
    # arrivals come from a seeded Poisson schedule (~80 in 2 s): never more than scheduled
    assert 1 <= df["total_requests"].iloc[0] <= 130


def _server_child(pid: int, timeout_s: float = 120.0):
    """The `harness.serve` process a sweep started, once it exists."""
    import psutil

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                if "harness.serve" in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.2)
    raise AssertionError("the sweep started no server")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_sweep_leaves_no_server_behind_and_logs_in_its_folder(tmp_path, sig):
    import psutil

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = _cmd(tmp_path, ["--vus-max", "32", "--fake-latency-ms", "20", "--iterations", "4000"])
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        server = _server_child(proc.pid)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        gone, alive = psutil.wait_procs([server], timeout=30)
        assert server in gone, "the sweep's server outlived it"
    finally:
        proc.kill()
    assert list((tmp_path / "logs").glob("serve-batch*.log"))  # the log stays with the rows


def test_a_url_rows_engine_is_what_the_server_reported_else_remote():
    from loadgen.endpoint import remote_identity

    ours = {"engine": "onnx", "precision": "int8", "variant": "optimized", "weights": "local"}
    assert remote_identity(ours, "kserve") == {
        "engine": "onnx",
        "precision": "int8",
        "image": "onnx/int8/optimized",
    }
    peer = remote_identity({}, "openai")  # Infinity, TEI: no provenance endpoint
    assert peer["engine"] == "remote" and peer["precision"] is None
    assert peer["image"] == "remote/openai"
