"""harness.compare on results sets written here: verdicts, the quality gate, the exit-code
gate, the output formats and the one-line errors."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from helpers import schema_row

from analysis import comparison as cmp
from analysis.frames import load, prepare
from core.stats import Interval, t_quantile_975
from harness.compare import main
from harness.results import COLUMNS

PRICE = 0.5  # $/h


def row(thr: float, p99: float, repeat: int = 0, **kw) -> dict:
    """One result row; the cost follows the throughput."""
    r = schema_row(
        mode="inprocess",
        inputs_per_request=1,
        vus=1,
        workers_per_model=1,
        repeat=repeat,
        throughput_req_per_sec=thr,
        p99_latency_ms=p99,
        price_per_hour=PRICE,
    )
    r["1B_cost"] = PRICE * 1e9 / (3600 * thr)
    r.update(kw)
    return r


def repeats(thr=(10.0, 11.0, 12.0), p99=(100.0, 104.0, 98.0), **kw) -> list[dict]:
    return [row(t, p, i, **kw) for i, (t, p) in enumerate(zip(thr, p99, strict=True))]


def write(path, rows: list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


def frame(rows: list[dict]) -> pd.DataFrame:
    return prepare(pd.DataFrame(rows, columns=COLUMNS))


def verdicts(c: cmp.Comparison, point: int = 0) -> dict[str, str]:
    return {m.metric.column: m.verdict for m in c.points[point].metrics}


def test_identical_sets_show_no_difference(tmp_path, capsys):
    a = write(tmp_path / "a" / "results.csv", repeats())
    b = write(tmp_path / "b" / "results.csv", repeats())
    c = cmp.compare(load([a.parent]), load([b.parent]))
    assert len(c.points) == 1
    assert set(verdicts(c).values()) == {cmp.NO_DIFFERENCE}
    assert c.points[0].metric("throughput_req_per_sec").ratio.mean == pytest.approx(1.0)
    assert c.exit_code == 0
    assert main([str(a.parent), str(b.parent)]) == 0
    out = capsys.readouterr().out
    assert "no difference at 95 %" in out
    assert "regression gate (threshold 5%): passed" in out


def test_twice_as_fast_with_repeats_is_faster_and_better():
    a = frame(repeats())
    b = frame(repeats(thr=(20.0, 22.0, 24.0), p99=(50.0, 52.0, 49.0)))
    c = cmp.compare(a, b)
    assert verdicts(c) == {
        "throughput_req_per_sec": "faster",
        "p99_latency_ms": "faster",
        "1B_cost": "better",
    }
    thr = c.points[0].metric("throughput_req_per_sec")
    assert thr.a.method == thr.b.method == "t(repeats)"
    assert thr.ratio.mean == pytest.approx(2.0)
    assert c.exit_code == 0
    # and the other way round: A over B is slower and worse, beyond any threshold
    back = cmp.compare(b, a)
    assert verdicts(back) == {
        "throughput_req_per_sec": "slower",
        "p99_latency_ms": "slower",
        "1B_cost": "worse",
    }
    assert back.exit_code == 1
    assert any("throughput B/A 0.500" in r for r in back.regressions)
    assert any("p99 B/A 2.0" in r for r in back.regressions)


def test_the_ratio_interval_by_hand():
    """A = 10, 11, 12 (sd 1), B = 20, 22, 24 (sd 2), n = 3 each: log-delta with t(2)."""
    c = cmp.compare(frame(repeats()), frame(repeats(thr=(20.0, 22.0, 24.0))))
    r = c.points[0].metric("throughput_req_per_sec").ratio
    se_a, se_b = 1 / math.sqrt(3), 2 / math.sqrt(3)
    se_log = math.sqrt((se_a / 11) ** 2 + (se_b / 22) ** 2)  # = sqrt(2) / (11 sqrt(3))
    assert se_log == pytest.approx(0.0742270, rel=1e-5)
    assert t_quantile_975(2) == pytest.approx(4.302653)
    assert r.mean == pytest.approx(2.0)
    assert r.low == pytest.approx(2 * math.exp(-4.302653 * se_log), rel=1e-6)
    assert r.high == pytest.approx(2 * math.exp(4.302653 * se_log), rel=1e-6)
    assert (r.low, r.high) == pytest.approx((1.45329, 2.75236), rel=1e-4)


def test_failing_quality_is_never_crowned(tmp_path, capsys):
    a = frame(repeats())
    fast_but_wrong = repeats(
        thr=(40.0, 41.0, 42.0), p99=(20.0, 21.0, 22.0), quality_passed=False, quality_n=200
    )
    c = cmp.compare(a, frame(fast_but_wrong))
    assert set(verdicts(c).values()) == {cmp.FAILING}
    assert c.points[0].failing == ("B",)
    # B regressed in what matters most: the gate fails although its numbers are better
    assert c.exit_code == 1
    assert any("B fails the quality gate" in r for r in c.regressions)
    # a failing baseline crowns no candidate either, and is not B's regression
    back = cmp.compare(frame(fast_but_wrong), a)
    assert set(verdicts(back).values()) == {cmp.FAILING}
    assert back.points[0].failing == ("A",)
    assert back.exit_code == 1  # the throughput and p99 ratios themselves are regressions
    assert not any("quality" in r for r in back.regressions)
    # listed as such on the console
    pa = write(tmp_path / "a.csv", repeats())
    pb = write(tmp_path / "b.csv", fast_but_wrong)
    assert main([str(pa), str(pb)]) == 1
    out = capsys.readouterr().out
    assert "failing quality" in out
    assert "faster" not in out and "better" not in out


def test_the_exit_code_gate_honours_the_threshold(tmp_path):
    a = write(tmp_path / "a.csv", repeats(thr=(100.0, 100.5, 99.5), p99=(100.0, 101.0, 99.0)))
    # 3 % slower with a tight interval: surely slower, but within the 5 % threshold
    b = write(tmp_path / "b.csv", repeats(thr=(97.0, 97.5, 96.5)))
    c = cmp.compare(load([a]), load([b]))
    assert verdicts(c)["throughput_req_per_sec"] == "slower"
    assert main([str(a), str(b)]) == 0
    assert main([str(a), str(b), "--threshold", "0.01"]) == 1
    # p99 20 % up at every repeat: over the 5 % threshold even at its lower bound
    c99 = write(tmp_path / "c.csv", repeats(thr=(100.0, 100.5, 99.5), p99=(120.0, 121.0, 119.0)))
    assert main([str(a), str(c99)]) == 1
    assert main([str(a), str(c99), "--threshold", "0.5"]) == 0


def test_single_rows_use_the_batch_means_interval_and_say_what_repeats_give(tmp_path):
    windows = dict(throughput_ci_low=9.5, throughput_ci_high=10.5, throughput_windows=30)
    a = frame([row(10.0, 100.0, **windows)])
    b = frame(
        [row(20.0, 50.0, throughput_ci_low=19.0, throughput_ci_high=21.0, throughput_windows=30)]
    )
    c = cmp.compare(a, b)
    thr = c.points[0].metric("throughput_req_per_sec")
    assert thr.a == Interval(10.0, 9.5, 10.5, 30, "batch-means")
    assert thr.verdict == "faster"
    p99 = c.points[0].metric("p99_latency_ms")
    assert p99.verdict == cmp.NO_INTERVAL
    assert p99.hint == "1 row on A and B: --repeats 2 gives one"
    assert p99.ratio.mean == pytest.approx(0.5)
    # without the windows columns the throughput has no interval either, so no gate
    plain = cmp.compare(frame([row(10.0, 100.0)]), frame([row(5.0, 200.0)]))
    assert set(verdicts(plain).values()) == {cmp.NO_INTERVAL}
    assert plain.exit_code == 0


def test_json_output_has_stable_keys(tmp_path, capsys):
    a = write(tmp_path / "a.csv", repeats())
    b = write(tmp_path / "b.csv", repeats(thr=(20.0, 22.0, 24.0), p99=(50.0, 52.0, 49.0)))
    assert main([str(a), str(b), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc) == [
        "a",
        "b",
        "keys",
        "threshold",
        "points",
        "only_a",
        "only_b",
        "regressions",
        "exit_code",
    ]
    assert doc["a"]["files"] == [str(a)]
    # max_batch_size is empty on both sides: not a key
    assert doc["keys"] == [k for k in cmp.DEFAULT_KEYS if k != "max_batch_size"]
    (p,) = doc["points"]
    assert p["key"]["batch_size"] == 8 and p["key"]["task"] == "classification"
    assert p["rows"] == {"a": 3, "b": 3}
    assert list(p["metrics"]) == ["throughput_req_per_sec", "p99_latency_ms", "1B_cost"]
    thr = p["metrics"]["throughput_req_per_sec"]
    assert list(thr) == ["a", "b", "ratio", "verdict", "hint"]
    assert list(thr["a"]) == ["mean", "low", "high", "n", "method"]
    assert thr["a"]["n"] == 3 and thr["a"]["method"] == "t(repeats)"
    assert thr["ratio"]["value"] == pytest.approx(2.0)
    assert thr["ratio"]["low"] < 2.0 < thr["ratio"]["high"]
    assert thr["verdict"] == "faster"
    assert doc["exit_code"] == 0 and doc["regressions"] == []


def test_markdown_to_a_file(tmp_path, capsys):
    a = write(tmp_path / "a.csv", repeats())
    b = write(tmp_path / "b.csv", repeats())
    out = tmp_path / "cmp.md"
    assert main([str(a), str(b), "--format", "markdown", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("## B vs A")
    assert "| metric | A | B | B/A [95 % CI] | verdict |" in text
    assert "| throughput (inputs/s) |" in text
    assert "1.000× [" in text
    assert f"compare: {out}" in capsys.readouterr().out


def test_no_matched_points_is_one_line_naming_the_keys(tmp_path, capsys):
    a = write(tmp_path / "a.csv", repeats())
    b = write(tmp_path / "b.csv", repeats(batch_size=32, vus=4))
    assert main([str(a), str(b)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert "no point of A matches one of B" in err
    assert "batch_size: A has 8, B has 32" in err and "vus: A has 1, B has 4" in err
    assert "task" not in err.split(":", 2)[-1].split("(")[0]  # shared keys are not listed
    # matching on the keys they share compares them
    assert main([str(a), str(b), "--keys", "task,model_name,hw_type"]) == 0


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    a = write(tmp_path / "a.csv", repeats())
    assert main([str(a), str(tmp_path / "missing")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main([str(a), str(a), "--keys", "task,nonsense"]) == 2
    assert "no column 'nonsense'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(a), str(a), "--threshold", "2"])
    assert e.value.code == 2


def test_points_on_one_side_only_and_pooled_configurations_are_listed(tmp_path):
    a = frame(repeats() + repeats(batch_size=32))
    b = frame(repeats(engine="onnx", image="onnx/int8")[:2] + repeats(engine="eager")[2:])
    c = cmp.compare(a, b)
    assert [p.key["batch_size"] for p in c.points] == [8]
    assert [k["batch_size"] for k in c.only_a] == [32] and c.only_b == ()
    (note,) = [n for n in c.points[0].notes if "engine" in n]
    assert "B pools 2 engine values (eager, onnx)" in note
    lines = cmp.summary_lines(c)
    assert any(line.startswith("only in A (1 point): ") for line in lines)
    # several files per side, as a comma list
    pa, pb = (
        write(tmp_path / "a1.csv", repeats()),
        write(tmp_path / "a2.csv", repeats(batch_size=32)),
    )
    assert main([f"{pa},{pb}", str(pa)]) == 0
