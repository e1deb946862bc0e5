"""The Ray executor's pieces that need no cluster: node selection, target lists, the retry rule."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from core.errors import ConfigError
from harness.config import ExecutorConfig, TargetConfig
from harness.executors.node import Reply
from harness.executors.ray_cluster import (
    Job,
    Pool,
    plan_targets,
    select_nodes,
    selectors,
)
from harness.hardware import PROFILES
from harness.runner import Measurement, Point


class _RayError(Exception):
    pass


class FakeRay:
    """Just what Pool uses: the error a lost actor raises."""

    class exceptions:
        RayError = _RayError


class FakeRef:
    """What Pool reads of a call's ObjectRef: its future (here resolved at once)."""

    def __init__(self, call):
        self.call = call

    def future(self) -> Future:
        done: Future = Future()
        try:
            done.set_result(self.call())
        except _RayError as e:
            done.set_exception(e)
        return done


class FakeActor:
    def __init__(self, behaviour: str, node: str):
        self.behaviour, self.node = behaviour, node
        self.calls = 0
        outer = self

        class _Method:
            @staticmethod
            def remote(name, args, point):
                outer.calls += 1

                def result():
                    if outer.behaviour == "dies":
                        raise _RayError("actor died")
                    if outer.behaviour == "refuses":
                        return Reply(error=f"{outer.node} detects other hardware")
                    return Reply(Measurement({"executor": "ray", "node": outer.node}))

                return FakeRef(result)

        self.measure = _Method()


def run_one(*behaviours: str) -> tuple[Measurement, list[FakeActor]]:
    actors = [FakeActor(b, f"node{i}") for i, b in enumerate(behaviours)]
    got: Future = Future()
    pool = Pool(
        FakeRay,
        "cpu",
        [(a, a.node) for a in actors],
        lambda job, m, text: got.set_result(m),
        lambda job: None,
    )
    job = Job(TargetConfig(hw="cpu", engine="fake", precision="fp32"), Point({"b": 1}, "b1"))
    pool.submit(job)
    m = got.result(timeout=10)
    pool.close()
    return m, actors


def test_a_point_whose_node_dies_is_retried_once_on_another():
    # either node may take the point first; the one that dies hands it to the other
    m, actors = run_one("dies", "works")
    assert m.row == {"executor": "ray", "node": "node1"}
    assert actors[0].calls <= 1 and actors[1].calls == 1


def test_a_point_lost_twice_is_recorded_as_failed_with_the_reasons():
    m, actors = run_one("dies", "dies")
    assert m.row["error"].count("lost mid-point") == 2
    assert [a.calls for a in actors] == [1, 1]


def test_a_point_with_no_node_left_fails_with_the_reason():
    m, _ = run_one("dies")
    assert "node node0 was lost mid-point" in m.row["error"]
    assert m.row["engine"] == "fake" and "hw_type" not in m.row


def test_a_node_that_refuses_the_point_hands_it_to_another():
    m, _ = run_one("refuses", "works")
    assert m.row["node"] == "node1"
    m, _ = run_one("refuses", "refuses")
    reasons = sorted(m.row["error"].split("; "))
    assert reasons == ["node0 detects other hardware", "node1 detects other hardware"]


def test_hardware_profiles_name_the_ray_resources_that_select_them():
    assert PROFILES["t4"].ray_resources == {"GPU": 1, "accelerator_type:T4": 0.001}
    assert PROFILES["l4"].ray_resources == {"GPU": 1, "accelerator_type:L4": 0.001}
    assert PROFILES["inf2"].ray_resources == {"neuron_cores": 1}
    assert PROFILES["cpu"].ray_resources == {"CPU": 1}


