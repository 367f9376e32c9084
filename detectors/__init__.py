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

from detectors.calibration import CalibrationMethod, Calibrator, fit_calibrator, isotonic_fit
from detectors.categorical import (
    CategoricalDrift,
    CategoricalDriftResult,
    CategoricalReference,
    build_categorical_reference,
    categorical_drift,
    categorical_smallest_p_value,
    encode_categories,
)
from detectors.cbpe import CBPEReference, CBPEResult, cbpe, cbpe_reference, expected_macro_f1
from detectors.chi2 import (
    PROB_FLOOR,
    Chi2Result,
    Chi2Rows,
    chi2_goodness_of_fit,
    chi2_goodness_of_fit_rows,
    smallest_p_value_rows,
)
from detectors.comparison import LatencyShift, WindowComparison, class_mix_shift, compare_windows, latency_shift
from detectors.cusum import CUSUM, siegmund_arl, z_from_p
from detectors.drift import (
    Correction,
    FeatureDrift,
    FeatureDriftResult,
    PredictionDriftResult,
    WindowDriftResult,
    feature_drift,
    prediction_drift,
    window_drift,
)
from detectors.errors import StatisticsError
from detectors.kolmogorov import kstwo_sf
from detectors.ks import (
    MAX_EXACT_N,
    KSIndex,
    KSResult,
    ks_2samp_columns,
    ks_smallest_p_value,
    min_detectable_rows,
    sort_reference,
)
from detectors.latency import SLO, BurnRateMonitor, BurnRateResult, LatencyHistogram, burn_rate
from detectors.llm import (
    LLMQualityResult,
    LLMReference,
    LLMTest,
    Percentiles,
    build_llm_reference,
    llm_quality,
)
from detectors.missing import MissingRateFeature, MissingRateResult, missing_rate_drift
from detectors.mmd import MMDDetector, MMDResult, median_bandwidth
from detectors.multiple_testing import adjust_p_values
from detectors.psi import bin_proportions, jensen_shannon, psi, quantile_edges
from detectors.quality import QualityResult, expected_calibration_error, labelled_quality
from detectors.reference import ReferenceSample, build_reference
from detectors.smirnov import smirnov_sf_exact
from detectors.wasserstein import wasserstein_columns

__all__ = [
    "CUSUM",
    "MAX_EXACT_N",
    "PROB_FLOOR",
    "SLO",
    "BurnRateMonitor",
    "BurnRateResult",
    "CBPEReference",
    "CBPEResult",
    "CalibrationMethod",
    "Calibrator",
    "CategoricalDrift",
    "CategoricalDriftResult",
    "CategoricalReference",
    "Chi2Result",
    "Chi2Rows",
    "Correction",
    "FeatureDrift",
    "FeatureDriftResult",
    "KSIndex",
    "KSResult",
    "LLMQualityResult",
    "LLMReference",
    "LLMTest",
    "LatencyHistogram",
    "LatencyShift",
    "MMDDetector",
    "MMDResult",
    "MissingRateFeature",
    "MissingRateResult",
    "Percentiles",
    "PredictionDriftResult",
    "QualityResult",
    "ReferenceSample",
    "StatisticsError",
    "WindowComparison",
    "WindowDriftResult",
    "adjust_p_values",
    "bin_proportions",
    "build_categorical_reference",
    "build_llm_reference",
    "build_reference",
    "burn_rate",
    "categorical_drift",
    "categorical_smallest_p_value",
    "cbpe",
    "cbpe_reference",
    "chi2_goodness_of_fit",
    "chi2_goodness_of_fit_rows",
    "class_mix_shift",
    "compare_windows",
    "encode_categories",
    "expected_calibration_error",
    "expected_macro_f1",
    "feature_drift",
    "fit_calibrator",
    "isotonic_fit",
    "jensen_shannon",
    "ks_2samp_columns",
    "ks_smallest_p_value",
    "kstwo_sf",
    "labelled_quality",
    "latency_shift",
    "llm_quality",
    "median_bandwidth",
    "min_detectable_rows",
    "missing_rate_drift",
    "prediction_drift",
    "psi",
    "quantile_edges",
    "siegmund_arl",
    "smallest_p_value_rows",
    "smirnov_sf_exact",
    "sort_reference",
    "wasserstein_columns",
    "window_drift",
    "z_from_p",
]
