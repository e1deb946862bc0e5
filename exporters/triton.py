"""Triton model repositories: `config.pbtxt` built as ModelConfig protobuf, text in, vectors out.

A repository holds four models:

    tokenizer/    python backend: TEXT (strings) -> input_ids, attention_mask (padded to a bucket)
    encoder/      the model in one format: 1/model.onnx (onnxruntime_onnx), 1/model.plan
                  (tensorrt_plan), 1/model.pt (TorchScript, pytorch_libtorch) or 1/model.py
                  (python backend running billionbench's own engine on 1/model.onnx)
    postprocess/  python backend: softmax + labels, or pooling + normalisation
    <model>/      the ensemble wiring them, so clients send raw strings (as to Infinity)

plus `manifest.json` (the artifact contract) and a README with the command that serves it.
Configs are built with `tritonclient.grpc.model_config_pb2` and written with protobuf's
`text_format`; reading one back parses it the same way, and errors name the field.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core import contract
from core.config import arg, check_choices
from core.errors import ConfigError, MissingDependency
from engines.models import ModelSpec
from exporters.api import artifact_dir, ensure_artifact
from exporters.base import PARITY_SHAPES, ExportConfig, Exporter, ExportInfo
from exporters.wrap import example_inputs, wrap

# backend -> (platform or backend name, model file in the version folder)
BACKENDS: dict[str, tuple[str, str]] = {
    "python": ("python", "model.py"),
    "onnxruntime": ("onnxruntime_onnx", "model.onnx"),
    "tensorrt": ("tensorrt_plan", "model.plan"),
    "pytorch": ("pytorch_libtorch", "model.pt"),
}
SEQ_BUCKETS = (16, 32, 64, 128, 256, 512)
TOKENIZER, ENCODER, POSTPROCESS = "tokenizer", "encoder", "postprocess"
ARTIFACTS_DIR = "artifacts"  # where the encoder's own ONNX / TensorRT artifact is cached


def pb():
    """(model_config_pb2, text_format), or MissingDependency naming the extra."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise MissingDependency("tritonclient[grpc]", "triton") from e
    return model_config_pb2, text_format


