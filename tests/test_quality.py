"""Output quality (harness.quality): cosine and label arithmetic, the deterministic sample, and
fake servers on 127.0.0.1 that answer right or wrong (CLS instead of mean pooling, no
normalisation, shuffled order), which the check must tell apart."""

from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from helpers import FakeApp

from core.errors import ConfigError
from harness import quality
from harness.quality import Gate, Quality, Reference
from harness.results import SCHEMA, ResultsStore
from loadgen import Target, TargetError

ROOT = Path(__file__).resolve().parent.parent


class FakeServer(FakeApp):
    """OpenAI embeddings and Infinity-style /classify under /<mode>/...; `embed(mode, texts)`
    and `classify(mode, texts)` give the answers."""

    def __init__(self, embed=None, classify=None) -> None:
        self.embed, self.classify = embed, classify
        super().__init__(
            ("/{mode}/v1/embeddings", self._embeddings), ("/{mode}/classify", self._classify)
        )

    async def _embeddings(self, request):
        body = await request.json()
        mode = request.match_info["mode"]
        if mode == "refuse":
            return web.json_response({"error": "no such model"}, status=404)
        vecs = self.embed(mode, body["input"])
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vecs)]
        if mode == "shuffled":  # indices say the truth, the order too: only the values move
            data = [{**d, "embedding": vecs[(i + 1) % len(vecs)]} for i, d in enumerate(data)]
        return web.json_response({"object": "list", "data": data, "model": body["model"]})

    async def _classify(self, request):
        body = await request.json()
        labels = self.classify(request.match_info["mode"], body["input"])
        return web.json_response({"data": [[{"label": lab, "score": 0.9}] for lab in labels]})


# --- a model-free "encoder": one fixed vector per word; mean over words is right, CLS is wrong


def _word_vector(word: str, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(word.encode())).standard_normal(dim)


def _toy_embed(mode: str, texts: list[str]) -> list[list[float]]:
    out = []
    for t in texts:
        words = np.stack([_word_vector(w) for w in t.split()])
        v = words[0] if mode == "cls" else words.mean(0)
        if mode != "unnormalised":
            v = v / np.linalg.norm(v)
        out.append((v * (3.0 if mode == "unnormalised" else 1.0)).tolist())
    return out


TEXTS = [
    f"text {i} about {' '.join([f'word{i * 7 % 13 + j}' for j in range(3 + i % 5)])}"
    for i in range(300)
]


@pytest.fixture(scope="module")
def toy_server():
    s = FakeServer(embed=_toy_embed, classify=lambda mode, texts: _toy_labels(mode, texts))
    yield s
    s.close()


def _toy_reference(texts) -> Reference:
    picked = quality.sample_texts(texts)
    vecs = np.asarray(_toy_embed("right", picked))
    return Reference("embedding", "toy mean pooling", quality.texts_sha(picked), vectors=vecs)


# --- arithmetic


def test_cosine_on_hand_cases():
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [3.0, 4.0]])
    b = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [5.0, 0.0], [1.0, 0.0], [4.0, 3.0]])
    np.testing.assert_allclose(quality.cosines(a, b), [1, 0, -1, 1, 0, 24 / 25])


def _ref(vectors) -> Reference:
    vectors = np.asarray(vectors, dtype=np.float64)
    return Reference("embedding", "hand", "sha", vectors=vectors)


