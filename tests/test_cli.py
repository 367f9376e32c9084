"""The command line: `inferwatch drift`, `baseline`, `schema`, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitor.cli import main
from monitor.profiles import load_profile

NAMES = [f"x{i}" for i in range(8)]


def write_npz(path: Path, shift: dict[int, float], seed: int, n: int = 3000) -> Path:
    x = np.random.default_rng(seed).normal(size=(n, len(NAMES)))
    for j, s in shift.items():
        x[:, j] += s
    np.savez(path, X=x, feature_names=np.array(NAMES))
    return path


def write_csv(path: Path, shift: dict[int, float], seed: int, n: int = 2000) -> Path:
    x = np.random.default_rng(seed).normal(size=(n, 3))
    for j, s in shift.items():
        x[:, j] += s
    lines = ["age,income,score"] + [",".join(f"{v:.6f}" for v in row) for row in x]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_same_distribution_reports_no_drifted_feature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, cur = write_npz(tmp_path / "ref.npz", {}, 1), write_npz(tmp_path / "cur.npz", {}, 2)
    code, out = run_json(capsys, "drift", "--reference", str(ref), "--current", str(cur), "--json")
    assert code == 0 and out["drifted"] is False and out["drifted_features"] == []
    assert len(out["results"]["feature_drift"]["numeric"]["features"]) == 8  # type: ignore[index]


def test_shifted_samples_name_the_shifted_features(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, cur = write_npz(tmp_path / "ref.npz", {}, 1), write_npz(tmp_path / "cur.npz", {2: 0.5, 5: -0.7}, 2)
    code, out = run_json(capsys, "drift", "--reference", str(ref), "--current", str(cur), "--json")
    assert code == 1 and out["drifted_features"] == ["x2", "x5"]
    code = main(["drift", "--reference", str(ref), "--current", str(cur)])
    text = capsys.readouterr().out
    assert code == 1 and "2 of 8 features drifted" in text and "x5" in text


def test_csv_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref, cur = write_csv(tmp_path / "ref.csv", {}, 1), write_csv(tmp_path / "cur.csv", {1: 1.0}, 2)
    code, out = run_json(capsys, "drift", "--reference", str(ref), "--current", str(cur), "--json")
    assert code == 1 and out["drifted_features"] == ["income"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: (d / "missing.npz"), "no such file"),
    (lambda d: (d / "x.parquet").write_text("x") and d / "x.parquet", "unsupported file type"),
    (lambda d: (d / "bad.csv").write_text("a,b\n1,2\n3\n") and d / "bad.csv", "line 3 has 1 fields"),
    (lambda d: (d / "words.csv").write_text("a,prediction\n1,zebra\n") and d / "words.csv",
     "column 'prediction' must be numeric"),
    (lambda d: np.savez(d / "rows.npz", X=np.zeros((3, 8)), predictions=np.zeros(4)) or d / "rows.npz",
     "disagree on the number of rows"),
    (lambda d: np.savez(d / "noX.npz", Y=np.zeros(3)) or d / "noX.npz", "no array named 'X' or any other"),
    (lambda d: np.savez(d / "flat.npz", X=np.zeros(3)) or d / "flat.npz", "must be 2-D"),
])
def test_bad_data_files_fail_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object,
                                           message: str) -> None:
    ref = write_npz(tmp_path / "ref.npz", {}, 1)
    bad = make(tmp_path)  # type: ignore[operator]
    assert main(["drift", "--reference", str(ref), "--current", str(bad)]) == 2
    assert message in capsys.readouterr().err


def test_feature_mismatch_names_both_sides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = write_npz(tmp_path / "ref.npz", {}, 1)
    cur = write_csv(tmp_path / "cur.csv", {}, 2)
    assert main(["drift", "--reference", str(ref), "--current", str(cur)]) == 2
    err = capsys.readouterr().err
    assert "x0" in err and "income" in err


def test_baseline_writes_a_loadable_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(0).normal(size=(500, 3))
    x[7, 1] = np.nan
    np.savez(tmp_path / "train.npz", X=x, feature_names=np.array(["a", "b", "c"]),
             predictions=np.arange(500) % 4)
    out = tmp_path / "m.profile.npz"
    assert main(["baseline", "--data", str(tmp_path / "train.npz"), "--out", str(out), "--model", "m",
                 "--version", "3", "--training-run", "runs/9"]) == 0
    assert "from 500 rows" in (printed := capsys.readouterr().out) and "missing values (up to 0.2% in b)" in printed
    profile = load_profile(out)
    assert (profile.model, profile.version, profile.training_run) == ("m", "3", "runs/9")
    # a missing cell costs only itself: no row is dropped, and the profile keeps each feature's missing rate
    assert profile.feature_names == ("a", "b", "c") and profile.reference.sorted_values.shape == (500, 3)
    assert profile.reference.missing_counts.tolist() == [0, 1, 0]
    np.testing.assert_allclose(profile.reference.class_priors, [0.25] * 4, atol=0.01)


def test_run_with_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("models: []\nwindow: {size: nope}\n")
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "window.size" in done.stderr


def test_run_with_a_missing_profile_fails_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("models: [{name: m, version: 1, profile: nowhere.npz}]\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "nowhere.npz does not exist" in capsys.readouterr().err


def test_run_with_an_unreadable_alert_secret_fails_at_start_naming_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support import free_port, write_profile

    profile = write_profile(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(f"models: [{{name: tabular, version: 7, profile: {profile}}}]\n"
                      f"server: {{port: {free_port()}}}\n"
                      f"alerts: {{channels: [{{type: pagerduty, routing_key_file: {tmp_path / 'no-key'}}}]}}\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "alerts.channels[0].routing_key_file: cannot read" in err and "no-key" in err


def test_help_lists_the_commands() -> None:
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    for command in ("run", "drift", "baseline", "demo", "schema"):
        assert command in done.stdout


def test_every_detector_the_files_have_data_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)

    def sample(n: int, shift: float, mix: tuple[float, ...], emb_shift: float) -> dict[str, np.ndarray]:
        probs = rng.dirichlet(np.ones(3) * 0.3, size=n)
        predictions = probs.argmax(1)
        labels = np.array([rng.choice(3, p=p) for p in probs])
        return {"X": rng.normal(shift, 1, size=(n, 2)), "feature_names": np.array(["a", "b"]),
                "categorical": rng.choice(["red", "green", "blue"], p=mix, size=(n, 1)),
                "categorical_names": np.array(["colour"]), "predictions": predictions, "probabilities": probs,
                "labels": labels, "embeddings": rng.normal(size=(n, 16)) + emb_shift}

    np.savez(tmp_path / "ref.npz", **sample(3000, 0.0, (0.5, 0.3, 0.2), 0.0))
    np.savez(tmp_path / "same.npz", **sample(600, 0.0, (0.5, 0.3, 0.2), 0.0))
    np.savez(tmp_path / "moved.npz", **sample(600, 0.4, (0.2, 0.3, 0.5), 0.5))
    code, out = run_json(capsys, "drift", "--reference", str(tmp_path / "ref.npz"), "--current",
                         str(tmp_path / "same.npz"), "--json")
    ran = {f["detector"]: f["drifted"] for f in out["findings"]}  # type: ignore[union-attr]
    assert ran == {"feature_drift": False, "missing_values": False, "prediction_drift": False,
                   "embedding_drift": False, "estimated_quality": False, "labelled_quality": False}
    assert code == 0
    code, out = run_json(capsys, "drift", "--reference", str(tmp_path / "ref.npz"), "--current",
                         str(tmp_path / "moved.npz"), "--json")
    ran = {f["detector"]: f["drifted"] for f in out["findings"]}  # type: ignore[union-attr]
    assert code == 1 and ran["feature_drift"] and ran["embedding_drift"]
    assert out["drifted_features"] == ["a", "b", "colour"]
