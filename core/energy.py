"""Energy meters for the device under test: NVML on NVIDIA GPUs, RAPL on CPUs, neuron-monitor
on inf2. Each sits behind `Meter.start()` / `Meter.stop() -> Reading`.

Nothing here estimates: where no counter can be read there is no meter, and the energy columns
stay empty ("not measured"). Every reading covers the whole device (a GPU, a CPU package), so
it includes whatever else ran on it during the window.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.environment import child_env
from core.processes.base import PipedProcess

log = logging.getLogger(__name__)

POWERCAP = "/sys/class/powercap"
#: a RAPL counter wraps after max_energy_range_uj (~262 kJ: minutes at a few hundred watts);
#: polling this often sees at most one wrap between two reads
POLL_S = 10.0
J_PER_KWH = 3.6e6
NOT_MEASURED = "energy: not measured (no readable meter)"

MEASURED = "measured"  # joules from a hardware energy counter
RELATIVE = "relative"  # a power figure without a unit that converts to joules


@dataclass(frozen=True)
class Reading:
    """What a meter saw over one window: joules (None for a relative reading), and its source."""

    joules: float | None
    source: str  # what was read, e.g. "nvml total energy: GPU 0 (NVIDIA L4)"
    kind: str  # MEASURED | RELATIVE
    seconds: float


class Meter(ABC):
    """A counter read at the start and the end of a timed window."""

    #: which device and counter, for the energy_source column
    source: str = ""

    @abstractmethod
    def start(self) -> None:
        """Begin a window."""

    @abstractmethod
    def stop(self) -> Reading:
        """End the window and return what it used."""

    def close(self) -> None:
        """Release what the meter opened (a library handle, a child process)."""
        return None


class _Counter(Meter):
    """A cumulative counter: start/stop reads it; a poll thread keeps long windows wrap-safe."""

    def __init__(self, poll_s: float = POLL_S):
        self.poll_s = poll_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._total = 0.0
        self._last: list[float] = []
        self._t0 = 0.0

    @abstractmethod
    def _read(self) -> list[float]:
        """Current counter value of every domain, in joules."""

    def _delta(self, i: int, before: float, after: float) -> float:
        return after - before

    def sample(self) -> None:
        """Add what was used since the last read (also called by the poll thread)."""
        with self._lock:
            now = self._read()
            self._total += sum(
                self._delta(i, a, b) for i, (a, b) in enumerate(zip(self._last, now, strict=True))
            )
            self._last = now

    def start(self) -> None:
        self._total, self._last, self._t0 = 0.0, self._read(), time.perf_counter()
        self._stop.clear()
        if self.poll_s > 0:
            self._thread = threading.Thread(target=self._poll, daemon=True, name="energy-poll")
            self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.sample()
            except (OSError, ValueError) as e:  # stop() reads once more and decides
                log.debug("energy poll failed: %s", e)

    def stop(self) -> Reading:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample()
        return Reading(self._total, self.source, MEASURED, time.perf_counter() - self._t0)


# ----------------------------------------------------------------------------------- RAPL
# Package domains only: intel-rapl:N (its sub-zones intel-rapl:N:M, core/uncore/dram, are parts
# of the package; intel-rapl-mmio:N is the same package again through another interface).
_PACKAGE = re.compile(r"^intel-rapl:\d+$")


class RaplMeter(_Counter):
    """CPU package energy from /sys/class/powercap (Intel RAPL; AMD exposes the same files)."""

    def __init__(self, zones: list[Path], poll_s: float = POLL_S):
        super().__init__(poll_s)
        self.zones = zones
        self.max_uj = [int((z / "max_energy_range_uj").read_text()) for z in zones]
        names = ", ".join(_zone_name(z) for z in zones)
        self.source = f"rapl: {names} (whole CPU package energy, all processes)"

    @classmethod
    def open(cls, root: str | os.PathLike = POWERCAP, poll_s: float = POLL_S) -> RaplMeter | None:
        """A meter over every readable package domain under `root`, or None."""
        root = Path(root)
        try:
            zones = sorted(z for z in root.iterdir() if _PACKAGE.match(z.name))
        except OSError:
            log.info("no RAPL: %s is not readable", root)
            return None
        readable = []
        for z in zones:
            try:
                int((z / "energy_uj").read_text())
                int((z / "max_energy_range_uj").read_text())
            except (OSError, ValueError) as e:
                # since Linux 5.10 energy_uj is readable by root only
                log.info("RAPL %s not readable: %s", z, e)
                continue
            readable.append(z)
        if not readable:
            return None
        return cls(readable, poll_s)

    def _read(self) -> list[float]:
        return [int((z / "energy_uj").read_text()) / 1e6 for z in self.zones]

    def _delta(self, i: int, before: float, after: float) -> float:
        if after < before:  # the counter wrapped at max_energy_range_uj
            return after + self.max_uj[i] / 1e6 - before
        return after - before


def _zone_name(zone: Path) -> str:
    try:
        return (zone / "name").read_text().strip() or zone.name
    except OSError:
        return zone.name


# ----------------------------------------------------------------------------------- NVML
class NvmlMeter(_Counter):
    """GPU energy from NVML's total-energy counter (millijoules since the driver loaded)."""

    def __init__(self, nvml: Any, handles: list[tuple[str, Any]], poll_s: float = 0.0):
        # a 64-bit millijoule counter does not wrap: no polling needed
        super().__init__(poll_s)
        self.nvml = nvml
        self.handles = handles
        names = ", ".join(label for label, _ in handles)
        self.source = f"nvml total energy: {names} (whole GPU)"

    @classmethod
    def open(cls, env: dict[str, str] | None = None) -> NvmlMeter | None:
        """A meter on the GPU this process computes on (cuda:0 of CUDA_VISIBLE_DEVICES), or None."""
        try:
            import pynvml
        except ImportError:
            log.info("no NVML: nvidia-ml-py is not installed (pip install -e '.[energy]')")
            return None
        try:
            pynvml.nvmlInit()
            handle = _cuda0_handle(pynvml, child_env() if env is None else env)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            index = pynvml.nvmlDeviceGetIndex(handle)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # not supported before Volta
        except Exception as e:  # noqa: BLE001 - any NVML failure means: no meter
            log.info("no NVML energy counter: %s", e)
            return None
        return cls(pynvml, [(f"GPU {index} ({name})", handle)])

    def _read(self) -> list[float]:
        return [self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1e3 for _, h in self.handles]

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutting down a library that may be half-open
            pass