def test_compare_embeddings_min_mean_gate_and_problems():
    ref = _ref([[1, 0], [0, 1], [0.6, 0.8]])
    same = quality.compare(ref, list(ref.vectors))
    assert (same.passed, same.n, same.min_cosine, same.mean_cosine) == (True, 3, 1.0, 1.0)
    tilted = [[1, 0], [0, 1], [0.8, 0.6]]  # cosine 0.96 on the last
    q = quality.compare(ref, tilted)
    assert not q.passed and q.min_cosine == pytest.approx(0.96)
    assert q.mean_cosine == pytest.approx((1 + 1 + 0.96) / 3)
    assert quality.compare(ref, tilted, Gate(min_cosine=0.95)).passed  # overridable
    loose = quality.compare(ref, [[2, 0], [0, 2], [1.2, 1.6]])  # cosine 1, norm 2
    assert loose.min_cosine == pytest.approx(1.0) and not loose.passed
    assert "norm" in loose.problem
    nan = quality.compare(ref, [[1, 0], [np.nan, 1], [0.6, 0.8]])
    assert not nan.passed and "NaN" in nan.problem
    assert "2 outputs for 3 inputs" in quality.compare(ref, [[1, 0], [0, 1]]).problem
    assert "shape" in quality.compare(ref, [[1, 0, 0]] * 3).problem
    # a reference that does not normalise: scale is not judged, direction is
    raw = _ref([[2, 0], [0, 3]])
    assert quality.compare(raw, [[1, 0], [0, 1]]).passed


def test_compare_labels_agreement():
    ref = Reference("classification", "hand", "sha", labels=tuple(["pos"] * 199 + ["neg"]))
    one_flip = ["pos"] * 200
    q = quality.compare(ref, one_flip)
    assert q.label_agreement == pytest.approx(0.995) and q.passed and q.min_cosine is None
    assert quality.compare(ref, ["pos"] * 196 + ["neg"] * 4).passed is False  # 0.98
    assert quality.compare(ref, ["neg"] * 200, Gate(min_label_agreement=0.001)).passed
    assert quality.compare(ref, quality.Parsed([np.ones(2)] * 200)).problem  # no labels


def test_gate_is_validated_and_per_task():
    assert Gate().threshold("embedding") == 0.99 and Gate().threshold("classification") == 0.99
    with pytest.raises(ConfigError, match="min_cosine"):
        Gate(min_cosine=1.5)
    with pytest.raises(ConfigError, match="min_label_agreement"):
        Gate(min_label_agreement=0)


def test_combine_takes_the_worst_and_weights_the_mean():
    a = Quality("embedding", 100, 0.99, True, "r", min_cosine=0.995, mean_cosine=0.999)
    b = Quality("embedding", 300, 0.99, False, "r", min_cosine=0.98, mean_cosine=0.995)
    c = quality.combine([a, b])
    assert (c.n, c.min_cosine, c.passed) == (400, 0.98, False)
    assert c.mean_cosine == pytest.approx((0.999 * 100 + 0.995 * 300) / 400)
    assert quality.combine([a]) is a


def test_sample_is_deterministic_spread_and_at_least_200(tiny_tokenizer):
    from workloads import WorkloadSpec, load_workload

    idx = quality.sample_indices(512)
    assert len(idx) == quality.SAMPLE >= 200
    assert idx == sorted(set(idx)) == quality.sample_indices(512)
    assert idx[0] == 0 and idx[-1] >= 500  # the whole workload, not its head
    assert quality.sample_indices(150) == list(range(150))  # fewer texts: all of them
    with pytest.raises(ConfigError):
        quality.sample_indices(10, 0)
    spec = WorkloadSpec(task="embedding", source="synthetic", n=400, seed=3)
    one = quality.sample_texts(load_workload(spec, tiny_tokenizer, 128).texts)
    two = quality.sample_texts(load_workload(spec, tiny_tokenizer, 128).texts)
    assert one == two and len(one) >= 200


