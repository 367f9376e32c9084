"""Event transport: the protocols, the embedded in-process bus and the Apache Kafka implementations.

:class:`KafkaTransport` runs on kafka-python; :class:`ConfluentTransport` on confluent-kafka (librdkafka), the
``inferwatch[confluent]`` extra, which is imported only when one is made.
"""

from __future__ import annotations

from monitor.transport.base import Consumer, Message, Producer, Transport
from monitor.transport.confluent import ConfluentTransport
from monitor.transport.kafka import KafkaTransport, ensure_topics, read_tail, wait_until_ready
from monitor.transport.memory import MemoryBus

__all__ = [
    "ConfluentTransport",
    "Consumer",
    "KafkaTransport",
    "MemoryBus",
    "Message",
    "Producer",
    "Transport",
    "ensure_topics",
    "read_tail",
    "wait_until_ready",
]
