"""The HTTP sidecar: a reverse proxy beside a model server that captures OIP v2 and OpenAI requests as events.

The proxy is the standard library's asyncio; captures need msgspec and numpy, metrics prometheus_client, the
producer kafka-python. Neither scipy nor torch is imported (the sidecar image stays small, and it starts fast);
``tests/test_sidecar_cli.py`` checks that. Its settings are :class:`monitor.config.SidecarConfig`.
"""

from __future__ import annotations

from collectors.sidecar.capture import (
    CaptureError,
    Capturer,
    Exchange,
    ExchangeCapture,
    Redactor,
    oip_features,
    route_of,
)
from collectors.sidecar.metrics import SidecarMetrics, sidecar_metrics
from collectors.sidecar.server import Sidecar, run_sidecar, serve
from monitor.config import ModelRef, SidecarConfig

__all__ = [
    "CaptureError",
    "Capturer",
    "Exchange",
    "ExchangeCapture",
    "ModelRef",
    "Redactor",
    "Sidecar",
    "SidecarConfig",
    "SidecarMetrics",
    "oip_features",
    "route_of",
    "run_sidecar",
    "serve",
    "sidecar_metrics",
]
