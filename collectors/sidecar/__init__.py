"""The HTTP sidecar: a reverse proxy beside a model server that captures OIP v2 and OpenAI requests as events.

Only the standard library's asyncio, msgspec and prometheus_client are needed (the sidecar image stays small).
"""

from __future__ import annotations

from collectors.sidecar.capture import CaptureError, Capturer, Exchange, ExchangeCapture, Redactor, route_of
from collectors.sidecar.config import ModelRef, SidecarConfig
from collectors.sidecar.metrics import SidecarMetrics, sidecar_metrics
from collectors.sidecar.server import Sidecar, run_sidecar, serve

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
    "route_of",
    "run_sidecar",
    "serve",
    "sidecar_metrics",
]
