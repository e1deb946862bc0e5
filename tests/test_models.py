import os

import numpy as np
import pytest

from core.errors import ConfigError, EngineError
from engines.models import MODELS, get_spec, load_model


def test_registry_has_the_seed_models_and_tiny_variants():
    assert get_spec("distilbert-sentiment").hub_id == (
        "lxyuan/distilbert-base-multilingual-cased-sentiments-student"
    )
    assert get_spec("distilbert-sentiment").num_labels == 3
    gte = get_spec("gte-modernbert")
    assert (gte.task, gte.pooling, gte.dim, gte.normalize) == ("embedding", "cls", 768, True)
    assert get_spec("bge-base").dim == 768 and get_spec("bge-base").pooling == "cls"
    col = get_spec("colqwen2")
    assert col.task == "vision-embedding" and col.multi_vector and col.dim == 128
    for name in ("distilbert-sentiment", "gte-modernbert", "bge-base"):
        tiny = MODELS[f"{name}-tiny"]
        assert tiny.tiny and tiny.hub_id is None
        layers = tiny.arch_config.get("n_layers", tiny.arch_config.get("num_hidden_layers"))
        assert layers == 2


def test_unknown_model_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'bert-huge'.*distilbert-sentiment"):
        get_spec("bert-huge")


def test_random_weights_are_labelled_and_deterministic():
    spec = get_spec("bge-base-tiny")
    a = load_model(spec, weights="random", seed=0)
    b = load_model(spec, weights="random", seed=0)
    assert a.weights == "random" and a.source == "config:bge-base-tiny"
    pa = next(a.model.parameters()).detach().numpy()
    pb = next(b.model.parameters()).detach().numpy()
    assert np.array_equal(pa, pb)


def test_offline_auto_falls_back_to_random_and_pretrained_refuses():
    spec = get_spec("distilbert-sentiment")
    with pytest.raises(EngineError, match="Hub is unreachable.*--weights random"):
        load_model(spec, weights="pretrained")


def test_local_directory_roundtrip(tmp_path):
    spec = get_spec("distilbert-sentiment-tiny")
    m = load_model(spec, weights="random")
    m.model.save_pretrained(tmp_path)
    again = load_model(spec, model_path=str(tmp_path))
    assert again.weights == "local"
    with pytest.raises(ConfigError, match="not a directory"):
        load_model(spec, model_path=str(tmp_path / "nope"))


def test_flops_per_input_matches_parameter_count():
    # dense FLOPs ~ 2 x (encoder matmul params) x tokens; check against the built model
    spec = get_spec("bge-base-tiny")
    model = load_model(spec, weights="random").model
    enc = sum(
        p.numel()
        for n, p in model.named_parameters()
        if "encoder" in n and n.endswith("weight") and p.dim() == 2
    )
    t = 100
    dense = spec.flops_per_input(t, 0)
    assert dense == pytest.approx(2 * enc * t, rel=1e-6)
    assert spec.flops_per_input(t) > dense  # attention adds T^2 work


def test_fallback_tokenizers_are_the_same_in_every_process():
    """Servers started with the same model must tokenize identically (hash seeds differ)."""
    import subprocess
    import sys

    code = (
        "import hashlib;from engines.models import get_spec;"
        "from engines.models.tokenizers import _fallback_tokenizer as f;"
        "print(*(hashlib.sha256(f(get_spec(m)).tokenizer.backend_tokenizer.to_str().encode())"
        ".hexdigest() for m in ('distilbert-sentiment', 'gte-modernbert')))"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (0, 1, 2)
    }
    assert len(seen) == 1, seen
