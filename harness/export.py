"""`python -m harness.export`: write a deployable artifact folder (model files + manifest.json)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace

from rich.markup import escape

from core.config import config_from
from core.errors import BillionbenchError
from exporters.api import artifact_dir, export
from exporters.base import EXPORTERS, ExportConfig, TakesSettings, exporter_class
from harness.cli import add_config


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see: python -m harness.export --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="harness.export",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config(p, ExportConfig, defaults={"out": None, "device": None})
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing artifact at --out (kept until the new one is complete)",
    )
    for fmt in EXPORTERS:  # a format's own settings (Triton's serving settings)
        cls = exporter_class(fmt)
        if issubclass(cls, TakesSettings):
            add_config(p, cls.settings(), f"{fmt} (--format {fmt})")
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


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # a bad flag: argparse printed its one line
        return int(e.code or 0)
    console = Console(stderr=True, width=160)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", force=True)
    for noisy in ("transformers", "torch", "onnxruntime", "root"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        device, label = this_device()
        cfg = config_from(
            ExportConfig, args, out=args.out or "", device=args.device or device, hw=label
        )
        exporter, cls = None, exporter_class(cfg.format)
        if issubclass(cls, TakesSettings):
            exporter, cfg = cls.configured(config_from(cls.settings(), args), cfg)
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
