"""Embedding drift: MMD² with an RBF kernel and a permutation p-value (linear-time above a size).

The test runs on torch when it is installed (on the GPU when there is one) and on numpy otherwise
(:class:`~detectors.mmd.MMDDetector` with ``backend="auto"``): the same statistic, so images without torch
monitor embeddings too.  Falling back to numpy is logged once per model version at INFO.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import ClassVar

from detectors.mmd import MMDDetector, MMDResult
from monitor.detection.base import DetectorBase, Finding, GaugeSpec, Inputs, ModelContext, Sample

log = logging.getLogger(__name__)


class EmbeddingDrift(DetectorBase):
    name: ClassVar[str] = "embedding_drift"
    needs: ClassVar[tuple[str, ...]] = ("embedding",)
    gauges: ClassVar[tuple[GaugeSpec, ...]] = (
        GaugeSpec("inferwatch_embedding_mmd2", "Squared MMD of the last window's embeddings."),
        GaugeSpec("inferwatch_embedding_p_value", "Permutation p-value of the embedding MMD."),
    )

    def __init__(self, model: ModelContext) -> None:
        self._model = model
        self._mmd: MMDDetector | None = None

    @classmethod
    def build(cls, model: ModelContext) -> EmbeddingDrift | None:
        return cls(model) if model.profile.embeddings is not None else None

    def evaluate(self, inputs: Inputs) -> MMDResult | None:
        current = inputs.column("embedding")
        if current is None:
            return None
        cfg, profile = self._model.detect.embedding, self._model.profile
        if self._mmd is None:
            assert profile.embeddings is not None  # build() checked
            self._mmd = MMDDetector(profile.embeddings, bandwidth=profile.embedding_bandwidth,
                                    permutations=cfg.permutations, alpha=self._model.detect.alpha,
                                    linear_above=cfg.linear_above, min_samples=self._model.window.min_samples,
                                    backend="auto")
            if self._mmd.backend == "numpy":  # "auto" takes numpy only when torch cannot be imported
                log.info("embedding drift for %s/%s runs on numpy (CPU): torch is not installed",
                         profile.model, profile.version)
        return self._mmd.test(current[: cfg.max_rows])

    @staticmethod
    def finding(result: MMDResult) -> Finding:
        return Finding(EmbeddingDrift.name, result.drifted, result.insufficient, (),
                       f"embedding MMD²={result.mmd2:.4g} p={result.p_value:.2g} ({result.method}, "
                       f"{result.n_current} rows)")

    @staticmethod
    def samples(result: MMDResult) -> Iterator[Sample]:
        if not result.insufficient:
            yield Sample("inferwatch_embedding_mmd2", result.mmd2)
            yield Sample("inferwatch_embedding_p_value", result.p_value)
