"""Message brokers behind one protocol: RabbitMQ in production, in-process memory when embedded."""

from __future__ import annotations

from jobyard.broker.base import Broker, Consumer, Delivery
from jobyard.config import Settings


def create_broker(settings: Settings) -> Broker:
    if settings.broker_url.startswith("memory://"):
        from jobyard.broker.memory import MemoryBroker

        return MemoryBroker()
    from jobyard.broker.rabbitmq import RabbitBroker

    return RabbitBroker(
        settings.broker_url,
        prefix=settings.queue_prefix,
        queue_type=settings.rabbitmq_queue_type,
        events_exchange=settings.events_exchange,
    )


__all__ = ["Broker", "Consumer", "Delivery", "create_broker"]
