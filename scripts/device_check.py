"""Check every accelerator path once, within a fixed budget, and leave it all in one folder.

Usage: python scripts/device_check.py OUTDIR [--smoke] [--price-per-hour X]

Each stage drives the tool's own commands (`python -m harness.run`, `harness.sweep`,
`harness.report`) in subprocesses with their own time limit, prints a verdict line as it ends,
and writes its rows under a private folder; at the end the rows are merged into OUTDIR with
verdicts.md, report.md and the full log: at most MAX_FILES files of at most MAX_BYTES each.
`--smoke` runs the same stages on a CPU with the tiny models and stand-in durations.
Standard library only, so it runs with whatever Python the GPU host has.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 480  # the whole check, wall time
RESERVE_S = 10  # kept back from the stages for merging rows and writing verdicts
# --smoke stands in on a shared CPU runner, slower than the GPU it stands in for: every limit
# (and the budget) is this many times longer there, so a busy runner does not fail the check
SMOKE_SCALE = 2
MAX_FILES, MAX_BYTES = 8, 16 * 2**20
LOG_NAME = "device_check.log"
REQUIRED = ("torch", "transformers", "tokenizers", "numpy", "pandas", "pyarrow", "rich")
REQUIRED += ("psutil", "aiohttp")
OPTIONAL = ("uvloop", "onnx", "onnxruntime", "onnxscript", "tensorrt", "flash_attn", "pynvml")
OPTIONAL += ("tritonclient", "plotly")
GPU_ONLY = "GPU-only; --smoke runs on this CPU"


@dataclass
class Verdict:
    status: str  # ran | skipped | failed
    figure: str = ""  # the key figure, or the reason for skipped / failed
    seconds: float = 0.0


@dataclass
class Ctx:
    """What every stage shares: the interpreter, folders, log, environment and deadlines."""

    py: str
    out: Path
    work: Path
    smoke: bool
    log: TextIO
    env: dict[str, str]
    deadline: float  # time.monotonic() by which every stage must have ended
    price: float
    price_args: list[str] = field(default_factory=list)
    probe: dict[str, Any] = field(default_factory=dict)  # stage 0/1's findings
    stage_end: float = 0.0
    scale: int = 1  # SMOKE_SCALE in --smoke
    run_dirs: list[Path] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return bool(self.probe.get("cuda"))

    @property
    def cls_model(self) -> str:
        return "distilbert-sentiment-tiny" if self.smoke else "distilbert-sentiment"

    @property
    def emb_model(self) -> str:
        return "gte-modernbert-tiny" if self.smoke else "gte-modernbert"

    @property
    def precisions(self) -> tuple[str, ...]:
        return ("fp32",) if self.smoke else ("fp16", "bf16")

    @property
    def half(self) -> str:
        return "fp32" if self.smoke else "fp16"

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()


class StageTimeSpent(Exception):
    pass


# --------------------------------------------------------------------------- subprocesses


def run_cmd(ctx: Ctx, argv: list[str], label: str, cwd: Path = ROOT) -> tuple[int, str]:
    """Run argv (from the checkout) within the stage's time left; (exit code, its output)."""
    left = min(ctx.stage_end, ctx.deadline) - time.monotonic()
    if left < 3:
        raise StageTimeSpent(f"stage time limit spent before {label}")
    ctx.log.write(f"\n$ {shlex.join(argv)}   # {label}, limit {left:.0f}s\n")
    ctx.log.flush()
    start = ctx.log.tell()
    # output goes straight to the log, so a hard kill of this driver still leaves it there
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=ctx.env,
        stdout=ctx.log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        rc = proc.wait(timeout=left)
    except subprocess.TimeoutExpired:
        # the whole process group: a server or compile worker must not outlive its stage
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended just as the limit passed
            pass
        proc.wait()
        rc = 124
        ctx.log.write(f"\n[device-check] {label}: timed out after {left:.0f}s, killed\n")
    ctx.log.flush()
    with open(ctx.log.name, encoding="utf-8", errors="replace") as f:
        f.seek(start)
        output = f.read()
    return rc, output


