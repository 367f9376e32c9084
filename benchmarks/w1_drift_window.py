"""W1: one tabular drift window, inferwatch vs a SciPy loop, Evidently, NannyML and alibi-detect, in one process.

All tools get the same seeded data: a reference of 100,000 rows x 20 standard-normal numeric features plus 2
categorical features (10 levels), and a current window of 10,000 rows whose features f0-f4 are shifted by +0.1
sd.  Each tool is set up from the reference once (as a monitoring daemon would) and only the per-window call is
timed: ours is ``window_drift`` (KS + PSI/JS + normalised Wasserstein per numeric feature, chi-squared + JS per
categorical feature, one Bonferroni correction); it runs twice, on the full 100,000-row reference and on the
daemon's default 20,000-row subsample (``build_reference(max_rows=20000)``).  Peers:

* SciPy loop: ``ks_2samp`` per numeric feature and ``chisquare`` per categorical feature (same reference rows);
* Evidently 0.7 ``Report([DataDriftPreset()]).run(current, reference)`` (its defaults pick the tests);
* NannyML ``UnivariateDriftCalculator`` (KS / chi2, chunks of the window size; only ``calculate`` is timed);
* alibi-detect ``KSDrift`` (fitted once, ``predict`` timed, feature-level decisions at p < 0.01).

Run with the benchmark environment (peers are never imported by the product)::

    .venv-bench/bin/python benchmarks/w1_drift_window.py           # 100,000-row reference, 10,000-row window
    .venv-bench/bin/python benchmarks/w1_drift_window.py --quick   # 10,000 / 1,000 rows (CI smoke)
    .venv-bench/bin/python benchmarks/w1_drift_window.py --json    # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from detectors import build_categorical_reference, build_reference, encode_categories, window_drift

SEED = 0
SHIFT = 0.1
N_NUMERIC, N_CATEGORICAL, N_LEVELS = 20, 2, 10
ALPHA = 0.01


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _data(quick: bool) -> dict[str, Any]:
    n, m = (10_000, 1_000) if quick else (100_000, 10_000)
    rng = np.random.default_rng(SEED)
    levels = np.array([f"v{k}" for k in range(N_LEVELS)])
    probs = np.linspace(2.0, 1.0, N_LEVELS) / np.linspace(2.0, 1.0, N_LEVELS).sum()
    x_ref = rng.normal(size=(n, N_NUMERIC))  # (n, F)
    x_cur = rng.normal(size=(m, N_NUMERIC))  # (m, F)
    x_cur[:, :5] += SHIFT
    c_ref = levels[rng.choice(N_LEVELS, size=(n, N_CATEGORICAL), p=probs)]  # (n, C) strings
    c_cur = levels[rng.choice(N_LEVELS, size=(m, N_CATEGORICAL), p=probs)]
    numeric = [f"f{j}" for j in range(N_NUMERIC)]
    categorical = [f"c{j}" for j in range(N_CATEGORICAL)]
    return dict(n=n, m=m, x_ref=x_ref, x_cur=x_cur, c_ref=c_ref, c_cur=c_cur, numeric=numeric,
                categorical=categorical)


def _ours(d: dict[str, Any], max_rows: int, repeats: int) -> dict[str, Any]:
    reference = build_reference(d["x_ref"], d["numeric"], max_rows=max_rows)
    categories = build_categorical_reference(d["c_ref"], d["categorical"])
    codes = encode_categories(categories, d["c_cur"])  # done at ingestion, timed separately below
    seconds, result = _timed(lambda: window_drift(reference, d["x_cur"], categories, codes), repeats)
    encode_s, _ = _timed(lambda: encode_categories(categories, d["c_cur"]), repeats)
    return dict(seconds=seconds, flagged=list(result.drifted_features), encode_seconds=encode_s,
                n_reference=reference.ks_index.n_reference)


def _scipy_loop(d: dict[str, Any], repeats: int) -> dict[str, Any]:
    from scipy import stats

    n_tests = N_NUMERIC + N_CATEGORICAL
    ref_counts = [np.unique(d["c_ref"][:, j], return_counts=True) for j in range(N_CATEGORICAL)]

    def run() -> list[str]:
        flagged = []
        for j, name in enumerate(d["numeric"]):
            if stats.ks_2samp(d["x_ref"][:, j], d["x_cur"][:, j]).pvalue * n_tests < ALPHA:
                flagged.append(name)
        for j, name in enumerate(d["categorical"]):
            levels, counts = ref_counts[j]
            observed = np.array([np.count_nonzero(d["c_cur"][:, j] == v) for v in levels])
            expected = counts / counts.sum() * observed.sum()
            if stats.chisquare(observed, expected).pvalue * n_tests < ALPHA:
                flagged.append(name)
        return flagged

    seconds, flagged = _timed(run, repeats)
    return dict(seconds=seconds, flagged=flagged)


def _frames(d: dict[str, Any]) -> tuple[Any, Any]:
    import pandas as pd

    ref = pd.DataFrame(d["x_ref"], columns=d["numeric"])
    cur = pd.DataFrame(d["x_cur"], columns=d["numeric"])
    for j, name in enumerate(d["categorical"]):
        ref[name] = d["c_ref"][:, j]
        cur[name] = d["c_cur"][:, j]
    return ref, cur


def _evidently(d: dict[str, Any], repeats: int) -> dict[str, Any]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur = _frames(d)
    definition = DataDefinition(numerical_columns=d["numeric"], categorical_columns=d["categorical"])
    reference = Dataset.from_pandas(ref, data_definition=definition)

    def run() -> Any:
        current = Dataset.from_pandas(cur, data_definition=definition)
        return Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)

    seconds, snapshot = _timed(run, repeats)
    flagged, methods = [], set()
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type") != "evidently:metric_v2:ValueDrift":
            continue
        methods.add(config["method"])
        value, threshold = float(metric["value"]), float(config["threshold"])
        if (value < threshold) if "p_value" in config["method"] else (value >= threshold):
            flagged.append(config["column"])
    return dict(seconds=seconds, flagged=flagged, note=", ".join(sorted(methods)))


def _nannyml(d: dict[str, Any], repeats: int) -> dict[str, Any]:
    import nannyml as nml

    ref, cur = _frames(d)
    calc = nml.UnivariateDriftCalculator(
        column_names=d["numeric"] + d["categorical"], treat_as_categorical=d["categorical"],
        continuous_methods=["kolmogorov_smirnov"], categorical_methods=["chi2"], chunk_size=d["m"])
    calc.fit(ref)
    seconds, results = _timed(lambda: calc.calculate(cur), repeats)
    frame = results.filter(period="analysis").to_df()
    row = frame.iloc[0]
    flagged = [col for col in d["numeric"] + d["categorical"]
               if any(bool(row[c]) for c in frame.columns if c[0] == col and c[-1] == "alert")]
    return dict(seconds=seconds, flagged=flagged, note="KS / chi2, thresholds from reference chunks")


def _alibi(d: dict[str, Any], repeats: int) -> dict[str, Any]:
    from alibi_detect.cd import KSDrift

    detector = KSDrift(d["x_ref"].astype(np.float32), p_val=ALPHA, correction="bonferroni")
    x_cur = d["x_cur"].astype(np.float32)
    seconds, pred = _timed(lambda: detector.predict(x_cur, drift_type="feature"), repeats)
    flagged = [name for name, hit in zip(d["numeric"], pred["data"]["is_drift"], strict=True) if hit]
    return dict(seconds=seconds, flagged=flagged, note="numeric only, per-feature p < 0.01")


def run(quick: bool, repeats: int, peer_repeats: int) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    logging.getLogger("alibi_detect").setLevel(logging.ERROR)
    d = _data(quick)
    rows: dict[str, dict[str, Any]] = {}
    rows["inferwatch"] = _ours(d, d["n"], repeats)
    rows["inferwatch (20k subsample)"] = _ours(d, min(20_000, d["n"]), repeats)
    rows["scipy loop"] = _scipy_loop(d, peer_repeats)
    rows["evidently DataDriftPreset"] = _evidently(d, peer_repeats)
    rows["nannyml UnivariateDrift"] = _nannyml(d, peer_repeats)
    rows["alibi-detect KSDrift"] = _alibi(d, peer_repeats)
    ours = rows["inferwatch"]["seconds"]
    for row in rows.values():
        row["ratio_to_ours"] = row["seconds"] / ours
    return dict(benchmark="w1_drift_window", quick=quick, n_reference=d["n"], n_current=d["m"],
                n_numeric=N_NUMERIC, n_categorical=N_CATEGORICAL, shift_sd=SHIFT, shifted=d["numeric"][:5],
                repeats=repeats, peer_repeats=peer_repeats, tools=rows)


def _print_table(report: dict[str, Any]) -> None:
    print(f"W1 drift window: reference {report['n_reference']:,} x ({report['n_numeric']} numeric + "
          f"{report['n_categorical']} categorical), window {report['n_current']:,}, "
          f"{report['shifted'][0]}-{report['shifted'][-1]} shifted by {report['shift_sd']} sd")
    print(f"{'tool':<28} {'median ms':>10} {'peer/ours':>10}  flagged")
    for name, row in report["tools"].items():
        flagged = ",".join(row["flagged"]) or "-"
        print(f"{name:<28} {row['seconds'] * 1e3:>10.2f} {row['ratio_to_ours']:>10.1f}  {flagged}")
        if row.get("note"):
            print(f"{'':<51}({row['note']})")
    print(f"(category encoding at ingestion, not in the window time: "
          f"{report['tools']['inferwatch']['encode_seconds'] * 1e3:.2f} ms)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of ours (default 20, quick 5)")
    args = parser.parse_args(argv)
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # no telemetry calls from the peers
    os.environ.setdefault("DO_NOT_TRACK", "1")
    repeats = args.repeats or (5 if args.quick else 20)
    report = run(args.quick, repeats, peer_repeats=2 if args.quick else 3)
    if args.json:
        json.dump(report, sys.stdout)
        print()
    else:
        _print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
