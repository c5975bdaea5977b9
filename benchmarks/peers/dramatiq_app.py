"""Dramatiq broker and actors used as a peer in jobyard's side-by-side benchmark.

RabbitMQ carries the messages, Redis stores results; URLs come from BENCH_AMQP_URL / BENCH_REDIS_URL.
"""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import default_middleware
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

AMQP_URL: str = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
# jobyard's test suite flushes Redis db 15; the bench keeps to db 14 so the two never wipe each other's keys.
REDIS_URL: str = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def pika_url(url: str) -> str:
    """Spell the default vhost the way pika expects.

    Kombu (Celery) reads ``amqp://host//`` as vhost "/", pika reads it as vhost "";
    rewriting ``//`` to ``/%2F`` lets both peers share one BENCH_AMQP_URL.
    """
    parts = urlsplit(url)
    if parts.path == "//":
        parts = parts._replace(path="/%2F")
    return urlunsplit(parts)


#: Dedicated queue (Dramatiq also makes "<queue>.DQ" and "<queue>.XQ" beside it).
QUEUE: str = "jobyard_bench_dramatiq"
#: Namespace of result keys; with prefixed keys on, cleanup can find them by scanning.
RESULTS_NAMESPACE: str = "jobyard_bench_dramatiq"

result_backend = RedisBackend(
    url=REDIS_URL,
    namespace=RESULTS_NAMESPACE,
    use_namespace_prefix_keys=True,
)

# An explicit middleware list keeps the setup identical whatever else is installed
# (no Prometheus exporter process sneaking in from an optional dependency).
broker = RabbitmqBroker(
    url=pika_url(AMQP_URL),
    middleware=[m() for m in default_middleware],
)
broker.add_middleware(Results(backend=result_backend, store_results=True))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="jobyard_bench_noop", queue_name=QUEUE, max_retries=0)
def noop(payload: Any) -> Any:
    """Do nothing and hand the payload back as the result."""
    return payload


@dramatiq.actor(actor_name="jobyard_bench_stamp", queue_name=QUEUE, max_retries=0)
def stamp(payload: Any) -> dict[str, Any]:
    """Record the wall-clock time the actor started, for submit-to-start latency."""
    return {"started_at": time.time(), "payload": payload}
