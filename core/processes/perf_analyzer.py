"""NVIDIA's perf_analyzer: find (or prepare once) a runnable binary, and run it.

The binary comes from `$PERF_ANALYZER`, `perf_analyzer` on PATH, or the `tritonclient==2.51.0`
wheel (the PyPI `perf-analyzer` wheels need glibc 2.38): `prepare()` downloads that wheel once,
extracts the binary, and links the two libraries it needs (libb64, libcudart) from
nvidia-pytriton's bundle. Its `-f` CSV is parsed here; turning it into result rows, after our own
output checks (perf_analyzer never looks at outputs), is the harness's perf_analyzer scenario.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from core import contract
from core.environment import child_env, var
from core.errors import BillionbenchError, EngineError
from core.processes.tritonserver import cache_dir, pytriton_root

WHEEL = "tritonclient==2.51.0"
# perf_analyzer's default (10 %) rarely settles on a busy 2-core machine; recorded in each row
STABILITY_PCT = 50
HINT = (
    "python -m harness.tools prepare perf_analyzer (downloads the tritonclient 2.51.0 wheel once), "
    "or set PERF_ANALYZER=/path/to/perf_analyzer"
)


class PerfAnalyzerUnavailable(BillionbenchError):
    """No runnable perf_analyzer; the message says how to get one."""


def _cache() -> Path:
    return cache_dir() / "perf_analyzer"


def _libs_dir() -> Path | None:
    root = pytriton_root()
    return root.parent / "nvidia_pytriton.libs" if root else None


def find_binary() -> tuple[Path, dict[str, str]]:
    """(binary, environment to run it with), or PerfAnalyzerUnavailable."""
    env = child_env()
    explicit = var("PERF_ANALYZER")
    if explicit:
        if not Path(explicit).exists():
            raise PerfAnalyzerUnavailable(f"PERF_ANALYZER={explicit} does not exist")
        return Path(explicit), env
    cached = _cache() / "perf_analyzer"
    if cached.exists():
        libs = [str(_cache() / "libs")]
        if _libs_dir():
            libs.append(str(_libs_dir()))
        env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")])
        return cached, env
    on_path = shutil.which("perf_analyzer")
    if on_path:
        return Path(on_path), env
    raise PerfAnalyzerUnavailable(f"no perf_analyzer found; {HINT}")


def prepare() -> Path:
    """Extract perf_analyzer from the tritonclient 2.51.0 wheel into the cache (once)."""
    out = _cache()
    if (out / "perf_analyzer").exists():
        return out / "perf_analyzer"
    libs = _libs_dir()
    if libs is None:
        raise PerfAnalyzerUnavailable(
            "perf_analyzer 2.51 needs libb64 and libcudart from nvidia-pytriton; install it "
            '(pip install --no-deps "nvidia-pytriton==0.7.0")'
        )
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("tritonclient-*.whl"))
        if done.returncode != 0 or not wheels:
            raise PerfAnalyzerUnavailable(
                f"could not download {WHEEL}: {(done.stderr or done.stdout).strip()[-200:]}"
            )
        with zipfile.ZipFile(wheels[0]) as z:
            member = next(n for n in z.namelist() if n.endswith("/bin/perf_analyzer"))
            tmp_bin = out.with_name(out.name + ".partial")
            shutil.rmtree(tmp_bin, ignore_errors=True)
            (tmp_bin / "libs").mkdir(parents=True)
            with z.open(member) as src, open(tmp_bin / "perf_analyzer", "wb") as dst:
                shutil.copyfileobj(src, dst)
    (tmp_bin / "perf_analyzer").chmod(0o755)
    for pattern, name in (
        ("libb64-*.so.0d", "libb64.so.0d"),
        ("libcudart-*.so.12*", "libcudart.so.12"),
    ):
        found = sorted(libs.glob(pattern))
        if not found:
            raise PerfAnalyzerUnavailable(f"{libs} has no {pattern}; reinstall nvidia-pytriton")
        (tmp_bin / "libs" / name).symlink_to(found[0])
    shutil.rmtree(out, ignore_errors=True)
    tmp_bin.rename(out)
    return out / "perf_analyzer"


def version(binary: Path, env: dict[str, str]) -> str:
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, env=env)
    text = (done.stdout + done.stderr).strip().splitlines()
    if done.returncode != 0 or not text:
        raise PerfAnalyzerUnavailable(
            f"{binary} does not run here: {text[-1] if text else done.returncode}; {HINT}"
        )
    return text[0].replace("Perf Analyzer Version", "perf_analyzer").strip()


def input_data(texts: list[str], path: Path) -> Path:
    """perf_analyzer's --input-data JSON: one step per text, TEXT as BYTES [1]."""
    steps = [{contract.TEXT: {"content": [t], "shape": [1]}} for t in texts]
    path.write_text(json.dumps({"data": steps}))
    return path


def parse_csv(text: str) -> list[dict[str, float]]:
    """perf_analyzer -f CSV rows -> numbers (latencies stay in microseconds)."""
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        try:
            rows.append({k.strip(): float(v) for k, v in r.items() if k and v not in (None, "")})
        except ValueError as e:
            raise EngineError(f"unexpected perf_analyzer CSV row {r}: {e}") from None
    if not rows:
        raise EngineError("perf_analyzer wrote no measurements")
    return rows


def run(
    binary: Path,
    env: dict[str, str],
    *,
    url: str,
    model: str,
    texts: list[str],
    concurrency: list[int],
    batch: int = 1,
    transport: str = "http",
    measurement_ms: int = 5000,
    timeout_s: float = 1800,
) -> list[dict[str, float]]:
    """Run perf_analyzer once per concurrency; returns its parsed CSV rows."""
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bb-pa-") as tmp:
        data = input_data(texts, Path(tmp) / "data.json")
        for c in concurrency:
            out = Path(tmp) / f"pa-{c}.csv"
            cmd = [str(binary), "-m", model, "-u", url.split("://", 1)[-1], "-i", transport]
            cmd += ["-b", str(batch), "--concurrency-range", f"{c}:{c}:1"]
            cmd += ["--input-data", str(data), "--measurement-interval", str(measurement_ms)]
            cmd += ["--stability-percentage", str(STABILITY_PCT), "--max-trials", "10"]
            cmd += ["-f", str(out), "--verbose-csv"]
            try:
                done = subprocess.run(
                    cmd, capture_output=True, text=True, env=env, timeout=timeout_s
                )
            except subprocess.TimeoutExpired:
                raise EngineError(
                    f"perf_analyzer ran past {timeout_s:.0f} s at concurrency {c}"
                ) from None
            if done.returncode != 0 or not out.exists():
                lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
                raise EngineError(
                    f"perf_analyzer failed at concurrency {c} (exit {done.returncode}): "
                    f"{lines[-1].strip() if lines else 'no output'} (a busy machine: raise --duration)"
                )
            rows += parse_csv(out.read_text())
    return rows