def test_columns_are_in_the_schema_and_annotate_rows(tmp_path):
    q = Quality("embedding", 256, 0.99, False, "st", min_cosine=0.3, mean_cosine=0.4)
    cols = q.columns()
    assert set(cols) <= set(SCHEMA)
    assert SCHEMA["quality_passed"] == "bool" and SCHEMA["quality_min_cosine"] == "float"
    assert Quality.from_dict(json.loads(json.dumps(q.as_dict()))) == q
    store = ResultsStore(tmp_path)
    store.append({"vus": 32, "inputs_per_request": 1, "throughput_req_per_sec": 40.0})
    store.append({"vus": 8, "inputs_per_request": 8, "throughput_req_per_sec": 41.0})
    assert store.annotate(cols, {"vus": 8, "inputs_per_request": 8}) == 1
    rows = store.read()
    assert rows["quality_min_cosine"].tolist()[1] == pytest.approx(0.3)
    assert not rows["quality_passed"].tolist()[1] and rows["quality_n"].isna().tolist()[0]
    assert rows["throughput_req_per_sec"].tolist() == [40.0, 41.0]
    assert len(__import__("pandas").read_parquet(store.parquet)) == 2
    with pytest.raises(KeyError):
        store.annotate({"nope": 1}, {"vus": 8})


# --- over HTTP, through loadgen's own protocol client


@pytest.mark.parametrize(
    ("mode", "passed", "problem"),
    [
        ("right", True, None),
        ("cls", False, None),
        ("unnormalised", False, "norm"),
        ("shuffled", False, None),
    ],
)
def test_check_endpoint_passes_the_right_server_and_flags_wrong_ones(
    toy_server, mode, passed, problem
):
    target = Target(f"{toy_server.url}/{mode}", "openai", "toy", "embedding", normalized=True)
    q = quality.check_endpoint(target, TEXTS, _toy_reference(TEXTS), batch_size=7)
    assert q.n == quality.SAMPLE and q.passed is passed
    if passed:
        assert q.min_cosine > 0.9999
    elif problem:
        assert problem in q.problem
    else:
        assert q.min_cosine < 0.9


def test_endpoint_outputs_keep_order_and_refusals_raise(toy_server):
    target = Target(f"{toy_server.url}/right", "openai", "toy", "embedding")
    got = quality.endpoint_outputs(target, TEXTS[:23], batch_size=4, concurrency=3)
    np.testing.assert_allclose(np.asarray(got.values), np.asarray(_toy_embed("right", TEXTS[:23])))
    with pytest.raises(TargetError, match="HTTP 404"):
        quality.endpoint_outputs(Target(f"{toy_server.url}/refuse", "openai", "toy"), TEXTS[:3])


def test_a_reference_for_other_texts_is_refused(toy_server):
    target = Target(f"{toy_server.url}/right", "openai", "toy", "embedding")
    with pytest.raises(ConfigError, match="other texts"):
        quality.check_endpoint(target, TEXTS[:250], _toy_reference(TEXTS))


def _flipped(text: str) -> bool:
    return int(text.split()[1]) % 10 == 0  # "text <i> about ...": every tenth text


def _toy_labels(mode: str, texts: list[str]) -> list[str]:
    right = ["even" if len(t.split()) % 2 == 0 else "odd" for t in texts]
    return [
        "wrong" if mode == "flips" and _flipped(t) else lab
        for t, lab in zip(texts, right, strict=True)
    ]


def test_classifier_label_agreement_over_http(toy_server):
    picked = quality.sample_texts(TEXTS)
    ref = Reference(
        "classification",
        "toy",
        quality.texts_sha(picked),
        labels=tuple(_toy_labels("right", picked)),
    )
    flips = 1 - np.mean([_flipped(t) for t in picked])
    for mode, agreement in (("right", 1.0), ("flips", flips)):
        target = Target(f"{toy_server.url}/{mode}", "classify", "toy", "classification")
        q = quality.check_endpoint(target, TEXTS, ref)
        assert q.label_agreement == pytest.approx(agreement) and q.n == len(picked)
        assert q.passed is (mode == "right")
    assert 0.85 < flips < 0.95


