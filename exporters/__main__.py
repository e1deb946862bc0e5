"""`python -m exporters`: write a deployable artifact folder (model files + manifest.json)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from rich.markup import escape

from engines.base import PRECISIONS, fields_from
from engines.errors import BillionbenchError, ConfigError
from engines.models import MODELS, WEIGHTS
from engines.vision import PixelBudget, image_grid
from exporters.api import artifact_dir, export
from exporters.base import EXPORTERS, ExportConfig
from exporters.triton import TritonExporter, TritonOptions


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see: python -m exporters --help)\n")


def _range(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX integers, got {text!r}") from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected MIN,OPT,MAX, got {text!r}")
    return parts  # type: ignore[return-value]


def parse_image_buckets(text: str) -> tuple[tuple[int, int, int], ...]:
    """'1:600x400,2:600x400' -> (batch, grid h, grid w) under the default resize budget."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            b, _, size = part.partition(":")
            w, h = (int(x) for x in size.lower().split("x"))
            batch = int(b)
        except ValueError:
            raise ConfigError(
                f"--image-buckets takes BATCH:WIDTHxHEIGHT[,...] (e.g. 1:600x400); got {part!r}"
            ) from None
        out.append((batch, *image_grid(w, h, PixelBudget())))
    return tuple(out)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="exporters",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model",
        required=True,
        help=f"a local model folder, a Hub id, or one of: {', '.join(sorted(MODELS))}",
    )
    p.add_argument("--format", required=True, help=f"one of: {', '.join(EXPORTERS)}")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--variant", default="", help="'optimized' = ONNX Runtime transformer fusions")
    p.add_argument("--out", default=None, help="artifact folder (default artifacts/<model>/...)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing artifact at --out (kept until the new one is complete)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda", "neuron"),
        default=None,
        help="where the artifact will run (default: this machine's)",
    )
    p.add_argument("--weights", choices=WEIGHTS, default="auto")
    p.add_argument("--model-path", default=None)
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let transformers run Python code shipped in the model folder",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument(
        "--batch-range",
        type=_range,
        default=(1, 8, 32),
        help="MIN,OPT,MAX batch for shape profiles (TensorRT) / buckets (Neuron)",
    )
    p.add_argument("--seq-range", type=_range, default=(8, 128, 512), help="MIN,OPT,MAX tokens")
    p.add_argument(
        "--image-buckets",
        default="",
        help="vision ONNX: fixed buckets BATCH:WIDTHxHEIGHT[,...], each the image grid that size "
        "gets under the default resize budget (default 1:600x400,2:600x400); only these run",
    )
    p.add_argument("--workspace-gb", type=float, default=4.0, help="TensorRT builder workspace")
    t = p.add_argument_group("triton (--format triton)")
    t.add_argument(
        "--backend",
        choices=("python", "onnxruntime", "tensorrt", "pytorch"),
        default="python",
        help="encoder format: python (our engine on ONNX, served by the bundled tritonserver), "
        "onnxruntime, tensorrt (plan; GPU) or pytorch (TorchScript)",
    )
    t.add_argument("--max-batch-size", type=int, default=32, help="encoder max_batch_size")
    t.add_argument("--instances", type=int, default=1, help="encoder instance_group count")
    t.add_argument("--no-dynamic-batching", action="store_true", help="leave dynamic_batching out")
    t.add_argument("--max-queue-delay-us", type=int, default=500)
    t.add_argument(
        "--preferred-batch-sizes",
        default="",
        help="comma-separated preferred_batch_size values (default: none, as Triton advises)",
    )
    t.add_argument(
        "--client-max-batch",
        type=int,
        default=8,
        help="max inputs per client request (the ensemble's max_batch_size)",
    )
    t.add_argument("--threads", type=int, default=0, help="intra-op threads per encoder instance")
    p.add_argument(
        "--skip-parity",
        action="store_true",
        help="do not compare against eager fp32 (the harness then refuses it "
        "unless it is also given --skip-parity)",
    )
    return p


def this_device() -> tuple[str, str]:
    """(device, label) of this machine; the harness passes its hardware profile instead."""
    import os

    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(0).lower().replace(" ", "-")
    if os.path.exists("/dev/neuron0"):
        return "neuron", "inf2"
    return "cpu", "cpu"


def _triton(args, cfg: ExportConfig):
    """The Triton exporter with the CLI's serving options; default out model_repository/<name>."""
    from dataclasses import replace

    try:
        preferred = tuple(int(x) for x in args.preferred_batch_sizes.split(",") if x.strip())
    except ValueError:
        raise ConfigError(
            f"--preferred-batch-sizes must be comma-separated integers; got "
            f"{args.preferred_batch_sizes!r}"
        ) from None
    opts = TritonOptions(
        backend=args.backend,
        max_batch_size=args.max_batch_size,
        dynamic_batching=not args.no_dynamic_batching,
        preferred_batch_sizes=preferred,
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
        threads=args.threads,
        client_max_batch=args.client_max_batch,
    )
    out = args.out or f"model_repository/{cfg.spec.name}-{args.backend}"
    return TritonExporter(opts), replace(cfg, variant=args.backend, out=out)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = build_parser().parse_args(argv)
    console = Console(stderr=True, width=160)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    for noisy in ("transformers", "torch", "onnxruntime", "root"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        device, label = this_device()
        cfg = fields_from(
            ExportConfig,
            args,
            out=args.out or "",
            device=args.device or device,
            hw=label,
            image_buckets=parse_image_buckets(args.image_buckets),
            trust_remote_code=args.trust_remote_code,
        )
        from dataclasses import replace

        exporter = None
        if args.format == "triton":
            exporter, cfg = _triton(args, cfg)
        if not cfg.out:
            cfg = replace(cfg, out=str(artifact_dir("artifacts", cfg)))
        with console.status(f"exporting {cfg.model} to {cfg.format} {cfg.precision}..."):
            m = export(cfg, exporter, force=args.force)
    except (BillionbenchError, OSError) as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2
    parity = m.parity or {}
    color = {True: "green", False: "red"}.get(parity.get("passed"), "yellow")
    verdict = f"[{color}]{escape(m.verdict)}[/]"
    out = Console(width=160)
    out.print(
        f"artifact: {cfg.out}  ({m.format} {m.precision}{' ' + m.variant if m.variant else ''},"
        f" weights={m.weights}, export {m.export_seconds} s)",
        highlight=False,
    )
    out.print(f"parity vs eager fp32: {verdict} {parity.get('metric', '')}", highlight=False)
    for f in parity.get("failures", []):
        out.print(f"  - {f}", highlight=False)
    if m.details:
        out.print("details: " + json.dumps(m.details, sort_keys=True), highlight=False)
    return 0 if parity.get("passed") is not False else 1


if __name__ == "__main__":
    sys.exit(main())
