import json

import pytest

from engines.artifact import ArtifactError, Manifest, read_manifest, verify, write_manifest


def manifest(**kw):
    base = dict(
        model="bge-base-tiny",
        task="embedding",
        format="onnx",
        precision="fp32",
        model_id="config:bge-base-tiny",
        revision="config-only",
        weights="random",
        tokenizer="fallback-wordpiece",
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
    )
    base.update(kw)
    return Manifest(**base)


@pytest.fixture
def artifact(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"weights")
    write_manifest(tmp_path, manifest())
    return tmp_path


def test_manifest_records_sha256_of_every_file(artifact):
    m = read_manifest(artifact)
    assert set(m.files) == {"model.onnx"} and len(m.files["model.onnx"]) == 64
    assert verify(artifact, {"format": "onnx", "model": "bge-base-tiny"}).weights == "random"


def test_missing_folder_and_missing_manifest(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        verify(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="has no manifest.json"):
        verify(tmp_path)


def test_mismatch_names_the_field(artifact):
    with pytest.raises(ArtifactError, match="built with precision='fp32', not 'int8'"):
        verify(artifact, {"precision": "int8"})


def test_tampered_file_fails_its_hash(artifact):
    (artifact / "model.onnx").write_bytes(b"other weights")
    with pytest.raises(ArtifactError, match="model.onnx fails its sha256 check"):
        verify(artifact)


def test_deleted_file_and_corrupt_manifest(artifact):
    (artifact / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="model.onnx is missing"):
        verify(artifact)
    (artifact / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        verify(artifact)


def test_manifest_without_required_fields(artifact):
    (artifact / "manifest.json").write_text(json.dumps({"schema": 1, "model": "x"}))
    with pytest.raises(ArtifactError, match="lacks required fields"):
        verify(artifact)