def first_error(rc: int, output: str) -> str:
    """The error's first line: the CLI's `error:` line, a traceback's last line, or the tail."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if rc == 124:
        return next((ln for ln in reversed(lines) if "timed out after" in ln), "timed out")
    for ln in lines:
        if ln.startswith("error:"):
            return ln[:240]
    if any(ln.startswith("Traceback") for ln in lines):
        for ln in reversed(lines):
            head = ln.split(":", 1)[0]
            if head.endswith(("Error", "Exception", "Interrupt")) and " " not in head:
                return ln[:240]
    return (lines[-1][:240] if lines else "") or f"exit code {rc}"


def python_json(ctx: Ctx, code: str, label: str, cwd: Path = ROOT) -> dict[str, Any]:
    """Run a Python snippet that prints one JSON object on its last line."""
    rc, out = run_cmd(ctx, [ctx.py, "-c", code], label, cwd)
    if rc != 0:
        raise RuntimeError(first_error(rc, out))
    return json.loads(out.strip().splitlines()[-1])


def read_rows(folder: Path) -> list[dict[str, str]]:
    path = folder / "results.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def bench(ctx: Ctx, command: str, args: list[str], name: str) -> tuple[list[dict], str | None]:
    """One harness command into its own output folder: (its rows, the error or None)."""
    folder = ctx.work / "runs" / name
    common = ["--hw", "auto", "--weights", "random", "--dataset", "synthetic"]
    common += ["--artifacts-dir", str(ctx.work / "artifacts"), "--output-dir", str(folder)]
    for attempt in range(2):
        argv = [ctx.py, "-m", command, *args, *common, *ctx.price_args]
        rc, out = run_cmd(ctx, argv, name)
        # a device without a hardware profile needs a price (cost is never $0): once, then on
        if rc != 0 and attempt == 0 and not ctx.price_args and "no hardware profile" in out:
            ctx.price_args = ["--price-per-hour", f"{ctx.price:g}"]
            ctx.say(f"  {name}: no hardware profile for this device; using {ctx.price_args}")
            continue
        break
    ctx.run_dirs.append(folder)
    if rc == 0:
        return read_rows(folder), None
    err = first_error(rc, out)
    if ctx.price_args and ("does not support --precision" in err or "cannot run flash" in err):
        # the stand-in profile of an unknown device carries no capabilities at all
        err += " [this device has no profile in the harness's hardware table: add one]"
    return read_rows(folder), err


def run_args(ctx: Ctx) -> list[str]:
    """Stand-in durations on CPU; short but real ones on the GPU."""
    if ctx.smoke:
        return ["--duration", "0.3", "--min-calls", "2", "--warmup", "1"]
    return ["--duration", "0.5", "--min-calls", "5", "--warmup", "3"]


# --------------------------------------------------------------------------- figures


def num(row: dict[str, str], col: str) -> float | None:
    try:
        return float(row.get(col) or "nan") if row.get(col) not in (None, "") else None
    except ValueError:
        return None


def throughput(rows: list[dict[str, str]]) -> str:
    """Inputs/s per batch size, e.g. 'b1 120/s b32 2,400/s'."""
    parts = []
    for r in rows:
        t = num(r, "throughput_req_per_sec")
        parts.append(f"b{r.get('batch_size')} {t:,.0f}/s" if t is not None else "")
    return " ".join(p for p in parts if p)


def filled(rows: list[dict[str, str]], cols: tuple[str, ...]) -> str:
    """How many rows have each column filled; 'absent' when the results have no such column."""
    out = []
    for col in cols:
        if not rows or col not in rows[0]:
            out.append(f"{col} absent")
        else:
            out.append(f"{col} {sum(1 for r in rows if r.get(col) not in ('', None))}/{len(rows)}")
    return ", ".join(out)


def engine_info(row: dict[str, str], key: str) -> Any:
    try:
        return json.loads(row.get("config_json") or "{}").get("engine_info", {}).get(key)
    except json.JSONDecodeError:
        return None


def combine(parts: list[str], errors: list[str]) -> Verdict:
    """A stage with several commands: failed if any failed, with what did run as context."""
    if errors:
        done = f" (ran: {'; '.join(parts)})" if parts else ""
        return Verdict("failed", errors[0] + done)
    return Verdict("ran", "; ".join(parts))


# --------------------------------------------------------------------------- stages

PROBE_IMPORTS = """
import importlib, json, sys
found = {}
for name in %r:
    try:
        m = importlib.import_module(name)
        found[name] = str(getattr(m, "__version__", "ok"))
    except BaseException as e:
        found[name] = "missing: " + type(e).__name__ + ": " + str(e).splitlines()[0][:120]
