"""Calibration and labelled quality, checked against scikit-learn, SciPy and closed forms."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from scipy import special, stats
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss, recall_score

from detectors.calibration import Calibrator, fit_calibrator, isotonic_fit
from detectors.errors import StatisticsError
from detectors.quality import expected_calibration_error, labelled_quality


def _over_confident(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the model reports softmax(3 z): right argmax law, over-confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.0, (n, k))
    cdf = np.cumsum(special.softmax(z, axis=1), axis=1)
    y = np.minimum((rng.random(n)[:, None] >= cdf).sum(axis=1), k - 1)
    return special.softmax(3.0 * z, axis=1), y


# --- calibration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "decimals", "seed"), [(1, 3, 0), (7, 1, 1), (300, 2, 2), (5000, 6, 3)])
def test_isotonic_matches_sklearn(n: int, decimals: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.round(rng.random(n), decimals)  # few decimals: many ties in x
    y = (rng.random(n) < x**2).astype(np.float64)
    kx, ky = isotonic_fit(x, y)
    expected = IsotonicRegression(out_of_bounds="clip").fit(x, y)
    grid = np.concatenate([np.linspace(-0.2, 1.2, 2001), x])
    np.testing.assert_allclose(np.interp(grid, kx, ky), expected.predict(grid), rtol=0, atol=1e-12)
    assert np.all(np.diff(kx) > 0) and np.all(np.diff(ky) >= 0)


def test_isotonic_worst_case_decreasing_input() -> None:
    x = np.arange(50.0)
    y = x[::-1].copy()  # every pair violates: one pooled block at the mean
    kx, ky = isotonic_fit(x, y)
    np.testing.assert_array_equal(kx, [0.0, 49.0])
    np.testing.assert_allclose(ky, [24.5, 24.5])


def test_multiclass_isotonic_is_one_vs_rest_then_renormalised() -> None:
    probs, y = _over_confident(2000, 4, seed=5)
    cal = fit_calibrator(probs, y, method="isotonic")
    test_probs, _ = _over_confident(500, 4, seed=6)
    per_class = np.column_stack(
        [IsotonicRegression(out_of_bounds="clip").fit(probs[:, k], y == k).predict(test_probs[:, k]) for k in range(4)]
    )
    np.testing.assert_allclose(cal.apply(test_probs), per_class / per_class.sum(axis=1, keepdims=True), atol=1e-12)


def test_temperature_scaling_improves_held_out_nll() -> None:
    fit_p, fit_y = _over_confident(3000, 5, seed=7)
    held_p, held_y = _over_confident(3000, 5, seed=8)
    cal = fit_calibrator(fit_p, fit_y, method="temperature")
    assert cal.temperature == pytest.approx(3.0, rel=0.1)  # the over-confidence factor is recovered
    before = log_loss(held_y, held_p, labels=range(5))
    after = log_loss(held_y, cal.apply(held_p), labels=range(5))
    assert after < before - 0.1
    np.testing.assert_array_equal(cal.apply(held_p).argmax(axis=1), held_p.argmax(axis=1))  # T keeps the argmax
    iso = fit_calibrator(fit_p, fit_y, method="isotonic")
    iso_p = np.clip(iso.apply(held_p), 1e-6, 1)  # isotonic maps can reach 0: floor before the log
    assert log_loss(held_y, iso_p / iso_p.sum(axis=1, keepdims=True), labels=range(5)) < before


def test_temperature_minimises_nll_over_a_grid() -> None:
    probs, y = _over_confident(1000, 3, seed=9)
    cal = fit_calibrator(probs, y)
    log_p = np.log(probs)

    def nll(t: float) -> float:
        return float(-special.log_softmax(log_p / t, axis=1)[np.arange(y.size), y].mean())

    grid = np.exp(np.linspace(-1, 2.5, 400))
    best = grid[np.argmin([nll(t) for t in grid])]
    assert cal.temperature == pytest.approx(best, rel=0.02)
    assert nll(cal.temperature) <= min(nll(t) for t in grid) + 1e-9


@pytest.mark.parametrize("method", ["temperature", "isotonic", "identity"])
def test_calibrator_round_trips_through_npz_without_pickle(method: str) -> None:
    probs, y = _over_confident(400, 3, seed=10)
    cal = fit_calibrator(probs, y, method=method)
    buffer = io.BytesIO()
    np.savez(buffer, **{f"calibrator.{k}": v for k, v in cal.to_arrays().items()})
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as data:
        loaded = Calibrator.from_arrays({k.removeprefix("calibrator."): data[k] for k in data.files})
    assert loaded.method == method
    np.testing.assert_array_equal(loaded.apply(probs), cal.apply(probs))
    np.testing.assert_allclose(loaded.apply(probs).sum(axis=1), 1.0)


def test_calibration_rejects_bad_input() -> None:
    with pytest.raises(StatisticsError, match="rows must sum to 1"):
        fit_calibrator([[0.5, 0.6]], [0])
    with pytest.raises(StatisticsError, match=r"class indices in \[0, 2\)"):
        fit_calibrator([[0.5, 0.5]], [2])
    with pytest.raises(StatisticsError, match="fitted for 2"):
        Calibrator("identity", 2).apply([[0.2, 0.3, 0.5]])
    with pytest.raises(StatisticsError, match="method must be one of"):
        Calibrator.from_arrays({**Calibrator("identity", 2).to_arrays(), "method": np.array("platt")})
    with pytest.raises(StatisticsError, match="temperature must be"):
        Calibrator("temperature", 2, temperature=0.0)


# --- labelled quality -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labelled_quality_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 6
    y = rng.integers(0, k - 1, 300)  # class 5 never true
    pred = np.where(rng.random(300) < 0.7, y, rng.integers(0, k, 300))  # and sometimes predicted
    if seed == 2:
        pred = np.where(pred == 5, 0, pred)  # ... or never: absent from both, excluded from macro-F1
    res = labelled_quality(y, pred, n_classes=k, reference_accuracy=0.9)
    assert res.accuracy == pytest.approx(accuracy_score(y, pred), abs=1e-15)
    assert res.macro_f1 == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    present = np.unique(y)
    recall = np.asarray(res.per_class_recall)
    np.testing.assert_allclose(recall[present], recall_score(y, pred, labels=present, average=None), atol=1e-15)
    assert np.isnan(recall[5])
    expected_p = stats.binomtest(int((y == pred).sum()), 300, 0.9, alternative="less").pvalue
    assert res.p_value == pytest.approx(expected_p, rel=1e-12)
    assert res.drifted and not res.insufficient and res.ece is None


def _ece_reference(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Textbook ECE, one bin at a time (Guo et al. 2017, eq. 3)."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi) if lo > 0 else (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs((pred[in_bin] == y[in_bin]).mean() - conf[in_bin].mean())
    return total


def test_ece_matches_textbook_definition_and_is_zero_when_calibrated() -> None:
    probs, y = _over_confident(4000, 4, seed=11)
    assert expected_calibration_error(probs, y) == pytest.approx(_ece_reference(probs, y), abs=1e-12)
    assert expected_calibration_error(probs, y) > 0.1  # over-confident
    rng = np.random.default_rng(12)
    conf = rng.choice([1 / 15 * b for b in range(8, 16)], 20000)  # on bin edges: right-closed bins matter
    right = rng.random(20000) < conf
    calibrated = np.column_stack([conf, 1 - conf])
    labels = np.where(right, 0, 1)
    assert expected_calibration_error(calibrated, labels) == pytest.approx(_ece_reference(calibrated, labels))
    assert expected_calibration_error(calibrated, labels) < 0.02
    res = labelled_quality(labels, np.zeros(20000, int), 2, 0.7, probs=calibrated)
    assert res.ece == pytest.approx(_ece_reference(calibrated, labels), abs=1e-12)


def test_quality_needs_significance_effect_and_samples() -> None:
    big = np.arange(20000) % 5
    drop = np.where(np.arange(20000) < 17700, big, (big + 1) % 5)  # 0.885 vs 0.90
    res = labelled_quality(big, drop, 5, reference_accuracy=0.90)
    assert res.p_value < 1e-9 and not res.drifted  # significant, but 0.015 < min_effect 0.02
    y = np.arange(1000) % 5
    ok = np.where(np.arange(1000) < 905, y, (y + 1) % 5)
    assert not labelled_quality(y, ok, 5, reference_accuracy=0.90).drifted
    bad = np.where(np.arange(1000) < 850, y, (y + 1) % 5)
    assert labelled_quality(y, bad, 5, reference_accuracy=0.90).drifted
    # 20 labels at accuracy 0.2 against 0.9 are decisive (p ~ 3e-13): tested, not "insufficient".
    few = labelled_quality(y[:20], np.zeros(20, int), 5, reference_accuracy=0.90)
    assert few.drifted and not few.insufficient and few.p_value < 1e-6
    floored = labelled_quality(y[:20], np.zeros(20, int), 5, reference_accuracy=0.90, min_samples=30)
    assert floored.insufficient and not floored.drifted  # min_samples stays an optional extra floor
    # 1 label against 0.9: even a wrong one has p = 0.1 > alpha, so no outcome could be significant.
    assert labelled_quality(y[:1], (y[:1] + 1) % 5, 5, reference_accuracy=0.90).insufficient


def test_quality_rejects_bad_input() -> None:
    with pytest.raises(StatisticsError, match=r"y_pred must hold class indices in \[0, 3\)"):
        labelled_quality([0, 1], [0, 3], 3, 0.9)
    with pytest.raises(StatisticsError, match="empty"):
        labelled_quality([], [], 3, 0.9)
    with pytest.raises(StatisticsError, match="reference_accuracy"):
        labelled_quality([0], [0], 3, 1.5)
    with pytest.raises(StatisticsError, match=r"probs has shape \(1, 2\)"):
        labelled_quality([0], [0], 3, 0.9, probs=[[0.5, 0.5]])
