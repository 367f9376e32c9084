"""Pure statistics for inferwatch: drift tests on windows of model inputs and predictions.

Everything here is vectorised numpy/scipy over the features of a window and free of I/O; the
daemon (``monitor``) depends on this package, never the reverse.

Examples
--------
>>> import numpy as np
>>> import detectors
>>> ref = detectors.build_reference(np.arange(100.0).reshape(50, 2), ["a", "b"])
>>> detectors.feature_drift(ref, np.arange(100.0).reshape(50, 2)).drifted
False
"""

from __future__ import annotations

from detectors.chi2 import PROB_FLOOR, Chi2Result, chi2_goodness_of_fit
from detectors.drift import (
    Correction,
    FeatureDrift,
    FeatureDriftResult,
    PredictionDriftResult,
    feature_drift,
    prediction_drift,
)
from detectors.errors import StatisticsError
from detectors.ks import MAX_EXACT_N, KSResult, ks_2samp_columns, sort_reference
from detectors.multiple_testing import adjust_p_values
from detectors.psi import bin_proportions, jensen_shannon, psi, quantile_edges
from detectors.reference import ReferenceSample, build_reference
from detectors.smirnov import smirnov_sf_exact

__all__ = [
    "MAX_EXACT_N",
    "PROB_FLOOR",
    "Chi2Result",
    "Correction",
    "FeatureDrift",
    "FeatureDriftResult",
    "KSResult",
    "PredictionDriftResult",
    "ReferenceSample",
    "StatisticsError",
    "adjust_p_values",
    "bin_proportions",
    "build_reference",
    "chi2_goodness_of_fit",
    "feature_drift",
    "jensen_shannon",
    "ks_2samp_columns",
    "prediction_drift",
    "psi",
    "quantile_edges",
    "smirnov_sf_exact",
    "sort_reference",
]
