"""Artifact folders: model file(s) plus `manifest.json`, verified before any engine loads them.

Written by `exporters/`, read by the engines that run exported formats. An artifact whose
manifest is missing, does not match what was asked for, or fails a file hash is refused, and the
error says which.

A manifest also carries a seal: an HMAC of its content under a key kept outside the artifact, in
this user's cache (created on first use). Anyone can rewrite a manifest's sha256 entries; nobody
without the key can re-seal it. An artifact that carries native code (an AOTInductor `.pt2`
loaded with dlopen, a TensorRT plan, Neuron graphs, TorchScript) is loaded only when its seal
verifies here, or when the user says they trust it (`--trust-artifact`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.environment import var
from core.errors import BillionbenchError

MANIFEST = "manifest.json"
SCHEMA = 1
#: formats whose files are executed (or deserialised into native code) when loaded
NATIVE_FORMATS = {"aoti", "trt", "neuron"}
#: Triton backends whose encoder is native code (a TensorRT plan, TorchScript)
NATIVE_TRITON_BACKENDS = {"tensorrt", "pytorch"}


class ArtifactError(BillionbenchError):
    """An artifact folder cannot be used as asked; the message says why and what to do."""


class UnverifiedArtifact(ArtifactError):
    """An artifact with native code whose seal does not verify here, and that is not trusted."""


def key_path() -> Path:
    """Where this user's sealing key lives (outside every artifact)."""
    explicit = var("BILLIONBENCH_SEAL_KEY")
    if explicit:
        return Path(explicit)
    cache = var("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "billionbench" / "artifact-seal.key"


def _key() -> bytes:
    path = key_path()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    try:
        os.link(tmp, path)  # first writer wins; a concurrent process reads the winner's key
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()


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
    seal: str = ""  # HMAC-SHA256 of everything above, under this user's key (see key_path)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    def digest(self) -> str:
        """The seal this manifest's content gets under this machine's key."""
        body = json.dumps({**asdict(self), "seal": ""}, sort_keys=True, default=str)
        return hmac.new(_key(), body.encode(), hashlib.sha256).hexdigest()

    @property
    def sealed(self) -> bool:
        """Whether this manifest was written, unchanged, by an export under this user's key."""
        return bool(self.seal) and hmac.compare_digest(self.seal, self.digest())

    @property
    def verdict(self) -> str:
        """The parity result in words, the same everywhere: passed, FAILED, or not run (why)."""
        parity = self.parity or {}
        passed = parity.get("passed")
        if passed is True:
            return "passed"
        if passed is False:
            return "FAILED"
        return f"not run ({parity['skipped']})" if parity.get("skipped") else "not run"

    @property
    def native_code(self) -> bool:
        """Whether loading the artifact runs code it carries (dlopen, deserialised plans)."""
        backend = (self.details or {}).get("backend")
        return self.format in NATIVE_FORMATS or (
            self.format == "triton" and backend in NATIVE_TRITON_BACKENDS
        )

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
    manifest.seal = manifest.digest()
    tmp = d / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    tmp.replace(d / MANIFEST)
    return manifest


def read_manifest(directory: str | Path) -> Manifest:
    d = Path(directory)
    path = d / MANIFEST
    if not d.is_dir():
        raise ArtifactError(
            f"artifact {d} does not exist; export it with: python -m harness.export"
        )
    if not path.is_file():
        raise ArtifactError(
            f"artifact {d} has no {MANIFEST}; re-export it with python -m harness.export"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); re-export the artifact") from e
    if data.get("schema") != SCHEMA:
        raise ArtifactError(f"{path} has schema {data.get('schema')!r}, expected {SCHEMA}")
    return Manifest.from_dict(data)


def verify(
    directory: str | Path, expect: dict[str, Any] | None = None, *, trust: bool = False
) -> Manifest:
    """Read the manifest, check it is what was asked for, and check every file's sha256.

    An artifact with native code must also carry a seal that verifies here, unless `trust`.
    """
    d = Path(directory)
    m = read_manifest(d)
    unsafe = [rel for rel in m.files if Path(rel).is_absolute() or ".." in Path(rel).parts]
    if unsafe:
        raise ArtifactError(
            f"artifact {d}: manifest names files outside its folder ({unsafe[0]!r}); refused"
        )
    for key, want in (expect or {}).items():
        got = getattr(m, key, None)
        if got != want:
            raise ArtifactError(
                f"artifact {d} was built with {key}={got!r}, not {want!r}; "
                "export a matching one (python -m harness.export) or point to another folder"
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
    check_trust(d, m, trust)  # before hashing: a refused artifact is never read further
    if seen in _VERIFIED:
        return m
    for rel, digest in m.files.items():
        if sha256_file(d / rel) != digest:
            raise ArtifactError(
                f"artifact {d}: {rel} fails its sha256 check (changed since export); re-export it"
            )
    _VERIFIED.add(seen)
    return m


def check_trust(directory: str | Path, m: Manifest, trust: bool) -> None:
    """Refuse to load native code whose manifest this machine did not seal, unless trusted."""
    if m.native_code and not trust and not m.sealed:
        files = ", ".join(sorted(m.files)[:3])
        raise UnverifiedArtifact(
            f"artifact {directory} carries native code ({files}) and its manifest is not sealed "
            "by this machine's key (exported elsewhere, or edited since); re-export it here, "
            "or pass --trust-artifact if you trust where it came from"
        )


_VERIFIED: set[tuple] = set()
