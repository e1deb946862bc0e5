"""The example Triton repositories in model_repository/ are what the exporter writes today.

`scripts/model_repository.sh` regenerates them into a temporary folder; every tracked file
(README.md, config.pbtxt, model.py) must come out byte for byte as checked in. Weights, tokenizer
files and manifests are not compared: they are git-ignored, and the manifests hold the export
time, file hashes, tool versions and measured parity deltas.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = "distilbert-sentiment-tiny"
BACKENDS = ("python", "onnxruntime", "pytorch", "tensorrt")
TRACKED = ("README.md", "config.pbtxt", "model.py")  # as .gitignore lets through
WEIGHTS = {
    "python": "encoder/1/model.onnx",
    "onnxruntime": "encoder/1/model.onnx",
    "pytorch": "encoder/1/model.pt",
}


def _tracked(repo: Path) -> dict[str, str]:
    return {
        str(p.relative_to(repo)): p.read_text()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and p.name in TRACKED
    }


# the exporter builds configs with tritonclient's protobuf: tests that regenerate carry the gate
@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("regenerated")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "model_repository.sh"), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PY": sys.executable},
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return out / "model_repository"


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_example_is_checked_in(backend):
    # other folders here are the user's own exports (git-ignored), not examples
    repo = ROOT / "model_repository" / f"{MODEL}-{backend}"
    assert (repo / "README.md").is_file() and (repo / "encoder" / "config.pbtxt").is_file()


@pytest.mark.tritonclient
@pytest.mark.parametrize("backend", BACKENDS)
def test_checked_in_files_equal_what_the_exporter_writes(regenerated, backend):
    name = f"{MODEL}-{backend}"
    want = _tracked(regenerated / name)
    have = _tracked(ROOT / "model_repository" / name)
    assert (
        "README.md" in want and f"{MODEL}/config.pbtxt" in want and "encoder/config.pbtxt" in want
    )
    assert sorted(have) == sorted(want), "run: bash scripts/model_repository.sh"
    for rel, text in want.items():
        assert have[rel] == text, f"{name}/{rel} differs; run: bash scripts/model_repository.sh"


@pytest.mark.tritonclient
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_command_brings_the_weights_back(regenerated, backend):
    repo = regenerated / f"{MODEL}-{backend}"
    assert (repo / "manifest.json").is_file()
    assert (repo / "tokenizer/1/tokenizer/tokenizer.json").is_file()
    if backend == "tensorrt":  # a plan is built only on its target GPU
        assert not any((repo / "encoder").rglob("model.*"))
    else:
        assert (repo / WEIGHTS[backend]).stat().st_size > 0
