"""Triton engine: tritonclient (HTTP or gRPC) against Triton or any KServe-v2 server.

`infer` sends input_ids / attention_mask to the repository's `encoder` model as binary tensors
(the timed forward then is one Triton round trip); `predict_remote` sends raw strings (BYTES) to
the ensemble, so tokenizing and pooling run inside Triton. `server_stats` reads Triton's
statistics endpoint: queue, compute input / infer / output time and execution counts.

Without `url` the engine serves its artifact (a repository written by `--format triton`) with
the bundled tritonserver on loopback, shared by all copies of the engine in this process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core import contract
from core.errors import EngineError, MissingDependency
from core.processes.tritonserver import INSTALL_HINT, TritonServer
from engines.artifact import verify
from engines.base import Engine, EngineOptions, RemoteServer, option
from engines.pipeline import Prediction, check_texts

ENCODER = "encoder"

# repository path -> [server, users]; one bundled server per repository per process
_SERVERS: dict[str, list] = {}
_SERVERS_LOCK = threading.Lock()


def _acquire_server(repo: str, models: list[str]) -> TritonServer:
    with _SERVERS_LOCK:
        entry = _SERVERS.get(repo)
        if entry is None or entry[0].proc is None or entry[0].proc.poll() is not None:
            server = TritonServer(repo, models=models).start()
            entry = _SERVERS[repo] = [server, 0]
        entry[1] += 1
        return entry[0]


def _release_server(repo: str) -> None:
    with _SERVERS_LOCK:
        entry = _SERVERS.get(repo)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            entry[0].stop()
            del _SERVERS[repo]


def client_module(transport: str):
    try:
        if transport == "grpc":
            import tritonclient.grpc as mod
        else:
            import tritonclient.http as mod
    except ImportError as e:
        raise MissingDependency(f"tritonclient[{transport}]", "triton") from e
    return mod


def host_port(url: str) -> tuple[str, bool]:
    """tritonclient wants host:port; returns it and whether TLS is asked for."""
    ssl = url.startswith("https://")
    return url.split("://", 1)[-1].rstrip("/"), ssl


@dataclass(frozen=True)
class TritonClientOptions(EngineOptions):
    triton_url: str | None = option(
        None,
        flag="--triton-url",
        help="--engine triton: a running Triton (http://host:8000, or host:8001 with --transport "
        "grpc); default: serve the exported repository with the bundled tritonserver",
    )
    transport: str | None = option(
        None, flag="--transport", help="tritonclient transport", choices=("http", "grpc")
    )


class TritonEngine(Engine):
    devices = ("cpu", "cuda")
    artifact_format = "triton"
    requires = (("tritonclient", "triton"),)
    install_hint = INSTALL_HINT
    remote_server = RemoteServer("triton", perf_analyzer=True, config_sweep=True)
    Options = TritonClientOptions

    def __init__(self, config):
        super().__init__(config)
        self._local = threading.local()
        self._clients: list = []
        self._server: TritonServer | None = None
        self._repo: str | None = None
        self.url = ""
        self.transport = self.options.transport or "http"
        self._encoder = True

    @classmethod
    def needs_artifact(cls, config) -> bool:
        """A repository is exported and served here only when no --triton-url is given."""
        return not getattr(config.options, "triton_url", None)

    @classmethod
    def preflight(cls, config) -> None:
        """With --triton-url, fail in one line before any work when nothing listens there."""
        import socket

        url = getattr(config.options, "triton_url", None)
        if not url:
            return
        hostport, _ = host_port(url)
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port or 80)), timeout=3):
                pass
        except (OSError, ValueError) as e:
            raise EngineError(
                f"Triton at {url} is unreachable ({e.__class__.__name__}: {e}); start it "
                "(python -m harness.tools serve-triton REPO) or fix --triton-url"
            ) from None

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self) -> None:
        cfg, transport = self.config, self.transport
        self._mod = client_module(transport)
        self._grpc = transport == "grpc"
        self.ensemble = self.spec.name
        provenance: dict[str, Any] = {}
        if self.options.triton_url:
            address = self.options.triton_url
        else:
            if not cfg.artifact:
                raise EngineError(
                    "--engine triton needs a server (--triton-url) or a repository to serve; "
                    f"write one: python -m harness.export --model {cfg.model} --format triton"
                )
            m = verify(
                cfg.artifact, {"format": "triton", "model": cfg.model}, trust=cfg.trust_artifact
            )
            provenance = dict(
                weights=m.weights, model_source=m.model_id, parity=m.parity, tokenizer=m.tokenizer
            )
            self._repo = str(Path(cfg.artifact).resolve())
            self._server = _acquire_server(self._repo, [self.ensemble])
            address = self._server.url if transport == "http" else self._server.grpc_url
        self.url = address
        self._hostport, self._ssl = host_port(address)
        client = self._client()
        try:
            live = client.is_server_live()
        except Exception as e:  # connection refused, DNS, TLS: all say the same to the user
            raise EngineError(
                f"Triton at {address} is unreachable ({type(e).__name__}: {str(e)[:120]}); "
                "start it (python -m harness.tools serve-triton REPO) or fix --triton-url"
            ) from None
        if not live:
            raise EngineError(f"Triton at {address} is not live")
        # a KServe server that serves only the text model (ours: harness.serve) has no encoder;
        # predict_remote works there, the tensor-level infer() does not
        self._encoder = not self.options.triton_url or client.is_model_ready(ENCODER)
        for name in (ENCODER, self.ensemble) if self._encoder else (self.ensemble,):
            if not client.is_model_ready(name):
                raise EngineError(
                    f"model {name!r} is not ready on {address}; serve a repository written by "
                    f"python -m harness.export --model {cfg.model} --format triton"
                )
        enc = self._config(ENCODER if self._encoder else self.ensemble)
        self._output = enc["output"][0]["name"]
        self._inputs = [i["name"] for i in enc["input"]]
        self._load_pipeline()
        if not provenance:  # a remote server: what its ensemble says, else unknown
            params = self._config(self.ensemble).get("parameters", {})
            provenance = {"weights": params.get("weights", {}).get("string_value", "unknown")}
        self.info.update(
            provenance,
            server=address,
            transport=transport,
            triton_backend=enc.get("backend") or enc.get("platform"),
            triton_instances=sum(int(g.get("count", 1)) for g in enc.get("instance_group", [])),
            triton_max_batch=int(enc.get("max_batch_size", 0)),
            triton_dynamic_batching="dynamic_batching" in enc,
            triton_queue_delay_us=int(
                enc.get("dynamic_batching", {}).get("max_queue_delay_microseconds", 0)
            )
            if "dynamic_batching" in enc
            else None,
            tritonserver=self._server.install.source if self._server else "remote",
        )

    def _client(self):
        c = getattr(self._local, "client", None)
        if c is None:
            if self._grpc:
                c = self._mod.InferenceServerClient(self._hostport, ssl=self._ssl)
            else:
                c = self._mod.InferenceServerClient(
                    self._hostport, ssl=self._ssl, connection_timeout=60, network_timeout=300
                )
            self._local.client = c
            self._clients.append(c)
        return c

    def _config(self, name: str) -> dict:
        c = self._client()
        if self._grpc:
            from google.protobuf import json_format

            return json_format.MessageToDict(
                c.get_model_config(name).config, preserving_proto_field_name=True
            )
        return c.get_model_config(name)

    def close(self) -> None:
        for c in self._clients:
            try:
                c.close()
            except Exception:  # closing a dead connection must not fail the run
                pass
        self._clients.clear()
        self._local = threading.local()
        if self._repo:
            _release_server(self._repo)
            self._repo = None
            self._server = None

    # -- inference ---------------------------------------------------------------------------
    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if not self._encoder:
            raise EngineError(
                f"{self.url} serves {self.ensemble!r} (text in) but no {ENCODER!r} model, so "
                "there is no tensor-level forward to time; drive it with --load perf_analyzer "
                "or python -m harness.sweep --url"
            )
        mod = self._mod
        tensors = []
        for name in self._inputs:
            x = np.ascontiguousarray(inputs[name], dtype=np.int64)
            t = mod.InferInput(name, list(x.shape), "INT64")
            if self._grpc:
                t.set_data_from_numpy(x)
            else:
                t.set_data_from_numpy(x, binary_data=True)
            tensors.append(t)
        out = (
            mod.InferRequestedOutput(self._output)
            if self._grpc
            else mod.InferRequestedOutput(self._output, binary_data=True)
        )
        try:
            res = self._client().infer(ENCODER, tensors, outputs=[out])
        except Exception as e:
            raise EngineError(f"Triton infer on {ENCODER!r} failed: {str(e)[:300]}") from None
        return res.as_numpy(self._output)

    def predict_remote(self, texts: list[str]) -> Prediction:
        """Raw strings to the ensemble (tokenize, forward and pool inside Triton)."""
        check_texts(texts)
        mod = self._mod
        data = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        t = mod.InferInput(contract.TEXT, list(data.shape), "BYTES")
        t.set_data_from_numpy(data)
        names = contract.output_names(self.spec.task)
        outs = [mod.InferRequestedOutput(n) for n in names]
        try:
            res = self._client().infer(self.ensemble, [t], outputs=outs)
        except Exception as e:
            raise EngineError(f"Triton infer on {self.ensemble!r} failed: {str(e)[:300]}") from None
        values = res.as_numpy(names[0]).astype(np.float32)
        labels = None
        if self.spec.task == "classification":
            labels = [
                x.decode() if isinstance(x, bytes) else str(x)
                for x in res.as_numpy(contract.LABELS).reshape(-1)
            ]
        return Prediction(values, labels)

    # -- server-side breakdown (engines.base.ReportsServerStats) ------------------------------
    def server_delta(self, before: dict, after: dict) -> dict[str, Any]:
        out: dict[str, Any] = dict(stats_delta(before, after))
        if self._server is not None:
            out["server_rss_mb"] = self._server.rss_mb()
        return out

    def server_stats(self, model: str = ENCODER) -> dict[str, float]:
        """Cumulative counters of one model: counts, and total ns per phase."""
        c = self._client()
        if self._grpc:
            from google.protobuf import json_format

            raw = json_format.MessageToDict(
                c.get_inference_statistics(model), preserving_proto_field_name=True
            )
        else:
            raw = c.get_inference_statistics(model)
        return counters((raw.get("model_stats") or [{}])[0])


def counters(stats: dict) -> dict[str, float]:
    """One model's entry of Triton's statistics JSON -> the counters `stats_delta` reads.

    (gRPC's JSON form writes 64-bit counts as strings; float() takes both.)
    """
    inf = stats.get("inference_stats", {})
    out = {
        "inference_count": float(stats.get("inference_count", 0)),
        "execution_count": float(stats.get("execution_count", 0)),
        "success_count": float(inf.get("success", {}).get("count", 0)),
    }
    for phase in ("queue", "compute_input", "compute_infer", "compute_output", "success"):
        out[f"{phase}_ns"] = float(inf.get(phase, {}).get("ns", 0))
    return out


def stats_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Per-request server-side milliseconds between two `server_stats` snapshots."""
    n = after["success_count"] - before["success_count"]
    execs = after["execution_count"] - before["execution_count"]
    infers = after["inference_count"] - before["inference_count"]

    def ms(phase: str) -> float | None:
        return (after[f"{phase}_ns"] - before[f"{phase}_ns"]) / n / 1e6 if n > 0 else None

    return {
        "server_requests": n,
        "server_executions": execs,
        "server_inferences": infers,
        "server_avg_batch": infers / execs if execs > 0 else None,
        "server_queue_ms": ms("queue"),
        "server_compute_input_ms": ms("compute_input"),
        "server_compute_infer_ms": ms("compute_infer"),
        "server_compute_output_ms": ms("compute_output"),
        "server_request_ms": ms("success"),
    }
