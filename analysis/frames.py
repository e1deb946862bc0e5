"""Find, read and merge results files from any number of runs and machines, without averaging."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from analysis import references
from core.errors import BillionbenchError
from harness.results import BOOL, COLUMNS, FLOAT, INT, STR, columns_of, read_csv

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet")
# a file found by walking a directory must look like a results file to be read
REQUIRED = ("1B_cost", "hw_type")
# booleans count as 0/1, as any number does
NUMERIC = columns_of(INT, FLOAT, BOOL)
# what identifies a configuration when an old file has no config_key
IDENTITY = [
    "task",
    "model_name",
    "hw_type",
    "price_per_hour",
    "mode",
    "engine",
    "image",
    "batch_size",
    "inputs_per_request",
    "vus",
    "n_models",
    "workers_per_model",
    "repeat",
]


class ReportError(BillionbenchError):
    """No usable results: the message names the file and what to do."""


_HINT = "pass a results.csv / results.parquet written by harness.run or harness.sweep"


def find_files(paths: list[str | Path]) -> list[Path]:
    """Expand directories (recursively) into results files; explicit files are kept as given."""
    if not paths:
        raise ReportError(f"no results given; {_HINT}, or a directory holding them")
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ReportError(f"{p}: no such file or directory; {_HINT}")
        if p.is_dir():
            here = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES and _wanted(f)
            )
            # results.csv and results.parquet of one store hold the same rows: the CSV is the
            # source of truth (ResultsStore.read), so its Parquet twin is skipped
            csvs = {f.with_suffix("") for f in here if f.suffix == ".csv"}
            here = [f for f in here if not (f.suffix == ".parquet" and f.with_suffix("") in csvs)]
            if not here:
                raise ReportError(f"{p}: no .csv or .parquet results files under it; {_HINT}")
            found += here
        elif p.suffix not in SUFFIXES:
            raise ReportError(f"{p}: not a .csv or .parquet file; {_HINT}")
        else:
            found.append(p)
    unique: dict[Path, Path] = {}
    for f in found:  # the same file named twice is one input, not a duplicate measurement
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def _wanted(f: Path) -> bool:
    return not any(part.startswith(".") for part in f.parts) and ".tmp" not in f.suffixes


def read_file(path: Path, *, explicit: bool = True) -> pd.DataFrame | None:
    """One results file as a DataFrame on the current columns; None for a non-results file
    found while walking a directory."""
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else read_csv(path)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except Exception as e:  # any reader failure is the user's file, not our bug
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReportError(f"{path}: cannot read it ({why}); {_HINT}") from e
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        if not explicit:
            log.info("%s: skipped, not a results file (no %s column)", path, missing[0])
            return None
        if df.empty and not len(df.columns):
            raise ReportError(f"{path}: the file is empty; {_HINT}")
        raise ReportError(f"{path}: not a results file (no column {missing[0]!r}); {_HINT}")
    if df.empty:
        raise ReportError(
            f"{path}: has a header but no rows; run harness.run or harness.sweep to fill it, "
            "or leave it out"
        )
    extra = [c for c in df.columns if c not in COLUMNS]
    # older files lack newer columns: they are filled empty, never a crash
    return df.reindex(columns=COLUMNS + extra).copy()  # one block per dtype, not per column


def load(paths: list[str | Path]) -> pd.DataFrame:
    """All rows of all inputs, one per measurement, each with its source file and host."""
    files = find_files(paths)
    explicit = {Path(p).resolve() for p in paths if Path(p).is_file()}
    frames = []
    for f in files:
        df = read_file(f, explicit=f.resolve() in explicit)
        if df is None:
            continue
        df = df.assign(source_file=str(f), source_row=range(len(df)))
        frames.append(df)
    if not frames:
        raise ReportError(f"no results files among {', '.join(map(str, paths))}; {_HINT}")
    return prepare(pd.concat(frames, ignore_index=True))


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Types, labels and identity columns the views rely on."""
    df = df.reindex(columns=list(dict.fromkeys([*COLUMNS, *df.columns]))).copy()
    df[NUMERIC] = df[NUMERIC].apply(pd.to_numeric, errors="coerce")
    for c in ("hw_type", "engine", "image", "task", "mode", "weights", "host_name", "model_name"):
        df[c] = df[c].astype(object).where(df[c].notna(), None)
    df = df.copy()  # one block per dtype again: later column writes stay cheap and quiet
    df["hw_type"] = df["hw_type"].fillna("unknown").astype(str)
    df["task"] = df["task"].fillna("unknown task").astype(str)
    df["host_name"] = df["host_name"].fillna("unknown host").astype(str)
    df["mode"] = df["mode"].fillna("unknown").astype(str)
    df["engine"] = df["engine"].fillna("?").astype(str)
    df["image"] = [_image(r) for r in df[["image", "engine", "config_json"]].itertuples()]
    if "source_file" not in df:
        df["source_file"] = "(in memory)"
        df["source_row"] = range(len(df))
    df["synthetic"] = [_synthetic(w) for w in df["weights"]]
    df["label"] = df["synthetic"].map(lambda s: f" [{s}]" if s else "")
    df["concurrency"] = [_concurrency(r) for r in df.itertuples()]
    key = df["config_key"].astype(object)
    missing = key.isna() | (key.astype(str).str.len() == 0)
    if missing.any():
        # a file whose config_key column is empty reads it as floats: strings go in as objects
        df["config_key"] = key
        df.loc[missing, "config_key"] = [
            "derived:" + _hash([r.get(c) for c in IDENTITY])
            for r in df.loc[missing, IDENTITY].to_dict("records")
        ]
    df["config_key"] = df["config_key"].astype(str)
    return df.reset_index(drop=True)


