"""W1: one tabular drift window, inferwatch vs a SciPy loop, Evidently, NannyML and alibi-detect, in one process.

All tools get the same seeded data: a reference of n rows x 20 standard-normal numeric features plus 2
categorical features (10 levels), and a current window of m rows whose features f0-f4 are shifted by +0.1 sd.
Each tool is set up from the reference once (as a monitoring daemon would) and only the per-window call is
timed (median of repeats after a warm-up call): ours is ``window_drift`` (KS + PSI/JS + normalised Wasserstein
per numeric feature, chi-squared + JS per categorical feature, one Bonferroni correction) on the whole reference,
and, where the reference is larger, on the daemon's default 20,000-row subsample (``build_reference(max_rows=
20000)``).  Peers:

* SciPy loop: ``ks_2samp`` per numeric feature and ``chisquare`` per categorical feature (same reference rows);
* Evidently 0.7 ``Report([DataDriftPreset()]).run(current, reference)`` (its defaults pick the tests);
* NannyML ``UnivariateDriftCalculator`` (KS / chi2, chunks of the window size; only ``calculate`` is timed);
* alibi-detect ``KSDrift`` (fitted once, ``predict`` timed, feature-level decisions at p < 0.01).

Three sizes run by default, because the p-value path changes with them: 100,000 x 10,000 (the issue's W1;
``max(n, m) > 10,000``, so the KS p-value is asymptotic, as in SciPy), 10,000 x 5,000 and 10,000 x 1,000 (both
in the exact-Smirnov regime, where SciPy's ``ks_2samp`` computes the exact law for every feature and we compute
it only where it can change a verdict).  Run with the benchmark environment (peers are never imported by the
product)::

    .venv-bench/bin/python benchmarks/w1_drift_window.py           # the three sizes, every peer
    .venv-bench/bin/python benchmarks/w1_drift_window.py --quick   # CI smoke: small sizes, SciPy loop only
    .venv-bench/bin/python benchmarks/w1_drift_window.py --json    # one JSON object on stdout
    .venv/bin/python benchmarks/w1_drift_window.py --peers scipy   # numpy 2 (the product venv), SciPy loop only

A peer whose library is not installed is reported as skipped.  ``--quick`` (the CI smoke test, a few seconds)
runs every path of ours -- the asymptotic regime with the subsample row at 24,000 x 2,000, the exact regime at
2,000 x 500 -- against the SciPy loop only: importing Evidently, NannyML and alibi-detect alone takes about a
minute of CPU, so they run only when named (``--quick --peers scipy,alibi``) or without ``--quick``.
"""

from __future__ import annotations

import argparse
import importlib.util
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
SUBSAMPLE = 20_000  # the daemon's default reference size (build_reference(max_rows=...))
SIZES = [(100_000, 10_000), (10_000, 5_000), (10_000, 1_000)]
QUICK_SIZES = [(24_000, 2_000), (2_000, 500)]
QUICK_PEERS = ["scipy"]
PEERS = {"scipy": "scipy", "evidently": "evidently", "nannyml": "nannyml", "alibi": "alibi_detect"}


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls after one warm-up call, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _data(n: int, m: int) -> dict[str, Any]:
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
    settled = sum(1 for f in result.numeric.features if f.p_settled)
    return dict(seconds=seconds, flagged=list(result.drifted_features), encode_seconds=encode_s,
                n_reference=reference.ks_index.n_reference, settled=settled,
                note=f"SciPy's KS p-value computed for {settled} of {N_NUMERIC} features: the verdicts that need it")


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
    method = "exact" if max(d["n"], d["m"]) <= 10_000 else "asymp"
    return dict(seconds=seconds, flagged=flagged, note=f"ks_2samp method='auto' ({method} here)")


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


RUNNERS: dict[str, tuple[str, Callable[[dict[str, Any], int], dict[str, Any]]]] = {
    "scipy": ("scipy loop", _scipy_loop),
    "evidently": ("evidently DataDriftPreset", _evidently),
    "nannyml": ("nannyml UnivariateDrift", _nannyml),
    "alibi": ("alibi-detect KSDrift", _alibi),
}


