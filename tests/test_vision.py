"""Vision embedding (ColQwen2) end to end, on the tiny model: processor, workloads, engines,
parity, in-process and HTTP benchmarks, vector-count checks and bad-image handling."""

from __future__ import annotations

import base64
import io
import json
import struct
import sys
import zlib

import numpy as np
import pytest
from helpers import ServerThread

pytestmark = pytest.mark.vision

from core.contract import data_uri  # noqa: E402
from core.errors import ConfigError, EngineError  # noqa: E402
from engines import EngineConfig, create_engine  # noqa: E402
from engines.models import VISION_TOKEN_IDS, get_spec, load_tokenizer  # noqa: E402
from engines.registry import engine_config  # noqa: E402
from engines.vision import (  # noqa: E402
    ImageError,
    PixelBudget,
    decode_image,
    encode_png,
    synthetic_page,
)

MODEL = "colqwen2-tiny"
SIZES = ((224, 168), (336, 224), (280, 280))


def png(w: int, h: int, seed: int = 0) -> bytes:
    return encode_png(synthetic_page(w, h, seed=seed))


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [png(w, h, seed=i) for i, (w, h) in enumerate(SIZES)]


@pytest.fixture(scope="module")
def eager():
    with create_engine(EngineConfig(engine="eager", model=MODEL, weights="random")) as e:
        yield e


def zero_pixel_png() -> bytes:
    """A PNG whose header says 0x10 pixels (with valid CRCs, so only the size is wrong)."""
    ihdr = struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + body + end


# --------------------------------------------------------------------------- model + processor


def test_processor_builds_offline_without_torchvision():
    tok = load_tokenizer(get_spec(MODEL))
    assert tok.source == "fallback-bpe"
    proc = tok.tokenizer
    assert proc.image_token_id == VISION_TOKEN_IDS["<|image_pad|>"]
    assert type(proc.image_processor).__name__ == "Qwen2VLImageProcessorPil"
    assert "torchvision" not in sys.modules


def test_full_size_spec_and_flops():
    spec = get_spec("colqwen2")
    cfg = spec.build_config()
    assert cfg.embedding_dim == 128
    assert cfg.vlm_config.text_config.hidden_size == 1536
    assert cfg.vlm_config.vision_config.depth == 32
    # 600x400 under the default budget: 588x392 -> 42x28 patches -> 294 visual tokens
    vt = PixelBudget().visual_tokens(600, 400)
    assert vt == 294
    both = spec.flops_per_input(vt + 11, visual_tokens=vt)
    lm_only = spec.flops_per_input(vt + 11, visual_tokens=0)
    vision = both - lm_only
    # ViT ~0.63 B params on 4 patches per token, LM ~1.3 B (no embeddings) on every token
    assert 1.0e12 < vision < 2.5e12
    assert 0.6e12 < lm_only < 1.2e12


