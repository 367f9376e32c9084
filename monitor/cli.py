"""The ``inferwatch`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from monitor import __version__
from monitor.errors import InferwatchError

log = logging.getLogger("inferwatch")

EXAMPLES = """\
examples:
  inferwatch demo                               CNN + drift injection on the embedded bus
  inferwatch demo --kafka 127.0.0.1:9092 --json  the same through Kafka, one JSON object out
  inferwatch baseline --data train.npz --out model.profile.npz --model digits --version 3
  inferwatch drift --reference train.csv --current today.csv
  inferwatch run --config inferwatch.yaml        the daemon (Kafka, or embedded with HTTP ingest)
  inferwatch schema > record.schema.json         JSON Schema of Kafka record values
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
        return code
    except InferwatchError as exc:
        print(f"inferwatch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inferwatch", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Watch deployed models: capture inference events, detect input drift and quality loss, alert.")
    p.add_argument("--version", action="version", version=f"inferwatch {__version__}")
    sub = p.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the detection daemon", description=(
        "Consume inference events (Kafka, or the embedded bus fed over HTTP), evaluate tumbling windows "
        "against reference profiles, export /metrics, post alerts. Stops cleanly on SIGTERM."))
    run.add_argument("--config", required=True, type=Path, help="YAML config file (see README)")
    run.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="overrides log_level in the config")
    run.set_defaults(func=_run)

    drift = sub.add_parser("drift", help="compare two data files offline (for CI before a rollout)",
                           description="Per-feature KS statistic and p-value, PSI and Jensen–Shannon distance of "
                                       "CURRENT against REFERENCE, with multiple-testing correction and an "
                                       "effect-size floor. Exit status 0: no drift, 1: drift, 2: error.")
    drift.add_argument("--reference", required=True, type=Path, help=".npz (array X) or .csv with a header")
    drift.add_argument("--current", required=True, type=Path, help="same format and features as --reference")
    drift.add_argument("--alpha", type=float, default=0.01, help="family-wise error level (default 0.01)")
    drift.add_argument("--correction", choices=["bonferroni", "bh"], default="bonferroni")
    drift.add_argument("--min-effect", type=float, default=0.1,
                       help="smallest KS statistic reported as drift, however significant (default 0.1)")
    drift.add_argument("--json", action="store_true", help="print one JSON object")
    drift.set_defaults(func=_drift)

    base = sub.add_parser("baseline", help="build a reference profile from training or validation data")
    base.add_argument("--data", required=True, type=Path, help=".npz (X, feature_names, predictions) or .csv")
    base.add_argument("--out", required=True, type=Path, help="profile file to write (.npz)")
    base.add_argument("--model", default="model", help="model name the profile describes")
    base.add_argument("--version", dest="model_version", default="1", help="model version")
    base.add_argument("--training-run", default=None, help="id or URL of the training run")
    base.add_argument("--bins", type=int, default=10, help="reference-quantile bins for PSI (default 10)")
    base.set_defaults(func=_baseline)

    demo = sub.add_parser("demo", help="train a CNN, serve it through the collector, inject drift, watch",
                          description="End-to-end demo on scikit-learn's digits; finishes in well under a minute.")
    demo.add_argument("--kafka", metavar="HOST:PORT", default=None, help="use Kafka instead of the embedded bus")
    demo.add_argument("--drift", choices=["noise", "invert", "classmix"], default="noise")
    demo.add_argument("--windows", type=int, default=12)
    demo.add_argument("--window-size", type=int, default=200)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    demo.add_argument("--log-level", default="ERROR", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    demo.set_defaults(func=_demo)

    schema = sub.add_parser("schema", help="print the JSON Schema of Kafka record values")
    schema.set_defaults(func=_schema)
    return p


def _run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.daemon import run_daemon

    config = load_config(args.config)
    logging.getLogger().setLevel(args.log_level or config.log_level)
    return run_daemon(config)


def _drift(args: argparse.Namespace) -> int:
    from detectors import build_reference, feature_drift
    from monitor.datafiles import read_table

    ref, cur = read_table(args.reference), read_table(args.current)
    if ref.feature_names != cur.feature_names:
        raise InferwatchError(f"feature mismatch: {args.reference} has {list(ref.feature_names)}, "
                              f"{args.current} has {list(cur.feature_names)}")
    if not 0 < args.alpha < 1:
        raise InferwatchError(f"--alpha must be in (0, 1), got {args.alpha}")
    reference = build_reference(ref.x[np.isfinite(ref.x).all(axis=1)], ref.feature_names,
                                max_rows=max(len(ref.x), 1))
    result = feature_drift(reference, cur.x, alpha=args.alpha, correction=args.correction,
                           min_effect=args.min_effect)
    if args.json:
        print(json.dumps(asdict(result) | {"drifted": result.drifted,
                                           "drifted_features": list(result.drifted_features)}, default=float))
    else:
        excluded = f", {result.excluded_rows} excluded as non-finite" if result.excluded_rows else ""
        print(f"reference {args.reference} ({result.n_reference} rows) vs current {args.current} "
              f"({result.n_current} rows{excluded})")
        print(f"{'feature':<24} {'KS':>7} {'p-value':>10} {'p-adj':>10} {'PSI':>7} {'JS':>7}  drifted")
        for f in result.features:
            print(f"{f.name:<24} {f.ks_statistic:>7.4f} {f.p_value:>10.3g} {f.p_adjusted:>10.3g} {f.psi:>7.3f} "
                  f"{f.js_distance:>7.3f}  {'YES' if f.drifted else 'no'}")
        if result.insufficient:
            print("insufficient data: too few usable rows in the current sample to decide")
        else:
            print(f"{len(result.drifted_features)} of {len(result.features)} features drifted "
                  f"(alpha {args.alpha}, {args.correction}, KS >= {args.min_effect})")
    return 1 if result.drifted else 0


def _baseline(args: argparse.Namespace) -> int:
    from detectors import build_reference
    from monitor.datafiles import read_table
    from monitor.profiles import Profile, save_profile

    table = read_table(args.data)
    finite = np.isfinite(table.x).all(axis=1)
    if not finite.any():
        raise InferwatchError(f"{args.data}: no row without NaN or infinite values")
    predictions = table.predictions[finite] if table.predictions is not None else None
    reference = build_reference(table.x[finite], table.feature_names, predictions=predictions, bins=args.bins)
    save_profile(args.out, Profile(reference=reference, model=args.model, version=args.model_version,
                                   training_run=args.training_run))
    print(f"wrote {args.out}: {args.model}/{args.model_version}, {len(table.feature_names)} features, "
          f"{reference.sorted_values.shape[0]} reference rows ({int((~finite).sum())} non-finite rows skipped)"
          + (f", {len(reference.class_labels)} classes" if predictions is not None else ""))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from monitor.demo import format_report, run_demo

    progress = (lambda _: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    report = run_demo(kafka=args.kafka, drift=args.drift, windows=args.windows, window_size=args.window_size,
                      seed=args.seed, progress=progress)
    if args.json:
        print(json.dumps(asdict(report) | {"first_alert_window": report.first_alert_window}))
    else:
        print(format_report(report))
    return 0


def _schema(_args: argparse.Namespace) -> int:
    from monitor.events import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
