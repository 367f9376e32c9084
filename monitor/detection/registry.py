"""The registered detectors, in evaluation order (a detector may read the results of those before it).

Adding a detector: write its module in this package (see :mod:`monitor.detection.base`) and add its class here.
"""

from __future__ import annotations

from collections.abc import Mapping

from monitor.detection.base import DetectorClass, GaugeSpec
from monitor.detection.embedding_drift import EmbeddingDrift
from monitor.detection.estimated_quality import EstimatedQuality
from monitor.detection.feature_drift import FeatureDrift
from monitor.detection.labelled_quality import LabelledQuality
from monitor.detection.latency import Latency
from monitor.detection.latency_slo import LatencySLO
from monitor.detection.llm_quality import LLMQuality
from monitor.detection.missing_values import MissingValues
from monitor.detection.prediction_drift import PredictionDrift
from monitor.detection.slow_drift import SlowDrift
from monitor.detection.variant_comparison import VariantComparison

REGISTRY: tuple[DetectorClass, ...] = (
    FeatureDrift,
    MissingValues,
    PredictionDrift,
    EmbeddingDrift,
    EstimatedQuality,
    LabelledQuality,
    LLMQuality,
    Latency,
    LatencySLO,
    SlowDrift,  # after FeatureDrift: it accumulates that detector's evidence
    VariantComparison,  # only for versions compared with a peer version (models[].variant, compare_with)
)

BY_NAME: Mapping[str, DetectorClass] = {d.name: d for d in REGISTRY}

#: Names of the detectors that can raise findings (and so alerts), in registry order.
DETECTOR_NAMES: tuple[str, ...] = tuple(BY_NAME)


def gauge_specs(registry: tuple[DetectorClass, ...] = REGISTRY) -> dict[str, GaugeSpec]:
    """Every gauge the detectors set, by name; two detectors may share a gauge only with the same spec."""
    specs: dict[str, GaugeSpec] = {}
    for detector in registry:
        for spec in detector.gauges:
            if specs.setdefault(spec.name, spec) != spec:
                raise ValueError(f"detector {detector.name} declares gauge {spec.name} unlike another detector")
    return specs
