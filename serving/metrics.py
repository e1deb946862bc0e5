"""Prometheus metrics: the server's requests and latencies, the batcher's queue and padding.

Written by `prometheus_client`, so label values are escaped; requests are labelled by route
template (one `unknown` for every miss), so the label set stays bounded whatever clients send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from core.contract import (  # the names a scraper reads back: one spelling each
    FORWARD_CPU_SECONDS,
    NONFORWARD_CPU_SECONDS,
    PADDED_TOKENS,
    USEFUL_TOKENS,
    total,
)
from serving import cpu
from serving.batcher import BatcherStats

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class BatcherCollector(Collector):
    """The batcher's counters, read from one `stats()` snapshot at every scrape."""

    def __init__(self, stats: Callable[[], BatcherStats]):
        self.stats = stats

    def collect(self) -> Iterator:
        s = self.stats()
        yield GaugeMetricFamily(
            "bb_queue_depth", "Inputs waiting in the batcher queue.", value=s.queue_depth
        )
        hist = sorted(s.batch_size_histogram.items())
        buckets, cum = [], 0
        for size, count in hist:
            cum += count
            buckets.append((str(size), cum))
        buckets.append(("+Inf", cum))
        yield HistogramMetricFamily(
            "bb_batch_size",
            "Inputs per forward pass.",
            buckets=buckets,
            sum_value=sum(k * v for k, v in hist),
        )
        for name, doc, value in (
            (USEFUL_TOKENS, "Unpadded tokens run through the model.", s.useful_tokens),
            (PADDED_TOKENS, "Token slots computed, padding included.", s.padded_tokens),
            ("bb_rejected", "Requests rejected with 429.", s.rejected),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "bb_padding_ratio", "Padded token slots / computed slots.", value=s.padding_ratio
        )


class CpuCollector(Collector):
    """The server's CPU seconds, split into the forward pass and everything else."""

    def collect(self) -> Iterator:
        got = cpu.split()
        if got is None:
            return
        forward, other = got
        yield CounterMetricFamily(
            FORWARD_CPU_SECONDS,
            "CPU seconds of the forward pass (forward and intra-op threads).",
            value=forward,
        )
        yield CounterMetricFamily(
            NONFORWARD_CPU_SECONDS,
            "CPU seconds of everything else: HTTP, JSON, tokenization, post-processing.",
            value=other,
        )


class HttpMetrics:
    """Requests by route template and status, and a latency histogram of the successful ones."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bb_requests",
            "HTTP requests by route and status.",
            ("route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "bb_request_latency_seconds",
            "Latency of successful requests.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        if status == 200:
            self.latency.observe(seconds)


def exposition(stats: Callable[[], BatcherStats] | BatcherStats, m: HttpMetrics) -> str:
    """The Prometheus text format of the batcher's stats and the server's request metrics."""
    registry = CollectorRegistry()
    snapshot = stats if callable(stats) else (lambda: stats)
    registry.register(BatcherCollector(snapshot))
    registry.register(CpuCollector())
    registry.register(_Forward(m.registry))
    return generate_latest(registry).decode()


class _Forward(Collector):
    """Another registry's metrics, so one scrape writes both."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self) -> Iterator:
        yield from self.registry.collect()


__all__ = [
    "CONTENT_TYPE",
    "FORWARD_CPU_SECONDS",
    "NONFORWARD_CPU_SECONDS",
    "PADDED_TOKENS",
    "USEFUL_TOKENS",
    "total",
    "BatcherCollector",
    "CpuCollector",
    "HttpMetrics",
    "exposition",
]
