"""A real `tritonserver` process on loopback: start(), stop(), log_file() (a ManagedProcess).

Where the binary comes from, in order: `$TRITONSERVER` (a path to the binary, e.g. inside the
NGC container), `tritonserver` on PATH with its backends in /opt/tritonserver/backends, or the
PyPI package `nvidia-pytriton` (0.7.0 bundles tritonserver 2.51.0 with the python backend only).

The bundled python backend has three traps, handled here:
- its stub links libpython; Debian's older copy is found first unless the running interpreter's
  lib directory leads LD_LIBRARY_PATH (models then fail with `_recursion_count` errors);
- the stub takes its site-packages from the `python3` first on PATH (else responses are empty);
- the 2.51 stub is built against NumPy 1.x: under NumPy 2 it reads inputs as garbage. When this
  environment has NumPy 2, the stub runs in a small side environment that puts NumPy 1.x first
  and then this environment's site-packages (`prepare_stub_env`, run once by scripts/setup.sh).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from core.environment import child_env, var
from core.errors import BillionbenchError, EngineError
from core.net import free_port
from core.processes.base import ManagedProcess

log = logging.getLogger(__name__)

PYTRITON = "nvidia-pytriton==0.7.0"
INSTALL_HINT = (
    f'pip install --no-deps "{PYTRITON}" && python -m harness.tools prepare tritonserver '
    "(or: bash scripts/setup.sh test), or set TRITONSERVER=/path/to/tritonserver"
)


class TritonUnavailable(BillionbenchError):
    """No usable tritonserver binary here; the message says how to get one."""


def cache_dir() -> Path:
    root = var("BILLIONBENCH_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "billionbench"
    )
    import hashlib

    # one folder per environment: its stub side-environment points at this sys.prefix
    env = hashlib.sha1(sys.prefix.encode()).hexdigest()[:8]
    return Path(root) / f"triton-py{sys.version_info[0]}{sys.version_info[1]}-{env}"


@dataclass(frozen=True)
class Installation:
    binary: Path
    backends: Path  # --backend-directory (with a python stub that matches this interpreter)
    libs: Path | None  # extra shared libraries (the wheel's nvidia_pytriton.libs)
    source: str  # "nvidia-pytriton 0.7.0", "$TRITONSERVER", "PATH"
    stub_env: Path | None  # side environment whose bin/ leads PATH (NumPy 1.x for the stub)


def pytriton_root() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    return root if (root / "tritonserver" / "bin" / "tritonserver").exists() else None


def _numpy_major() -> int:
    import numpy

    return int(numpy.__version__.split(".")[0])


def prepare_stub_env(install_numpy: bool = True) -> Path:
    """Make (once) the backend directory and side environment the bundled stub needs.

    Returns the cache folder. With `install_numpy`, a missing NumPy 1.x is pip-installed into
    it (needs the package index once); without, a missing one raises TritonUnavailable.
    """
    root = pytriton_root()
    if root is None:
        raise TritonUnavailable(f"nvidia-pytriton is not installed; {INSTALL_HINT}")
    out = cache_dir()
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonUnavailable(
            f"nvidia-pytriton ships no python backend stub for Python {version}"
        )
    backends = out / "backends"
    if not (backends / "python" / "triton_python_backend_stub").exists():
        tmp = out / "backends.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(root / "tritonserver" / "backends", tmp)
        shutil.copy2(stub, tmp / "python" / "triton_python_backend_stub")
        shutil.rmtree(backends, ignore_errors=True)
        tmp.rename(backends)
    env = out / "env"
    numpy1 = out / "numpy1"
    if _numpy_major() >= 2 and not (numpy1 / "numpy").is_dir():
        if not install_numpy:
            raise TritonUnavailable(
                "the bundled python backend needs NumPy 1.x beside this environment's NumPy "
                f"2; run: python -m harness.tools prepare tritonserver ({INSTALL_HINT})"
            )
        tmp = out / "numpy1.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        cmd += ["--target", str(tmp), "numpy>=1.24,<2"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()
            raise TritonUnavailable(
                f"could not install NumPy 1.x for the python backend stub: "
                f"{tail[-1] if tail else done.returncode}"
            )
        shutil.rmtree(numpy1, ignore_errors=True)
        tmp.rename(numpy1)
    if not (env / "bin" / "python3").exists():
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", "--clear", str(env)], check=True
        )
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(env), "platbase": str(env)}))
    purelib.mkdir(parents=True, exist_ok=True)
    lines = []
    if (numpy1 / "numpy").is_dir():
        lines.append(str(numpy1))
    # addsitedir (not a bare path) so the editable install's own .pth finder runs too
    lines += [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    (purelib / "billionbench-stub.pth").write_text("\n".join(lines) + "\n")
    return out


def find_installation() -> Installation:
    """The tritonserver to run, or TritonUnavailable naming what to install."""
    explicit = var("TRITONSERVER")
    if explicit:
        binary = Path(explicit)
        if not binary.exists():
            raise TritonUnavailable(f"TRITONSERVER={explicit} does not exist")
        backends = Path(var("TRITON_BACKENDS", binary.parent.parent / "backends"))
        return Installation(binary, backends, None, "$TRITONSERVER", None)
    root = pytriton_root()
    if root is not None:
        out = cache_dir()
        ready = (
            (out / "backends" / "python" / "triton_python_backend_stub").exists()
            and (out / "env" / "bin" / "python3").exists()
            and (_numpy_major() < 2 or (out / "numpy1" / "numpy").is_dir())
        )
        if not ready:  # builds what needs no network; a missing NumPy 1.x raises with the fix
            out = prepare_stub_env(install_numpy=False)
        return Installation(
            root / "tritonserver" / "bin" / "tritonserver",
            out / "backends",
            root.parent / "nvidia_pytriton.libs",
            "nvidia-pytriton 0.7.0 (tritonserver 2.51.0)",
            out / "env",
        )
    on_path = shutil.which("tritonserver")
    if on_path:
        return Installation(Path(on_path), Path("/opt/tritonserver/backends"), None, "PATH", None)
    raise TritonUnavailable(f"no tritonserver found; {INSTALL_HINT}")


class TritonServer(ManagedProcess):
    """One tritonserver bound to 127.0.0.1, on free HTTP/gRPC/metrics ports.

    `explicit=True` starts it in explicit model-control mode with `models` loaded, so a sweep can
    reload a model after rewriting its config instead of restarting the server.
    """

    name = "tritonserver"

    def __init__(
        self,
        repository: str | os.PathLike,
        *,
        models: list[str] | None = None,
        explicit: bool = True,
        ready_timeout_s: float = 180.0,
        installation: Installation | None = None,
        extra_args: list[str] | None = None,
    ):
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise EngineError(f"model repository {self.repository} is not a directory")
        self.models = list(models or [])
        self.explicit = explicit
        self.install = installation or find_installation()
        self.extra_args = list(extra_args or [])
        self.http_port = self.grpc_port = self.metrics_port = 0
        log = tempfile.NamedTemporaryFile(prefix="bb-triton-", suffix=".log", delete=False)
        log.close()
        super().__init__(log.name, ready_timeout_s)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def env(self) -> dict[str, str]:
        env = child_env()
        libs = [sysconfig.get_config_var("LIBDIR") or ""]
        if self.install.libs:
            libs.append(str(self.install.libs))
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
        bins = [str(self.install.stub_env / "bin")] if self.install.stub_env else []
        bins.append(os.path.dirname(sys.executable))
        env["PATH"] = ":".join([*bins, env.get("PATH", "")])
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def command(self) -> list[str]:
        cmd = [
            str(self.install.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.install.backends}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=10",
        ]
        if self.explicit:
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={m}" for m in self.models]
        return cmd + self.extra_args

    def start(self) -> TritonServer:
        """Start and wait until ready; one retry (a start right after a stop can time out)."""
        for attempt in (1, 2):
            try:
                super().start()
                return self
            except EngineError:
                if attempt == 2:
                    raise
                log.warning("tritonserver did not start; retrying once (log: %s)", self.log_file())
                time.sleep(1.0)
        return self

    def spawn(self) -> None:
        self.http_port, self.grpc_port, self.metrics_port = (free_port() for _ in range(3))
        super().spawn()

    def is_ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=1) as r:
            return r.status == 200 and all(self.model_ready(m) for m in self.models)

    def failure(self) -> str:
        """The most telling log line (a model load failure, else the last line), with the log."""
        return self.last_error()

    def last_error(self) -> str:
        try:
            lines = Path(self.log_file()).read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        bad = [ln for ln in lines if ln.startswith("E") or "failed to load" in ln]
        text = (bad or lines or ["no output"])[-1].strip()
        return f"{text[:400]} (log: {self.log_file()})"

    def stop(self, grace_s: float = 20.0) -> None:
        super().stop(grace_s)

    # -- HTTP helpers (repository and statistics APIs) ---------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None, timeout: float = 300):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                payload = r.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            raise EngineError(f"tritonserver {method} {path}: {detail}") from None
        return json.loads(payload) if payload else {}

    def model_ready(self, name: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/models/{name}/ready", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def load(self, name: str) -> None:
        """(Re)load a model from the repository (explicit model-control mode)."""
        self._request("POST", f"/v2/repository/models/{name}/load", {})

    def statistics(self, name: str) -> dict:
        stats = self._request("GET", f"/v2/models/{name}/stats")["model_stats"]
        return stats[0] if stats else {}
