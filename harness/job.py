"""`python -m harness.job IN OUT`: embed or classify a file of inputs, as the offline scenario
measures it, and write the outputs to Parquet.

IN is a text file (one input per line), JSONL (`{"text": ..., "id": ...}` per line) or Parquet
with a text column. Every input is checked first: a bad one (empty, not valid JSON, not UTF-8,
no text, over the model's length with --no-truncate) stops the job before any work, naming its
line (exit 2), unless --skip-bad skips it (logged). The good inputs then go through the engine
in chunks of --chunk-size (sorted by length into batches within a chunk, tokenized on their own
thread), and each chunk is written as soon as it is done, atomically, to `OUT.parts/part-<index
of its first input>.parquet`, beside a manifest of the job (`job.json`). Run the same command
again after an interruption (Ctrl-C, kill -9, a crash) and it skips the chunks already written:
no input is computed twice or lost. At the end the parts are merged, in input order, into OUT
and the parts folder is removed. OUT's columns: `line` (1-based line, or row of a Parquet IN),
`id` (when the inputs carry one), and `embedding` (list<float>) or `label` + `probabilities`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.config import arg, config_from
from core.errors import ConfigError
from engines.models import load_tokenizer
from engines.registry import create_engine
from harness import cli
from harness.config import TargetConfig, add_target, target_from
from harness.target import prepare_artifact, resolve_setup
from serving.bulk import BulkRunner, JobLimits, Window, WindowResult
from workloads.job_inputs import FORMATS, BadLine, JobInput, Record, file_digest, read, scan

log = logging.getLogger("billionbench")

MANIFEST = "job.json"
SHOWN_BAD = 20  # bad lines logged one by one with --skip-bad; the rest are counted


@dataclass(frozen=True)
class JobConfig:
    """What `python -m harness.job` runs (IN and OUT are its positional arguments)."""

    input: str = arg(help="", cli=False)
    output: str = arg(help="", cli=False)
    target: TargetConfig = arg(help="target", default_factory=TargetConfig)
    limits: JobLimits = arg(help="batches", default_factory=JobLimits)
    chunk_size: int = arg(
        4096,
        help="inputs per part file, sorted by length together (a chunk is the unit a resumed "
        "job skips)",
    )
    input_format: str = arg("auto", choices=FORMATS, help="auto: from IN's suffix")
    text_column: str = arg("text", help="the JSONL key or Parquet column of the text")
    id_column: str = arg("id", help="the JSONL key or Parquet column of an id, kept when present")
    skip_bad: bool = arg(
        False, help="skip bad input lines (logged with their line numbers) instead of refusing"
    )
    fresh: bool = arg(False, help="start over: remove OUT and its parts folder first")
    verbose: bool = arg(False, flag="--verbose", short="-v", help="debug logging")

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ConfigError(f"--chunk-size must be >= 1; got {self.chunk_size}")
        if not self.output.endswith(".parquet"):
            raise ConfigError(f"OUT must be a .parquet file; got {self.output!r}")

    @property
    def parts(self) -> Path:
        return Path(self.output + ".parts")


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog="harness.job",
        description="Embed or classify every input of a file (text lines, JSONL or Parquet) "
        "with any engine and write the outputs, in input order, to Parquet; resumes after an "
        "interruption without repeating or losing an input.",
    )
    p.add_argument("input", metavar="IN", help="a .txt (one input per line), .jsonl or .parquet")
    p.add_argument("output", metavar="OUT", help="the .parquet file to write")
    add_target(p)
    cli.add_config(p, JobLimits, "batches")
    cli.add_config(
        p,
        JobConfig,
        "job",
        only=(
            "chunk_size",
            "input_format",
            "text_column",
            "id_column",
            "skip_bad",
            "fresh",
            "verbose",
        ),
    )
    return p


def config_of(ns: argparse.Namespace) -> JobConfig:
    return config_from(JobConfig, ns, input=ns.input, output=ns.output, target=target_from(ns))


# ---- the first pass and the manifest


def check_inputs(cfg: JobConfig, inp: JobInput, max_len: int, tokenizer) -> int:
    """Scan IN; refuse its first bad line (or log them with --skip-bad); the good inputs' count."""

    def too_long(texts: list[str]) -> list[int | None]:
        ids = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(x) if len(x) > max_len else None for x in ids]

    found = scan(inp, None if cfg.limits.truncate else too_long)
    if found.bad and not cfg.skip_bad:
        more = f" (and {len(found.bad) - 1} more bad)" if len(found.bad) > 1 else ""
        raise ConfigError(f"{inp.path}: {found.bad[0]}{more}; fix it, or pass --skip-bad")
    for bad in found.bad[:SHOWN_BAD]:
        log.warning("skipped %s", bad)
    if len(found.bad) > SHOWN_BAD:
        log.warning("skipped %d more bad inputs", len(found.bad) - SHOWN_BAD)
    if not found.good:
        raise ConfigError(f"{inp.path} holds no usable input")
    return found.good