def test_classifier_reference_is_transformers_top1(tmp_path, tiny_tokenizer):
    import torch
    import transformers

    cfg = transformers.DistilBertConfig(
        vocab_size=tiny_tokenizer.vocab_size,
        dim=32,
        hidden_dim=64,
        n_layers=1,
        n_heads=2,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    torch.manual_seed(0)
    model = transformers.DistilBertForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    texts = TEXTS[:20]
    ref = quality.reference_outputs("classification", str(tmp_path), texts, batch_size=8)
    with torch.inference_mode():
        enc = tiny_tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        want = [cfg.id2label[i] for i in model(**enc).logits.argmax(-1).tolist()]
    assert list(ref.labels) == want and "fp32" in ref.source
    with pytest.raises(ConfigError, match="embedding or classification"):
        quality.reference_outputs("vision-embedding", str(tmp_path), texts)


def test_reference_round_trips_through_a_file(tmp_path):
    ref = _toy_reference(TEXTS)
    ref.save(tmp_path / "ref.npz")
    back = Reference.load(tmp_path / "ref.npz")
    assert (back.task, back.source, back.texts_sha) == (ref.task, ref.source, ref.texts_sha)
    np.testing.assert_array_equal(back.vectors, ref.vectors)
    lab = Reference("classification", "t", "s", labels=("a", "b"))
    lab.save(tmp_path / "lab.npz")
    assert Reference.load(tmp_path / "lab.npz").labels == ("a", "b")


# --- the trained all-MiniLM-L6-v2 behind a fake server: mean pooling vs CLS, vs ST fp32


@pytest.fixture(scope="module")
def minilm_server(minilm_dir):
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    model = transformers.AutoModel.from_pretrained(minilm_dir).eval()

    def embed(mode: str, texts: list[str]) -> list[list[float]]:
        enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            h = model(**enc).last_hidden_state
        if mode == "cls":  # Infinity optimum's default on this folder
            v = h[:, 0]
        else:
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1)
        return torch.nn.functional.normalize(v, dim=-1).tolist()

    s = FakeServer(embed=embed)
    yield s
    s.close()


MINILM_TEXTS = [
    f"{w} number {i} is what this short sentence is about, among other things."
    for i, w in enumerate(["a query", "the document", "some passage", "an answer"] * 16)
]


@pytest.mark.trained
def test_trained_minilm_mean_pooling_passes_and_cls_fails(minilm_server, minilm_dir):
    ref = quality.reference_outputs("embedding", str(minilm_dir), MINILM_TEXTS)
    assert ref.vectors.shape == (64, 384) and ref.source.startswith("sentence-transformers")
    right = Target(f"{minilm_server.url}/mean", "openai", "minilm", "embedding")
    q = quality.check_endpoint(right, MINILM_TEXTS, ref)
    assert q.passed and q.min_cosine > 0.9999 and q.n == 64
    wrong = Target(f"{minilm_server.url}/cls", "openai", "minilm", "embedding")
    bad = quality.check_endpoint(wrong, MINILM_TEXTS, str(minilm_dir))  # reference by folder
    assert not bad.passed and bad.min_cosine < 0.9


@pytest.mark.trained
def test_peer_quality_script_checks_and_annotates(minilm_server, minilm_dir, tmp_path):
    peer_quality = _script("peer_quality")
    out = tmp_path / "q.json"
    common = [
        "--served-model",
        "minilm",
        "--model-path",
        str(minilm_dir),
        "--dataset",
        "synthetic",
        "--num-samples",
        "40",
        "--sample",
        "40",
        "--cache",
        str(tmp_path / "ref.npz"),
        "--out",
        str(out),
    ]
    for label, mode in (("before", "mean"), ("after", "cls")):
        rc = peer_quality.main(
            ["check", "--url", f"{minilm_server.url}/{mode}", "--label", label, *common]
        )
        assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["checks"]["before"]["passed"] and not doc["checks"]["after"]["passed"]
    assert not doc["combined"]["passed"] and doc["combined"]["n"] == 80
    assert (tmp_path / "ref.npz").exists()
    store = ResultsStore(tmp_path / "rows")
    store.append({"vus": 32, "inputs_per_request": 1, "dataset": doc["dataset"]})
    rc = peer_quality.main(
        [
            "annotate",
            "--quality",
            str(out),
            "--results",
            str(tmp_path / "rows"),
            "--vus",
            "32",
            "--inputs-per-request",
            "1",
        ]
    )
    assert rc == 0
    row = store.read().iloc[0]
    assert row["quality_passed"] == False and row["quality_n"] == 80  # noqa: E712


