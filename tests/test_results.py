import os

import pandas as pd
import pytest

from harness.results import (
    COLUMNS,
    DTYPES,
    SCHEMA,
    ResultsStore,
    columns_of,
    config_key,
    read_csv,
)

DESIGN_COLUMNS = (
    "total_requests successful_requests failed_requests test_duration_sec avg_latency_ms "
    "p50_latency_ms p90_latency_ms p95_latency_ms p99_latency_ms throughput_req_per_sec "
    "throughput_peak hw_type batch_size vus engine image vendor n_models workers_per_model "
    "avg_num_vectors min_num_vectors max_num_vectors invalid_embeddings seconds_per_billion "
    "cost_per_sec cost_per_1m_inf 1B_cost cost_per_1m_tokens inputs_per_request "
    "latency_ms_p50 latency_ms_p99 throughput_avg task model_id weights precision mode protocol "
    "padding_ratio parity_metric host_name device_name tool_versions git_sha timestamp "
    "config_json"
).split()


def test_columns_keep_the_contract():
    assert set(DESIGN_COLUMNS) <= set(COLUMNS)
    assert len(COLUMNS) == len(set(COLUMNS))


def test_append_writes_csv_and_parquet_immediately(tmp_path):
    s = ResultsStore(tmp_path)
    s.append({"batch_size": 1, "config_key": "a", "1B_cost": 12.5})
    assert pd.read_parquet(tmp_path / "results.parquet")["1B_cost"].tolist() == [12.5]
    s.append({"batch_size": 8, "config_key": "b", "1B_cost": 3.0})
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2
    assert len(pd.read_parquet(tmp_path / "results.parquet")) == 2
    assert ResultsStore(tmp_path).done_keys() == {"a", "b"}
    assert list(pd.read_csv(tmp_path / "results.csv").columns) == COLUMNS


def test_rows_outside_the_contract_are_refused(tmp_path):
    with pytest.raises(KeyError, match="outside the contract"):
        ResultsStore(tmp_path).append({"made_up": 1})


def test_fresh_archives_instead_of_deleting(tmp_path):
    ResultsStore(tmp_path).append({"config_key": "a"})
    s = ResultsStore(tmp_path, fresh=True)
    assert s.done_keys() == set()
    kept = list(tmp_path.glob("results.*.csv"))
    assert len(kept) == 1 and "a" in kept[0].read_text()


def test_config_key_is_stable_and_sensitive():
    assert config_key({"a": 1, "b": 2}) == config_key({"b": 2, "a": 1})
    assert config_key({"a": 1}) != config_key({"a": 2})


def test_old_column_contract_is_migrated_not_corrupted(tmp_path):
    old_cols = [c for c in COLUMNS if c not in ("http_429", "repeat")]
    pd.DataFrame([{"config_key": "old", "batch_size": 1}], columns=old_cols).to_csv(
        tmp_path / "results.csv", index=False
    )
    s = ResultsStore(tmp_path)
    s.append({"config_key": "new", "batch_size": 2, "http_429": 0})
    df = pd.read_csv(tmp_path / "results.csv")
    assert list(df.columns) == COLUMNS and df["config_key"].tolist() == ["old", "new"]


def test_the_schema_gives_every_column_one_dtype():
    assert list(SCHEMA) == COLUMNS and set(SCHEMA.values()) <= set(DTYPES)
    assert sorted(columns_of(*DTYPES)) == sorted(COLUMNS)
    with pytest.raises(ValueError, match="dtypes are"):
        columns_of("decimal")


def test_text_made_of_digits_reads_back_as_text(tmp_path):
    s = ResultsStore(tmp_path)
    s.append({"config_key": "0123456789012345", "git_sha": "0012345", "batch_size": 4})
    df = s.read()
    assert df["config_key"].tolist() == ["0123456789012345"]
    assert df["git_sha"].tolist() == ["0012345"] and df["batch_size"].tolist() == [4]
    assert s.done_keys() == {"0123456789012345"}  # resume finds the row it wrote


# --------------------------------------------------------------------------- crash safety
def test_a_torn_last_line_is_dropped_and_the_parquet_rebuilt(tmp_path, caplog):
    s = ResultsStore(tmp_path)
    for k in ("a", "b", "c"):
        s.append({"config_key": k, "batch_size": 1})
    # a crash mid-write: half a line at the end of the CSV, and the Parquet one row behind
    with open(s.csv, "a") as f:
        f.write("12,3,4")
    import pandas as pd

    pd.read_parquet(s.parquet).head(2).to_parquet(s.parquet, index=False)
    with caplog.at_level("WARNING"), ResultsStore(tmp_path).writing() as again:
        assert again.done_keys() == {"a", "b", "c"}
        again.append({"config_key": "d"})
    assert "torn last line" in caplog.text and "rebuilt" in caplog.text
    assert read_csv(s.csv)["config_key"].tolist() == ["a", "b", "c", "d"]
    assert pd.read_parquet(s.parquet)["config_key"].tolist() == ["a", "b", "c", "d"]


def test_the_parquet_catches_up_with_the_csv_on_open(tmp_path):
    import pandas as pd

    s = ResultsStore(tmp_path)
    for k in ("a", "b", "c", "d"):
        s.append({"config_key": k})
    pd.read_parquet(s.parquet).head(3).to_parquet(s.parquet, index=False)  # killed before it
    with ResultsStore(tmp_path).writing():
        pass  # a rerun with nothing left to measure still repairs
    assert len(pd.read_parquet(s.parquet)) == 4


def test_a_second_writer_is_refused_and_told_who_holds_the_folder(tmp_path):
    from harness.results import ResultsLocked

    with ResultsStore(tmp_path).writing("first run"):
        with pytest.raises(ResultsLocked, match=f"pid {os.getpid()}.*first run"):
            with ResultsStore(tmp_path).writing("second run"):
                pass
    with ResultsStore(tmp_path).writing("third run"):  # released: the next run goes ahead
        pass