def _int_list_or_empty(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(
            f"--preferred-batch-sizes must be comma-separated integers; got {text!r}"
        ) from None


@dataclass(frozen=True)
class TritonOptions:
    """Serving settings of the encoder (the part a config sweep changes) and of the ensemble."""

    backend: str = arg(
        "python",
        choices=BACKENDS,
        help="encoder format: python (our engine on ONNX, served by the bundled tritonserver), "
        "onnxruntime, tensorrt (plan; GPU) or pytorch (TorchScript)",
    )
    max_batch_size: int = arg(32, help="encoder max_batch_size (the server's max batch)")
    dynamic_batching: bool = arg(
        True, negate=("--no-dynamic-batching",), help="the encoder's dynamic_batching block"
    )
    preferred_batch_sizes: tuple[int, ...] = arg(
        (),
        parse=_int_list_or_empty,
        help="comma-separated preferred_batch_size values (default: none, as Triton advises)",
    )
    max_queue_delay_us: int = arg(500, help="dynamic batching: max_queue_delay_microseconds")
    instances: int = arg(1, help="encoder instance_group count")
    gpu: bool = arg(False, cli=False, help="KIND_GPU; only for hardware profiles with a GPU")
    threads: int = arg(0, help="intra-op threads per encoder instance (0: cores // instances)")
    client_max_batch: int = arg(
        8, help="max inputs per client request (the ensemble's max_batch_size)"
    )
    seq_buckets: tuple[int, ...] = arg(SEQ_BUCKETS, cli=False, help="")
    python_engine: str = arg(  # what the python-backend encoder runs
        "onnx", cli=False, choices=("onnx", "eager"), help="onnx | eager"
    )
    trt_fp16: bool = arg(  # onnxruntime backend on GPU: the TensorRT accelerator in FP16
        True, cli=False, help=""
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if self.max_batch_size < 1 or self.instances < 1 or self.client_max_batch < 1:
            raise ConfigError("max_batch_size, instances and client_max_batch must be >= 1")
        if self.client_max_batch > self.max_batch_size:
            raise ConfigError(
                f"client_max_batch ({self.client_max_batch}) must be <= max_batch_size "
                f"({self.max_batch_size}): Triton refuses an ensemble that allows bigger "
                "batches than its models"
            )
        if self.max_queue_delay_us < 0 or self.threads < 0:
            raise ConfigError("max_queue_delay_us and threads must be >= 0")
        if any(b < 1 or b > self.max_batch_size for b in self.preferred_batch_sizes):
            raise ConfigError("preferred batch sizes must be between 1 and max_batch_size")

    @property
    def kind(self) -> str:
        return "KIND_GPU" if self.gpu else "KIND_CPU"


# --------------------------------------------------------------------------- configs


def _io(target, name: str, dtype: str, dims: list[int], **extra) -> Any:
    m, _ = pb()
    t = target.add()
    t.name = name
    t.data_type = m.DataType.Value(dtype)
    t.dims.extend(dims)
    for k, v in extra.items():
        setattr(t, k, v)
    return t


def _param(cfg, key: str, value: Any) -> None:
    cfg.parameters[key].string_value = str(value)


def _outputs(spec: ModelSpec) -> list[tuple[str, str, list[int]]]:
    """The ensemble's outputs (what the KServe client reads)."""
    if spec.task == "classification":
        return [
            (contract.PROBABILITIES, "TYPE_FP32", [spec.num_labels]),
            (contract.LABELS, "TYPE_STRING", [1]),
        ]
    return [(contract.EMBEDDINGS, "TYPE_FP32", [spec.dim])]


def encoder_output(spec: ModelSpec, backend: str) -> tuple[str, list[int]]:
    """(name, dims) of the encoder's output; libtorch needs the `<name>__<index>` convention."""
    name = contract.model_output(spec.task)
    dims = [spec.num_labels] if spec.task == "classification" else [-1, -1]
    return (f"{name}__0" if backend == "pytorch" else name), dims


def encoder_config(spec: ModelSpec, opts: TritonOptions, hidden: int | None = None) -> Any:
    m, _ = pb()
    cfg = m.ModelConfig(name=ENCODER, max_batch_size=opts.max_batch_size)
    platform, _file = BACKENDS[opts.backend]
    if opts.backend == "python":
        cfg.backend = "python"
    else:
        cfg.platform = platform
    ragged = opts.backend == "python"  # our encoder pads requests together itself
    for name in ("input_ids", "attention_mask"):
        _io(cfg.input, name, "TYPE_INT64", [-1], allow_ragged_batch=ragged)
    out_name, dims = encoder_output(spec, opts.backend)
    if hidden and dims == [-1, -1]:
        dims = [-1, hidden]
    _io(cfg.output, out_name, "TYPE_FP32", dims)
    apply_serving(cfg, opts)
    if opts.backend == "python":
        _param(cfg, "MODEL", spec.name)
        _param(cfg, "ENGINE", opts.python_engine)
        _param(cfg, "THREADS", opts.threads)
        _param(cfg, "DEVICE", "cuda" if opts.gpu else "cpu")
    if opts.backend == "onnxruntime" and opts.gpu and opts.trt_fp16:
        acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add()
        acc.name = "tensorrt"
        acc.parameters["precision_mode"] = "FP16"
        acc.parameters["max_workspace_size_bytes"] = str(4 << 30)
    if opts.backend == "onnxruntime" and opts.threads:
        _param(cfg, "intra_op_thread_count", opts.threads)
    return cfg


def apply_serving(cfg: Any, opts: TritonOptions) -> None:
    """Set max batch, dynamic batching and instance group on a config (what a sweep varies)."""
    m, _ = pb()
    cfg.max_batch_size = opts.max_batch_size
    cfg.ClearField("dynamic_batching")
    if opts.dynamic_batching:
        cfg.dynamic_batching.max_queue_delay_microseconds = opts.max_queue_delay_us
        cfg.dynamic_batching.preferred_batch_size.extend(opts.preferred_batch_sizes)
    del cfg.instance_group[:]
    group = cfg.instance_group.add()
    group.count = opts.instances
    group.kind = m.ModelInstanceGroup.Kind.Value(opts.kind)
    if opts.gpu:
        group.gpus.append(0)
    if cfg.backend == "python":
        _param(cfg, "THREADS", opts.threads)


def _python_config(name: str, spec: ModelSpec, opts: TritonOptions) -> Any:
    m, _ = pb()
    cfg = m.ModelConfig(name=name, backend="python", max_batch_size=opts.client_max_batch)
    cfg.dynamic_batching.max_queue_delay_microseconds = 0
    group = cfg.instance_group.add()
    group.count = 1
    group.kind = m.ModelInstanceGroup.KIND_CPU  # tokenizing and pooling run on the host
    _param(cfg, "MODEL", spec.name)
    return cfg


def tokenizer_config(spec: ModelSpec, opts: TritonOptions, max_seq_len: int) -> Any:
    cfg = _python_config(TOKENIZER, spec, opts)
    _io(cfg.input, contract.TEXT, "TYPE_STRING", [1])
    _io(cfg.output, "input_ids", "TYPE_INT64", [-1])
    _io(cfg.output, "attention_mask", "TYPE_INT64", [-1])
    buckets = [b for b in opts.seq_buckets if b < max_seq_len] + [max_seq_len]
    _param(cfg, "SEQ_BUCKETS", ",".join(str(b) for b in buckets))
    _param(cfg, "MAX_SEQ_LEN", max_seq_len)
    return cfg


def postprocess_config(spec: ModelSpec, opts: TritonOptions, hidden: int) -> Any:
    cfg = _python_config(POSTPROCESS, spec, opts)
    if spec.task == "classification":
        _io(cfg.input, contract.LOGITS, "TYPE_FP32", [spec.num_labels])
    else:
        _io(cfg.input, "last_hidden_state", "TYPE_FP32", [-1, hidden])
        _io(cfg.input, "attention_mask", "TYPE_INT64", [-1])
    for name, dtype, dims in _outputs(spec):
        _io(cfg.output, name, dtype, dims)
    return cfg


def ensemble_config(spec: ModelSpec, opts: TritonOptions) -> Any:
    m, _ = pb()
    cfg = m.ModelConfig(name=spec.name, platform="ensemble", max_batch_size=opts.client_max_batch)
    _io(cfg.input, contract.TEXT, "TYPE_STRING", [1])
    for name, dtype, dims in _outputs(spec):
        _io(cfg.output, name, dtype, dims)
    steps = cfg.ensemble_scheduling.step
    tok = steps.add(model_name=TOKENIZER, model_version=-1)
    tok.input_map[contract.TEXT] = contract.TEXT
    tok.output_map["input_ids"] = "_input_ids"
    tok.output_map["attention_mask"] = "_attention_mask"
    enc = steps.add(model_name=ENCODER, model_version=-1)
    enc.input_map["input_ids"] = "_input_ids"
    enc.input_map["attention_mask"] = "_attention_mask"
    out_name, _ = encoder_output(spec, opts.backend)
    plain = out_name.removesuffix("__0")
    enc.output_map[out_name] = f"_{plain}"
    post = steps.add(model_name=POSTPROCESS, model_version=-1)
    post.input_map[plain] = f"_{plain}"
    if spec.task != "classification":
        post.input_map["attention_mask"] = "_attention_mask"
    for name, _dtype, _dims in _outputs(spec):
        post.output_map[name] = name
    return cfg


# --------------------------------------------------------------------------- read / write


def to_text(cfg: Any) -> str:
    _, text_format = pb()
    return text_format.MessageToString(cfg)


def write_config(cfg: Any, folder: str | Path) -> Path:
    path = Path(folder) / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_text(cfg))
    return path


def parse_config(text: str, where: str = "config.pbtxt") -> Any:
    """Parse and check a config; a ConfigError names the file, the line and the field."""
    m, text_format = pb()
    cfg = m.ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as e:
        raise ConfigError(f"{where}: malformed Triton config: {e}") from None
    problems = check_config(cfg)
    if problems:
        raise ConfigError(f"{where}: invalid Triton config: {'; '.join(problems)}")
    return cfg


def read_config(path: str | Path) -> Any:
    path = Path(path)
    if path.is_dir():
        path = path / "config.pbtxt"
    if not path.exists():
        raise ConfigError(
            f"{path} does not exist; write the repository with python -m harness.export"
        )
    return parse_config(path.read_text(), str(path))


def check_config(cfg: Any) -> list[str]:
    """What tritonserver would reject, each naming the field."""
    problems = []
    if not cfg.name:
        problems.append("field 'name' is empty")
    if not (cfg.backend or cfg.platform):
        problems.append("neither 'backend' nor 'platform' is set")
    if cfg.max_batch_size < 0:
        problems.append(f"field 'max_batch_size' is {cfg.max_batch_size}; must be >= 0")
    for kind in ("input", "output"):
        for t in getattr(cfg, kind):
            if not t.name:
                problems.append(f"an '{kind}' has no 'name'")
            if not len(t.dims):
                problems.append(f"{kind} '{t.name}': field 'dims' is empty")
            if t.data_type == 0:
                problems.append(f"{kind} '{t.name}': field 'data_type' is not set")
    for g in cfg.instance_group:
        if g.count < 1:
            problems.append(f"instance_group: field 'count' is {g.count}; must be >= 1")
    if cfg.HasField("dynamic_batching") and cfg.max_batch_size == 0:
        problems.append("'dynamic_batching' needs 'max_batch_size' > 0")
    return problems


# --------------------------------------------------------------------------- repository


def _readme(repo: Path, spec: ModelSpec, opts: TritonOptions) -> str:
    image = "nvcr.io/nvidia/tritonserver:24.10-py3"  # = tritonserver 2.51, as in nvidia-pytriton
    gpus = "--gpus all " if opts.gpu else ""
    needs_pkg = "the python-backend models (tokenizer, postprocess"
    needs_pkg += ", encoder)" if opts.backend == "python" else ")"
    return f"""# Triton model repository: {spec.name} ({opts.backend} encoder)

Written by `python -m harness.export --format triton --backend {opts.backend}`. Clients send raw
strings to the ensemble `{spec.name}` (input `TEXT`, BYTES, shape [n, 1]) and get
{", ".join(n for n, _, _ in _outputs(spec))} back.

| model | what | batching |
|---|---|---|
| `{TOKENIZER}` | python: strings -> input_ids, attention_mask | max batch {opts.client_max_batch} |
| `{ENCODER}` | {BACKENDS[opts.backend][0]}: `1/{BACKENDS[opts.backend][1]}` | max batch {opts.max_batch_size}, dynamic batching {"on, delay " + str(opts.max_queue_delay_us) + " us" if opts.dynamic_batching else "off"}, {opts.instances} x {opts.kind} |
| `{POSTPROCESS}` | python: {"softmax + labels" if spec.task == "classification" else "pooling + normalisation"} | max batch {opts.client_max_batch} |
| `{spec.name}` | ensemble of the three | |

Serve it here (bundled tritonserver from nvidia-pytriton, loopback only):

    python -m harness.tools serve-triton {repo}

Serve it with the NGC container ({needs_pkg} import billionbench, so install it there):

    docker run --rm {gpus}--shm-size=1g -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
      -v "$PWD/{repo}:/models" {image} \\
      bash -c "pip install 'billionbench[onnx]' && tritonserver --model-repository=/models"

Query it:

    curl -s localhost:8000/v2/models/{spec.name}/infer -d \\
      '{{"inputs":[{{"name":"TEXT","shape":[1,1],"datatype":"BYTES","data":["great product"]}}]}}'

Benchmark it: `python -m harness.run --engine triton --triton-url http://localhost:8000 --model {spec.name}`.
"""


@dataclass
class _Encoder:
    parity: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    hidden: int | None = None


class TritonExporter(Exporter):
    """`--format triton`; `--variant` is the encoder backend (python by default)."""

    format = "triton"
    engine = "triton"
    precisions = ("fp32", "fp16")
    gpu_precisions = {"fp16": "fp16 Triton repositories need a GPU target; use fp32 on CPU"}
    variants = ("", *BACKENDS)
    export_attn = "eager"

    def __init__(self, options: TritonOptions | None = None):
        self.options = options

    # -- exporters.base.TakesSettings: harness.export's --backend, --instances, ... ----------
    @classmethod
    def settings(cls) -> type[TritonOptions]:
        return TritonOptions

    @classmethod
    def configured(
        cls, settings: TritonOptions, cfg: ExportConfig
    ) -> tuple[TritonExporter, ExportConfig]:
        """The CLI's serving settings; the default out is model_repository/<name>-<backend>."""
        out = cfg.out or f"model_repository/{cfg.spec.name}-{settings.backend}"
        return cls(settings), replace(cfg, variant=settings.backend, out=out)

    def opts(self, cfg: ExportConfig) -> TritonOptions:
        # the harness's default repository must take its biggest batch in one request
        opts = self.options or TritonOptions(max_batch_size=max(32, cfg.batch_range[2]))
        return replace(opts, backend=cfg.variant or "python", gpu=cfg.device == "cuda")

    def check(self, cfg: ExportConfig) -> None:
        super().check(cfg)
        pb()
        if cfg.device == "neuron":
            raise ConfigError("--format triton targets CPU or CUDA GPUs, not Inferentia")
        opts = self.opts(cfg)
        if opts.backend == "tensorrt" and cfg.device != "cuda":
            raise ConfigError(
                "--backend tensorrt needs a plan built on the target GPU; use --device cuda on "
                "a machine with one (here: --backend python or onnxruntime)"
            )

    def expected_hardware(self, cfg: ExportConfig) -> dict[str, Any] | None:
        return {"device": cfg.device}

    def export(self, cfg: ExportConfig, model: Any, tokenizer: Any, out_dir: Path) -> ExportInfo:
        spec = cfg.spec
        opts = self.opts(cfg)
        max_len = min(spec.max_seq_len, cfg.seq_range[2])
        enc_dir = out_dir / ENCODER / "1"
        enc_dir.mkdir(parents=True)
        enc = self._encoder(cfg, opts, model, enc_dir)
        hidden = enc.hidden or getattr(model.config, "hidden_size", None) or spec.dim
        write_config(encoder_config(spec, opts, hidden), out_dir / ENCODER)
        if opts.backend == "python":
            (enc_dir / "model.py").write_text(_shim("EncoderModel"))
        tok_dir = out_dir / TOKENIZER / "1"
        tokenizer.save_pretrained(str(tok_dir / "tokenizer"))
        (tok_dir / "model.py").write_text(_shim("TokenizerModel"))
        write_config(tokenizer_config(spec, opts, max_len), out_dir / TOKENIZER)
        post_dir = out_dir / POSTPROCESS / "1"
        post_dir.mkdir(parents=True)
        (post_dir / "model.py").write_text(_shim("PostprocessModel"))
        write_config(postprocess_config(spec, opts, hidden), out_dir / POSTPROCESS)
        (out_dir / spec.name / "1").mkdir(parents=True)
        write_config(ensemble_config(spec, opts), out_dir / spec.name)
        shown = Path(cfg.out) if cfg.out else out_dir
        (out_dir / "README.md").write_text(_readme(shown, spec, opts))
        for folder in (ENCODER, TOKENIZER, POSTPROCESS, spec.name):  # round-trip check
            read_config(out_dir / folder)
        import tritonclient

        return ExportInfo(
            input_names=[contract.TEXT],
            output_names=[n for n, _, _ in _outputs(spec)],
            dynamic_axes={contract.TEXT: {"0": "batch"}},
            shape_profiles={"seq_buckets": list(opts.seq_buckets), "max_seq_len": max_len},
            hardware={"device": cfg.device, "hw": cfg.hw, "kind": opts.kind},
            tool_versions={
                "tritonclient": getattr(tritonclient, "__version__", "?"),
                **enc.versions,
            },
            details={
                "backend": opts.backend,
                "ensemble": spec.name,
                "models": [TOKENIZER, ENCODER, POSTPROCESS, spec.name],
                "options": dict(opts.__dict__),
            },
            parity=enc.parity,
        )

    # -- the encoder in its format ----------------------------------------------------------
    def _encoder(self, cfg: ExportConfig, opts: TritonOptions, model: Any, dest: Path) -> _Encoder:
        if opts.backend == "pytorch":
            return _torchscript(cfg, model, dest)
        fmt = "trt" if opts.backend == "tensorrt" else "onnx"
        inner = replace(cfg, format=fmt, variant="", out="")
        inner = replace(inner, out=str(artifact_dir(ARTIFACTS_DIR, inner)))
        manifest, _ = ensure_artifact(inner)
        src = Path(inner.out)
        for f in sorted(src.iterdir()):
            if f.is_file():
                shutil.copy2(f, dest / f.name)
        return _Encoder(
            parity=dict(manifest.parity or {}, inner_artifact=str(src)),
            versions=dict(manifest.tool_versions),
        )


def _shim(cls: str) -> str:
    return (
        '"""Triton python-backend model; the code lives in billionbench (engines/triton/backend.py)."""\n\n'
        f"from engines.triton.backend import {cls} as TritonPythonModel  # noqa: F401\n"
    )


def _torchscript(cfg: ExportConfig, model: Any, dest: Path) -> _Encoder:
    """Trace the tensor-in wrapper to TorchScript and check it against the eager model."""
    import numpy as np
    import torch

    wrapped = wrap(model, cfg.spec.task)
    with torch.no_grad():
        traced = torch.jit.trace(wrapped, example_inputs(), strict=False, check_trace=False)
    traced.save(str(dest / "model.pt"))
    loaded = torch.jit.load(str(dest / "model.pt"))
    worst = 0.0
    with torch.no_grad():
        for b, t in PARITY_SHAPES:
            if t > cfg.spec.max_seq_len:
                continue
            ids, mask = example_inputs(b, t)
            ref = wrapped(ids, mask).float().numpy()
            got = loaded(ids, mask).float().numpy()
            worst = max(worst, float(np.abs(ref - got).max()))
    ok = worst <= 1e-3
    return _Encoder(
        parity={
            "passed": ok,
            "metric": f"max |delta| {worst:.2e} (TorchScript vs eager, raw outputs)",
            **({} if ok else {"failures": [f"TorchScript differs from eager by {worst:.3g}"]}),
        },
        versions={"torch": torch.__version__},
    )


def repository_models(repo: str | Path) -> dict[str, Any]:
    """Every model folder in a repository -> its parsed config (errors name the file)."""
    repo = Path(repo)
    return {d.name: read_config(d) for d in sorted(repo.iterdir()) if (d / "config.pbtxt").exists()}


def set_encoder_serving(repo: str | Path, opts: TritonOptions) -> None:
    """Rewrite the encoder's batching/instances and the others' max batch (for a sweep)."""
    repo = Path(repo)
    cfg = read_config(repo / ENCODER)
    apply_serving(cfg, opts)
    write_config(cfg, repo / ENCODER)
    for name, other in repository_models(repo).items():
        if name != ENCODER and other.max_batch_size != opts.client_max_batch:
            other.max_batch_size = opts.client_max_batch
            write_config(other, repo / name)