ort = sys.modules.get("onnxruntime")
providers = ort.get_available_providers() if ort else []
import harness
print(json.dumps({"imports": found, "ort_providers": providers, "harness": harness.__file__}))
"""


def stage_install(ctx: Ctx) -> Verdict:
    """Install this checkout with --no-deps where it is not already importable; check imports."""
    where = "import harness, json; print(json.dumps({'harness': harness.__file__}))"
    notes = []
    try:
        # from outside the checkout: `python -c` would otherwise import it from the cwd
        found = python_json(ctx, where, "where is harness", cwd=ctx.work)["harness"]
    except RuntimeError:
        found = ""
    if not found.startswith(str(ROOT)):
        cmd = [ctx.py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index"]
        rc, out = run_cmd(ctx, [*cmd, "-e", str(ROOT)], "pip install --no-deps -e .")
        if rc != 0:
            # commands run from the checkout, so PYTHONPATH is enough when pip cannot install
            ctx.env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [str(ROOT), ctx.env.get("PYTHONPATH")])
            )
            notes.append(f"pip install failed ({first_error(rc, out)}); using PYTHONPATH")
        else:
            notes.append("installed with pip --no-deps -e")
    else:
        notes.append("already installed")
    probe = python_json(ctx, PROBE_IMPORTS % (REQUIRED + OPTIONAL,), "imports")
    ctx.probe.update(probe)
    missing = [n for n in REQUIRED if probe["imports"][n].startswith("missing")]
    absent = [n for n in OPTIONAL if probe["imports"][n].startswith("missing")]
    for name, what in probe["imports"].items():
        ctx.log.write(f"  {name}: {what}\n")
    notes.append(f"optional missing: {', '.join(absent) or 'none'}")
    if missing:
        return Verdict(
            "failed", f"required imports missing: {', '.join(missing)}; " + "; ".join(notes)
        )
    return Verdict("ran", "; ".join(notes))


PROBE_DEVICE = """
import json, platform, torch, transformers
d = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
     "transformers": transformers.__version__, "cuda": torch.cuda.is_available(),
     "python": platform.python_version()}
if d["cuda"]:
    p = torch.cuda.get_device_properties(0)
    d.update(name=p.name, cc=f"{p.major}.{p.minor}", mem_gib=round(p.total_memory / 2**30, 1),
             sms=p.multi_processor_count, count=torch.cuda.device_count())
