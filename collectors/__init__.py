"""Capture beside the model: in-process torch hooks and the reliable background producer.

Importing this package never imports torch; the hooks import it when first used.
"""

from __future__ import annotations

from collectors.producer import Capture, EventProducer, Events, ProducerMetrics, producer_metrics, submit_events
from collectors.torch_hooks import IMAGE_FEATURES, ClassifierCollector, image_summary

__all__ = [
    "IMAGE_FEATURES",
    "Capture",
    "ClassifierCollector",
    "EventProducer",
    "Events",
    "ProducerMetrics",
    "image_summary",
    "producer_metrics",
    "submit_events",
]
