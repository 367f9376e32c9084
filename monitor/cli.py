"""The ``inferwatch`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from monitor import __version__
from monitor.errors import InferwatchError

if TYPE_CHECKING:
    from monitor.datafiles import Table

log = logging.getLogger("inferwatch")

EXAMPLES = """\
examples:
  inferwatch demo                               CNN + drift injection on the embedded bus
  inferwatch demo --kafka 127.0.0.1:9092 --json  the same through Kafka, one JSON object out
  inferwatch baseline --data train.npz --out model.profile.npz --model digits --version 3
  inferwatch baseline --from-events kafka://127.0.0.1:9092/inferwatch.events --model digits/3 --out p.npz
  inferwatch drift --reference train.csv --current today.csv
  inferwatch run --config inferwatch.yaml        the daemon (Kafka, or embedded with HTTP ingest)
  inferwatch schema > record.schema.json         JSON Schema of Kafka record values
"""


DATA_FILES = """\
data files (every part optional; the profile holds what the file holds):
  .npz  X (n, F) numeric features + feature_names; categorical (n, C) strings + categorical_names;
        predictions (n,) class indices; probabilities (n, K); labels (n,) true classes;
        embeddings (n, d); output_tokens, mean_logprob, empty, refusal (n,) [+ accepted] for an LLM
  .csv  header row; numeric columns are features, non-numeric ones categorical; columns named
        prediction, label and prob_0 .. prob_K-1 hold classes and probabilities
"""


BASELINE_SOURCES = """
--from-run URI: the run's reference data (--artifact NAME, else train.npz, reference.npz, another .npz, a .csv,
  else a ready *.profile.npz); the profile records the run (id, URL, its own accuracy or loss) and goes back to
  the run (MLflow, a folder, an offline W&B run) before --out is written.
