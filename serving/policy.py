"""Which queued inputs form the next batch: a pure function of the queue and the limits.

The batcher owns the threads, the lock and the clock; this module only decides. It starts from
the oldest waiting input, so no input waits behind newer ones, and then either takes the next
inputs in arrival order (FIFO) or the inputs closest to the oldest one in token count
(length-aware), which keeps padding low.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class BatchLimits:
    """What one forward pass may hold."""

    max_batch_size: int  # inputs
    max_batch_tokens: int  # padded tokens: inputs x the longest of them
    length_aware: bool = True  # group inputs of similar length (False: plain FIFO)


@dataclass(frozen=True)
class Selection:
    """The inputs of the next batch, by seq, the oldest first."""

    seqs: tuple[int, ...]
    full: bool  # the size or token budget binds: waiting for more inputs cannot grow it


def select_batch(
    queue: Iterable[tuple[int, int]],
    limits: BatchLimits,
    by_length: Sequence[tuple[int, int]] | None = None,
) -> Selection:
    """The next batch around the oldest queued input.

    `queue` yields `(seq, tokens)` per waiting input in arrival order. `by_length` holds the same
    inputs as `(tokens, seq)`, sorted; a caller may keep it up to date as inputs come and go,
    otherwise it is built here. An input over the token budget on its own still forms a batch.
    """
    if limits.length_aware and by_length is None:
        queue = list(queue)
        by_length = sorted((n, seq) for seq, n in queue)
    arrivals = iter(queue)
    oldest = next(arrivals, None)
    if oldest is None:
        return Selection((), False)
    if not limits.length_aware:
        return _fifo(oldest, arrivals, limits)
    assert by_length is not None
    return _length_aware(oldest, by_length, limits)


def _fifo(
    oldest: tuple[int, int], rest: Iterable[tuple[int, int]], limits: BatchLimits
) -> Selection:
    chosen = [oldest[0]]
    longest = oldest[1]
    for seq, n in rest:
        if len(chosen) >= limits.max_batch_size:
            return Selection(tuple(chosen), True)
        width = max(longest, n)
        if (len(chosen) + 1) * width > limits.max_batch_tokens:
            return Selection(tuple(chosen), True)
        chosen.append(seq)
        longest = width
    return Selection(tuple(chosen), len(chosen) >= limits.max_batch_size)


def _length_aware(
    oldest: tuple[int, int], by_length: Sequence[tuple[int, int]], limits: BatchLimits
) -> Selection:
    # grow a window in token-count order outwards from the oldest input, always taking the
    # neighbour whose length is closest to it
    seq0, n0 = oldest
    chosen = [seq0]
    longest = n0
    pos = bisect.bisect_left(by_length, (n0, seq0))
    left, right = pos - 1, pos + 1
    right_open = True
    budget_bound = False
    while len(chosen) < limits.max_batch_size:
        cand_l = by_length[left] if left >= 0 else None
        cand_r = by_length[right] if right_open and right < len(by_length) else None
        if cand_l is None and cand_r is None:
            return Selection(tuple(chosen), budget_bound)
        # on a tie prefer the shorter neighbour: it adds no padding to the others
        if cand_r is None or (cand_l is not None and n0 - cand_l[0] <= cand_r[0] - n0):
            if (len(chosen) + 1) * longest > limits.max_batch_tokens:
                return Selection(tuple(chosen), True)
            chosen.append(cand_l[1])
            left -= 1
        else:
            width = max(longest, cand_r[0])
            if (len(chosen) + 1) * width > limits.max_batch_tokens:
                right_open = False  # anything further right is longer still
                budget_bound = True
                continue
            chosen.append(cand_r[1])
            longest = width
            right += 1
    return Selection(tuple(chosen), True)


# Devices that split batches into micro-batches by default: on CPU every padded slot costs as
# much as a real token and a bigger batch buys no speed, so near-equal-length micro-batches run
# back to back; GPUs gain from one wide forward, so they keep one batch.
MICRO_BATCH_DEVICES = frozenset({"cpu"})


def split_micro_batches(lengths: Sequence[int], max_padding: float) -> list[tuple[int, ...]]:
    """Split one selected batch into near-equal-length micro-batches, shortest first.

    Returns indices into `lengths`. Every micro-batch keeps its padding fraction
    (1 - useful / (inputs x longest)) at or below `max_padding`; a lone input has none. Each
    micro-batch is a subset of the batch, so the batch's size and token budget still hold.
    """
    if not 0 <= max_padding < 1:
        raise ValueError(f"max_padding must be in [0, 1); got {max_padding!r}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[tuple[int, ...]] = []
    current: list[int] = []
    useful = 0
    for i in order:
        n = lengths[i]
        # sorted ascending: the newcomer is the longest, so it sets the padded width
        if current and useful + n < (1 - max_padding) * (len(current) + 1) * n:
            groups.append(tuple(current))
            current, useful = [], 0
        current.append(i)
        useful += n
    if current:
        groups.append(tuple(current))
    return groups
