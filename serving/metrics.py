"""Prometheus metrics: the server's requests and latencies, the batcher's queue and padding."""

from __future__ import annotations

from collections import Counter

from serving.batcher import BatcherStats

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HttpMetrics:
    """Requests by route and status, and a latency histogram of the successful ones."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.latency_buckets = Counter()
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[route, status] += 1
        if status == 200:
            self.latency_sum += seconds
            self.latency_count += 1
            for b in LATENCY_BUCKETS_S:
                if seconds <= b:
                    self.latency_buckets[b] += 1


def exposition(s: BatcherStats, m: HttpMetrics) -> str:
    """The Prometheus text format of the batcher's stats and the server's request metrics."""
    lines = [
        "# HELP bb_queue_depth Inputs waiting in the batcher queue.",
        "# TYPE bb_queue_depth gauge",
        f"bb_queue_depth {s.queue_depth}",
        "# HELP bb_batch_size Inputs per forward pass.",
        "# TYPE bb_batch_size histogram",
    ]
    cum = 0
    hist = dict(sorted(s.batch_size_histogram.items()))
    total = sum(k * v for k, v in hist.items())
    for size, count in hist.items():
        cum += count
        lines.append(f'bb_batch_size_bucket{{le="{size}"}} {cum}')
    lines += [
        f'bb_batch_size_bucket{{le="+Inf"}} {cum}',
        f"bb_batch_size_sum {total}",
        f"bb_batch_size_count {cum}",
        "# HELP bb_useful_tokens_total Unpadded tokens run through the model.",
        "# TYPE bb_useful_tokens_total counter",
        f"bb_useful_tokens_total {s.useful_tokens}",
        "# HELP bb_padded_tokens_total Token slots computed, padding included.",
        "# TYPE bb_padded_tokens_total counter",
        f"bb_padded_tokens_total {s.padded_tokens}",
        "# HELP bb_padding_ratio Padded token slots / computed slots.",
        "# TYPE bb_padding_ratio gauge",
        f"bb_padding_ratio {s.padding_ratio:.6f}",
        "# HELP bb_rejected_total Requests rejected with 429.",
        "# TYPE bb_rejected_total counter",
        f"bb_rejected_total {s.rejected}",
        "# HELP bb_requests_total HTTP requests by route and status.",
        "# TYPE bb_requests_total counter",
    ]
    for (route, status), n in sorted(m.requests.items()):
        lines.append(f'bb_requests_total{{route="{route}",status="{status}"}} {n}')
    lines += [
        "# HELP bb_request_latency_seconds Latency of successful requests.",
        "# TYPE bb_request_latency_seconds histogram",
    ]
    for b in LATENCY_BUCKETS_S:
        lines.append(f'bb_request_latency_seconds_bucket{{le="{b}"}} {m.latency_buckets[b]}')
    lines += [
        f'bb_request_latency_seconds_bucket{{le="+Inf"}} {m.latency_count}',
        f"bb_request_latency_seconds_sum {m.latency_sum:.6f}",
        f"bb_request_latency_seconds_count {m.latency_count}",
    ]
    return "\n".join(lines) + "\n"