--from-events SOURCE --model NAME/VERSION [--since T --until T]: the model's captured traffic, from a JSON-lines
  file (one record value a line: an event or a batch) or kafka://HOST:PORT/TOPIC (every partition, up to its end
  offsets now). Events are kept by their own time, in [--since, --until]; at most --max-rows of them. Feature
  names are those the collectors produce; the profile records the first and last event time used.
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
                           description="Runs every detector the files have data for, as the daemon does on one "
                                       "window: per-feature KS (p-value, PSI, Jensen–Shannon, Wasserstein) on "
                                       "each feature's own present values (NaN cells in .npz, empty cells in "
                                       ".csv are missing values), a change in each feature's missing rate, with "
                                       "multiple-testing correction and an effect-size floor, chi-squared on "
                                       "categorical features and predicted classes, MMD on embeddings, accuracy "
                                       "from labels, label-free estimated accuracy (CBPE) from probabilities, LLM "
                                       "output distributions. Exit status 0: no change, 1: change, 2: error.",
                           epilog="File contents: see `inferwatch baseline --help`.")
    drift.add_argument("--reference", required=True, type=Path, help=".npz or .csv (see baseline --help)")
    drift.add_argument("--current", required=True, type=Path, help="same format and features as --reference")
    drift.add_argument("--alpha", type=float, default=0.01, help="family-wise error level (default 0.01)")
    drift.add_argument("--correction", choices=["bonferroni", "bh"], default="bonferroni")
    drift.add_argument("--min-effect", type=float, default=0.025,
                       help="smallest KS statistic reported as drift, however significant (default 0.025; "
                            "a 0.1-sd mean shift is about 0.04)")
    drift.add_argument("--min-samples", type=int, default=30,
                       help="fewest rows for the embedding (MMD) and LLM tests (default 30). The other tests need no "
                            "row count: they report insufficient data only when no outcome could be significant "
                            "after correction. A KS test of m current rows against n reference rows reaches at best "
                            "p = 2 / C(n+m, m): 1 row can be enough against 2,000 reference rows at alpha 0.01, "
                            "2 rows with 20 features; against 50 reference rows, 2 and 3")
    drift.add_argument("--json", action="store_true", help="print one JSON object")
    drift.add_argument("--report", type=Path, default=None, metavar="FILE.html",
                       help="also write an Evidently report (data drift; classification quality when the current "
                            "file has labels and predictions), as the daemon does per alert; needs "
                            "pip install 'inferwatch[reports]'")
    drift.set_defaults(func=_drift)

    base = sub.add_parser("baseline", help="build a reference profile from training data, a run or captured traffic",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          description="Build the profile the daemon compares live windows with, from one of: a data "
                                      "file (training or validation data and the model's outputs on it), a training "
                                      "run's reference data, or the model's own captured traffic.",
                          epilog=DATA_FILES + BASELINE_SOURCES)
    source = base.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="FILE", help=".npz or .csv, see below")
    source.add_argument("--from-run", metavar="URI",
                        help="a training run: mlflow://HOST:PORT/RUN_ID, runs:/RUN_ID (with --tracking-uri), "
                             "wandb://ENTITY/PROJECT/RUN_ID, a W&B run directory, file:///FOLDER; see below")
    source.add_argument("--from-events", metavar="SOURCE",
                        help="captured events: a JSON-lines file, or kafka://HOST:PORT/TOPIC; see below")
    base.add_argument("--out", required=True, type=Path, help="profile file to write (.npz)")
    base.add_argument("--model", default=None, metavar="NAME[/VERSION]",
                      help="model name the profile describes (default 'model', with --from-run the run's name); "
                           "NAME/VERSION sets the version too, and --from-events needs it")
    base.add_argument("--version", dest="model_version", default=None, help="model version (default 1)")
    base.add_argument("--training-run", default=None, help="id or URL of the training run (with --data)")
    base.add_argument("--artifact", default=None, metavar="NAME",
                      help="with --from-run: the run's artifact to build from (default: train.npz, reference.npz, "
                           "another .npz, a .csv, else a ready *.profile.npz)")
    base.add_argument("--tracking-uri", default=None, metavar="URI",
                      help="MLflow tracking server for runs:/RUN_ID (default: $MLFLOW_TRACKING_URI)")
    base.add_argument("--since", type=_timestamp, default=None, metavar="T",
                      help="with --from-events: first event time kept (ISO 8601, UTC unless it names a zone, or "
                           "Unix seconds)")
    base.add_argument("--until", type=_timestamp, default=None, metavar="T",
                      help="with --from-events: last event time kept (inclusive)")
    base.add_argument("--bins", type=int, default=10, help="reference-quantile bins for PSI (default 10)")
    base.add_argument("--calibration", choices=["temperature", "isotonic"], default="temperature",
                      help="probability calibration fitted on probabilities + labels, for CBPE (default temperature)")
    base.add_argument("--max-rows", type=int, default=20_000,
                      help="rows kept in the numeric reference sample (default 20000); with --from-events, "
                           "the most events read")
    base.set_defaults(func=_baseline)

    demo = sub.add_parser("demo", help="train a CNN, serve it through the collector, inject drift, watch",
                          description="End-to-end demo on scikit-learn's digits; finishes in well under a minute.")
    demo.add_argument("--kafka", metavar="HOST:PORT", default=None, help="use Kafka instead of the embedded bus")
    demo.add_argument("--model", choices=["cnn", "llm", "both"], default="both",
                      help="the image classifier, the text generator behind the sidecar, or both (default)")
    demo.add_argument("--drift", choices=["noise", "invert", "classmix"], default="noise",
                      help="the CNN's drift (the LLM's is always prompts from another domain)")
    demo.add_argument("--windows", type=int, default=12)
    demo.add_argument("--window-size", type=int, default=200)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    demo.add_argument("--alerts-config", metavar="FILE", default=None,
                      help="a YAML file with an alerts: section (rules, channels: webhook, slack, alertmanager, "
                           "pagerduty): the demo's alerts go to those channels too")
    demo.add_argument("--out", type=Path, default=None, metavar="DIR",
                      help="leave in DIR: the rendered Grafana dashboards, the window results (windows.jsonl), the "
                           "alerts (alerts.jsonl), an Evidently report per alerting window (reports/) and the "
                           "annotation and snapshot requests for Grafana (grafana/: recorded, or sent with "
                           "--grafana-url)")
    demo.add_argument("--grafana-url", default=None, metavar="URL",
                      help="with --out: send annotations and snapshots to this Grafana instead of recording them")
    demo.add_argument("--grafana-token-file", type=Path, default=None, metavar="FILE",
                      help="service-account token (Editor role) for --grafana-url")
    demo.add_argument("--runs-dir", type=Path, default=None, metavar="DIR",
                      help="the local MLflow store (and W&B offline runs, with wandb installed) the demo's trainers "
                           "record their runs in, which its profiles name and its alerts link (default: OUT/runs "
                           "with --out, else .inferwatch/demo-runs)")
    demo.add_argument("--no-runs", action="store_true", help="do not record the training runs")
    demo.add_argument("--log-level", default="ERROR", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    demo.set_defaults(func=_demo)

    from monitor.config import SidecarConfig

    side_defaults = SidecarConfig()
    side = sub.add_parser("sidecar", help="reverse proxy beside a model server that captures every request",
                          description="Proxies Open Inference Protocol v2 (/v2/models/NAME/infer) and "
                                      "OpenAI-compatible (/v1/completions, /v1/chat/completions, streaming "
                                      "included) requests to the model server, captures each as an event and "
                                      "sends it to Kafka (or, with --ingest, to a daemon's HTTP ingest) through a "
                                      "bounded queue and an on-disk spool. Fail-open: it starts serving at once, "
                                      "whether or not Kafka or the daemon answers; while they are away, events go "
                                      "to the spool (--spool) and are replayed when they return; capture problems "
                                      "never touch the request. Events that fit nowhere are dropped and counted by "
                                      "reason. Health and metrics on the admin listener; beyond loopback its "
                                      "/metrics needs a bearer token (--admin-token-file), or "
                                      "sidecar.allow_unauthenticated: true. Settings come from the `sidecar:` "
                                      "section of --config; flags override them.")
    side.add_argument("--config", type=Path, default=None, metavar="FILE",
                      help="YAML file with a `sidecar:` section (see README); flags override its values")
    side.add_argument("--upstream", default=None,
                      help=f"model server, e.g. http://127.0.0.1:8080 (default {side_defaults.upstream})")
    side.add_argument("--listen", default=None, metavar="HOST:PORT",
                      help=f"proxy listener (default {side_defaults.listen_host}:{side_defaults.listen_port})")
    side.add_argument("--admin", default=None, metavar="HOST:PORT",
                      help=f"/healthz, /readyz, /metrics listener (default {side_defaults.admin_host}:"
                           f"{side_defaults.admin_port})")
    side.add_argument("--kafka", default=None, metavar="HOST:PORT",
                      help="Kafka bootstrap address (this or --ingest, here or as sidecar.kafka)")
    side.add_argument("--ingest", default=None, metavar="URL",
                      help="send events to a daemon's HTTP ingest (POST URL/v1/events; a daemon on the embedded "
                           "bus) instead of Kafka, e.g. http://detector:9464 (or sidecar.ingest)")
    side.add_argument("--ingest-token-file", default=None, metavar="FILE",
                      help="file holding the bearer token sent to the ingest (the daemon's server.token_file)")
    side.add_argument("--admin-token-file", default=None, metavar="FILE",
                      help="file holding the bearer token the admin listener requires (all but /healthz, "
                           "/readyz); needed when --admin is not loopback, unless sidecar.allow_unauthenticated")
    side.add_argument("--topic", default=None, help=f"events topic (default {side_defaults.topic})")
    side.add_argument("--model", action="append", default=[], metavar="NAME=MODEL/VERSION",
                      help="map an upstream model name to the monitored model and version (repeatable)")
    side.add_argument("--spool", type=Path, default=None, metavar="DIR",
                      help="directory of the on-disk spool used while Kafka (or the ingest) is unreachable "
                           "(default: none, such events are dropped and counted)")
    side.add_argument("--spool-max-bytes", type=int, default=None,
                      help=f"bound on the spool's size (default {side_defaults.spool_max_bytes})")
    side.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    side.set_defaults(func=_sidecar)

    schema = sub.add_parser("schema", help="print the JSON Schema of Kafka record values")
    schema.set_defaults(func=_schema)

    boards = sub.add_parser("dashboards", help="Grafana dashboards: write them as files, or push them to Grafana",
                            description="The classifier, generator and fleet dashboards (Grafana 11.6 JSON models "
                                        "over inferwatch's Prometheus metrics). Needs pip install "
                                        "'inferwatch[grafana]'.")
    boards_sub = boards.add_subparsers(title="actions", required=True, metavar="ACTION")
    render = boards_sub.add_parser(
        "render", help="write the dashboards' JSON and a file-provisioning YAML",
        description="Write DIR/classifier.json, generator.json, fleet.json and DIR/provisioning.yaml, a dashboard "
                    "provider of type file for Grafana's provisioning/dashboards/ (or one ConfigMap holding "
                    "all four files; set options.path to where the JSON files are mounted).")
    render.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write (made if missing)")
    render.add_argument("--prefix", default="inferwatch",
                        help="dashboard uid prefix: uids are PREFIX-classifier, ... (default inferwatch)")
    render.add_argument("--folder", default="inferwatch", metavar="NAME",
                        help="Grafana folder the provisioning YAML loads them into (default inferwatch)")
    render.set_defaults(func=_dashboards_render)
    push = boards_sub.add_parser(
        "push", help="create or update the dashboards in a running Grafana (idempotent)",
        description="Create the folder if it is missing, optionally the Prometheus data source (uid "
                    "inferwatch-prometheus) if it is missing, and save every dashboard under its fixed uid, "
                    "overwriting the one there: running it again changes nothing but the dashboards' versions. "
                    "Needs a service-account token with the Editor role (Admin to create the data source). "
                    "Exit status 0: pushed, 2: Grafana unreachable, token refused or unreadable, request rejected.")
    push.add_argument("--url", required=True, help="Grafana's root URL, e.g. http://grafana:3000")
    push.add_argument("--token-file", required=True, type=Path, metavar="FILE",
                      help="file whose first line is the service-account token (never given on the command line)")
    push.add_argument("--folder", default="inferwatch", metavar="NAME", help="folder title (default inferwatch)")
    push.add_argument("--prefix", default="inferwatch", help="dashboard uid prefix (default inferwatch)")
    push.add_argument("--datasource-url", default=None, metavar="PROM_URL",
                      help="also create a Prometheus data source at this URL (e.g. http://prometheus:9090) if "
                           "Grafana has none of uid inferwatch-prometheus")
    push.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                      help="limit of each request (default 10)")
    push.set_defaults(func=_dashboards_push)
    return p


