"""What runs on a cluster node: one worker per (node, hardware) holding the node's device.

The worker builds each target's scenario once, from its typed target, on its own node (which
detects its own hardware), and measures one point at a time. Expected failures come back as a `Reply`
with the reason, so the driver can retry elsewhere or record the point as failed.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.noise import HostWatch
from core.sysinfo import host_name
from harness import hardware
from harness.config import TargetConfig
from harness.runner import Measurement, Point, Scenario

Build = Callable[[TargetConfig, Any], Scenario]


@dataclass
class Reply:
    """A worker's answer: the value, or why there is none; and what the scenario printed."""

    value: Any = None
    error: str | None = None
    text: str = ""


class NodeWorker:
    """One per (node, hardware): each target's scenario built once, points measured one at a
    time (the driver's Ray actor wraps this class, and Ray runs its calls one at a time in the
    order they were sent, `next_point` beside them in the `plan` group; it is plain Python to
    stay testable)."""

    def __init__(self, hw: str, build: Build, node_id: str):
        from rich.console import Console

        self.hw, self.build, self.node = hw, build, node_id
        self.buffer = io.StringIO()
        self.console = Console(file=self.buffer, width=160, color_system=None, soft_wrap=True)
        self.scenarios: dict[str, Scenario] = {}
        self.plans: dict[str, Any] = {}

    def where(self) -> dict[str, str]:
        return {"node": self.node, "host": host_name()}

    def _text(self) -> str:
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text

    def _scenario(self, key: str, target: TargetConfig) -> Scenario:
        if key not in self.scenarios:
            detected = hardware.detect()
            if detected.profile != self.hw:
                # a row never claims hardware its node did not detect
                raise NodeMismatch(
                    f"node {self.node[:12]} ({host_name()}) was selected as {self.hw} by its "
                    f"Ray resources but detects {detected.describe()}; not measured there"
                )
            self.scenarios[key] = self.build(target, self.console)
        return self.scenarios[key]

    def open(self, key: str, target: TargetConfig) -> Reply:
        """Build the target's scenario here: its header, its point estimate, whether adaptive."""
        try:
            s = self._scenario(key, target)
        except Exception as e:  # noqa: BLE001 - the reason travels to the driver
            return Reply(error=_reason(e), text=self._text())
        info = {"header": s.header(), "estimate": s.estimate(), "adaptive": s.adaptive}
        return Reply(info, text=self._text())

    def next_point(self, key: str, row: dict[str, Any] | None, restart: bool) -> Reply:
        """The plan's next point (None when done), sent the previous point's row."""
        try:
            if restart or key not in self.plans:
                self.plans[key] = self.scenarios[key].plan()
                point = next(self.plans[key])
            else:
                point = self.plans[key].send(row)
        except StopIteration:
            point = None
        except Exception as e:  # noqa: BLE001
            return Reply(error=_reason(e), text=self._text())
        return Reply(point, text=self._text())

    def measure(self, key: str, target: TargetConfig, point: Point) -> Reply:
        try:
            with HostWatch() as watch:  # the node's own host: was it quiet?
                m = self._scenario(key, target).measure(point, lambda _text: None)
        except Exception as e:  # noqa: BLE001
            return Reply(error=_reason(e), text=self._text())
        m.row.update(watch.columns())
        m.row["executor"] = "ray"
        m.row["node"] = self.node
        return Reply(m, text=self._text())

    def summarize(self, key: str, rows: list[dict[str, Any]], home: str) -> tuple[str, dict]:
        """The scenario's summary, and the files it writes next to the rows (checks.json):
        written here into a scratch folder and handed back, for the driver to write under
        `home`, since this node's disk need not be the driver's."""
        files: dict[str, bytes] = {}
        s = self.scenarios.get(key)
        if s is None:
            return self._text(), files
        with tempfile.TemporaryDirectory(prefix="bb-summary-") as tmp:
            s.summarize(self.console, rows, Path(tmp))
            for f in sorted(Path(tmp).rglob("*")):
                if f.is_file():
                    files[f.relative_to(tmp).as_posix()] = f.read_bytes()
            text = self._text().replace(tmp, home)
        return text, files

    def pack(self, path: str, arcname: str) -> bytes | None:
        """An artifact folder (manifest included) as a gzipped tar, to bring it home."""
        folder = Path(path)
        if not (folder / "manifest.json").is_file():
            return None
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            tar.add(folder, arcname=arcname)
        return out.getvalue()

    def close(self) -> None:
        for s in self.scenarios.values():
            s.close()
        self.scenarios.clear()


class NodeMismatch(Exception):
    """The node's detected hardware is not what its Ray resources selected it as."""


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    return first if isinstance(e, NodeMismatch) else f"{type(e).__name__}: {first}"


def failed(node: str | None, reason: str, **columns: Any) -> Measurement:
    """A point that was not measured: its row says where it was tried and why it failed."""
    return Measurement({"executor": "ray", "node": node, "error": reason, **columns})
