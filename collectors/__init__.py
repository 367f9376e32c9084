"""Capture beside the model: in-process torch hooks and the reliable background producer.

Importing this package never imports torch; the hooks import it when first used.
"""

from __future__ import annotations

from collectors.connecting import ConnectingProducer, ConnectMetrics, connect_metrics
from collectors.generation import Generated, GenerateLoop, GeneratorCollector
from collectors.gpu import GpuSampler
from collectors.producer import (
    DROP_REASONS,
    Capture,
    EventProducer,
    Events,
    ProducerMetrics,
    producer_metrics,
    submit_events,
)
from collectors.redaction import DEFAULT_PATTERNS, BernoulliSampler, PayloadPolicy, RegexRedactor, payload_metrics
from collectors.spool import FsyncPolicy, Spool, SpoolError, SpoolRecord
from collectors.timing import DeviceTimer
from collectors.torch_hooks import IMAGE_FEATURES, ClassifierCollector, HookMetrics, hook_metrics, image_summary

__all__ = [
    "DEFAULT_PATTERNS",
    "DROP_REASONS",
    "IMAGE_FEATURES",
    "BernoulliSampler",
    "Capture",
    "ClassifierCollector",
    "ConnectMetrics",
    "ConnectingProducer",
    "DeviceTimer",
    "EventProducer",
    "Events",
    "FsyncPolicy",
    "GenerateLoop",
    "Generated",
    "GeneratorCollector",
    "GpuSampler",
    "HookMetrics",
    "PayloadPolicy",
    "ProducerMetrics",
    "RegexRedactor",
    "Spool",
    "SpoolError",
    "SpoolRecord",
    "connect_metrics",
    "hook_metrics",
    "image_summary",
    "payload_metrics",
    "producer_metrics",
    "submit_events",
]
