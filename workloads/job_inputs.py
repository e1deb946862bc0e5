"""A user's inputs for `python -m harness.job`, read as a stream: a text file (one input per
line), JSONL (one object per line, its text under `text`), or Parquet with a text column.

Every input is a `Record` with its 1-based line (a Parquet file's row) and id, when the input
has one; an input that cannot be used is a `BadLine` naming its line and why (empty, not valid
JSON, not UTF-8, no text field). The job reads the file twice: once to check every line before
any work starts (`scan`), then to run it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError

FORMATS = ("auto", "text", "jsonl", "parquet")
_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_PARQUET_ROWS = 8192  # rows read at a time


@dataclass(frozen=True)
class JobInput:
    """Where the inputs are and how to read them."""

    path: str
    format: str = "auto"  # auto: from the suffix (.jsonl/.ndjson, .parquet), else text
    text_field: str = "text"  # JSONL key / Parquet column of the text
    id_field: str = "id"  # JSONL key / Parquet column of an id, used where present

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"--input-format must be one of {', '.join(FORMATS)}")
        if not Path(self.path).is_file():
            raise ConfigError(f"{self.path}: no such file")

    @property
    def kind(self) -> str:
        if self.format != "auto":
            return self.format
        return _BY_SUFFIX.get(Path(self.path).suffix.lower(), "text")

    @property
    def unit(self) -> str:
        """What a record's number counts: lines, or a Parquet file's rows."""
        return "row" if self.kind == "parquet" else "line"


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line (Parquet: row)
    text: str
    id: str | None = None


@dataclass(frozen=True)
class BadLine:
    line: int
    why: str
    unit: str = "line"

    def __str__(self) -> str:
        return f"{self.unit} {self.line}: {self.why}"


def read(inp: JobInput) -> Iterator[Record | BadLine]:
    """Every input of the file in order, good or bad."""
    if inp.kind == "parquet":
        yield from _parquet(inp)
        return
    jsonl = inp.kind == "jsonl"
    with open(inp.path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield BadLine(
                    number, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                )
                continue
            yield _json_record(number, line, inp) if jsonl else _text_record(number, line)


def _text_record(number: int, line: str) -> Record | BadLine:
    return Record(number, line) if line.strip() else BadLine(number, "empty")


def _json_record(number: int, line: str, inp: JobInput) -> Record | BadLine:
    if not line.strip():
        return BadLine(number, "empty")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return BadLine(number, f"not valid JSON ({e.msg} at column {e.colno})")
    if not isinstance(obj, dict):
        return BadLine(number, f"not a JSON object with a {inp.text_field!r} field")
    text = obj.get(inp.text_field)
    if text is None:
        return BadLine(number, f"no {inp.text_field!r} field")
    if not isinstance(text, str):
        return BadLine(number, f"{inp.text_field!r} is {type(text).__name__}, not a string")
    if not text.strip():
        return BadLine(number, f"empty {inp.text_field!r}")
    ident = obj.get(inp.id_field)
    return Record(number, text, None if ident is None else str(ident))


def _parquet(inp: JobInput) -> Iterator[Record | BadLine]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(inp.path)
    except (OSError, pa.ArrowException) as e:
        raise ConfigError(f"{inp.path}: not a readable Parquet file ({e})") from None
    names = f.schema_arrow.names
    if inp.text_field not in names:
        raise ConfigError(
            f"{inp.path} has no text column {inp.text_field!r}; columns are {names}; "
            "pass --text-column"
        )
    if not pa.types.is_string(f.schema_arrow.field(inp.text_field).type) and not (
        pa.types.is_large_string(f.schema_arrow.field(inp.text_field).type)
    ):
        raise ConfigError(f"{inp.path}: column {inp.text_field!r} does not hold strings")
    cols = [inp.text_field] + ([inp.id_field] if inp.id_field in names else [])
    row = 0
    for batch in f.iter_batches(batch_size=_PARQUET_ROWS, columns=cols):
        texts = batch.column(0).to_pylist()
        ids = batch.column(1).to_pylist() if len(cols) > 1 else [None] * len(texts)
        for text, ident in zip(texts, ids, strict=True):
            row += 1
            if text is None or not text.strip():
                yield BadLine(row, "empty" if text is not None else "null text", "row")
            else:
                yield Record(row, text, None if ident is None else str(ident))


@dataclass
class Scan:
    """What the first pass found: the good inputs' count and every bad line."""

    good: int = 0
    bad: list[BadLine] = field(default_factory=list)


def scan(inp: JobInput, too_long=None) -> Scan:
    """Check every input before any work starts. `too_long(texts) -> [tokens or None]`, when
    given (inputs are not cut), marks inputs over the model's length as bad too."""
    found = Scan()
    block: list[Record] = []

    def check(records: list[Record]) -> None:
        for r, n in zip(records, too_long([r.text for r in records]), strict=True):
            if n is None:
                found.good += 1
            else:
                found.bad.append(BadLine(r.line, f"{n} tokens, over the model's length", inp.unit))

    for item in read(inp):
        if isinstance(item, BadLine):
            found.bad.append(item)
        elif too_long is None:
            found.good += 1
        else:
            block.append(item)
            if len(block) >= 1024:
                check(block)
                block = []
    if block:
        check(block)
    found.bad.sort(key=lambda b: b.line)
    return found


def file_digest(path: str) -> str:
    """sha256 of the file's bytes (which inputs a job's parts were made from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