def _cuda0_handle(nvml: Any, env) -> Any:
    """NVML's handle for the device CUDA calls cuda:0 (an index or a UUID in the variable)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    first = visible.split(",")[0].strip() if visible else "0"
    if first.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(first))
    return nvml.nvmlDeviceGetHandleByUUID(first)


# ----------------------------------------------------------------------------- neuron-monitor
# neuron-monitor streams one JSON report per period. The Neuron documentation describes its
# power readings as a percentage of the device's maximum power, not watts; without a maximum in
# watts no joules follow, so the reading is RELATIVE and the joule columns stay empty. The user
# guide reachable while writing this documents no power field by name, so every numeric
# system_data field named "*power*" counts, and no such field means no reading. Run without a
# config file, neuron-monitor collects every metric group (every 5 s). Written against the
# documentation, not run here (no inf2 on the development machine).
POWER_KEY = re.compile(r"power", re.IGNORECASE)


def neuron_power_percent(report: dict) -> list[float]:
    """Every power percentage in one neuron-monitor report's system_data, per device."""
    found: list[float] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif (
            POWER_KEY.search(key) and isinstance(node, (int, float)) and not isinstance(node, bool)
        ):
            found.append(float(node))

    walk(report.get("system_data") or {})
    return found


class NeuronMonitorMeter(Meter):
    """Mean power over the window, as neuron-monitor reports it: percent of maximum power."""

    source = "neuron-monitor power (percentage of maximum power, not watts; no joules)"

    def __init__(self, argv: list[str]):
        self.argv = argv
        self._proc: PipedProcess | None = None
        self._thread: threading.Thread | None = None
        self._samples: list[float] = []
        self._t0 = 0.0

    @classmethod
    def open(cls) -> NeuronMonitorMeter | None:
        exe = shutil.which("neuron-monitor")
        if exe is None:
            log.info("no neuron-monitor on PATH (aws-neuronx-tools)")
            return None
        return cls([exe])

    def start(self) -> None:
        self._samples, self._t0 = [], time.perf_counter()
        self._proc = PipedProcess(self.argv).start()
        self._thread = threading.Thread(target=self._read, daemon=True, name="neuron-monitor")
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None
        for line in self._proc.stdout:
            try:
                self._samples += neuron_power_percent(json.loads(line))
            except (ValueError, AttributeError):
                continue

    def stop(self) -> Reading:
        seconds = time.perf_counter() - self._t0
        if self._proc is not None:
            self._proc.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._proc = self._thread = None
        if not self._samples:
            return Reading(None, "", RELATIVE, seconds)
        mean = sum(self._samples) / len(self._samples)
        return Reading(None, f"{self.source}: mean {mean:.1f} %", RELATIVE, seconds)


