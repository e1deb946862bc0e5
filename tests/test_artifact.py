import json

import pytest
from helpers import manifest

from engines.artifact import ArtifactError, read_manifest, verify, write_manifest


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


# --------------------------------------------------------------------------- seal and trust
def _native(tmp_path, fmt="aoti", name="model.pt2"):
    (tmp_path / name).write_bytes(b"\x7fELF native code")
    write_manifest(tmp_path, manifest(format=fmt))
    return tmp_path


def _forge(folder, name):
    """What an attacker can do without the key: change a file and rewrite its sha256."""
    from engines.artifact import sha256_file

    (folder / name).write_bytes(b"\x7fELF the attacker's code")
    data = json.loads((folder / "manifest.json").read_text())
    data["files"][name] = sha256_file(folder / name)
    (folder / "manifest.json").write_text(json.dumps(data))


def test_a_sealed_native_artifact_verifies_and_a_forged_one_is_refused(tmp_path):
    from engines.artifact import UnverifiedArtifact

    folder = _native(tmp_path)
    assert verify(folder).sealed
    _forge(folder, "model.pt2")
    with pytest.raises(UnverifiedArtifact, match="--trust-artifact"):
        verify(folder)
    assert not verify(folder, trust=True).sealed  # the user's explicit choice


def test_an_edited_manifest_loses_its_seal_even_for_data_formats(artifact):
    data = json.loads((artifact / "manifest.json").read_text())
    data["parity"] = {"passed": True, "metric": "cos=1.0"}
    (artifact / "manifest.json").write_text(json.dumps(data))
    m = verify(artifact)  # ONNX runs no code of its own: readable, but its claims are unsealed
    assert not m.sealed and not m.native_code


def test_manifest_paths_outside_the_folder_are_refused(tmp_path):
    folder = _native(tmp_path, fmt="onnx", name="model.onnx")
    data = json.loads((folder / "manifest.json").read_text())
    data["files"] = {"../outside.bin": "0" * 64}
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="outside its folder"):
        verify(folder, trust=True)


def test_the_aoti_engine_refuses_a_forged_package_before_loading_it(tmp_path, monkeypatch):
    import torch

    from engines import EngineConfig
    from engines.artifact import UnverifiedArtifact
    from engines.registry import create_engine

    folder = tmp_path / "aoti"
    folder.mkdir()
    (folder / "model.pt2").write_bytes(b"package")
    write_manifest(
        folder,
        manifest(
            model="distilbert-sentiment-tiny",
            task="classification",
            format="aoti",
            hardware={"device": "cpu", "torch": torch.__version__},
        ),
    )
    _forge(folder, "model.pt2")
    loaded = []
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda p: loaded.append(p))
    cfg = EngineConfig(engine="aoti", model="distilbert-sentiment-tiny", artifact=str(folder))
    with pytest.raises(UnverifiedArtifact, match="native code"):
        create_engine(cfg).load()
    assert loaded == []  # dlopen never happened
