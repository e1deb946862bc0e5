"""Artifact folders: model file(s) plus `manifest.json`, verified before any engine loads them.

Written by `exporters/`, read by the engines that run exported formats. An artifact whose
manifest is missing, does not match what was asked for, or fails a file hash is refused, and the
error says which.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engines.errors import BillionbenchError

MANIFEST = "manifest.json"
SCHEMA = 1


class ArtifactError(BillionbenchError):
    """An artifact folder cannot be used as asked; the message says why and what to do."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Manifest:
    """What an artifact is, what it was built from and for, and whether it matches eager fp32."""

    model: str  # registry name
    task: str
    format: str  # onnx | aoti | trt | neuron | ...
    precision: str  # fp32 | fp16 | bf16 | int8
    model_id: str  # hub id, directory, or config:<name>
    revision: str
    weights: str  # pretrained | local | random
    tokenizer: str
    input_names: list[str]
    output_names: list[str]
    variant: str = ""  # e.g. "optimized" for ORT-optimized ONNX
    dynamic_axes: dict[str, dict[str, str]] = field(default_factory=dict)
    shape_profiles: dict[str, Any] = field(default_factory=dict)  # min/opt/max or buckets
    hardware: dict[str, Any] = field(default_factory=dict)  # what it was built for
    tool_versions: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    parity: dict[str, Any] | None = None
    export_seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)  # fusion counts, trtexec command, ...
    created: str = ""
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f.name for f in fields(cls)}
        missing = [
            f.name
            for f in fields(cls)
            if f.name not in data and f.default is MISSING and f.default_factory is MISSING
        ]
        if missing:
            raise ArtifactError(f"manifest lacks required fields {missing}; re-export it")
        return cls(**{k: v for k, v in data.items() if k in known})


def write_manifest(directory: str | Path, manifest: Manifest) -> Manifest:
    """Hash every file in the folder (except the manifest) and write manifest.json."""
    d = Path(directory)
    manifest.files = {
        str(p.relative_to(d)): sha256_file(p)
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest.created = manifest.created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    tmp = d / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    tmp.replace(d / MANIFEST)
    return manifest


def read_manifest(directory: str | Path) -> Manifest:
    d = Path(directory)
    path = d / MANIFEST
    if not d.is_dir():
        raise ArtifactError(f"artifact {d} does not exist; export it with: python -m exporters")
    if not path.is_file():
        raise ArtifactError(
            f"artifact {d} has no {MANIFEST}; re-export it with python -m exporters"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); re-export the artifact") from e
    if data.get("schema") != SCHEMA:
        raise ArtifactError(f"{path} has schema {data.get('schema')!r}, expected {SCHEMA}")
    return Manifest.from_dict(data)


def verify(directory: str | Path, expect: dict[str, Any] | None = None) -> Manifest:
    """Read the manifest, check it is what was asked for, and check every file's sha256."""
    d = Path(directory)
    m = read_manifest(d)
    for key, want in (expect or {}).items():
        got = getattr(m, key, None)
        if got != want:
            raise ArtifactError(
                f"artifact {d} was built with {key}={got!r}, not {want!r}; "
                "export a matching one (python -m exporters) or point to another folder"
            )
    if not m.files:
        raise ArtifactError(f"artifact {d}: manifest lists no files")
    stamps = []
    for rel in m.files:
        p = d / rel
        if not p.is_file():
            raise ArtifactError(f"artifact {d}: {rel} is missing; re-export the artifact")
        st = p.stat()
        stamps.append((rel, st.st_size, st.st_mtime_ns))
    # hashing a 500 MB model costs seconds: each unchanged file set is hashed once per process
    # (model copies, the cache check and the engine load all verify the same folder)
    seen = (str(d.resolve()), tuple(sorted(m.files.items())), tuple(stamps))
    if seen in _VERIFIED:
        return m
    for rel, digest in m.files.items():
        if sha256_file(d / rel) != digest:
            raise ArtifactError(
                f"artifact {d}: {rel} fails its sha256 check (changed since export); re-export it"
            )
    _VERIFIED.add(seen)
    return m


_VERIFIED: set[tuple] = set()
