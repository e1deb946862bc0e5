"""Where the server's CPU goes: the forward pass, or everything else (HTTP, JSON, tokenization,
post-processing).

Threads that do no forward work register themselves (`register_other`): the event loop, the
batcher's tokenizer pool and its post-processing thread. The forward is the rest of the process:
the batcher's forward thread and the runtime's intra-op threads. Read from /proc (Linux); on
other systems `split()` is None.
"""

from __future__ import annotations

import os
import threading

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
_lock = threading.Lock()
_other: dict[int, float] = {}  # registered thread id -> its CPU seconds when last read
_ended = 0.0  # what registered threads that have ended had used when last read


def register_other() -> None:
    """Count the calling thread's CPU as non-forward work."""
    with _lock:
        _other.setdefault(threading.get_native_id(), 0.0)


def _cpu_s(path: str) -> float | None:
    """utime + stime of a /proc stat file, in seconds (None when it cannot be read)."""
    try:
        with open(path) as f:
            # the command name (field 2) may hold spaces: split after its closing parenthesis
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def split() -> tuple[float, float] | None:
    """(forward, other) CPU seconds used by this process so far, or None off Linux."""
    pid = os.getpid()
    total = _cpu_s(f"/proc/{pid}/stat")
    if total is None:
        return None
    global _ended
    with _lock:
        tids = list(_other)
    live = 0.0
    for tid in tids:
        s = _cpu_s(f"/proc/{pid}/task/{tid}/stat")
        with _lock:
            if s is None:  # ended: keep what it had used when last read, so `other` never
                _ended += _other.pop(tid, 0.0)  # falls (a counter); the rest counts as forward
            elif tid in _other:
                _other[tid] = s
                live += s
    with _lock:
        other = _ended + live
    return max(total - other, 0.0), other


__all__ = ["register_other", "split"]