try:
    import pynvml
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    d["nvml"] = {"driver": str(pynvml.nvmlSystemGetDriverVersion()),
                 "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000}
    try:
        d["nvml"]["energy_mj"] = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
    except Exception as e:
        d["nvml"]["energy_mj"] = "unsupported: " + str(e)
except Exception as e:
    d["nvml"] = "unavailable: " + type(e).__name__ + ": " + str(e)[:120]
print(json.dumps(d))
"""


def stage_device(ctx: Ctx) -> Verdict:
    """nvidia-smi, compute capability, memory, torch/transformers versions and NVML."""
    smi = shutil.which("nvidia-smi")
    if smi:
        query = "--query-gpu=name,driver_version,memory.total,compute_cap,power.limit"
        run_cmd(ctx, [smi, query, "--format=csv"], "nvidia-smi query")
        run_cmd(ctx, [smi], "nvidia-smi")
    d = python_json(ctx, PROBE_DEVICE, "torch device probe")
    ctx.probe.update(d)
    versions = f"torch {d['torch']} (cuda {d['cuda_build']}), transformers {d['transformers']}"
    nvml = d.get("nvml")
    nvml_text = (
        f"NVML driver {nvml['driver']}, {nvml['power_w']:.0f} W, energy counter "
        f"{'ok' if isinstance(nvml.get('energy_mj'), int) else 'unsupported'}"
        if isinstance(nvml, dict)
        else f"NVML {nvml}"
    )
    if not d["cuda"]:
        cpu = "no CUDA device" + ("" if smi else ", no nvidia-smi")
        status = "ran" if ctx.smoke else "failed"
        return Verdict(status, f"{cpu}; {versions}; {nvml_text}")
    gpu = f"{d['name']} x{d['count']}, cc {d['cc']}, {d['mem_gib']} GiB, {d['sms']} SMs"
    return Verdict("ran", f"{gpu}; {versions}; {nvml_text}")


def stage_eager(ctx: Ctx) -> Verdict:
    """Eager, both models, each precision, batch 1/8/32/128, with the memory/energy columns."""
    parts, errors, rows_all = [], [], []
    for task, model in (("classification", ctx.cls_model), ("embedding", ctx.emb_model)):
        for precision in ctx.precisions:
            args = ["--task", task, "--model", model, "--engine", "eager"]
            args += ["--precision", precision, "--inputs-per-request", "1,8,32,128", *run_args(ctx)]
            rows, err = bench(ctx, "harness.run", args, f"eager-{model}-{precision}")
            rows_all += rows
            if err:
                errors.append(f"{model} {precision}: {err}")
            if rows:
                parts.append(f"{model} {precision}: {throughput(rows)}")
    cols = ("peak_gpu_mem_mb", "energy_j_per_input", "kwh_per_1B")
    if rows_all:
        parts.append(filled(rows_all, cols))
    return combine(parts, errors)


def stage_flash(ctx: Ctx) -> Verdict:
    """ModernBERT with flash_attention_2 against the sdpa rows of the eager stage."""
    what = ctx.probe.get("imports", {}).get("flash_attn", "missing")
    if what.startswith("missing"):
        return Verdict("skipped", f"flash_attn does not import ({what[9:]})")
    cc = float(ctx.probe.get("cc") or 0)
    if cc < 8.0:
        return Verdict("skipped", f"flash-attention-2 needs compute capability >= 8.0; got {cc}")
    args = ["--task", "embedding", "--model", ctx.emb_model, "--engine", "eager"]
    args += ["--precision", "bf16", "--inputs-per-request", "32,128", *run_args(ctx)]
    parts, errors = [], []
    for attn in ("sdpa", "flash_attention_2"):
        rows, err = bench(ctx, "harness.run", [*args, "--attn", attn], f"attn-{attn}")
        if err:
            errors.append(f"{attn}: {err}")
        if rows:
            parts.append(f"{attn}: {throughput(rows)}")
    return combine(parts, errors)


def stage_compile(ctx: Ctx) -> Verdict:
    """torch.compile on DistilBERT at batch 32: default, then max-autotune (CUDA graphs)."""
    modes = ("default",) if ctx.smoke else ("default", "max-autotune")
    parts, errors = [], []
    for mode in modes:
        args = ["--task", "classification", "--model", ctx.cls_model, "--engine", "compile"]
        args += ["--compile-mode", mode, "--precision", ctx.half, "--inputs-per-request", "32"]
        rows, err = bench(ctx, "harness.run", [*args, *run_args(ctx)], f"compile-{mode}")
        if err:
            errors.append(f"{mode}: {err}")
        for r in rows:
            parts.append(
                f"{mode}: {throughput([r])}, compile {engine_info(r, 'compile_seconds')} s"
            )
    if ctx.smoke:
        parts.append(f"max-autotune skipped ({GPU_ONLY}: CUDA graphs)")
    return combine(parts, errors)


def stage_aoti(ctx: Ctx) -> Verdict:
    """AOTInductor export for CUDA, its parity gate, and a run of the package."""
    args = ["--task", "classification", "--model", ctx.cls_model, "--engine", "aoti"]
    args += ["--precision", ctx.half, "--inputs-per-request", "32", *run_args(ctx)]
    rows, err = bench(ctx, "harness.run", args, "aoti")
    parts = [
        f"{throughput([r])}, export {engine_info(r, 'compile_seconds')} s, "
        f"parity {r.get('parity_metric') or 'none recorded'}"
        for r in rows
    ]
    return combine(parts, [err] if err else [])


def stage_onnx(ctx: Ctx) -> Verdict:
    """ONNX Runtime's CUDA and TensorRT providers, and the TensorRT plan, where each imports."""
    providers = ctx.probe.get("ort_providers", [])
    trt = ctx.probe.get("imports", {}).get("tensorrt", "missing")
    runs, skipped = [], []
    for provider, ep in (
        ("cuda", "CUDAExecutionProvider"),
        ("tensorrt", "TensorrtExecutionProvider"),
    ):
        if ep in providers:
            runs.append((f"onnx-{provider}", ["--engine", "onnx", "--provider", provider]))
        else:
            skipped.append(f"{provider} provider: onnxruntime has no {ep}")
    if trt.startswith("missing"):
        skipped.append(f"plan: tensorrt does not import ({trt[9:]})")
    else:
        runs.append(("trt-plan", ["--engine", "trt"]))
    if not runs:
        return Verdict("skipped", "; ".join(skipped))
    parts, errors = [], []
    for name, engine in runs:
        args = ["--task", "classification", "--model", ctx.cls_model, *engine]
        args += ["--precision", "fp16", "--inputs-per-request", "32", *run_args(ctx)]
        rows, err = bench(ctx, "harness.run", args, name)
        if err:
            errors.append(f"{name}: {err}")
        for r in rows:
            parts.append(f"{name}: {throughput([r])}, parity {r.get('parity_metric') or 'none'}")
    return combine(parts + [f"skipped {s}" for s in skipped], errors)


def stage_varlen(ctx: Ctx) -> Verdict:
    """The packed (unpadded) token layout against padded eager: DistilBERT, batch 32."""
    parts, errors = [], []
    for layout in ("padded", "packed"):
        args = ["--task", "classification", "--model", ctx.cls_model, "--engine", "eager"]
        args += ["--precision", ctx.half, "--inputs-per-request", "32", "--token-layout", layout]
        rows, err = bench(ctx, "harness.run", [*args, *run_args(ctx)], f"layout-{layout}")
        if err:
            errors.append(f"{layout}: {err}")
        for r in rows:
            parts.append(f"{layout}: {throughput([r])}, pad frac {r.get('padding_ratio')}")
    return combine(parts, errors)


def stage_http(ctx: Ctx) -> Verdict:
    """A short HTTP sweep: server batch 32 and 128, up to 64 VUs, 8 inputs per request."""
    args = ["--task", "classification", "--model", ctx.cls_model, "--engine", "eager"]
    args += ["--precision", ctx.half, "--inputs-per-request", "8", "--repeats", "1"]
    if ctx.smoke:  # one server start: each costs a model load on a slow CPU
        args += ["--max-batch-sizes", "32", "--vus-max", "8", "--iterations", "20"]
        args += ["--max-duration", "0.3"]
    else:
        args += ["--max-batch-sizes", "32,128", "--vus-max", "64", "--iterations", "100"]
        args += ["--max-duration", "1.5"]
    rows, err = bench(ctx, "harness.sweep", args, "http")
    parts = []
    for server_batch in sorted({r.get("max_batch_size") for r in rows}):
        mine = [r for r in rows if r.get("max_batch_size") == server_batch]
        best = max(mine, key=lambda r: num(r, "throughput_req_per_sec") or 0)
        parts.append(
            f"server b{server_batch}: best {num(best, 'throughput_req_per_sec') or 0:,.0f} "
            f"inputs/s at {best.get('vus')} VUs, p95 {num(best, 'p95_latency_ms') or 0:.1f} ms"
        )
    ceilings = {r.get("loadgen_ceiling_rps") for r in rows} - {"", None}
    if rows:
        parts.append(f"loadgen ceiling {', '.join(sorted(ceilings)) or 'not recorded'} req/s")
    return combine(parts, [err] if err else [])


def stage_report(ctx: Ctx) -> Verdict:
    """`python -m harness.report` over the merged rows; report.md goes to OUTDIR."""
    merged = merge_rows(ctx)
    if merged is None:
        return Verdict("skipped", "no rows to report")
    out = ctx.work / "report" / "report.html"
    rc, output = run_cmd(
        ctx, [ctx.py, "-m", "harness.report", str(merged), "--out", str(out)], "report"
    )
    md = out.with_name("report.md")
    if md.exists():
        shutil.copyfile(md, ctx.out / "report.md")
    if rc != 0:
        return Verdict("failed", first_error(rc, output))
    return Verdict("ran", f"report.md ({md.stat().st_size if md.exists() else 0:,} bytes)")


@dataclass(frozen=True)
class Stage:
    name: str
    limit_s: int
    run: Callable[[Ctx], Verdict]
    gpu_only: bool = False  # skipped in --smoke
    probe: bool = False  # runs even where no CUDA device is found


STAGES = (
    Stage("0 install + imports", 30, stage_install, probe=True),
    Stage("1 device, driver, NVML", 15, stage_device, probe=True),
    Stage("2 eager fp16/bf16", 90, stage_eager),
    Stage("3 sdpa vs flash_attention_2", 20, stage_flash, gpu_only=True),
    Stage("4 compile default / max-autotune", 120, stage_compile),
    Stage("5 AOTInductor CUDA", 55, stage_aoti, gpu_only=True),
    Stage("6 ONNX CUDA / TensorRT", 25, stage_onnx, gpu_only=True),
    Stage("7 zero-padding / packed layout", 35, stage_varlen),
    Stage("8 HTTP sweep", 55, stage_http),
    Stage("9 report", 15, stage_report),
)
assert sum(s.limit_s for s in STAGES) + RESERVE_S <= BUDGET_S, "stage limits exceed the budget"


# --------------------------------------------------------------------------- output


def merge_rows(ctx: Ctx) -> Path | None:
    """Every stage's rows into OUTDIR/results.parquet + results.csv; the parquet's path."""
    import pandas as pd

    frames = []
    for folder in ctx.run_dirs:
        path = folder / "results.parquet"
        if path.exists():
            frames.append(pd.read_parquet(path))
        elif (folder / "results.csv").exists():
            frames.append(pd.read_csv(folder / "results.csv"))
    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    merged = pd.concat(frames, ignore_index=True)
    merged.to_csv(ctx.out / "results.csv", index=False)
    merged.to_parquet(ctx.out / "results.parquet", index=False)
    return ctx.out / "results.parquet"


def write_verdicts(ctx: Ctx, verdicts: list[tuple[Stage, Verdict]], total_s: float) -> None:
    p = ctx.probe
    device = p.get("name") or "no CUDA device"
    lines = [
        "# Device check",
        "",
        f"- mode: {'smoke (CPU, tiny models, stand-in durations)' if ctx.smoke else 'GPU'}",
        f"- device: {device}; torch {p.get('torch')}; transformers {p.get('transformers')}",
        f"- host: {os.uname().nodename}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- wall time: {total_s:.0f} s of a {BUDGET_S * ctx.scale} s budget",
        "",
        "| stage | status | key figure | seconds | limit |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for stage, v in verdicts:
        figure = v.figure.replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {stage.name} | {v.status} | {figure} | {v.seconds:.1f} | {stage.limit_s * ctx.scale} |"
        )
    (ctx.out / "verdicts.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def cap_outputs(out: Path) -> None:
    """Hold the log to MAX_BYTES (trim its middle); warn when OUTDIR holds more than ours."""
    log = out / LOG_NAME
    if log.exists() and log.stat().st_size > MAX_BYTES:
        data = log.read_bytes()
        keep = MAX_BYTES // 2 - 1024
        note = b"\n\n[device-check] ... log trimmed to fit 16 MiB ...\n\n"
        log.write_bytes(data[:keep] + note + data[-keep:])
    # never delete what is not ours: a crowded OUTDIR is only reported
    if len(list(out.iterdir())) > MAX_FILES:
        print(f"[device-check] warning: {out} holds more than {MAX_FILES} entries", flush=True)


def run_stage(ctx: Ctx, stage: Stage) -> Verdict:
    t0 = time.monotonic()
    limit = stage.limit_s * ctx.scale
    ctx.stage_end = t0 + limit
    ctx.log.write(f"\n===== stage {stage.name} (limit {limit}s) =====\n")
    if stage.gpu_only and ctx.smoke:
        v = Verdict("skipped", GPU_ONLY)
    elif not ctx.smoke and not ctx.cuda and not stage.probe:
        v = Verdict("skipped", "no CUDA device (torch.cuda.is_available() is False); use --smoke")
    elif ctx.deadline - t0 < 5:
        v = Verdict("skipped", "the check's budget is spent")
    else:
        try:
            v = stage.run(ctx)
        except StageTimeSpent as e:
            v = Verdict("failed", str(e))
        except Exception as e:  # a stage's bug must not stop the stages after it
            v = Verdict("failed", f"{type(e).__name__}: {e}".splitlines()[0][:240])
    v.seconds = time.monotonic() - t0
    shown = v.figure if len(v.figure) < 300 else v.figure[:297] + "..."
    ctx.say(f"[device-check] {stage.name}: {v.status} ({v.seconds:.1f}s) {shown}")
    return v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir", type=Path, help="where the (at most 8) result files go")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny models, stand-in durations")
    p.add_argument(
        "--price-per-hour",
        type=float,
        default=float(os.environ.get("DEVICE_CHECK_PRICE", "4.50")),
        help="$/hr passed to the harness only when the device has no hardware profile "
        "(recorded as price_source --price-per-hour); pass the GPU host's own price",
    )
    args = p.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    for old in (LOG_NAME, "verdicts.md", "report.md", "results.csv", "results.parquet"):
        (args.outdir / old).unlink(missing_ok=True)
    t0 = time.monotonic()
    scale = SMOKE_SCALE if args.smoke else 1
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    with (
        tempfile.TemporaryDirectory(prefix="device-check-") as work,
        open(args.outdir / LOG_NAME, "a+", encoding="utf-8") as log,
    ):
        # a compile killed at its stage's limit can leave a truncated .so in a shared inductor
        # cache, which breaks the next compile of the same graph: keep the check's cache private
        env["TORCHINDUCTOR_CACHE_DIR"] = str(Path(work) / "inductor")
        env["TRITON_CACHE_DIR"] = str(Path(work) / "triton")
        ctx = Ctx(
            sys.executable,
            args.outdir,
            Path(work),
            args.smoke,
            log,
            env,
            t0 + (BUDGET_S - RESERVE_S) * scale,
            args.price_per_hour,
            scale=scale,
        )
        ctx.say(
            f"[device-check] {'smoke' if args.smoke else 'GPU'} mode, python {sys.executable}, "
            f"budget {BUDGET_S * scale}s, output {args.outdir}"
        )
        verdicts = [(s, run_stage(ctx, s)) for s in STAGES]
        try:
            merge_rows(ctx)
        except Exception as e:
            ctx.say(f"[device-check] merging rows failed: {type(e).__name__}: {e}")
        total = time.monotonic() - t0
        write_verdicts(ctx, verdicts, total)
        failed = [s.name for s, v in verdicts if v.status == "failed"]
        ctx.say(
            f"[device-check] done in {total:.0f}s: {len(failed)} failed"
            + (f" ({', '.join(failed)})" if failed else "")
        )
    cap_outputs(args.outdir)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
