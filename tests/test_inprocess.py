import pytest

from core.errors import ConfigError, EngineError
from engines import EngineConfig
from engines.registry import engine_config
from harness.scenarios.inprocess_loop import InprocessPoint, run_inprocess
from workloads import WorkloadSpec
from workloads.text import synthetic


@pytest.fixture(scope="module")
def workload(tiny_tokenizer):
    return synthetic(WorkloadSpec(n=64, tokens_mean=30, tokens_min=10), tiny_tokenizer, 512)


def fake(latency_ms=10.0, per_input_ms=0.0):
    return engine_config(
        "fake",
        "distilbert-sentiment-tiny",
        fake_latency_ms=latency_ms,
        fake_per_input_ms=per_input_ms,
    )


def test_fake_engine_latency_and_throughput_are_what_was_configured(workload):
    res = run_inprocess(
        fake(20.0), workload, InprocessPoint(inputs_per_request=4, duration=1.0, min_calls=10)
    )
    assert res.forward.p50 >= 19.0  # a 20 ms sleep never returns sooner
    assert res.e2e.p50 >= res.forward.p50
    # one worker, 4 inputs per call of at least 20 ms: never more than 200 inputs/s (+ the
    # 1-second buckets' rounding); and the bucketed rate agrees with inputs / window
    assert res.throughput.avg <= 205
    assert 0.5 <= res.throughput.avg / (res.inputs / res.duration_s) <= 2.0
    assert res.inputs == 4 * res.calls and res.calls >= 10
    assert res.invalid == 0 and res.peak_rss_mb > 0


def test_model_copies_and_workers_scale_a_sleeping_engine(workload):
    one = run_inprocess(fake(20.0), workload, InprocessPoint(inputs_per_request=1, duration=1.0))
    four = run_inprocess(
        fake(20.0),
        workload,
        InprocessPoint(inputs_per_request=1, n_models=2, workers_per_model=2, duration=1.0),
    )
    # 4 sleeping callers vs 1, measured in the same test: ideal 4x, asserted with a wide margin
    assert four.throughput.avg > 2.0 * one.throughput.avg


def test_min_calls_extends_a_short_duration(workload):
    res = run_inprocess(
        fake(30.0), workload, InprocessPoint(inputs_per_request=1, duration=0.05, min_calls=12)
    )
    assert res.calls >= 12 and res.duration_s >= 12 * 0.03


def test_deadline_stops_a_run_that_cannot_reach_min_calls(workload):
    res = run_inprocess(
        fake(50.0),
        workload,
        InprocessPoint(inputs_per_request=1, duration=0.1, min_calls=10_000, max_duration=0.5),
    )
    assert res.hit_deadline and res.calls < 10_000


def test_processes_mode(workload):
    res = run_inprocess(
        fake(10.0),
        workload,
        InprocessPoint(inputs_per_request=2, n_models=2, duration=1.0, processes=True, min_calls=5),
    )
    assert res.calls >= 5 and res.inputs == 2 * res.calls
    assert res.engine_info.get("model_source") == "fake"


def test_eager_tiny_end_to_end(workload):
    cfg = EngineConfig(engine="eager", model="distilbert-sentiment-tiny")
    res = run_inprocess(
        cfg, workload, InprocessPoint(inputs_per_request=8, duration=0.5, min_calls=3)
    )
    assert res.calls >= 3 and res.forward.p50 > 0
    assert 0 <= res.padding_ratio < 1
    assert res.engine_info["weights"] == "random"


def test_engine_failure_is_reported_with_cause(workload):
    cfg = EngineConfig(engine="eager", model="distilbert-sentiment-tiny", weights="pretrained")
    with pytest.raises(EngineError, match="no pretrained weights"):
        run_inprocess(cfg, workload, InprocessPoint(inputs_per_request=1, duration=0.1))


def test_invalid_config_values():
    with pytest.raises(ConfigError, match="--inputs-per-request must be >= 1"):
        InprocessPoint(inputs_per_request=0)
    with pytest.raises(ConfigError, match="--duration"):
        InprocessPoint(inputs_per_request=1, duration=0)
