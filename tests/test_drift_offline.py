"""`inferwatch drift` as a user runs it: the same file as reference and current is never a change, whatever the
file holds; a small current file is tested, not refused; missing cells cost only themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from monitor.cli import main
from tests.test_detectors_drift import assert_ks_p_value

DETECTORS_WITH_DATA = {"feature_drift", "missing_values", "prediction_drift", "embedding_drift", "estimated_quality",
                       "labelled_quality", "llm_quality"}


def _classifier_file(path: Path, n: int = 5000, sharpen: float = 1.0, seed: int = 0) -> Path:
    """The hostile probe's case: 3-class softmax of the features with 10% label noise, plus a categorical column,
    an embedding, a few missing cells and LLM-style arrays. ``sharpen`` > 1 makes the probabilities overconfident
    (badly calibrated)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    logits = x @ rng.normal(size=(3, 3)) * sharpen
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    predictions = probs.argmax(axis=1)
    labels = np.where(rng.random(n) < 0.1, rng.integers(0, 3, n), predictions)
    x[rng.random(size=x.shape) < 0.05] = np.nan
    np.savez(path, X=x, feature_names=np.array(["f0", "f1", "f2"]), predictions=predictions, probabilities=probs,
             labels=labels, categorical=rng.choice(["a", "b", "c"], size=(n, 1), p=[0.6, 0.3, 0.1]),
             categorical_names=np.array(["colour"]), embeddings=rng.normal(size=(n, 8)),
             output_tokens=rng.poisson(40, n), mean_logprob=rng.normal(-1.5, 0.2, n), empty=rng.random(n) < 0.02,
             refusal=rng.random(n) < 0.03, accepted=rng.random(n) < 0.8)
    return path


def _drift(capsys: pytest.CaptureFixture[str], reference: Path, current: Path, *extra: str) -> tuple[int, Any]:
    code = main(["drift", "--reference", str(reference), "--current", str(current), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("sharpen", [1.0, 4.0], ids=["calibrated", "overconfident"])
def test_the_same_file_as_reference_and_current_is_never_a_change(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   sharpen: float) -> None:
    data = _classifier_file(tmp_path / "train.npz", sharpen=sharpen)
    code, out = _drift(capsys, data, data)
    found = {f["detector"]: f for f in out["findings"]}
    assert set(found) == DETECTORS_WITH_DATA, out["failures"]
    assert not out["failures"]
    assert [name for name, f in found.items() if f["drifted"] or f["insufficient"]] == []
    assert code == 0


def test_the_same_csv_with_empty_cells_is_never_a_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(1)
    rows = ["age,income,city,prediction,label"]
    for _ in range(800):
        age = "" if rng.random() < 0.1 else f"{rng.normal(40, 10):.1f}"
        rows.append(f"{age},{rng.lognormal(10, 1):.2f},{rng.choice(['paris', 'oslo'])},{rng.integers(2)},"
                    f"{rng.integers(2)}")
    path = tmp_path / "train.csv"
    path.write_text("\n".join(rows) + "\n")
    code, out = _drift(capsys, path, path)
    assert code == 0 and not out["failures"]
    assert {f["detector"] for f in out["findings"]} >= {"feature_drift", "missing_values", "prediction_drift"}
    assert not any(f["drifted"] or f["insufficient"] for f in out["findings"])


def test_a_25_row_current_file_shifted_by_2_sd_is_flagged_not_refused(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(2)
    reference, current = rng.normal(size=(4000, 2)), rng.normal(size=(25, 2))
    current[:, 0] += 2.0
    np.savez(tmp_path / "ref.npz", X=reference, feature_names=np.array(["a", "b"]))
    np.savez(tmp_path / "cur.npz", X=current, feature_names=np.array(["a", "b"]))
    code, out = _drift(capsys, tmp_path / "ref.npz", tmp_path / "cur.npz")
    assert code == 1 and out["drifted_features"] == ["a"]
    first = out["results"]["feature_drift"]["numeric"]["features"][0]
    expected = stats.ks_2samp(current[:, 0], reference[:, 0])
    assert first["ks_statistic"] == pytest.approx(expected.statistic, abs=1e-12)
    assert first["p_value"] < 1e-10


def test_missing_cells_cost_only_themselves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With 5% missing cells in 3 features, listwise deletion once dropped 609 of 4,000 rows and the KS statistics
    no longer equalled scipy's on each feature's own values."""
    rng = np.random.default_rng(4)
    reference, current = rng.normal(size=(4000, 3)), rng.normal(0.1, 1, size=(4000, 3))
    for x in (reference, current):
        x[rng.random(size=x.shape) < 0.05] = np.nan
    np.savez(tmp_path / "ref.npz", X=reference, feature_names=np.array(["a", "b", "c"]))
    np.savez(tmp_path / "cur.npz", X=current, feature_names=np.array(["a", "b", "c"]))
    _, out = _drift(capsys, tmp_path / "ref.npz", tmp_path / "cur.npz")
    for j, feature in enumerate(out["results"]["feature_drift"]["numeric"]["features"]):
        ref, cur = reference[:, j], current[:, j]
        expected = stats.ks_2samp(cur[np.isfinite(cur)], ref[np.isfinite(ref)])
        assert feature["ks_statistic"] == expected.statistic
        assert_ks_p_value(feature["p_value"], feature["p_settled"], expected.pvalue, feature["n_reference"],
                          feature["n_current"])
        assert feature["n_current"] == np.isfinite(cur).sum()


def test_a_jump_in_missing_rate_is_a_finding_of_its_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(5)
    reference, current = rng.normal(size=(5000, 2)), rng.normal(size=(1000, 2))
    reference[rng.random(5000) < 0.05, 1] = np.nan
    current[rng.random(1000) < 0.20, 1] = np.nan
    np.savez(tmp_path / "ref.npz", X=reference, feature_names=np.array(["a", "b"]))
    np.savez(tmp_path / "cur.npz", X=current, feature_names=np.array(["a", "b"]))
    code, out = _drift(capsys, tmp_path / "ref.npz", tmp_path / "cur.npz")
    found = {f["detector"]: f for f in out["findings"]}
    assert code == 1 and found["missing_values"]["drifted"] and found["missing_values"]["features"] == ["b"]
    assert not found["feature_drift"]["drifted"]  # the present values of b are as in the reference