def _script(name: str):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_peers_table_never_names_a_failing_server_best(tmp_path, capsys):
    rows = {  # name: (inputs/s, min cosine, passed)
        "ours-onnx": (60.0, 1.0, True),
        "ours-int8": (90.0, 0.985, False),
        "infinity-torch": (40.0, 1.0, True),
        "infinity-optimum-fp32": (45.0, 1.0, True),
        "infinity-optimum-fp32-cls": (80.0, 0.28, False),  # fastest fp32-named peer, but wrong
        "infinity-optimum-int8": (70.0, 0.91, False),
    }
    for name, (thr, lo, ok) in rows.items():
        store = ResultsStore(tmp_path / f"{name}-rep1")
        store.append(
            {
                "vus": 32,
                "inputs_per_request": 1,
                "throughput_req_per_sec": thr,
                "p99_latency_ms": 900.0,
            }
        )
        q = Quality("embedding", 256, 0.99, ok, "st", min_cosine=lo, mean_cosine=lo)
        store.annotate(q.columns(), {"vus": 32})
    assert _script("peers_table").main(tmp_path) == 0
    out = capsys.readouterr().out
    assert "| infinity-optimum-fp32-cls (FAILING QUALITY) | fp32 |" in out
    # 60 / 45, not / 80; one repeat each: no interval, so no verdict either way
    assert (
        "| ours-onnx | fp32 | 32 VUs × 1 | 60.0 | 60.0 (1 repeat: no interval) | 1.33, no interval |"
        in out
    )
    assert "fp32: fastest correct peer **infinity-optimum-fp32** (45.0 inputs/s)" in out
    assert (
        "ours best correct: **ours-onnx** (60.0 inputs/s, 1.33, no interval against the peer)"
        in out
    )
    assert "int8: no int8 peer configuration checked and passing" in out
    assert "FAILING QUALITY: infinity-optimum-int8, ours-int8" in out


@pytest.mark.trained
def test_sweep_url_rows_carry_the_quality_and_a_wrong_pooling_is_flagged(
    minilm_server, minilm_dir, tmp_path, capsys
):
    import pandas as pd

    from harness import sweep

    common = [
        *"--task embedding --model all-minilm-l6 --dataset synthetic --num-samples 64".split(),
        *"--protocol openai --served-model minilm --vus-start 2 --vus-max 2".split(),
        *"--repeats 1 --iterations 8 --no-ceiling".split(),
        *("--model-path", str(minilm_dir), "--reference-model", str(minilm_dir)),
    ]
    got = {}
    for mode in ("mean", "cls"):
        out = tmp_path / mode
        argv = [*common, "--url", f"{minilm_server.url}/{mode}", "--output-dir", str(out)]
        assert sweep.main(argv) == 0
        row = pd.read_csv(out / "results.csv").iloc[-1]
        got[mode] = row
        said = capsys.readouterr().out
        assert ("FAILING QUALITY" in said) is (mode == "cls")
    assert bool(got["mean"]["quality_passed"]) and got["mean"]["quality_min_cosine"] > 0.9999
    assert not bool(got["cls"]["quality_passed"]) and got["cls"]["quality_min_cosine"] < 0.9
    assert (
        got["cls"]["quality_n"] == 64 and "sentence-transformers" in got["cls"]["quality_reference"]
    )