def test_decode_rejects_bad_images():
    good = png(64, 48)
    assert decode_image(good).size == (64, 48)
    assert decode_image(data_uri(good)).size == (64, 48)
    assert decode_image(base64.b64encode(good).decode()).size == (64, 48)
    for bad, why in (
        (b"not an image at all", "not a decodable image"),
        (good[: len(good) // 2], "truncated"),
        (zero_pixel_png(), "corrupt header"),  # PIL refuses a 0-wide PNG at open()
        ("data:image/png;base64,@@@", "not valid base64"),
        ("https://example.com/a.png", "not fetched"),
    ):
        with pytest.raises(ImageError, match=why):
            decode_image(bad)
    with pytest.raises(ImageError, match="limit is 1000 pixels") as e:
        decode_image(good, max_image_pixels=1000)
    assert e.value.status == 413


def test_pixel_budget_is_applied_and_matches_workload_counts():
    cfg = engine_config("fake", MODEL, min_pixels=100_000, max_pixels=200_704)
    with create_engine(cfg) as e:
        items = e.pipeline.tokenize([png(600, 400), png(100, 80)])
        assert e.info["max_pixels"] == 200_704
    budget = PixelBudget(100_000, 200_704)
    # 600x400 shrinks to fit 200,704 pixels; 100x80 grows to reach 100,000
    assert [x.visual_tokens for x in items] == [budget.visual_tokens(600, 400), 143] == [247, 143]
    with pytest.raises(ConfigError, match="--max-pixels must be >= --min-pixels"):
        engine_config("fake", MODEL, min_pixels=5000, max_pixels=4000)


def test_missing_pillow_names_the_extra(monkeypatch, capsys, tmp_path):
    from engines.models.tokenizers import _load_tokenizer_cached
    from harness.run import main

    _load_tokenizer_cached.cache_clear()
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    try:
        rc = main(["--task", "vision-embedding", "--model", MODEL, "--output-dir", str(tmp_path)])
    finally:
        _load_tokenizer_cached.cache_clear()
    assert rc == 2
    out = capsys.readouterr()
    assert 'pip install -e ".[vision]"' in out.out + out.err


# --------------------------------------------------------------------------- pipeline + parity


def test_vector_counts_are_prompt_plus_visual_tokens(eager, images):
    from workloads import prompt_tokens

    pred = eager.predict(images)
    prompt = prompt_tokens(eager.pipeline.processor)
    budget = eager.pipeline.budget
    want = [prompt + budget.visual_tokens(w, h) for w, h in SIZES]
    assert list(pred.lengths) == want
    assert pred.values.shape == (3, max(want), 128)
    for v, n in zip(pred.values, pred.lengths, strict=True):
        assert np.allclose(np.linalg.norm(v[:n], axis=-1), 1.0, atol=1e-4)
        assert not v[n:].any()  # padding is zero


def test_batching_does_not_change_vectors(eager, images):
    batch = eager.predict(images)
    for i, img in enumerate(images):
        one = eager.predict([img])
        n = one.lengths[0]
        assert n == batch.lengths[i]
        cos = (one.values[0, :n] * batch.values[i, :n]).sum(-1)
        assert cos.min() > 0.9999


def test_parity_bf16_against_eager_fp32(eager):
    from exporters.parity import compare

    cfg = EngineConfig(engine="eager", model=MODEL, weights="random", precision="bf16")
    with create_engine(cfg) as bf16:
        res = compare(eager, bf16, "bf16")
    assert res["passed"], res["failures"]
    assert "counts_equal=True" in res["metric"]
    assert [s["vectors"] for s in res["shapes"]][1] == [
        len(x) for x in eager.pipeline.tokenize(_parity_batch(1))
    ]


def _parity_batch(i):
    from exporters.parity import parity_images

    return parity_images()[i]


def test_parity_fails_on_unequal_vector_counts(eager):
    from exporters.parity import compare

    class Short:
        spec = eager.spec

        def predict(self, images):
            p = eager.predict(images)
            p.lengths = p.lengths - 1
            return p

    res = compare(eager, Short(), "fp32")
    assert not res["passed"] and "vector counts" in res["failures"][0]


# --------------------------------------------------------------------------- refusals


# onnx runs vision per fixed image-size bucket: tests/test_vision_onnx.py
@pytest.mark.parametrize("engine", ["trt", "neuron", "aoti"])
def test_unsupported_engines_refuse_vision(engine):
    with pytest.raises(EngineError, match="does not run vision-embedding"):
        create_engine(EngineConfig(engine=engine, model=MODEL))


@pytest.mark.parametrize("precision,variant", [("int8", ""), ("fp32", "optimized")])
def test_onnx_exporter_refuses_vision_variants(tmp_path, precision, variant):
    from exporters.api import export
    from exporters.base import ExportConfig

    cfg = ExportConfig(
        model=MODEL, format="onnx", out=str(tmp_path / "a"), precision=precision, variant=variant
    )
    with pytest.raises(ConfigError, match="fp32 only"):
        export(cfg)


def test_colpali_route_needs_its_extra_or_weights():
    from engines.models import load_model

    with pytest.raises(EngineError, match="--model colqwen2"):
        load_model(get_spec("colqwen2-colpali"), weights="random")


# --------------------------------------------------------------------------- workloads


def test_workloads_synthetic_folder_parquet(tmp_path):
    import pandas as pd

    from workloads import WorkloadSpec, load_workload, parse_sizes

    proc = load_tokenizer(get_spec(MODEL)).tokenizer
    spec = WorkloadSpec(
        task="vision-embedding", source="synthetic", n=6, image_sizes=parse_sizes("200x100,90x300")
    )
    w = load_workload(spec, proc, 0)
    assert len(w.texts) == 6 and set(w.pixels) <= {20000, 27000}
    assert w.flop_args["visual_tokens"] == w.visual_tokens.mean()
    with pytest.raises(ConfigError, match="WIDTHxHEIGHT"):
        parse_sizes("600by400")

    folder = tmp_path / "pages"
    folder.mkdir()
    (folder / "a.png").write_bytes(png(120, 80))
    (folder / "b.png").write_bytes(png(100, 100, seed=1))
    (folder / "broken.png").write_bytes(b"\x89PNG garbage")
    (folder / "notes.txt").write_text("ignored")
    w = load_workload(WorkloadSpec(task="vision-embedding", source=str(folder), n=10), proc, 0)
    assert len(w.texts) == 2 and w.skipped == 1 and "skipped=1" in w.source

    pq = tmp_path / "imgs.parquet"
    pd.DataFrame(
        {"image": [{"bytes": png(64, 64), "path": "x.png"}, {"bytes": b"junk", "path": "y"}]}
    ).to_parquet(pq)
    w = load_workload(WorkloadSpec(task="vision-embedding", source=str(pq), n=10), proc, 0)
    assert len(w.texts) == 1 and w.skipped == 1
    with pytest.raises(ConfigError, match="no image column"):
        load_workload(
            WorkloadSpec(task="vision-embedding", source=str(pq), image_column="img"), proc, 0
        )


# --------------------------------------------------------------------------- in process


# compile recompiles once per new batch size (Python loop over images), so it runs batch 1; on
# the eager backend: dynamo captures the vision model's graphs as for inductor, without the
# code generation (a minute and more here) that the text models' compile tests cover
@pytest.mark.parametrize("engine,batch", [("eager", "2"), ("compile", "1 --compile-backend eager")])
def test_inprocess_eager_and_compile(engine, batch, tmp_path):
    import pandas as pd

    from harness.run import main

    rc = main(
        [
            "--task",
            "vision-embedding",
            "--model",
            MODEL,
            "--engine",
            engine,
            "--inputs-per-request",
            *batch.split(),
            *"--duration 0.3 --min-calls 3 --warmup 1 --num-samples 4 --image-sizes 224x168,336x224 --max-pixels 200704 --output-dir".split(),
            str(tmp_path),
        ]
    )
    assert rc == 0
    row = pd.read_csv(tmp_path / "results.csv").iloc[-1]
    assert row["task"] == "vision-embedding" and row["weights"] == "random"
    assert row["invalid_embeddings"] == 0
    assert 1 <= row["min_num_vectors"] <= row["avg_num_vectors"] <= row["max_num_vectors"]
    assert row["min_num_vectors"] < row["max_num_vectors"]  # two image sizes
    assert row["avg_pixels"] > 0 and row["avg_visual_tokens"] > 0
    assert row["flops_per_input"] > 0 and row["floor_1B_cost"] > 0
    assert json.loads(row["config_json"])["engine"]["max_pixels"] == 200704


# --------------------------------------------------------------------------- HTTP


class Serving(ServerThread):
    """The tiny ColQwen2 behind our server on 127.0.0.1, in a background thread."""

    def __init__(self, engine, **limits):
        from serving.batcher import BatcherConfig, DynamicBatcher
        from serving.server import Server, ServerLimits

        batcher = DynamicBatcher(engine, BatcherConfig(max_batch_size=4))
        super().__init__(Server(engine, batcher, ServerLimits(**limits)), close_engine=False)


def post(url, body=None, raw=None, headers=None):
    import urllib.error
    import urllib.request

    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


@pytest.fixture(scope="module")
def served():
    cfg = engine_config("eager", MODEL, weights="random", max_image_pixels=200_000)
    with create_engine(cfg) as engine, Serving(engine, max_body_bytes=2**21) as s:
        yield s


def test_http_openai_and_kserve_match_in_process(served, images):
    ref = served.server.engine.predict(images[:2])
    body = {"model": MODEL, "input": [data_uri(x) for x in images[:2]], "modality": "image"}
    status, payload, _ = post(served.url + "/v1/embeddings", body)
    assert status == 200, payload
    data = json.loads(payload)["data"]
    for d, v, n in zip(data, ref.values, ref.lengths, strict=True):
        got = np.asarray(d["embedding"])
        assert got.shape == (n, 128)
        assert np.allclose(got, v[:n], atol=1e-4)
    # Infinity's older image route
    status, _, _ = post(served.url + "/embeddings_image", {"model": MODEL, "input": body["input"]})
    assert status == 200

    # KServe v2 with the binary tensor extension: raw PNG bytes in a BYTES tensor
    blob = b"".join(struct.pack("<I", len(x)) + x for x in images[:2])
    head = {
        "inputs": [
            {
                "name": "IMAGE",
                "shape": [2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(blob)},
            }
        ]
    }
    h = json.dumps(head).encode()
    status, payload, _ = post(
        served.url + f"/v2/models/{MODEL}/infer",
        raw=h + blob,
        headers={"Inference-Header-Content-Length": str(len(h))},
    )
    assert status == 200, payload
    outs = {o["name"]: o for o in json.loads(payload)["outputs"]}
    assert outs["num_vectors"]["data"] == [int(n) for n in ref.lengths]
    emb = np.asarray(outs["embeddings"]["data"]).reshape(outs["embeddings"]["shape"])
    assert emb.shape[-1] == 128 and np.allclose(
        emb[0, : ref.lengths[0]], ref.values[0, : ref.lengths[0]], atol=1e-4
    )


def test_http_bad_images_get_4xx_and_server_keeps_serving(served, images):
    url = served.url + "/v1/embeddings"
    big = png(600, 400)  # 240,000 pixels > the server's 200,000 limit
    good = png(200, 150, seed=3)
    cases = [
        (b"definitely not a png", 400, "not a decodable image"),
        (good[: len(good) // 2], 400, "truncated"),
        (zero_pixel_png(), 400, "input 0"),
        (big, 413, "limit is 200000 pixels"),
    ]
    for raw, status, why in cases:
        code, payload, _ = post(
            url, {"model": MODEL, "input": [data_uri(raw)], "modality": "image"}
        )
        assert code == status, payload
        assert why in json.loads(payload)["error"]
    code, payload, _ = post(url, {"model": MODEL, "input": ["%%%"], "modality": "image"})
    assert code == 400 and "base64" in json.loads(payload)["error"]
    code, payload, _ = post(url, {"model": MODEL, "input": ["a text"], "modality": "text"})
    assert code == 400 and "embeds images" in json.loads(payload)["error"]
    # KServe with a corrupt image in JSON BYTES
    bad = {"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": ["QUJD"]}]}
    code, _, _ = post(served.url + f"/v2/models/{MODEL}/infer", bad)
    assert code == 400
    code, payload, _ = post(url, {"model": MODEL, "input": [data_uri(good)], "modality": "image"})
    assert code == 200, payload


@pytest.mark.parametrize("protocol", ["openai", "kserve"])
def test_loadgen_checks_vectors_over_http(served, images, protocol):
    from loadgen import Target, run_closed_loop
    from workloads import Workload

    wl = Workload(list(images), None, np.zeros(3, dtype=np.int64), "test")
    target = Target(
        served.url,
        protocol=protocol,
        model=MODEL,
        task="vision-embedding",
        dim=128,
        normalized=True,
    )
    res = run_closed_loop(target, wl, vus=2, iterations=4, inputs_per_request=2, warmup_requests=0)
    assert res.failed_requests == 0 and res.invalid_embeddings == 0
    want = sorted(len(x) for x in served.server.engine.pipeline.tokenize(images))
    assert res.min_num_vectors == want[0] and res.max_num_vectors == want[-1]
    wrong = Target(served.url, protocol=protocol, model=MODEL, task="vision-embedding", dim=64)
    res = run_closed_loop(wrong, wl, vus=1, iterations=1, inputs_per_request=1, warmup_requests=0)
    assert res.invalid_embeddings == 1


def test_vision_test_images_are_pngs(images):
    from PIL import Image

    for x in images:
        assert Image.open(io.BytesIO(x)).format == "PNG"