def _run(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.daemon import run_daemon, tune_process

    config = load_config(args.config)
    logging.getLogger().setLevel(args.log_level or config.log_level)
    tune_process()
    return run_daemon(config)


def _drift(args: argparse.Namespace) -> int:
    import msgspec

    from monitor.config import DetectConfig
    from monitor.datafiles import read_table
    from monitor.detection import BY_NAME
    from monitor.evaluation import plain
    from monitor.offline import compare

    if not 0 < args.alpha < 1:
        raise InferwatchError(f"--alpha must be in (0, 1), got {args.alpha}")
    if not 0 <= args.min_effect <= 1:
        raise InferwatchError(f"--min-effect must be in [0, 1], got {args.min_effect}")
    detect = DetectConfig(alpha=args.alpha, correction=args.correction, min_effect=args.min_effect)
    reference, current = read_table(args.reference), read_table(args.current)
    result = compare(reference, current, detect, min_samples=args.min_samples)
    found = result.findings
    drifted = [f for f in found if f.drifted]
    report = None if args.report is None else _drift_report(args, reference, current)
    if args.json:
        report = msgspec.to_builtins(result, enc_hook=plain)
        report["findings"] = [msgspec.to_builtins(f) for f in found]
        report["drifted"] = bool(drifted)
        report["drifted_features"] = list(result.drifted_features)
        if args.report is not None:
            report["report"] = str(args.report)
        print(json.dumps(report, default=float))
        return 1 if drifted else 0
    print(f"reference {args.reference} vs current {args.current} ({result.n_events} rows)")
    for name, detector_result in result.results.items():
        lines = BY_NAME[name].details(detector_result)
        if lines:
            print("\n".join(lines) + "\n")
    for finding in found:
        flag = "DRIFT" if finding.drifted else ("insufficient data" if finding.insufficient else "ok")
        print(f"{finding.detector:<18} {flag:<8} {finding.summary}")
    for failure in result.failures:
        print(f"{failure.detector:<18} {'FAILED':<8} {failure.error}")
    print(f"{len(drifted)} of {len(found)} detectors found a change (alpha {args.alpha}, {args.correction}, "
          f"KS >= {args.min_effect})")
    if report is not None:
        print(f"wrote the Evidently report to {args.report}: {report}")
    return 1 if drifted else 0


def _drift_report(args: argparse.Namespace, reference: Table, current: Table) -> str:
    """Write ``--report``; returns one line on what it shows."""
    from monitor.reports.evidently_report import table_report

    built = table_report(reference, current, title=f"{args.current.name} vs {args.reference.name}")
    built.save(args.report)
    drifted = ", ".join(built.drifted_features) or "none"
    quality = "" if built.quality is None else f"; accuracy {built.quality.accuracy:.3f} on {built.quality.n} labels"
    return f"{built.current_rows} rows vs {built.reference_rows} reference rows, Evidently drift in {drifted}{quality}"


def _baseline(args: argparse.Namespace) -> int:
    from monitor.datafiles import read_table
    from monitor.offline import build_profile
    from monitor.profiles import save_profile

    model, version = args.model, args.model_version
    if model is not None and "/" in model:
        model, _, named = model.rpartition("/")
        if version is not None and version != named:
            raise InferwatchError(f"--model {args.model} names version {named}, --version {version}")
        version = named
    if args.from_run is None and args.from_events is None and (
            args.since is not None or args.until is not None or args.artifact is not None):
        raise InferwatchError("--since, --until and --artifact go with --from-events or --from-run")
    if args.from_run is not None:
        return _baseline_from_run(args, model, version)
    if args.from_events is not None:
        return _baseline_from_events(args, model, version)
    table = read_table(args.data)
    model, version = model or "model", version or "1"
    profile = build_profile(table, model, version, training_run=args.training_run, bins=args.bins,
                            calibration=args.calibration, max_rows=args.max_rows)
    save_profile(args.out, profile)
    print(f"wrote {args.out}: {model}/{version} from {table.rows} rows: {profile.describe()}")
    return 0


def _baseline_from_run(args: argparse.Namespace, model: str | None, version: str | None) -> int:
    import os

    from monitor.baselines import baseline_from_run

    done = baseline_from_run(args.from_run, args.out, model, version, artifact=args.artifact,
                             tracking_uri=args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"),
                             bins=args.bins, calibration=args.calibration, max_rows=args.max_rows)
    p = done.profile
    rows = "a ready profile" if done.rows is None else f"{done.rows} rows"
    logged = f"; logged to {done.logged}" if done.logged else ""
    print(f"wrote {args.out}: {p.model}/{p.version} from {rows} of {done.artifact} in run {p.training_run}"
          f"{logged}: {p.describe()}")
    return 0


def _baseline_from_events(args: argparse.Namespace, model: str | None, version: str | None) -> int:
    from monitor.baselines import profile_from_events, read_events
    from monitor.profiles import save_profile

    if model is None or version is None:
        raise InferwatchError(f"--from-events {args.from_events} needs --model NAME/VERSION: the events of which "
                              "model version make the reference")
    captured = read_events(args.from_events, model, version, since=args.since, until=args.until,
                           max_rows=args.max_rows)
    profile = profile_from_events(captured, model, version, bins=args.bins, calibration=args.calibration,
                                  max_rows=args.max_rows)
    save_profile(args.out, profile)
    print(f"wrote {args.out}: {model}/{version} from {captured.describe()}: {profile.describe()}")
    return 0


def _timestamp(value: str) -> float:
    """Unix seconds, or an ISO 8601 time (UTC when it names no zone)."""
    import datetime as dt

    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither Unix seconds nor an ISO 8601 time") from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def _demo(args: argparse.Namespace) -> int:
    try:
        from monitor.demo import format_llm_report, format_report, run_demo, run_llm_demo
    except ImportError as exc:  # the demo package imports torch
        cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
        raise InferwatchError(f"the demo needs torch: pip install 'inferwatch[torch]' ({cause})") from exc

    def progress(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    from monitor.config import load_alerts_config

    alerts = None if args.alerts_config is None else load_alerts_config(args.alerts_config)
    if args.grafana_url is not None and (args.out is None or args.grafana_token_file is None):
        raise InferwatchError("--grafana-url needs --out DIR and --grafana-token-file FILE")
    saved = None
    if args.out is not None:
        from monitor.demo.output import DemoOutput

        saved = DemoOutput(args.out, args.grafana_url, args.grafana_token_file)
        progress(f"dashboards rendered: {', '.join(str(p) for p in saved.dashboards())}")
    runs = None
    if not args.no_runs:
        from monitor.demo.runs import DEFAULT_DIR, open_store

        runs = open_store(args.runs_dir or (DEFAULT_DIR if args.out is None else args.out / "runs"), progress)
    out: dict[str, object] = {}
    if args.model in ("cnn", "both"):
        report = run_demo(kafka=args.kafka, drift=args.drift, windows=args.windows, window_size=args.window_size,
                          seed=args.seed, progress=progress, alerts=alerts, out=saved, runs=runs)
        out.update(asdict(report) | {"first_alert_window": report.first_alert_window})
        if not args.json:
            print(format_report(report), flush=True)
    if args.model in ("llm", "both"):
        llm = run_llm_demo(kafka=args.kafka, seed=args.seed, progress=progress, alerts=alerts, out=saved, runs=runs)
        out["llm"] = asdict(llm)
        if not args.json:
            print("\n" + format_llm_report(llm))
    if saved is not None:
        progress(saved.summary())
    if args.json:
        print(json.dumps(out, default=float))
    return 0


def _sidecar(args: argparse.Namespace) -> int:
    import signal
    import threading

    from prometheus_client import CollectorRegistry

    from collectors import ConnectingProducer, EventProducer, Spool
    from collectors.sidecar import run_sidecar
    from collectors.sidecar.server import admin_guard
    from monitor.config import load_sidecar_config
    from monitor.errors import ConfigError
    from monitor.transport import Producer

    def address(value: str, flag: str) -> tuple[str, int]:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise InferwatchError(f"{flag} must be HOST:PORT, got {value!r}")
        return host, int(port)

    overrides: dict[str, object] = {}
    for key, value in (("upstream", args.upstream), ("kafka", args.kafka), ("topic", args.topic),
                       ("ingest", args.ingest), ("ingest_token_file", args.ingest_token_file),
                       ("admin_token_file", args.admin_token_file),
                       ("spool", None if args.spool is None else str(args.spool)),
                       ("spool_max_bytes", args.spool_max_bytes)):
        if value is not None:
            overrides[key] = value
    for flag, prefix, value in (("--listen", "listen", args.listen), ("--admin", "admin", args.admin)):
        if value is not None:
            overrides[f"{prefix}_host"], overrides[f"{prefix}_port"] = address(value, flag)
    models: dict[str, dict[str, str]] = {}
    for item in args.model:
        name, _, target = item.partition("=")
        model, _, version = target.rpartition("/")
        if not name or not model or not version:
            raise InferwatchError(f"--model must be NAME=MODEL/VERSION, got {item!r}")
        models[name] = {"model": model, "version": version}
    if models:
        overrides["models"] = models
    config = load_sidecar_config(args.config, overrides)
    if config.kafka is None and config.ingest is None:
        raise ConfigError("no Kafka address and no ingest URL: give --kafka HOST:PORT or --ingest URL (or "
                          "sidecar.kafka or sidecar.ingest in --config)")
    admin_guard(config, None, warn=False)  # refuse an open admin listener (or a bad token file) before anything
    registry = CollectorRegistry()
    spool = Spool(config.spool, max_bytes=config.spool_max_bytes) if config.spool else None
    producer: Producer
    closing: list[Callable[[], object]] = []
    if config.ingest is not None:
        from collectors.ingest import HttpIngestProducer

        ingest = HttpIngestProducer(config.ingest, registry, config.ingest_token_file)
        producer, destination = ingest, f"the HTTP ingest of {config.ingest}"

        def status() -> str:
            return ingest.status

        closing.append(lambda: ingest.close(5.0))
    else:
        from monitor.transport import KafkaTransport

        transport = KafkaTransport(config.kafka or "", client_id=config.client_id,
                                   extra_producer={"reconnect_backoff_max_ms": 1000}, registry=registry)
        # Serving starts at once: the Kafka producer connects in the background, events are spooled meanwhile.
        connecting = ConnectingProducer(transport.producer, registry)
        producer, destination = connecting, f"Kafka {config.kafka} topic {config.topic}"

        def status() -> str:
            return f"kafka producer {connecting.status}"

        closing += [lambda: connecting.close(5.0), transport.close]

    events = EventProducer(producer, config.topic, registry=registry, capacity=config.queue_capacity, spool=spool,
                           encoding=config.encoding)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("sidecar: %s:%d -> %s, events to %s (spool %s); admin on %s:%d", config.listen_host,
             config.listen_port, config.upstream, destination, config.spool or "none",
             config.admin_host, config.admin_port)
    try:
        run_sidecar(config, events, registry, stop, status=status)
    finally:
        events.close()  # what Kafka (or the ingest) did not acknowledge is in the spool by now
        for close in closing:
            close()
    return 0


def _dashboards_render(args: argparse.Namespace) -> int:
    from dashboards import write_dashboards

    try:
        written = write_dashboards(args.out, prefix=args.prefix, folder=args.folder)
    except ImportError as exc:  # grafana-foundation-sdk missing: the message says what to install
        raise InferwatchError(str(exc)) from exc
    except OSError as exc:
        raise InferwatchError(f"--out: cannot write {args.out}: {exc.strerror or exc}") from exc
    for path in written:
        print(f"wrote {path}")
    return 0


def _dashboards_push(args: argparse.Namespace) -> int:
    from dashboards import build_dashboards
    from monitor.errors import ConfigError
    from monitor.grafana import Grafana, push_dashboards

    try:
        lines = [line.strip() for line in args.token_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--token-file: cannot read {args.token_file}: "
                          f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from exc
    if not lines:
        raise ConfigError(f"--token-file: {args.token_file} is empty")
    if not args.url.startswith(("http://", "https://")):
        raise ConfigError(f"--url must start with http:// or https://, got {args.url!r}")
    try:
        models = build_dashboards(args.prefix)
    except ImportError as exc:
        raise InferwatchError(str(exc)) from exc
    grafana = Grafana(args.url, lines[0], timeout_s=args.timeout, token_source=f"--token-file {args.token_file}")
    try:
        summary = push_dashboards(grafana, args.folder, models, args.datasource_url)
    finally:
        grafana.close()
    print(f"folder {args.folder!r} (uid {summary.folder_uid}): {summary.folder}")
    if summary.datasource != "skipped":
        print(f"data source inferwatch-prometheus: {summary.datasource}")
    for d in summary.dashboards:
        print(f"{d.kind:<10} {d.action:<7} version {d.version:<4} {d.url}")
    return 0


def _schema(_args: argparse.Namespace) -> int:
    from monitor.events import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