def job_identity(cfg: JobConfig, inp: JobInput, engine_cfg, good: int) -> dict:
    """What a job's parts depend on: a folder of parts resumes only the same job."""
    return {
        "input_sha256": file_digest(inp.path),
        "input_format": inp.kind,
        "text_column": inp.text_field,
        "id_column": inp.id_field,
        "skip_bad": cfg.skip_bad,
        "inputs": good,
        "chunk_size": cfg.chunk_size,
        "truncate": cfg.limits.truncate,
        "engine": engine_cfg.as_dict(),
        "artifact": cfg.target.artifact,
    }


def open_parts(cfg: JobConfig, identity: dict) -> set[int]:
    """The parts folder for this job (made, or checked to be this job's); the chunks done."""
    parts, manifest = cfg.parts, cfg.parts / MANIFEST
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        differ = sorted(k for k in identity.keys() | old.keys() if old.get(k) != identity.get(k))
        if differ:
            raise ConfigError(
                f"{parts} holds a job with other inputs or settings ({', '.join(differ)} "
                "differ); pass --fresh to start over"
            )
    else:
        parts.mkdir(parents=True, exist_ok=True)
        _write_atomic(manifest, json.dumps(identity, indent=1, sort_keys=True).encode())
    for stale in parts.glob(".*.tmp"):  # a write a kill interrupted
        stale.unlink()
    return {int(p.stem.split("-")[1]) for p in parts.glob("part-*.parquet")}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ---- the run


class Chunks:
    """IN's good inputs as windows of `size`, the chunks already written left out; each
    window's lines and ids wait here for its outputs."""

    def __init__(self, inp: JobInput, size: int, done: set[int]):
        self.inp, self.size, self.done = inp, size, done
        self.meta: dict[int, list[Record]] = {}

    def __iter__(self) -> Iterator[Window]:
        block: list[Record] = []
        start = 0
        for item in read(self.inp):
            if isinstance(item, BadLine):
                continue
            block.append(item)
            if len(block) == self.size:
                yield from self._window(start, block)
                start, block = start + len(block), []
        if block:
            yield from self._window(start, block)

    def _window(self, start: int, block: list[Record]) -> Iterator[Window]:
        if start in self.done:
            return
        self.meta[start] = block
        yield Window(start, [r.text for r in block])


def part_table(result: WindowResult, records: list[Record]):
    """One chunk's outputs as an Arrow table: line, id, embedding or label + probabilities."""
    import pyarrow as pa

    values = np.ascontiguousarray(result.values, dtype=np.float32)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
    vectors = flat.cast(pa.list_(pa.float32()))
    cols = {"line": pa.array([r.line for r in records], pa.int64())}
    if any(r.id is not None for r in records):
        cols["id"] = pa.array([r.id for r in records], pa.string())
    if result.labels is not None:
        cols["label"] = pa.array(result.labels, pa.string())
        cols["probabilities"] = vectors
    else:
        cols["embedding"] = vectors
    return pa.table(cols)


