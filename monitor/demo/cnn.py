"""``inferwatch demo``: a CNN served through the collector, watched by the detection pipeline.

It trains a small CNN on scikit-learn's digits (seconds on a CPU), builds the reference profile from the
training images and the model's predictions on them, serves held-out digits through
:class:`~collectors.ClassifierCollector` window by window, and from the middle window on injects drift.
Events flow over the in-process bus, or through Kafka when ``kafka`` is given, into the same
pipeline that ``inferwatch run`` uses (:func:`~monitor.wiring.build_pipeline`). With a run store
(:mod:`monitor.demo.runs`) the training is recorded as a run, the profile is built from the run's ``train.npz``
and names it, and each alerting window's rows are logged to it.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from prometheus_client import CollectorRegistry

from detectors import fit_calibrator
from monitor.alerts import MemoryChannel
from monitor.config import AlertsConfig, WindowConfig
from monitor.datafiles import Table
from monitor.demo.common import close_timeout, demo_config, demo_pipeline, wait_for_results
from monitor.demo.output import DemoOutput
from monitor.demo.runs import DemoRun, RunStore, TrainedRun, describe
from monitor.errors import InferwatchError
from monitor.evaluation import WindowResult
from monitor.events import FeedbackEvent
from monitor.offline import build_profile
from monitor.profiles import Profile, load_profile, save_profile

Drift = Literal["noise", "invert", "classmix"]
DRIFTS: tuple[Drift, ...] = ("noise", "invert", "classmix")
MODEL, VERSION = "digits-cnn", "1"
EPOCHS, LR, BATCH_SIZE = 25, 3e-3, 64


@dataclass(frozen=True)
class DemoAlert:
    window: int
    model: str
    version: str
    detector: str
    status: str
    features: tuple[str, ...]
    summary: str
    seconds_after_start: float
    links: dict[str, str]  # dashboard, report, snapshot, training_run, window_sample; "" where none


@dataclass(frozen=True)
class DemoWindow:
    window: int
    drift_injected: bool
    feature_drift: bool
    prediction_drift: bool
    drifted_features: tuple[str, ...]
    accuracy: float
    estimated_accuracy: float | None  # CBPE, from calibrated probabilities, without labels
    labelled_accuracy: float | None  # from the labels reviewers sent back (one request in five)
    latency_p95_ms: float | None  # forward latency of the window's requests (GPU time when on a GPU)
    detectors: tuple[str, ...]  # every detector that found a change in this window


@dataclass(frozen=True)
class DemoReport:
    transport: str
    device: str
    drift: str
    windows: int
    window_size: int
    drift_injected_at_window: int
    train_accuracy: float
    test_accuracy: float
    train_seconds: float
    elapsed_seconds: float
    events: int
    alerts: tuple[DemoAlert, ...]
    per_window: tuple[DemoWindow, ...]
    run: DemoRun | None  # the recorded training run; None with --no-runs

    @property
    def first_alert_window(self) -> int | None:
        return min((a.window for a in self.alerts if a.status == "firing"), default=None)


def _digits(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.35, random_state=seed,
                                                        stratify=digits.target)
    return x_train, x_test, y_train, y_test


def train_cnn(x: np.ndarray, y: np.ndarray, seed: int, epochs: int = EPOCHS) -> Any:
    """A two-convolution CNN for 8x8 digits; about 3 s on two CPU cores."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),  # (B, 16, 8, 8)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),  # (B, 32, 8, 8)
        nn.MaxPool2d(2),  # (B, 32, 4, 4)
        nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(),  # (B, 64): the penultimate embedding
        nn.Linear(64, 10),  # (B, 10) logits
    )
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.split(torch.randperm(len(xt), generator=generator), BATCH_SIZE):
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    return model.eval()


