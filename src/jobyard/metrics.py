"""Prometheus metrics. Each process has its own registry (no global): the API serves it at ``/metrics``;
worker and relay processes serve theirs on ``--metrics-port`` (``JOBYARD_METRICS_PORT``), so every process is
scraped on its own and no multiprocess directory is shared.

Store-derived gauges (jobs and open actions by status, outbox and event backlogs, webhook deliveries) are read by
the API process every ``JOBYARD_METRICS_INTERVAL`` seconds with index-backed counts, never per scrape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobyard.errors import JobyardError
from jobyard.tasks import stop_tasks

log = logging.getLogger("jobyard.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    """The metrics one process records itself (workers: action durations and batches; relays: events, webhooks,
    pruning)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.action_duration = Histogram(
            "jobyard_action_duration_seconds",
            "Time one attempt of an action took in its handler, by action type and outcome",
            ["type", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.worker_batch = Histogram(
            "jobyard_worker_batch_actions",
            "Actions in each of a worker's claims (stage=claim) and completions (stage=complete), each one round "
            "of store statements: under load a worker batches, and each round's cost is shared by more actions",
            ["stage"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.events_published = Counter(
            "jobyard_domain_events_published", "Domain events published to the events exchange", registry=self.registry
        )
        self.webhook_attempts = Counter(
            "jobyard_webhook_attempts",
            "Webhook delivery attempts by outcome (delivered, failed, given_up)",
            ["outcome"],
            registry=self.registry,
        )
        self.pruned_jobs = Counter("jobyard_pruned_jobs", "Finished jobs deleted by retention", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve this registry over HTTP on ``port`` (worker and relay processes)."""
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics served on port %d", port)


class ApiCollector(Collector):
    """The API process's view: store gauges (refreshed in the background), queue depths, cache, rate limits."""

    def __init__(
        self,
        read_store: Callable[[], Any],
        queue_depths: Callable[[], dict[str, int]],
        cache_stats: Callable[[], Any],
        rate_limited: Callable[[], dict[str, int]],
        submissions: Callable[[], dict[str, int]] = dict,
    ) -> None:
        self._read_store = read_store
        self._queue_depths = queue_depths
        self._cache_stats = cache_stats
        self._rate_limited = rate_limited
        self._submissions = submissions
        self.snapshot: dict[str, Any] = {}

    async def refresh(self) -> None:
        self.snapshot = {**(await self._read_store()), "at": time.time()}

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield _gauge("jobyard_jobs", "Jobs by status (all tenants)", "status", snap.get("jobs", {}))
        yield _gauge(
            "jobyard_actions",
            "Actions by status: queued, retrying, running and failed (dead letters); finished ones are counted "
            "by jobyard_action_duration_seconds on the workers",
            "status",
            snap.get("actions", {}),
        )
        yield _gauge(
            "jobyard_webhook_deliveries", "Webhook deliveries by status", "status", snap.get("webhook_deliveries", {})
        )
        for name, (rows, lag) in snap.get("backlogs", {}).items():
            yield GaugeMetricFamily(f"jobyard_{name}_rows", f"Rows waiting in the {name} table", value=rows)
            yield GaugeMetricFamily(
                f"jobyard_{name}_lag_seconds", f"Age of the oldest row waiting in the {name} table", value=lag
            )
        yield GaugeMetricFamily(
            "jobyard_store_metrics_age_seconds",
            "Seconds since the store gauges were read",
            value=time.time() - snap["at"] if "at" in snap else float("nan"),
        )
        yield _gauge("jobyard_queue_depth", "Messages ready in each broker queue", "queue", self._queue_depths())
        stats = self._cache_stats()
        requests = CounterMetricFamily("jobyard_cache_requests", "Cached reads by result", labels=["result"])
        for result in ("local_hits", "hits", "misses", "bypassed"):
            requests.add_metric([result], getattr(stats, result))
        yield requests
        yield CounterMetricFamily(
            "jobyard_cache_unstored_values",
            "Values recomputed on a miss that Redis refused to store (served, not shared)",
            value=stats.unstored,
        )
        yield GaugeMetricFamily(
            "jobyard_cache_hit_ratio", "Share of cached reads served from a cache", value=stats.hit_ratio
        )
        limited = CounterMetricFamily(
            "jobyard_rate_limited_requests", "Requests refused by a rate limit", labels=["group"]
        )
        for group, count in sorted(self._rate_limited().items()):
            limited.add_metric([group], count)
        yield limited
        written = self._submissions()
        if "statements" in written:
            yield CounterMetricFamily(
                "jobyard_submit_statements",
                "Statements that stored submitted jobs, several at once under load (PostgreSQL; submissions with a "
                "deduplication key go one by one and are not counted)",
                value=written["statements"],
            )
            yield CounterMetricFamily(
                "jobyard_submit_statement_jobs", "Jobs stored by those statements", value=written["jobs"]
            )
        if "handoff_published" in written:
            handoff = CounterMetricFamily(
                "jobyard_handoff_messages",
                "Messages of new jobs the API published itself, or left to the relay (broker refused or unreachable)",
                labels=["outcome"],
            )
            handoff.add_metric(["published"], written["handoff_published"])
            handoff.add_metric(["left_to_relay"], written["handoff_left"])
            yield handoff


def _gauge(name: str, documentation: str, label: str, values: dict[str, int] | Iterable[tuple[str, int]]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(dict(values).items()):
        family.add_metric([key], value)
    return family


class Refresher:
    """Refreshes an ``ApiCollector``'s store gauges every ``interval`` seconds (a store outage only ages them)."""

    def __init__(self, collector: ApiCollector, interval: float) -> None:
        self.collector = collector
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="jobyard-metrics-refresh")

    async def stop(self) -> None:
        await stop_tasks([self._task])
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.collector.refresh()
            except JobyardError as exc:
                log.debug("store gauges not refreshed: %s", exc)
            await asyncio.sleep(self.interval)
