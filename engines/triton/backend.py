"""Triton python-backend models: the tokenizer, the encoder (our own engine) and the postprocess.

A repository written by `exporters/triton.py` holds one-line `model.py` shims importing these
classes, so Triton runs exactly the tokenization, forward and pooling our engines run.
`triton_python_backend_utils` exists only inside Triton's python stub; it is imported lazily.
Each `execute` gets every request of a dynamic batch at once and answers each one, turning a
bad request into that request's error instead of failing the batch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from core import contract
from core.environment import set_var
from engines.base import EngineConfig
from engines.models import get_spec
from engines.pipeline import Batch, Pipeline, to_numpy
from engines.registry import create_engine


def _pb():
    import triton_python_backend_utils as pb_utils

    return pb_utils


def _params(args: dict) -> dict[str, str]:
    cfg = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}


def _version_dir(args: dict) -> Path:
    return Path(args["model_repository"]) / args["model_version"]


def _error(message: str):
    pb = _pb()
    return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(message))


class TokenizerModel:
    """TEXT [n, 1] BYTES -> input_ids, attention_mask [n, L], L padded up to a length bucket.

    Padding to buckets (not to each request's longest input) gives the encoder's dynamic
    batcher requests of equal shape to merge.
    """

    def initialize(self, args: dict) -> None:
        from transformers import AutoTokenizer

        p = _params(args)
        spec = get_spec(p["MODEL"])
        tok = AutoTokenizer.from_pretrained(str(_version_dir(args) / "tokenizer"))
        self.pipeline = Pipeline(spec, tok, int(p.get("MAX_SEQ_LEN") or spec.max_seq_len))
        self.buckets = sorted(int(b) for b in p.get("SEQ_BUCKETS", "").split(",") if b)
        self.pad_id = tok.pad_token_id or 0

    def _width(self, longest: int) -> int:
        return next((b for b in self.buckets if b >= longest), longest)

    def execute(self, requests: list) -> list:
        pb = _pb()
        out = []
        for request in requests:
            try:
                raw = pb.get_input_tensor_by_name(request, contract.TEXT).as_numpy().reshape(-1)
                texts = [
                    x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x)
                    for x in raw
                ]
                ids_list = self.pipeline.tokenize(texts)
                width = self._width(max(len(ids) for ids in ids_list))
                ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
                mask = np.zeros((len(texts), width), dtype=np.int64)
                for i, row in enumerate(ids_list):
                    ids[i, : len(row)] = row
                    mask[i, : len(row)] = 1
                out.append(
                    pb.InferenceResponse(
                        [pb.Tensor("input_ids", ids), pb.Tensor("attention_mask", mask)]
                    )
                )
            except Exception as e:  # one bad request must not fail the others
                out.append(_error(f"tokenizer: {e}"))
        return out


class EncoderModel:
    """input_ids, attention_mask -> logits | last_hidden_state, through a billionbench engine.

    All requests of a dynamic batch are padded together and run as one forward.
    """

    def initialize(self, args: dict) -> None:
        p = _params(args)
        config = json.loads(args["model_config"])
        threads = int(p.get("THREADS") or 0)
        if not threads:  # share the host's cores between this model's instances
            count = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
            threads = max(1, (os.cpu_count() or 1) // count)
        set_var("OMP_NUM_THREADS", str(threads))
        engine = p.get("ENGINE", "onnx")
        device = p.get("DEVICE", "cpu")
        if args.get("model_instance_kind") == "GPU":
            device = "cuda"
        cfg = EngineConfig(
            engine=engine,
            model=p["MODEL"],
            device=device,
            artifact=str(_version_dir(args)) if engine == "onnx" else None,
            threads=threads,
        )
        self.engine = create_engine(cfg)
        self.engine.load()
        self.output = config["output"][0]["name"]

    def execute(self, requests: list) -> list:
        pb = _pb()
        ids, masks, good = [], [], []
        out: list = [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                ids.append(pb.get_input_tensor_by_name(request, "input_ids").as_numpy())
                masks.append(pb.get_input_tensor_by_name(request, "attention_mask").as_numpy())
                good.append(i)
            except Exception as e:
                out[i] = _error(f"encoder: {e}")
        if good:
            width = max(x.shape[1] for x in ids)
            rows = sum(x.shape[0] for x in ids)
            all_ids = np.zeros((rows, width), dtype=np.int64)
            all_mask = np.zeros((rows, width), dtype=np.int64)
            r = 0
            for x, m in zip(ids, masks, strict=True):
                all_ids[r : r + len(x), : x.shape[1]] = x
                all_mask[r : r + len(x), : m.shape[1]] = m
                r += len(x)
            try:
                y = np.ascontiguousarray(
                    _to_numpy(self.engine.infer({"input_ids": all_ids, "attention_mask": all_mask}))
                )
            except Exception as e:
                for i in good:
                    out[i] = _error(f"encoder: {e}")
                return out
            r = 0
            for i, x in zip(good, ids, strict=True):
                part = y[r : r + len(x)]
                if part.ndim == 3:  # hidden states: back to this request's own width
                    part = part[:, : x.shape[1]]
                out[i] = pb.InferenceResponse([pb.Tensor(self.output, np.ascontiguousarray(part))])
                r += len(x)
        return out

    def finalize(self) -> None:
        self.engine.close()


def _to_numpy(x: Any) -> np.ndarray:
    return to_numpy(x).astype(np.float32, copy=False)


class PostprocessModel:
    """logits -> probabilities + labels; hidden states + mask -> (normalised) embeddings."""

    def initialize(self, args: dict) -> None:
        self.spec = get_spec(_params(args)["MODEL"])
        self.pipeline = Pipeline(self.spec, tokenizer=None)

    def execute(self, requests: list) -> list:
        pb = _pb()
        out = []
        for request in requests:
            try:
                if self.spec.task == "classification":
                    x = pb.get_input_tensor_by_name(request, contract.LOGITS).as_numpy()
                    mask = np.ones((len(x), 1), dtype=np.int64)
                else:
                    x = pb.get_input_tensor_by_name(request, "last_hidden_state").as_numpy()
                    mask = pb.get_input_tensor_by_name(request, "attention_mask").as_numpy()
                batch = Batch([""] * len(x), {"attention_mask": mask}, mask.sum(axis=1))
                pred = self.pipeline.postprocess(x, batch)
                tensors = []
                if self.spec.task == "classification":
                    labels = np.array([[s.encode()] for s in pred.labels], dtype=np.object_)
                    tensors = [
                        pb.Tensor(contract.PROBABILITIES, pred.values.astype(np.float32)),
                        pb.Tensor(contract.LABELS, labels),
                    ]
                else:
                    tensors = [pb.Tensor(contract.EMBEDDINGS, pred.values.astype(np.float32))]
                out.append(pb.InferenceResponse(tensors))
            except Exception as e:
                out.append(_error(f"postprocess: {e}"))
        return out