def inject(drift: Drift, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply one kind of drift to a window of images (and, for ``classmix``, its labels)."""
    if drift == "noise":  # a noisier camera: Gaussian noise, clipped to the valid range
        return np.clip(x + rng.normal(0, 0.25, x.shape).astype(np.float32), 0, 1), y
    if drift == "invert":  # a dark-mode client: light digits on a dark background become dark on light
        return 1.0 - x, y
    keep = np.isin(y, (0, 1, 7))  # a new user population writing mostly 0, 1 and 7
    idx = rng.choice(np.flatnonzero(keep), size=len(y))
    return x[idx], y[idx]


def run_demo(kafka: str | None = None, drift: Drift = "noise", windows: int = 12, window_size: int = 200,
             seed: int = 7, workdir: Path | None = None,
             progress: Callable[[str], None] = lambda _: None, alerts: AlertsConfig | None = None,
             out: DemoOutput | None = None, runs: RunStore | None = None) -> DemoReport:
    """Train, serve, inject drift and watch; with ``runs`` the training is recorded there and the profile, the
    alerts and the alerting windows' samples go with that run."""
    try:
        import torch
    except ImportError as exc:
        raise InferwatchError("the demo trains a CNN and needs torch: pip install 'inferwatch[torch]'") from exc
    from collectors import IMAGE_FEATURES, ClassifierCollector, EventProducer, Events, image_summary

    if windows < 4:
        raise InferwatchError("the demo needs at least 4 windows")
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    x_all, x_test, y_all, y_test = _digits(seed)
    n_val = len(x_all) // 5  # a validation split calibrates probabilities and measures reference accuracy
    x_train, y_train, x_val, y_val = x_all[n_val:], y_all[n_val:], x_all[:n_val], y_all[:n_val]
    progress(f"training a CNN on {len(x_train)} scikit-learn digits ...")
    model = train_cnn(x_train, y_train, seed)
    with torch.no_grad():
        train_pred = model(torch.from_numpy(x_train)).argmax(1).numpy()
        val_probs = model(torch.from_numpy(x_val)).softmax(1).numpy().astype(np.float64)
        test_pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
        reference_features = image_summary(torch.from_numpy(x_train)).numpy().astype(np.float64)  # (N, F)
        val_features = image_summary(torch.from_numpy(x_val)).numpy().astype(np.float64)
    train_seconds = time.monotonic() - started
    train_acc, test_acc = float((train_pred == y_train).mean()), float((test_pred == y_test).mean())
    progress(f"trained in {train_seconds:.1f} s: accuracy {train_acc:.3f} train, {test_acc:.3f} held out")

    tmp = tempfile.TemporaryDirectory(prefix="inferwatch-demo-") if workdir is None else None
    folder = Path(tmp.name) if tmp else Path(workdir or ".")
    profile_path = folder / "digits-cnn.profile.npz"
    # The same path as `inferwatch baseline` (--from-run with a run store): inputs and predictions from the
    # training split, calibration and reference accuracy from the validation split (training-set confidence is
    # over-confident).
    val_acc = float((val_probs.argmax(1) == y_val).mean())

    def calibrated(profile: Profile) -> Profile:
        return replace(profile, calibrator=fit_calibrator(val_probs, y_val, method="temperature"),
                       reference_accuracy=val_acc)

    run = None
    if runs is None:
        profile = build_profile(Table(x=reference_features, feature_names=IMAGE_FEATURES, predictions=train_pred),
                                MODEL, VERSION, training_run=f"demo://digits-cnn/seed-{seed}")
        save_profile(profile_path, calibrated(profile))
    else:
        progress("recording the training run ...")
        names = np.array(IMAGE_FEATURES, dtype=str)
        run = runs.record(TrainedRun(
            name=f"{MODEL}-seed-{seed}",
            params={"seed": seed, "epochs": EPOCHS, "lr": LR, "batch_size": BATCH_SIZE, "optimizer": "adam",
                    "dataset": "sklearn digits (8x8)", "train_rows": len(x_train), "validation_rows": len(x_val),
                    "test_rows": len(x_test), "features": ",".join(IMAGE_FEATURES)},
            metrics={"train_accuracy": train_acc, "validation_accuracy": val_acc, "test_accuracy": test_acc,
                     "train_seconds": train_seconds},
            data={"train.npz": {"X": reference_features, "feature_names": names, "predictions": train_pred,
                                "labels": y_train},
                  "validation.npz": {"X": val_features, "feature_names": names, "probabilities": val_probs,
                                     "predictions": val_probs.argmax(1), "labels": y_val}}))
        progress(describe(run))
        runs.baseline(run, "train.npz", profile_path, MODEL, VERSION, finish=calibrated)
    profile = load_profile(profile_path)
    progress(f"reference profile: {profile.describe()} -> {profile_path}")

    config = demo_config("demo", MODEL, VERSION, str(profile_path), profile.training_run, kafka,
                         WindowConfig(size=window_size, max_seconds=3600, min_samples=30), alerts,
                         log_window_samples=run is not None)
    channel = MemoryChannel()
    results: list[WindowResult] = []
    wiring = demo_pipeline(config, {f"{MODEL}/{VERSION}": profile}, channel, results, out)
    topics = config.topics
    try:
        wiring.start()
        events = EventProducer(wiring.producer, topics.events, registry=wiring.registry)
        collector = ClassifierCollector(model, events, MODEL, VERSION)
        labels = EventProducer(wiring.producer, topics.feedback, registry=CollectorRegistry())

        inject_at = windows // 2
        accuracy: list[float] = []
        where = f"Kafka at {kafka}" if kafka else "the in-process bus"
        progress(f"serving {windows} windows of {window_size} held-out digits over {where}; "
                 f"{drift} drift from window {inject_at}")
        with torch.no_grad():
            for w in range(windows):
                idx = rng.integers(0, len(x_test), window_size)
                x, y = x_test[idx], y_test[idx]
                if w >= inject_at:
                    x, y = inject(drift, x, y, rng)
                correct = 0
                for lo in range(0, window_size, 25):  # requests of 25 images, as a serving batcher would send
                    ids = [uuid.uuid4().hex for _ in range(len(x[lo:lo + 25]))]
                    logits = collector(torch.from_numpy(np.ascontiguousarray(x[lo:lo + 25])), request_ids=ids)
                    correct += int((logits.argmax(1).numpy() == y[lo:lo + 25]).sum())
                    # a reviewer labels one request in five, a little later
                    labels.submit(Events([FeedbackEvent(request_id=ids[i], time=time.time(), model=MODEL,
                                                        version=VERSION, label=int(y[lo + i]))
                                          for i in range(0, len(ids), 5)]))
                accuracy.append(correct / window_size)
        events.close()
        labels.close()
        wait_for_results(wiring, results, windows)
    finally:
        wiring.close(timeout_s=close_timeout(out))
        if tmp is not None:
            tmp.cleanup()
    if out is not None:
        for alert in channel.alerts:
            out.alert(alert)

    by_window = {r.index: r for r in results}
    raised = tuple(DemoAlert(window=a.window, model=a.model, version=a.version, detector=a.detector,
                             status=a.status, features=a.features, summary=a.summary,
                             seconds_after_start=round(a.window_end - started_wall(started), 3), links=dict(a.links))
                   for a in channel.alerts)
    per_window = tuple(_window_summary(by_window[w], w >= inject_at, accuracy[w]) for w in range(windows))
    return DemoReport(transport="kafka" if kafka else "embedded", device="cpu", drift=drift, windows=windows,
                      window_size=window_size, drift_injected_at_window=inject_at, train_accuracy=train_acc,
                      test_accuracy=test_acc, train_seconds=round(train_seconds, 2),
                      elapsed_seconds=round(time.monotonic() - started, 2), events=windows * window_size,
                      alerts=raised, per_window=per_window, run=run)


def _window_summary(r: WindowResult, injected: bool, accuracy: float) -> DemoWindow:
    found = r.findings
    return DemoWindow(window=r.index, drift_injected=injected, feature_drift=r.drift is not None and r.drift.drifted,
                      prediction_drift=r.prediction_drifted, drifted_features=r.drifted_features, accuracy=accuracy,
                      estimated_accuracy=None if r.cbpe is None else round(r.cbpe.expected_accuracy, 4),
                      labelled_accuracy=None if r.quality is None else round(r.quality.accuracy, 4),
                      latency_p95_ms=None if r.latency is None else round(
                          (r.latency.gpu_p95 if r.latency.gpu_n else r.latency.p95) * 1000, 3),
                      detectors=tuple(f.detector for f in found if f.drifted))


def started_wall(monotonic_start: float) -> float:
    """Wall-clock time of a ``time.monotonic()`` reading taken earlier in this process."""
    return time.time() - (time.monotonic() - monotonic_start)


def format_report(r: DemoReport) -> str:
    lines = [f"inferwatch demo: {r.events} digit images through a CNN on the {r.transport} transport, "
             f"{r.drift} drift injected at window {r.drift_injected_at_window}; latency is {r.device} wall time "
             f"(CUDA-event time on a GPU)", ""]
    lines.append(" window  traffic   accuracy: true  estimated  labelled  p95 latency   found")
    for w in r.per_window:
        found = [("inputs: " + ", ".join(w.drifted_features)) if d == "feature_drift" else d.replace("_", " ")
                 for d in w.detectors]
        est = "-" if w.estimated_accuracy is None else f"{w.estimated_accuracy:.3f}"
        lab = "-" if w.labelled_accuracy is None else f"{w.labelled_accuracy:.3f}"
        p95 = "-" if w.latency_p95_ms is None else f"{w.latency_p95_ms:.2f} ms"
        lines.append(f" {w.window:>6}  {'DRIFTED' if w.drift_injected else 'clean':<8}  {w.accuracy:>14.3f}  {est:>9}  "
                     f"{lab:>8}  {p95:>11}   {'; '.join(found) or '-'}")
    lines.append("")
    if not r.alerts:
        lines.append("no alerts")
    for a in r.alerts:
        lines.append(f"ALERT {a.status:<8} {a.detector:<16} {a.model}/{a.version} window {a.window} "
                     f"(+{a.seconds_after_start:.1f} s): {a.summary}")
    first = r.first_alert_window
    verdict = ("no alert fired" if first is None else
               f"first alert in window {first}, {first - r.drift_injected_at_window} window(s) after the injection"
               if first >= r.drift_injected_at_window else f"FALSE ALARM in window {first}, before the injection")
    lines += ["", f"{verdict}; model accuracy {r.test_accuracy:.3f} held out (trained in {r.train_seconds:.1f} s); "
                  f"total {r.elapsed_seconds:.1f} s"]
    if r.run is not None:
        lines.append(f"training run {r.run.uri}, with each alerting window's rows under inferwatch/windows/ in "
                     f"{r.run.url}; browse: {r.run.browse}")
    return "\n".join(lines)