def _hash(values: list) -> str:
    blob = json.dumps([None if pd.isna(v) else v for v in values], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _image(r) -> str:
    """The stored image, plus the artifact variant when an older row left it out."""
    image = r.image if isinstance(r.image, str) and r.image else r.engine
    try:
        variant = json.loads(r.config_json)["engine"].get("variant")
    except (TypeError, ValueError, KeyError, AttributeError):
        variant = None
    if variant and variant not in image.split("/"):
        image = f"{image}/{variant}"
    return image


def _synthetic(weights) -> str:
    """Why a row is not a real model measurement ("" when it is one), from its weights column:
    an engine that computes no model writes "none (why)", a config-only build "random"."""
    if not isinstance(weights, str):
        return ""
    if weights.startswith("none"):
        return weights[weights.find("(") + 1 : weights.rfind(")")] or "no model"
    return "random weights" if weights.startswith("random") else ""


def _concurrency(r) -> str:
    if r.mode == "inprocess" and pd.notna(r.n_models) and pd.notna(r.workers_per_model):
        n, w = int(r.n_models), int(r.workers_per_model)
        return f"{n} model{'s' * (n != 1)} × {w} worker{'s' * (w != 1)}"
    if pd.isna(r.vus):
        return "-"
    return f"{int(r.vus)} VU{'s' * (int(r.vus) != 1)}"


def duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Every row whose configuration was measured more than once (any host, any file)."""
    counts = df.groupby("config_key")["config_key"].transform("size")
    return df[counts > 1].sort_values(["config_key", "host_name", "source_file"])


def read_references(path: str | Path = references.PUBLISHED) -> pd.DataFrame:
    """The published reference rows, prepared like measured ones and marked `published`.

    Refused (one line) when the file breaks its contract: a column outside the result schema
    and `references.EXTRA_COLUMNS`, or a row not marked `measured_here = false`.
    """
    path = Path(path)
    extra = references.EXTRA_COLUMNS
    text = {c: str for c in (*columns_of(STR), *extra) if c != "measured_here"}
    try:
        df = pd.read_csv(path, dtype=text)
    except (OSError, pd.errors.ParserError) as e:
        raise ReportError(f"{path}: cannot read the reference rows ({e})") from e
    outside = [c for c in df.columns if c not in COLUMNS and c not in extra]
    if outside:
        raise ReportError(f"{path}: reference columns outside the result schema: {outside}")
    if df["measured_here"].astype(str).str.lower().ne("false").any():
        raise ReportError(f"{path}: every reference row must say measured_here = false")
    df["measured_here"] = False
    df = prepare(df.assign(source_file=str(path), source_row=range(len(df))))
    return df.assign(published=True)  # one new frame: no fragmentation warning on stderr
