"""Is the host quiet? A fixed CPU probe before and after a point, and the CPU others used meanwhile.

A point is `disturbed` when the two probes disagree by more than `PROBE_MARGIN` (the CPU got
slower or faster under the point: frequency, a neighbour) or when processes outside our own
process tree used more than `OUTSIDE_CORES` cores on average over the point. Such a row is kept
(nothing measured is thrown away) and marked; the report and the planner say so, and
`--remeasure-disturbed N` measures it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from core.environment import var

PROBE_MARGIN = 0.5  # relative difference of the two probes (a quiet 2-vCPU VM moves ±40 %)
OUTSIDE_CORES = 0.5  # average cores used by processes that are not ours
_PROBE_LOOPS = 200_000
#: a pause before each probe: the math libraries' worker threads spin for up to ~200 ms after
#: their last parallel region (KMP_BLOCKTIME, OMP_WAIT_POLICY) and would slow a probe that is
#: about the host, not about our own idle threads
SETTLE_S = 0.3


def probe_ms(repeats: int = 3, settle_s: float = SETTLE_S) -> float:
    """The best of `repeats` timings of a fixed pure-Python loop, in ms (about 5-20 ms each),
    after `settle_s` of quiet."""
    time.sleep(settle_s)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        acc = 0
        for i in range(_PROBE_LOOPS):
            acc += i * i % 7
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def _busy_s() -> float:
    """CPU seconds the whole host has spent busy (all cores), from /proc via psutil."""
    import psutil

    t = psutil.cpu_times()
    return sum(
        getattr(t, f) for f in t._fields if f not in ("idle", "iowait", "guest", "guest_nice")
    )


def _ours_s() -> float:
    """CPU seconds of this process, its reaped children and its live process tree."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            pass
    return total


@dataclass(frozen=True)
class HostReading:
    probe_before_ms: float
    probe_after_ms: float
    outside_load_cores: float | None

    @property
    def reason(self) -> str | None:
        """Why the point is disturbed, or None when the host was quiet."""
        a, b = self.probe_before_ms, self.probe_after_ms
        if min(a, b) > 0 and abs(a - b) / min(a, b) > PROBE_MARGIN:
            return f"CPU probe {a:.1f} ms before, {b:.1f} ms after (> {PROBE_MARGIN:.0%} apart)"
        load = self.outside_load_cores
        if load is not None and load > OUTSIDE_CORES:
            return f"other processes used {load:.2f} cores during the point (> {OUTSIDE_CORES})"
        return None

    def columns(self) -> dict[str, object]:
        why = self.reason
        return {
            "probe_before_ms": self.probe_before_ms,
            "probe_after_ms": self.probe_after_ms,
            "outside_load_cores": self.outside_load_cores,
            "disturbed": why is not None,
            "disturbed_reason": why,
        }


class HostWatch:
    """`with HostWatch() as w: measure()`, then `w.reading`: the probes and the outside load.

    Off (`enabled=False`, or BILLIONBENCH_HOST_PROBE=0 in the environment) it records nothing:
    the columns stay empty, never a guess."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = host_probe_enabled() if enabled is None else enabled
        self.reading: HostReading | None = None

    def columns(self) -> dict[str, object]:
        return self.reading.columns() if self.reading is not None else {}

    def __enter__(self) -> HostWatch:
        if not self.enabled:
            return self
        self._before = probe_ms(settle_s=0.05)
        try:
            self._busy0, self._ours0 = _busy_s(), _ours_s()
        except (ImportError, OSError, AttributeError):
            self._busy0 = self._ours0 = None
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        wall = time.monotonic() - self._t0
        outside = None
        if self._busy0 is not None and wall > 0:
            try:
                busy, ours = _busy_s() - self._busy0, _ours_s() - self._ours0
                outside = max(0.0, (busy - ours) / wall)
            except (ImportError, OSError, AttributeError):
                outside = None
        # settle after the point in proportion to it (short test points barely wait)
        after = probe_ms(settle_s=min(SETTLE_S, 0.1 * wall))
        self.reading = HostReading(self._before, after, outside)


def host_probe_enabled() -> bool:
    """BILLIONBENCH_HOST_PROBE=0 turns the probes off (the test suite does: its points are
    too short for them to mean anything)."""
    value = var("BILLIONBENCH_HOST_PROBE")
    return value is None or value.strip() not in ("0", "false", "no")