NODES = [
    {"NodeID": "head", "Alive": True, "Resources": {"memory": 1}},
    {"NodeID": "cpu", "Alive": True, "Resources": {"CPU": 4}},
    {"NodeID": "gone", "Alive": False, "Resources": {"CPU": 4}},
    {"NodeID": "l4", "Alive": True, "Resources": {"CPU": 4, "GPU": 1, "accelerator_type:L4": 1}},
    {"NodeID": "inf2", "Alive": True, "Resources": {"CPU": 4, "neuron_cores": 2}},
]


@pytest.mark.parametrize(
    "hw, nodes", [("cpu", ["cpu"]), ("l4", ["l4"]), ("t4", []), ("inf2", ["inf2"])]
)
def test_nodes_are_selected_by_their_resources(hw, nodes):
    sel = selectors(ExecutorConfig())[hw]
    picked = select_nodes(NODES, sel, PROFILES[hw].device)
    assert [n["NodeID"] for n in picked] == nodes  # cpu never lands on an accelerator node


def test_ray_resources_override_and_its_one_line_error():
    sel = selectors(ExecutorConfig(ray_resources=('l4={"GPU": 1, "my_l4": 1}',)))
    assert sel["l4"] == {"GPU": 1.0, "my_l4": 1.0}
    for bad in ("l4", "zz={}", 'l4={"GPU": "one"}', "l4=[1]"):
        with pytest.raises(ConfigError, match="--ray-resources"):
            selectors(ExecutorConfig(ray_resources=(bad,)))


def test_impossible_targets_are_skipped_once_each_with_the_reason():
    from rich.console import Console

    console = Console(record=True, width=200)
    target = TargetConfig(
        hw="cpu,inf2,l4",
        engine="eager,neuron",
        precision="fp32,fp16",
        task="classification",
        model=None,
        attn="sdpa",
    )
    kept = plan_targets(target, console)
    said = console.export_text()
    assert [t.name for t in kept] == [
        "cpu/eager/fp32",
        "inf2/neuron/fp32",
        "inf2/neuron/fp16",
        "l4/eager/fp32",
        "l4/eager/fp16",
    ]
    assert "skipped cpu/eager/fp16: --hw cpu does not support --precision fp16" in said
    assert "skipped cpu/neuron/fp32: --engine neuron runs on neuron, not on cpu" in said
    assert "skipped inf2/eager/fp32: --engine eager runs on cpu/cuda, not on inf2" in said
    assert "skipped l4/neuron/fp32: --engine neuron runs on neuron, not on l4" in said
    assert said.count("skipped cpu/eager/fp16") == 1


def test_executor_ray_needs_named_hardware():
    target = TargetConfig(hw="auto", engine="fake", precision="fp32")
    with pytest.raises(ConfigError, match="--executor ray needs --hw"):
        plan_targets(target, None)


def test_a_nodes_summary_files_come_home_with_the_text(monkeypatch, tmp_path):
    """checks.json is written on the node that planned the target; the driver writes it."""
    from harness.executors.node import NodeWorker
    from harness.runner import Scenario

    class Writes(Scenario):
        def __init__(self, target):
            self.target = target

        def plan(self):
            yield from ()

        def measure(self, point, progress):
            raise AssertionError

        def summarize(self, console, rows, out):
            path = out / "checks.json"
            with open(path, "w") as f:
                f.write(f'{{"rows": {len(rows)}}}')
            console.print(f"checks: {path}")

    driver_dir = str(tmp_path / "driver")
    target = TargetConfig(hw="cpu", engine="fake", artifacts_dir="/node/only")
    w = NodeWorker("cpu", lambda t, c: Writes(t), "n1")
    monkeypatch.setattr(w, "_scenario", lambda key, t: w.scenarios.setdefault(key, Writes(t)))
    w._scenario("t", target)
    text, files = w.summarize("t", [{}, {}], driver_dir)
    assert files == {"checks.json": b'{"rows": 2}'}
    assert f"checks: {driver_dir}/checks.json" in text
    assert target.artifacts_dir == "/node/only"  # the scenario's own config is left as it was
