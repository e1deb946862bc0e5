import pandas as pd
import pytest

from core.errors import ConfigError
from engines.models import get_spec, load_tokenizer
from workloads import WorkloadSpec, load_workload
from workloads.text import synthetic


@pytest.mark.parametrize(
    "model,task,mean,sd",
    [
        ("distilbert-sentiment", "classification", 100, None),
        ("gte-modernbert", "embedding", 144, 14),
        ("bge-base", "embedding", 144, 14),
        ("distilbert-sentiment-tiny", "classification", 100, None),
    ],
)
def test_synthetic_token_stats_within_5pct_of_target(model, task, mean, sd):
    spec = get_spec(model)
    tok = load_tokenizer(spec).tokenizer
    w = synthetic(WorkloadSpec(task=task, source="synthetic", n=1000), tok, spec.max_seq_len)
    # counted with the model's own tokenizer, independently of how the text was built
    counts = [len(x) for x in tok(w.texts)["input_ids"]]
    assert list(w.token_counts) == counts
    s = w.stats
    assert abs(s.avg - mean) / mean < 0.05
    if sd is not None:
        assert abs(s.sd - sd) / sd < 0.10  # sd of a 1000-sample estimate
    else:
        assert s.min >= 50  # seed 000: minimum of 50 tokens


def test_synthetic_is_deterministic(tiny_tokenizer):
    a = synthetic(WorkloadSpec(n=50, seed=3), tiny_tokenizer, 512)
    b = synthetic(WorkloadSpec(n=50, seed=3), tiny_tokenizer, 512)
    c = synthetic(WorkloadSpec(n=50, seed=4), tiny_tokenizer, 512)
    assert a.texts == b.texts and a.texts != c.texts


def test_custom_target(tiny_tokenizer):
    w = synthetic(
        WorkloadSpec(n=400, tokens_mean=40, tokens_sd=4, tokens_min=10), tiny_tokenizer, 512
    )
    assert abs(w.stats.avg - 40) / 40 < 0.05


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_local_files_with_labels(tmp_path, tiny_tokenizer, suffix):
    df = pd.DataFrame({"text": ["good product", "", "bad service", "fine"], "label": [0, 1, 2, 1]})
    path = tmp_path / f"data{suffix}"
    {
        ".jsonl": lambda: df.to_json(path, orient="records", lines=True),
        ".csv": lambda: df.to_csv(path, index=False),
        ".parquet": lambda: df.to_parquet(path),
    }[suffix]()
    w = load_workload(WorkloadSpec(source=str(path)), tiny_tokenizer, 512)
    assert w.texts == ["good product", "bad service", "fine"]  # empty row skipped
    assert w.labels == [0, 2, 1]
    assert w.source.startswith("file:")


def test_missing_text_column_names_the_columns(tmp_path, tiny_tokenizer):
    path = tmp_path / "d.csv"
    pd.DataFrame({"body": ["x"]}).to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"no text column 'text'.*\['body'\].*--text-column"):
        load_workload(WorkloadSpec(source=str(path)), tiny_tokenizer, 512)
    w = load_workload(WorkloadSpec(source=str(path), text_column="body"), tiny_tokenizer, 512)
    assert w.texts == ["x"]


def test_corrupt_and_missing_files(tmp_path, tiny_tokenizer):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not a parquet file")
    with pytest.raises(ConfigError, match="could not be read"):
        load_workload(WorkloadSpec(source=str(bad)), tiny_tokenizer, 512)
    with pytest.raises(ConfigError, match="no such file"):
        load_workload(WorkloadSpec(source=str(tmp_path / "nope.csv")), tiny_tokenizer, 512)


def test_all_empty_file_is_an_error(tmp_path, tiny_tokenizer):
    path = tmp_path / "e.csv"
    pd.DataFrame({"text": ["", "  "]}).to_csv(path, index=False)
    with pytest.raises(ConfigError, match="no non-empty text"):
        load_workload(WorkloadSpec(source=str(path)), tiny_tokenizer, 512)


def test_oversized_texts_are_counted_as_truncated(tmp_path, tiny_tokenizer):
    path = tmp_path / "long.jsonl"
    pd.DataFrame({"text": ["word " * 2000, "short"]}).to_json(path, orient="records", lines=True)
    w = load_workload(WorkloadSpec(source=str(path)), tiny_tokenizer, 64)
    assert w.truncated == 1 and w.stats.max == 64


def test_hub_dataset_offline_is_a_one_line_error(tiny_tokenizer):
    with pytest.raises(ConfigError, match="Hub is unreachable"):
        load_workload(WorkloadSpec(source="someone/some-dataset"), tiny_tokenizer, 512)


def test_auto_falls_back_to_synthetic_offline(tiny_tokenizer):
    w = load_workload(WorkloadSpec(source="auto", n=20), tiny_tokenizer, 512)
    assert w.source.startswith("synthetic(")