def write_part(parts: Path, result: WindowResult, records: list[Record]) -> None:
    import pyarrow.parquet as pq

    path = parts / f"part-{result.start:012d}.parquet"
    tmp = parts / f".{path.name}.tmp"
    with open(tmp, "wb") as f:
        pq.write_table(part_table(result, records), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def merge_parts(parts: Path, out: str) -> int:
    """Every part, in input order, into OUT (atomically); the rows written."""
    import pyarrow.parquet as pq

    files = sorted(parts.glob("part-*.parquet"))
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    rows = 0
    writer = None
    try:
        for path in files:
            table = pq.read_table(path)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, out)
    return rows


def run_job(cfg: JobConfig, console) -> int:
    """Check, resume, run, merge: the command's body."""
    out, parts = Path(cfg.output), cfg.parts
    if cfg.fresh:
        shutil.rmtree(parts, ignore_errors=True)
        out.unlink(missing_ok=True)
    elif out.exists() and not parts.exists():
        raise ConfigError(f"{out} exists (a finished job); pass --fresh to write it again")
    inp = JobInput(cfg.input, cfg.input_format, cfg.text_column, cfg.id_column)
    resolved = resolve_setup(cfg.target)
    tok = load_tokenizer(resolved.spec, cfg.target.model_path, cfg.target.trust_remote_code)
    good = check_inputs(cfg, inp, resolved.max_len, tok.tokenizer)
    engine_cfg = resolved.engine_cfg
    done = open_parts(cfg, job_identity(cfg, inp, engine_cfg, good))
    chunks = Chunks(inp, cfg.chunk_size, done)
    resumed = sum(min(cfg.chunk_size, good - s) for s in done)
    if done:
        console.print(f"resuming: {len(done)} chunks ({resumed} inputs) already written")
    if resumed < good:
        stats = _infer(cfg, resolved, chunks, good, resumed, console)
        console.print(
            f"{stats.inputs} inputs in {stats.elapsed_s:.1f} s ({stats.inputs / max(stats.elapsed_s, 1e-9):.1f} "
            f"inputs/s), padding {stats.padding_ratio:.3f}",
            highlight=False,
        )
    rows = merge_parts(parts, cfg.output)
    shutil.rmtree(parts)
    console.print(f"wrote {rows} outputs to {cfg.output}", highlight=False)
    return 0


def _infer(cfg: JobConfig, resolved, chunks: Chunks, good: int, resumed: int, console):
    from analysis.console_tables import progress_bar

    engine_cfg = resolved.engine_cfg
    if resolved.engine_cls.needs_artifact(engine_cfg):
        top = cfg.limits.max_batch_size
        engine_cfg = prepare_artifact(
            resolved, batch_range=(1, max(1, top // 2), top), console=console
        ).engine_cfg
    truncated = 0
    with create_engine(engine_cfg) as engine, progress_bar(console) as bar:
        task = bar.add_task("job", total=good, completed=resumed, info="")
        started = time.perf_counter()

        def on_window(result: WindowResult) -> None:
            nonlocal truncated
            write_part(cfg.parts, result, chunks.meta.pop(result.start))
            truncated += result.truncated
            rate = (bar.tasks[task].completed - resumed) / (time.perf_counter() - started)
            bar.update(task, info=f"{rate:.0f} inputs/s · part {result.start}")

        stats = BulkRunner(engine, cfg.limits).run(
            chunks, on_window, lambda n: bar.update(task, advance=n)
        )
    if truncated:
        log.warning("%d inputs were cut at %d tokens", truncated, resolved.max_len)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)

    def body(console) -> int:
        cfg = config_of(ns)
        try:
            return run_job(cfg, console)
        except KeyboardInterrupt:
            console.print(
                f"[yellow]interrupted[/]: the chunks written are in {cfg.parts}; run the same "
                "command again to resume"
            )
            return 130

    return cli.run_command(body, verbose=ns.verbose, output_dir=ns.output)


if __name__ == "__main__":
    sys.exit(main())
