"""ColQwen2 through ONNX Runtime per fixed image-size bucket, on the tiny model: export, the
parity gate at the bucket shapes, exact bucket matching, refusals, and a harness run."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = [pytest.mark.vision, pytest.mark.onnx]

from core.errors import ConfigError, EngineError  # noqa: E402
from engines import EngineConfig, create_engine  # noqa: E402
from engines.vision import encode_png, synthetic_page  # noqa: E402

MODEL = "colqwen2-tiny"
# 224x168 px keeps its size under the default budget: a 12x16 grid of 14-px patches
BUCKETS = ((1, 12, 16), (2, 12, 16))


def png(w: int, h: int, seed: int = 0) -> bytes:
    return encode_png(synthetic_page(w, h, seed=seed))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from exporters.api import export
    from exporters.base import ExportConfig

    out = tmp_path_factory.mktemp("onnx") / "colqwen2-tiny-onnx"
    cfg = ExportConfig(
        model=MODEL, format="onnx", out=str(out), weights="random", image_buckets=BUCKETS
    )
    return out, export(cfg)


@pytest.fixture(scope="module")
def engines(artifact):
    out, _ = artifact
    ref = EngineConfig(engine="eager", model=MODEL, weights="random")
    onnx = EngineConfig(engine="onnx", model=MODEL, weights="random", artifact=str(out))
    with create_engine(ref) as eager, create_engine(onnx) as ort:
        yield eager, ort


def test_export_writes_one_graph_per_bucket_and_passes_parity(artifact):
    out, m = artifact
    assert m.task == "vision-embedding" and m.format == "onnx"
    assert sorted(m.files) == ["buckets/b1-12x16/model.onnx", "buckets/b2-12x16/model.onnx"]
    entries = m.shape_profiles["image_buckets"]
    assert [e["bucket"] for e in entries] == [list(b) for b in BUCKETS]
    assert entries[1]["image_size"] == [224, 168] and entries[1]["grid_thw"] == [1, 12, 16]
    assert m.shape_profiles["dynamic"] is False
    assert "only these" in m.details["only_these_sizes"]
    # the gate ran at exactly the bucket shapes: equal vector counts, per-vector cosine
    p = m.parity
    assert p["passed"] is True, p["failures"]
    assert "counts_equal=True" in p["metric"]
    assert [(s["batch"], s["sizes"]) for s in p["shapes"]] == [
        (1, [[224, 168]]),
        (2, [[224, 168], [224, 168]]),
    ]
    assert min(s["min_cosine"] for s in p["shapes"]) >= 0.9999
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["parity"]["passed"] is True


def test_engine_runs_a_matching_batch_like_eager(engines):
    eager, ort = engines
    images = [png(224, 168, seed=7), png(224, 168, seed=8)]
    ref, got = eager.predict(images), ort.predict(images)
    assert list(got.lengths) == list(ref.lengths)
    for r, g, n in zip(ref.values, got.values, ref.lengths, strict=True):
        cos = (r[:n] * g[:n]).sum(-1) / (
            np.linalg.norm(r[:n], axis=-1) * np.linalg.norm(g[:n], axis=-1)
        )
        assert cos.min() >= 0.9999
    assert "batch 2 x 224x168 px" in ort.info["onnx_buckets"]


def test_batches_without_a_bucket_are_refused_in_one_line(engines):
    _, ort = engines
    cases = [
        ([png(280, 280)], "no ONNX bucket for batch 1 x 280x280 px", "--image-buckets 1:280x280"),
        ([png(224, 168, seed=i) for i in range(3)], "no ONNX bucket for batch 3", "3:224x168"),
        ([png(224, 168), png(280, 280)], "mixes image grids 12x16, 20x20", "batch size 1"),
    ]
    for images, why, hint in cases:
        with pytest.raises(EngineError) as e:
            ort.predict(images)
        msg = str(e.value)
        assert why in msg and hint in msg and "\n" not in msg
        assert "batch 1 x 224x168 px (grid 12x16)" in msg  # names the buckets it has


def test_cached_artifact_is_reused_only_with_the_buckets_asked_for(artifact):
    from exporters.base import ExportConfig, holds_buckets
    from exporters.onnx import OnnxExporter

    _, m = artifact
    assert holds_buckets(m, [(1, 12, 16)])
    assert not holds_buckets(m, [(1, 28, 42)])
    default = ExportConfig(model=MODEL, format="onnx", out="x")
    assert OnnxExporter().vision_buckets(default) == [(1, 28, 42), (2, 28, 42)]


def test_exporter_cli_parses_image_buckets():
    from exporters.base import parse_image_buckets

    # 600x400 resizes to 588x392 under the default budget: grid 28x42
    assert parse_image_buckets("1:600x400, 2:224x168") == ((1, 28, 42), (2, 12, 16))
    with pytest.raises(ConfigError, match="BATCH:WIDTHxHEIGHT"):
        parse_image_buckets("600x400")
    with pytest.raises(ConfigError, match="invalid"):
        from exporters.base import ExportConfig

        ExportConfig(model=MODEL, format="onnx", out="x", image_buckets=((1, 3, 4),))


def _run(tmp_path, *extra):
    from harness.run import main

    return main(
        [
            "--task",
            "vision-embedding",
            "--model",
            MODEL,
            *"--engine onnx --duration 0.3 --min-calls 3 --warmup 1 --num-samples 4 --output-dir".split(),
            str(tmp_path / "out"),
            "--artifacts-dir",
            str(tmp_path / "artifacts"),
            *extra,
        ]
    )


def test_harness_runs_onnx_vision_end_to_end(tmp_path):
    import pandas as pd

    rc = _run(tmp_path, "--inputs-per-request", "1", "--image-sizes", "224x168")
    assert rc == 0
    row = pd.read_csv(tmp_path / "out" / "results.csv").iloc[-1]
    assert row["engine"] == "onnx" and row["task"] == "vision-embedding"
    assert row["invalid_embeddings"] == 0 and row["min_num_vectors"] == row["max_num_vectors"]
    assert "counts_equal=True" in str(row["parity_metric"])
    (art,) = (tmp_path / "artifacts" / MODEL).iterdir()
    m = json.loads((art / "manifest.json").read_text())
    assert [e["bucket"] for e in m["shape_profiles"]["image_buckets"]] == [[1, 12, 16]]
    # a batch size the cached artifact lacks: re-exported with the old and the new bucket
    assert _run(tmp_path, "--inputs-per-request", "2", "--image-sizes", "224x168") == 0
    m = json.loads((art / "manifest.json").read_text())
    assert [e["bucket"] for e in m["shape_profiles"]["image_buckets"]] == [
        [1, 12, 16],
        [2, 12, 16],
    ]
    assert m["parity"]["passed"] is True


def test_harness_refuses_mixed_sizes_above_batch_1(tmp_path, capsys):
    rc = _run(tmp_path, "--inputs-per-request", "2", "--image-sizes", "224x168,280x280")
    assert rc == 2
    out = capsys.readouterr()
    assert "one image size per batch" in out.out + out.err
