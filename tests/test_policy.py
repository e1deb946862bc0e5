"""The batch-selection policy alone: no threads, no engine, just queues and limits."""

from __future__ import annotations

import pytest

from serving.policy import BatchLimits, Selection, select_batch


def queue(*tokens: int, first_seq: int = 0) -> list[tuple[int, int]]:
    """(seq, tokens) per input in arrival order."""
    return [(first_seq + i, n) for i, n in enumerate(tokens)]


def fifo(size: int = 32, tokens: int = 16384) -> BatchLimits:
    return BatchLimits(max_batch_size=size, max_batch_tokens=tokens, length_aware=False)


def aware(size: int = 32, tokens: int = 16384) -> BatchLimits:
    return BatchLimits(max_batch_size=size, max_batch_tokens=tokens, length_aware=True)


@pytest.mark.parametrize("limits", [fifo(), aware()])
def test_an_empty_queue_selects_nothing(limits):
    assert select_batch([], limits) == Selection((), False)


def test_fifo_takes_inputs_in_arrival_order_up_to_the_batch_size():
    q = queue(5, 90, 3, 40, 7, 60)
    assert select_batch(q, fifo(size=4)) == Selection((0, 1, 2, 3), True)


def test_fifo_with_room_left_is_not_full_so_the_batcher_may_wait():
    assert select_batch(queue(5, 90, 3), fifo(size=4)) == Selection((0, 1, 2), False)
    # exactly the batch size: full, no reason to wait
    assert select_batch(queue(5, 90, 3, 8), fifo(size=4)) == Selection((0, 1, 2, 3), True)


def test_fifo_stops_at_the_first_input_that_breaks_the_token_budget():
    # 3 inputs x 40 = 120 tokens fit; a 4th of 100 would make 4 x 100 = 400 > 200
    q = queue(10, 40, 20, 100, 1)
    assert select_batch(q, fifo(tokens=200)) == Selection((0, 1, 2), True)


def test_fifo_keeps_arrival_order_even_when_lengths_differ_wildly():
    q = queue(500, 2, 500, 2)
    assert select_batch(q, fifo()).seqs == (0, 1, 2, 3)


def test_length_aware_groups_the_oldest_input_with_its_nearest_lengths():
    # the oldest has 50 tokens; its nearest neighbours by length are 48, 52 and 55
    q = queue(50, 5, 300, 52, 48, 200, 55, 6)
    sel = select_batch(q, aware(size=4))
    assert sel.seqs[0] == 0  # the oldest input always rides in the next batch
    assert sorted(sel.seqs) == [0, 3, 4, 6] and sel.full


def test_length_aware_prefers_the_shorter_neighbour_on_a_tie():
    # 40 and 60 are both 10 tokens from the oldest (50): 40 adds no padding, so it goes first
    q = queue(50, 60, 40)
    assert select_batch(q, aware(size=2)).seqs == (0, 2)


def test_length_aware_cuts_padding_against_fifo_on_a_mixed_queue():
    q = queue(*([8, 400] * 8))

    def padded(seqs):
        lengths = [dict(q)[s] for s in seqs]
        return len(lengths) * max(lengths) - sum(lengths)

    assert padded(select_batch(q, fifo(size=4)).seqs) > 0
    assert padded(select_batch(q, aware(size=4)).seqs) == 0


@pytest.mark.parametrize("limits", [fifo(size=64, tokens=256), aware(size=64, tokens=256)])
def test_no_batch_of_two_or_more_exceeds_the_token_budget(limits):
    q = queue(*[(i * 37) % 90 + 1 for i in range(200)])
    lengths = dict(q)
    sel = select_batch(q, limits)
    assert len(sel.seqs) > 1 and sel.full
    assert len(sel.seqs) * max(lengths[s] for s in sel.seqs) <= 256


@pytest.mark.parametrize("limits", [fifo(tokens=100), aware(tokens=100)])
def test_an_input_over_the_budget_on_its_own_is_still_served_alone(limits):
    sel = select_batch(queue(512, 4, 4, 4), limits)
    assert sel.seqs == (0,) and sel.full


def test_length_aware_skips_longer_inputs_but_still_takes_shorter_ones_within_budget():
    # oldest 30; 31 fits (2 x 31), 90 would break 4 x 90 > 150; shorter 10 and 5 still fit
    q = queue(30, 90, 31, 10, 5)
    sel = select_batch(q, aware(tokens=150))
    assert sorted(sel.seqs) == [0, 2, 3, 4] and sel.full  # the budget bound it


def test_length_aware_whole_queue_fits_is_not_full():
    assert select_batch(queue(30, 31, 29), aware(size=8)) == Selection((0, 2, 1), False)


def test_the_oldest_input_anchors_the_batch_not_the_shortest():
    q = queue(300, 4, 5, 6, 301, 299, first_seq=10)
    sel = select_batch(q, aware(size=3))
    assert sel.seqs[0] == 10 and sorted(sel.seqs) == [10, 14, 15]


@pytest.mark.parametrize("length_aware", [True, False])
def test_a_given_length_index_gives_the_same_selection_as_a_built_one(length_aware):
    q = queue(*[(i * 53) % 120 + 1 for i in range(64)], first_seq=7)
    by_length = sorted((n, seq) for seq, n in q)
    limits = BatchLimits(max_batch_size=16, max_batch_tokens=900, length_aware=length_aware)
    assert select_batch(iter(q), limits, by_length) == select_batch(q, limits)


def test_batch_size_one_takes_only_the_oldest():
    for limits in (fifo(size=1), aware(size=1)):
        assert select_batch(queue(9, 9, 9), limits) == Selection((0,), True)
