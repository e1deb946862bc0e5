"""What every long-running process we start shares: start(), stop(), log_file()."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path

from core.errors import EngineError


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess(ABC):
    """A server process in its own process group, so stop() ends it and whatever it started;
    it also gets a parent-death signal, so a benchmark killed outright leaves nothing
    listening. Its output goes to `log_file()`; start() returns once `is_ready()`.
    """

    #: how the process is named in errors ("the server", "tritonserver")
    name: str = "the process"

    def __init__(self, log_path: str | os.PathLike, ready_timeout_s: float):
        self._log_path = Path(log_path)
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None

    @abstractmethod
    def command(self) -> list[str]:
        """The argv to run."""

    @abstractmethod
    def is_ready(self) -> bool:
        """Whether the running process answers (health endpoints)."""

    def env(self) -> dict[str, str] | None:
        """The environment to run it with (None: this one)."""
        return None

    def cwd(self) -> str | None:
        return None

    def log_file(self) -> str:
        return str(self._log_path)

    def failure(self) -> str:
        """Why it is not up, for an error: its last log line, and where the log is."""
        try:
            lines = self._log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return f"{lines[-1].strip()[:400] if lines else 'no output'} (log: {self.log_file()})"

    def spawn(self) -> None:
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)  # never leave a server (and its children) behind a crash
        with open(self._log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                cwd=self.cwd(),
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise EngineError(f"{self.name} exited: {self.failure()}")
            try:
                if self.is_ready():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise EngineError(
            f"{self.name} was not ready in {self.ready_timeout_s:.0f} s: {self.failure()}"
        )

    def start(self) -> ManagedProcess:
        self.spawn()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace_s: float = 15.0) -> None:
        """TERM to the process group, KILL after `grace_s`; children left behind go too."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()
        self._signal(signal.SIGKILL)  # stubs or workers that outlived their parent
        self.proc = None

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def rss_mb(self) -> float | None:
        """Resident memory of the process and its children, in MiB."""
        if not self.proc:
            return None
        import psutil

        try:
            p = psutil.Process(self.proc.pid)
            return sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]) / 2**20
        except psutil.Error:
            return None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def capture(
    argv: list[str],
    *,
    cwd: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 5.0,
) -> tuple[int, str, str] | None:
    """Run a short command to completion: (exit code, stdout, stderr), or None when it cannot
    start; raises TimeoutError past `timeout_s` (the child is killed)."""
    try:
        r = subprocess.run(
            argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as e:
        raise TimeoutError(f"{argv[0]} did not finish within {timeout_s:g} s") from e
    except OSError:
        return None
    return r.returncode, r.stdout, r.stderr


class PipedProcess:
    """A helper child whose stdout we read line by line (a no-op server printing its port,
    neuron-monitor's JSON stream); stop() terminates it, then kills it after `grace_s`."""

    def __init__(self, argv: list[str], *, keep_stderr: bool = False):
        self.argv = argv
        self.keep_stderr = keep_stderr
        self.proc: subprocess.Popen | None = None

    def start(self) -> PipedProcess:
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if self.keep_stderr else subprocess.DEVNULL,
            text=True,
        )
        return self

    @property
    def stdout(self):
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout

    def exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def stderr_text(self) -> str:
        """What it wrote on stderr, once it has exited ('' when not kept or still running)."""
        if self.proc is None or self.proc.stderr is None or self.proc.poll() is None:
            return ""
        return self.proc.stderr.read()

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