# ----------------------------------------------------------------------------------- choice
def meter_for(device: str, *, powercap_root: str | os.PathLike = POWERCAP) -> Meter | None:
    """The meter for the device under test ("cpu" | "cuda" | "neuron"), or None when none reads."""
    if device == "cuda":
        return NvmlMeter.open()
    if device == "cpu":
        return RaplMeter.open(powercap_root)
    if device == "neuron":
        return NeuronMonitorMeter.open()
    return None


class DeviceMeter(Meter):
    """The meter for a device, opened on first use where the point is measured (an executor may
    ship the scenario to another machine: only the device name travels, never a handle)."""

    def __init__(self, device: str, powercap_root: str | os.PathLike = POWERCAP):
        self.device, self.powercap_root = device, powercap_root
        self._inner: Meter | None = None
        self._opened = False
        self._t0 = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {"device": self.device, "powercap_root": self.powercap_root}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["device"], state["powercap_root"])

    @property
    def source(self) -> str:  # type: ignore[override]
        return self._inner.source if self._inner else ""

    def start(self) -> None:
        if not self._opened:
            self._inner, self._opened = (
                meter_for(self.device, powercap_root=self.powercap_root),
                True,
            )
        self._t0 = time.perf_counter()
        if self._inner:
            self._inner.start()

    def stop(self) -> Reading:
        if self._inner is None:  # no readable meter here: an empty reading, no columns
            return Reading(None, "", MEASURED, time.perf_counter() - self._t0)
        return self._inner.stop()

    def close(self) -> None:
        if self._inner:
            self._inner.close()
        self._inner, self._opened = None, False


def start_meter(meter: Meter | None) -> Meter | None:
    """`meter.start()`; the meter, or None when there is none or it cannot start."""
    if meter is None:
        return None
    try:
        meter.start()
    except Exception as e:  # noqa: BLE001 - the measurement stands without its energy
        log.warning("energy not measured: %s did not start (%s)", meter.source or "the meter", e)
        return None
    return meter


def stop_meter(meter: Meter | None) -> Reading | None:
    """`meter.stop()`, or None when there is no meter or it failed: energy never fails a run."""
    if meter is None:
        return None
    try:
        return meter.stop()
    except Exception as e:  # noqa: BLE001 - the measurement stands without its energy
        log.warning("energy not measured: %s stopped with %s", meter.source or "the meter", e)
        return None


def energy_columns(reading: Reading | None, inputs: int) -> dict[str, Any]:
    """The energy columns of a row: empty without a reading, joules only when measured."""
    if reading is None or not reading.source:
        return {}
    if reading.joules is None or inputs <= 0:
        return {"energy_source": reading.source}
    per_input = reading.joules / inputs
    return {
        "energy_j_per_input": per_input,
        "kwh_per_1B": per_input * 1e9 / J_PER_KWH,
        "energy_source": reading.source,
    }


def describe(rows: list[dict[str, Any]]) -> str:
    """One console line: the energy per input over these rows, or that it was not measured."""
    vals = [
        float(r["energy_j_per_input"])
        for r in rows
        if isinstance(r.get("energy_j_per_input"), (int, float))
        and r["energy_j_per_input"] == r["energy_j_per_input"]
    ]
    sources = sorted({str(r["energy_source"]) for r in rows if _text(r.get("energy_source"))})
    if not vals:
        if sources:
            return f"energy: no joules ({'; '.join(sources)})"
        return NOT_MEASURED
    lo, hi = min(vals), max(vals)
    span = f"{lo:.3g} J/input" if lo == hi else f"{lo:.3g}-{hi:.3g} J/input"
    kwh = f"{lo * 1e9 / J_PER_KWH:,.1f}" + ("" if lo == hi else f"-{hi * 1e9 / J_PER_KWH:,.1f}")
    return f"energy: {span} ({kwh} kWh per 1B inputs; {'; '.join(sources)})"


def _text(v: Any) -> bool:
    return isinstance(v, str) and bool(v)
