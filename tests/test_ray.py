"""The Ray executor against a real multi-node Ray cluster on this machine (one for the module).

Three nodes with distinct resources: A (the head) and B are CPU nodes (A alone has `pool1`, A
and a node the fault test adds have `pair`, both have `pool3`), L is labelled as an L4 GPU node
that detects a CPU. Every check is of behaviour (where rows land, what they say), never of time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from harness import run as run_cmd

ROOT = Path(__file__).resolve().parent.parent
FAKE = [
    "--engine",
    "fake",
    "--model",
    "distilbert-sentiment-tiny",
    "--weights",
    "random",
    "--dataset",
    "synthetic",
    "--num-samples",
    "16",
    "--min-calls",
    "2",
    "--warmup",
    "1",
]


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        head_node_args={
            # the head is node A: one node fewer to start on this 2-core machine
            "num_cpus": 1,
            "resources": {"pool1": 1, "pool3": 1, "pair": 1},
            "include_dashboard": False,
            # a killed node is noticed in seconds, not the default half minute
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    nodes = {
        "A": c.head_node,
        "B": c.add_node(num_cpus=1, resources={"pool3": 1}),
        "L": c.add_node(num_cpus=1, num_gpus=1, resources={"accelerator_type:L4": 1}),
    }
    c.wait_for_nodes()
    c.ids = {k: n.node_id for k, n in nodes.items()}
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def ray_run(cluster, out: Path, *extra: str) -> int:
    return run_cmd.main(
        ["--executor", "ray", "--ray-address", cluster.address, "--output-dir", str(out)]
        + ["--artifacts-dir", str(out / "artifacts"), *extra]
    )


def rows(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv")


def only(resource: str) -> list[str]:
    return ["--ray-resources", "cpu=" + json.dumps({"CPU": 1, resource: 1})]


@pytest.mark.ray
def test_points_land_on_the_nodes_their_resources_select(cluster, tmp_path):
    out = tmp_path / "a"
    flags = [*FAKE, "--hw", "cpu", "--inputs-per-request", "1,2,4", "--duration", "0.2"]
    assert ray_run(cluster, out, *flags, *only("pool1")) == 0
    df = rows(out)
    assert len(df) == 3 and set(df["node"]) == {cluster.ids["A"]}
    assert set(df["executor"]) == {"ray"} and set(df["hw_type"]) == {"cpu"}
    assert df["error"].isna().all()


@pytest.mark.ray
def test_rows_equal_the_local_executors_in_columns_and_configurations(cluster, tmp_path):
    flags = [
        *FAKE[2:],  # the tiny real model, eager
        "--engine",
        "eager",
        "--hw",
        "cpu",
        "--inputs-per-request",
        "1,4",
        "--duration",
        "0.2",
    ]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert run_cmd.main([*flags, "--output-dir", str(local)]) == 0
    assert ray_run(cluster, remote, *flags) == 0
    a, b = rows(local), rows(remote)
    assert list(a.columns) == list(b.columns)
    assert sorted(a["config_key"]) == sorted(b["config_key"])
    same = ["hw_type", "engine", "precision", "batch_size", "mode", "weights", "avg_tokens"]
    key = "config_key"
    pd.testing.assert_frame_equal(
        a.sort_values(key)[[key, *same]].reset_index(drop=True),
        b.sort_values(key)[[key, *same]].reset_index(drop=True),
    )
    assert set(a["executor"]) == {"local"} and set(b["executor"]) == {"ray"}
    assert set(a["node"]) == set(a["host_name"])  # local rows name the host
    assert set(b["node"]) <= {cluster.ids["A"], cluster.ids["B"]}  # cpu: never the L4 node


@pytest.mark.ray
def test_unsatisfiable_targets_are_skipped_with_their_reason(cluster, tmp_path, capsys):
    out = tmp_path / "skip"
    flags = [*FAKE, "--hw", "cpu,inf2", "--precision", "fp32,fp16", "--duration", "0.2"]
    assert ray_run(cluster, out, *flags, "--inputs-per-request", "1", *only("pool1")) == 0
    said = capsys.readouterr().out
    assert "skipped cpu/fake/fp16: --hw cpu does not support --precision fp16" in said
    assert (
        'skipped inf2/fake/fp32: no node in the cluster has the Ray resources {"neuron_cores"'
        in said
    )
    assert said.count("skipped cpu/fake/fp16") == 1
    df = rows(out)
    assert set(df["hw_type"]) == {"cpu"} and len(df) == 1
    # an engine that cannot run on the hardware at all: said once, nothing else runs
    code = ray_run(cluster, tmp_path / "trt", *FAKE[2:], "--engine", "trt", "--hw", "cpu")
    assert code == 2
    assert "skipped cpu/trt/fp32: --engine trt runs on cuda, not on cpu" in capsys.readouterr().out


@pytest.mark.ray
def test_a_node_that_detects_other_hardware_than_its_label_fails_that_point(cluster, tmp_path):
    out = tmp_path / "l4"
    assert ray_run(cluster, out, *FAKE, "--hw", "l4", "--inputs-per-request", "1") == 0
    df = rows(out)
    assert len(df) == 1
    row = df.iloc[0]
    assert "selected as l4 by its Ray resources but detects cpu" in row["error"]
    assert row["node"] == cluster.ids["L"]
    assert pd.isna(row["hw_type"])  # a row never claims hardware its node did not detect


@pytest.mark.ray
def test_the_best_points_artifact_comes_home_with_its_manifest(cluster, tmp_path):
    out = tmp_path / "onnx"
    flags = [*FAKE[2:], "--engine", "onnx", "--hw", "cpu", "--inputs-per-request", "1,4"]
    assert ray_run(cluster, out, *flags, "--duration", "0.2", *only("pool1")) == 0
    row = rows(out).iloc[0]
    exported = Path(json.loads(row["config_json"])["engine"]["artifact"])
    home = out / "artifacts" / "cpu" / exported.relative_to(out / "artifacts")
    assert (home / "manifest.json").read_bytes() == (exported / "manifest.json").read_bytes()
    assert sorted(p.name for p in home.iterdir()) == sorted(p.name for p in exported.iterdir())


def _keys(out: Path) -> list[str]:
    return list(rows(out)["config_key"]) if (out / "results.csv").exists() else []


def _wait_rows(out: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(_keys(out)) < n:
        assert time.monotonic() < deadline, "no rows appeared"
        time.sleep(0.2)


@pytest.mark.ray
def test_killing_a_worker_node_mid_run_loses_no_row(cluster, tmp_path):
    victim = cluster.add_node(num_cpus=1, resources={"pair": 1})
    cluster.wait_for_nodes()
    out = tmp_path / "kill"
    sizes = ",".join(str(b) for b in range(1, 7))
    flags = [
        *FAKE,
        "--hw",
        "cpu",
        "--inputs-per-request",
        sizes,
        "--duration",
        "0.4",
        *only("pair"),
    ]
    result: dict[str, int] = {}
    th = threading.Thread(target=lambda: result.update(code=ray_run(cluster, out, *flags)))
    th.start()
    deadline = time.monotonic() + 120
    while victim.node_id not in set(rows(out)["node"]) if (out / "results.csv").exists() else 1:
        assert time.monotonic() < deadline, "the added node measured nothing"
        time.sleep(0.2)
    cluster.remove_node(victim, allow_graceful=False)  # mid-point: it is measuring its next
    th.join(timeout=200)
    assert not th.is_alive() and result["code"] == 0
    df = rows(out)
    assert sorted(df["batch_size"]) == list(range(1, 7))  # every point has exactly one row
    assert df["config_key"].is_unique
    after = df[df["node"] != victim.node_id]
    # the point it was measuring is retried on A, or recorded as failed with the reason
    assert set(after["node"].dropna()) <= {cluster.ids["A"]}
    lost = df[df["error"].notna()]
    assert all("lost" in e or "no cpu node" in e for e in lost["error"])


@pytest.mark.ray
def test_kill_9_of_the_driver_then_rerun_loses_and_repeats_no_row(cluster, tmp_path):
    out = tmp_path / "resume"
    sizes = ",".join(str(b) for b in range(1, 7))
    argv = [
        sys.executable,
        "-m",
        "harness.run",
        "--executor",
        "ray",
        "--ray-address",
        cluster.address,
        "--output-dir",
        str(out),
        *FAKE,
        "--hw",
        "cpu",
        "--inputs-per-request",
        sizes,
        "--duration",
        "0.4",
        *only("pool3"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_rows(out, 2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _keys(out)
    assert 2 <= len(before) < 6
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    df = rows(out)
    assert df["config_key"].is_unique and len(df) == 6
    assert sorted(df["batch_size"]) == list(range(1, 7))
    assert list(df["config_key"])[: len(before)] == before  # kept, not redone
    assert done.stdout.count("already measured (resume)") == len(before)


@pytest.mark.ray
def test_a_targets_points_are_shared_by_its_nodes_each_measuring_one_at_a_time(
    cluster, tmp_path, capsys
):
    """The points go to both nodes the resources select (each point once, on one node), and the
    executor says what each node does: one benchmark at a time (its actor holds the whole node)."""
    out = tmp_path / "shared"
    flags = [*FAKE, "--hw", "cpu", "--inputs-per-request", "1,2,3,4,5,6", "--duration", "0.2"]
    assert ray_run(cluster, out, *flags, *only("pool3")) == 0
    assert "cpu: 2 node(s), one benchmark at a time on each" in capsys.readouterr().out
    df = rows(out)
    assert sorted(df["batch_size"]) == [1, 2, 3, 4, 5, 6] and df["config_key"].is_unique
    assert df["error"].isna().all()
    assert set(df["node"]) == {cluster.ids["A"], cluster.ids["B"]}  # both nodes measured


def test_executor_ray_without_ray_is_one_line_naming_the_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code = run_cmd.main([*FAKE, "--executor", "ray", "--hw", "cpu", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert 'ray is not installed; install it with: pip install -e ".[ray]"' in err


def test_help_and_the_local_executor_never_import_ray(tmp_path):
    code = (
        "import sys, harness.run, harness.sweep\n"
        "harness.run.build_parser().format_help(); harness.sweep.build_parser().format_help()\n"
        f"harness.run.main({[*FAKE, '--inputs-per-request', '1', '--duration', '0.1', '--output-dir', str(tmp_path)]!r})\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
    df = rows(tmp_path)
    assert set(df["executor"]) == {"local"} and df["node"].notna().all()


def test_a_target_list_needs_the_ray_executor(capsys, tmp_path):
    code = run_cmd.main([*FAKE, "--hw", "cpu,l4", "--output-dir", str(tmp_path)])
    assert code == 2
    assert "--hw cpu,l4: a list of targets needs --executor ray" in capsys.readouterr().err


@pytest.fixture
def endpoint():
    """Our server over the fake classifier, in this process: the one endpoint under load."""
    from tests.test_server import Running

    with Running("distilbert-sentiment-tiny", latency_ms=2.0) as s:
        yield s


SWEEP_URL = [
    *FAKE[2:10],  # the tiny classifier's model, weights and workload flags
    "--max-batch-sizes",
    "8",
    "--vus-start",
    "4",
    "--vus-max",
    "4",
    "--repeats",
    "1",
    "--iterations",
    "60",
]


@pytest.mark.ray
def test_two_load_generators_on_two_nodes_drive_one_url_and_merge(cluster, endpoint, tmp_path):
    from harness import sweep

    out = tmp_path / "dist"
    argv = [*SWEEP_URL, "--url", endpoint.url, "--executor", "ray"]
    argv += ["--ray-address", cluster.address, "--load-workers", "2", "--output-dir", str(out)]
    assert sweep.main(argv) == 0
    df = rows(out)
    assert len(df) == 1
    r = df.iloc[0]
    assert r["load_workers"] == 2 and r["executor"] == "ray"
    nodes = r["node"].split(",")
    cpu_only = {cluster.ids[k] for k in "AB"}
    assert len(set(nodes)) == 2 and set(nodes) <= cpu_only  # never the accelerator node
    ceilings = json.loads(r["loadgen_ceilings_rps"])
    assert len(ceilings) == 2 and all(c > 0 for c in ceilings)
    assert r["loadgen_ceiling_rps"] == pytest.approx(sum(ceilings))
    assert r["vus"] == 4 and r["total_requests"] == r["successful_requests"] == 60
    # the row names what the endpoint reported running, not the command's engine flag (eager)
    assert r["engine"] == "fake" and r["weights"] == "none (fake engine)"
    assert (out / "checks.json").exists()  # written here, by the one process that plans


def test_load_workers_needs_the_ray_executor_and_a_url(capsys, tmp_path):
    from harness import sweep

    code = sweep.main([*SWEEP_URL, "--load-workers", "2", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--load-workers runs load generators on a Ray cluster" in err
