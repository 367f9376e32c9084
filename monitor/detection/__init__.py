"""Detectors of a window behind one protocol, and the registry the daemon, offline checks and printers iterate."""

from __future__ import annotations

from monitor.detection.base import (
    Detector,
    DetectorBase,
    DetectorClass,
    Finding,
    GaugeSpec,
    Inputs,
    JoinedFeedback,
    ModelContext,
    PeerWindow,
    Sample,
)
from monitor.detection.latency import LatencySummary
from monitor.detection.llm_quality import LLM_COLUMNS
from monitor.detection.registry import BY_NAME, DETECTOR_NAMES, REGISTRY, gauge_specs
from monitor.detection.slow_drift import SlowDriftResult
from monitor.detection.variant_comparison import VariantComparisonResult

__all__ = [
    "BY_NAME",
    "DETECTOR_NAMES",
    "LLM_COLUMNS",
    "REGISTRY",
    "Detector",
    "DetectorBase",
    "DetectorClass",
    "Finding",
    "GaugeSpec",
    "Inputs",
    "JoinedFeedback",
    "LatencySummary",
    "ModelContext",
    "PeerWindow",
    "Sample",
    "SlowDriftResult",
    "VariantComparisonResult",
    "gauge_specs",
]