def run_size(n: int, m: int, peers: list[str], repeats: int, peer_repeats: int) -> dict[str, Any]:
    """Our tool and the named ``peers`` on one (reference rows, window rows) size; ratios are peer time over ours.

    Peers not named are listed as not run, so that a table never hides that a peer was left out."""
    d = _data(n, m)
    rows: dict[str, dict[str, Any]] = {"inferwatch": _ours(d, n, repeats)}
    if n > SUBSAMPLE:
        rows[f"inferwatch ({SUBSAMPLE // 1000}k subsample)"] = _ours(d, SUBSAMPLE, repeats)
    for peer, (label, runner) in RUNNERS.items():
        if peer not in peers:
            rows[label] = dict(seconds=None, flagged=[], note="not run: name it with --peers")
            continue
        if importlib.util.find_spec(PEERS[peer]) is None:
            rows[label] = dict(seconds=None, flagged=[], note=f"skipped: {PEERS[peer]} is not installed here")
            continue
        rows[label] = runner(d, peer_repeats)
    ours = rows["inferwatch"]["seconds"]
    for row in rows.values():
        row["ratio_to_ours"] = None if row["seconds"] is None else row["seconds"] / ours
    return dict(n_reference=n, n_current=m, tools=rows)


def run(sizes: list[tuple[int, int]], peers: list[str], repeats: int, peer_repeats: int,
        quick: bool = False) -> dict[str, Any]:
    warnings.filterwarnings("ignore")  # the peers' deprecation chatter, not ours
    logging.getLogger("alibi_detect").setLevel(logging.ERROR)
    results = [run_size(n, m, peers, repeats, peer_repeats) for n, m in sizes]
    return dict(benchmark="w1_drift_window", quick=quick, numpy=np.__version__, n_numeric=N_NUMERIC,
                n_categorical=N_CATEGORICAL, shift_sd=SHIFT, shifted=[f"f{j}" for j in range(5)], repeats=repeats,
                peer_repeats=peer_repeats, sizes=results)


def _print_table(report: dict[str, Any]) -> None:
    print(f"W1 drift window: {report['n_numeric']} numeric + {report['n_categorical']} categorical features, "
          f"{report['shifted'][0]}-{report['shifted'][-1]} shifted by {report['shift_sd']} sd; numpy "
          f"{report['numpy']}; median of {report['repeats']} (ours) / {report['peer_repeats']} (peers) calls")
    for size in report["sizes"]:
        print(f"\nreference {size['n_reference']:,} rows, window {size['n_current']:,} rows")
        print(f"{'tool':<28} {'median ms':>10} {'peer/ours':>10}  flagged")
        for name, row in size["tools"].items():
            if row["seconds"] is None:
                print(f"{name:<28} {'-':>10} {'-':>10}  ({row['note']})")
                continue
            flagged = ",".join(row["flagged"]) or "-"
            print(f"{name:<28} {row['seconds'] * 1e3:>10.2f} {row['ratio_to_ours']:>10.1f}  {flagged}")
            if row.get("note"):
                print(f"{'':<51}({row['note']})")
        print(f"(category encoding at ingestion, not in the window time: "
              f"{size['tools']['inferwatch']['encode_seconds'] * 1e3:.2f} ms)")


def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(v) for v in part.lower().split("x")) for part in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"sizes are REFxWINDOW pairs like 100000x10000; got {text!r}") from exc
    if any(len(p) != 2 or min(p) < 1 for p in pairs):
        raise argparse.ArgumentTypeError(f"sizes are REFxWINDOW pairs like 100000x10000; got {text!r}")
    return [(p[0], p[1]) for p in pairs]


def _peers(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = sorted(set(names) - set(RUNNERS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {unknown}; choose from {sorted(RUNNERS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke test: 24000x2000 and 2000x500, SciPy loop only (unless --peers names more)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sizes", type=_sizes, default=None,
                        help="comma-separated REFxWINDOW sizes (default 100000x10000,10000x5000,10000x1000)")
    parser.add_argument("--peers", type=_peers, default=None,
                        help=f"comma-separated peers to run (default {','.join(RUNNERS)}; quick: scipy)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of ours (default 30, quick 3)")
    parser.add_argument("--peer-repeats", type=int, default=None, help="timed repeats of peers (default 5, quick 1)")
    args = parser.parse_args(argv)
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # no telemetry calls from the peers
    os.environ.setdefault("DO_NOT_TRACK", "1")
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    peers = args.peers or (QUICK_PEERS if args.quick else list(RUNNERS))
    repeats = args.repeats or (3 if args.quick else 30)
    peer_repeats = args.peer_repeats or (1 if args.quick else 5)
    report = run(sizes, peers, repeats, peer_repeats, quick=args.quick)
    if args.json:
        json.dump(report, sys.stdout)
        print()
    else:
        _print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
