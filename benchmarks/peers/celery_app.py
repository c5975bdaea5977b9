"""Celery application used as a peer in jobyard's side-by-side benchmark.

RabbitMQ carries the messages, Redis stores results; URLs come from BENCH_AMQP_URL / BENCH_REDIS_URL.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

AMQP_URL: str = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
# jobyard's test suite flushes Redis db 15; the bench keeps to db 14 so the two never wipe each other's keys.
REDIS_URL: str = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")

#: Dedicated queue so that purging it never touches anyone else's messages.
QUEUE: str = "jobyard_bench_celery"
#: Every result key this app writes starts with this prefix (cleanup scans for it).
KEY_PREFIX: str = "jobyard_bench_celery:"

#: Prefetch multiplier: the worker reserves multiplier x concurrency messages.  Tasks
#: here are sub-millisecond, so 1 (advised for long tasks) would leave the pool idle
#: on every round trip to the broker; 4 is Celery's own default and close to what
#: Dramatiq reserves (2 x threads per process).  Overridable for experiments.
PREFETCH_MULTIPLIER: int = int(os.environ.get("BENCH_CELERY_PREFETCH", "4"))

app = Celery("jobyard_bench", broker=AMQP_URL, backend=REDIS_URL)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    result_backend_transport_options={"global_keyprefix": KEY_PREFIX},
    # Nothing but the task queue: no pidbox/event exchanges left behind on the broker.
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=True,
)


@app.task(name="jobyard_bench.noop")
def noop(payload: Any) -> Any:
    """Do nothing and hand the payload back as the result."""
    return payload


@app.task(name="jobyard_bench.stamp")
def stamp(payload: Any) -> dict[str, Any]:
    """Record the wall-clock time the task started, for submit-to-start latency."""
    return {"started_at": time.time(), "payload": payload}
