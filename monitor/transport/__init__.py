"""Event transport: the protocols, the embedded in-process bus and the Apache Kafka implementation."""

from __future__ import annotations

from monitor.transport.base import Consumer, Message, Producer, Transport
from monitor.transport.kafka import KafkaTransport, ensure_topics, wait_until_ready
from monitor.transport.memory import MemoryBus

__all__ = [
    "Consumer",
    "KafkaTransport",
    "MemoryBus",
    "Message",
    "Producer",
    "Transport",
    "ensure_topics",
    "wait_until_ready",
]
