"""Evidently reports per alerting window: what they show, where they go, how they are served, and that the alert
never waits for one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from detectors import build_reference
from monitor.alerts import Alert, AlertedWindow, MemoryChannel
from monitor.cli import main
from monitor.config import (
    AlertsConfig,
    Config,
    ModelConfig,
    ReportsConfig,
    ServerConfig,
    WindowConfig,
    load_config_text,
)
from monitor.errors import ConfigError
from monitor.evaluation import WindowResult
from monitor.events import FeedbackEvent, encode_batch
from monitor.profiles import Profile, load_profile
from monitor.reports import ReportHook, ReportNameError, ReportStore, default_base_url, report_name, report_page
from monitor.windows import ClosedWindow
from monitor.wiring import Wiring, build_pipeline
from tests.support import DEADLINE_S, FEATURES, MODEL, VERSION, events, wait_until, write_profile

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = "models:\n  - {name: digits, version: 1, profile: digits.profile.npz}\n"


def _frames(n_ref: int = 3000, n_cur: int = 2000, shift: float = 1.5, seed: int = 0):  # type: ignore[no-untyped-def]
    from monitor.reports.evidently_report import window_frame

    rng = np.random.default_rng(seed)
    current = rng.normal(size=(n_cur, len(FEATURES)))
    current[:, 1] += shift
    return (window_frame(rng.normal(size=(n_ref, len(FEATURES))), FEATURES),
            window_frame(current, FEATURES))


# -- the report itself ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_report_names_the_drifted_feature_in_its_drift_table_and_page(tmp_path: Path) -> None:
    from monitor.reports.evidently_report import build_report

    reference, current = _frames()
    current["f3"] = np.nan  # a feature the window never carried: left out, not a failure
    report = build_report(reference, current, title="tabular/7")
    assert report.drifted_features == ("f1",)
    assert report.skipped == ("f3",)
    assert [c.column for c in report.drift] == ["f0", "f1", "f2"]
    drifted = {t["name"] for t in report.snapshots[0].dict()["tests"] if t["status"] == "FAIL" and t["id"] == "drift"}
    assert drifted == {"Value Drift for column f1"}  # Evidently's own export says the same
    assert (report.reference_rows, report.current_rows, report.quality) == (3000, 2000, None)
    page = report.save(tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.lstrip().startswith("<!DOCTYPE html>")
    assert all(name in page for name in ("f0", "f1", "f2", "tabular/7: data drift"))
    assert os.environ.get("DO_NOT_TRACK")  # set before evidently was imported: no telemetry


@pytest.mark.slow
def test_classification_quality_is_in_the_report_when_labels_are_given() -> None:
    from monitor.reports.evidently_report import build_report, labels_frame

    rng = np.random.default_rng(1)
    y_true = rng.choice(3, size=400, p=[0.5, 0.3, 0.2])
    y_pred = np.where(rng.random(400) < 0.8, y_true, rng.choice(3, size=400))
    reference, current = _frames(shift=0.0)
    report = build_report(reference, current, labels=labels_frame(y_true, y_pred, ["a", "b", "c"]))
    assert report.quality is not None and report.quality.n == 400
    assert report.quality.accuracy == pytest.approx(float(np.mean(y_true == y_pred)))
    assert "classification quality on 400 labelled predictions" in report.html.decode()
    assert report.drifted_features == ()


def test_the_reference_frame_keeps_each_features_distribution_and_missing_rate() -> None:
    from scipy import stats

    from monitor.reports.evidently_report import PREDICTION, reference_frame

    rng = np.random.default_rng(2)
    x = rng.normal(size=(20_000, 2)) * [1.0, 3.0] + [0.0, 5.0]
    x[rng.random(20_000) < 0.2, 1] = np.nan  # 20 % missing in the second feature
    ref = build_reference(x, ("a", "b"), predictions=rng.choice(2, size=20_000, p=[0.9, 0.1]),
                          class_labels=["no", "yes"])
    frame = reference_frame(ref, rows=5000, seed=0)
    assert len(frame) == 5000 and list(frame.columns) == ["a", "b", PREDICTION]
    assert frame["b"].isna().mean() == pytest.approx(0.2, abs=0.005)
    for j, name in enumerate("ab"):
        present = x[:, j][~np.isnan(x[:, j])]
        assert stats.ks_2samp(frame[name].dropna(), present).pvalue > 0.01
    assert (frame[PREDICTION] == "yes").mean() == pytest.approx(0.1, abs=0.02)


# -- the store -----------------------------------------------------------------------------------------------
def test_retention_deletes_the_oldest_beyond_max_reports(tmp_path: Path) -> None:
    store = ReportStore(tmp_path, max_reports=3, max_bytes=1 << 30)
    for i in range(5):
        store.write("m", "1", f"w{i}", b"x" * 100)
        os.utime(store.path("m", "1", f"w{i}"), ns=(i * 10**9, i * 10**9))  # w0 oldest, whatever the clock
    store.fail("m", "1", "w5", "broken")  # a failure page counts as a report
    assert [store.status("m", "1", f"w{i}") for i in range(6)] == ["unknown"] * 3 + ["ready", "ready", "failed"]
    assert store.reason("m", "1", "w5") == "broken"


def test_retention_deletes_the_oldest_beyond_max_bytes_but_keeps_the_newest(tmp_path: Path) -> None:
    store = ReportStore(tmp_path, max_reports=100, max_bytes=2500)
    for i in range(4):
        store.write("m", "1", f"w{i}", b"x" * 1000)
        os.utime(store.path("m", "1", f"w{i}"), ns=(i * 10**9, i * 10**9))
    assert [store.read("m", "1", f"w{i}") is not None for i in range(4)] == [False, False, True, True]
    store.write("m", "1", "big", b"x" * 5000)  # larger than the cap on its own: kept, all others go
    assert store.read("m", "1", "big") is not None
    assert sorted(p.name for p in tmp_path.rglob("*.html")) == ["big.html"]


@pytest.mark.parametrize("path", ["/reports/../etc/passwd.html", "/reports/m/../../x.html", "/reports/m/1/..html",
                                  "/reports/m/1/%2e%2e%2fx.html", "/reports/.hidden/1/w.html", "/reports/m/1/w.txt",
                                  "/reports/m/1/a/b.html", "/reports/m/1/.html", "/reports/m\\x/1/w.html"])
def test_a_path_that_is_not_a_report_name_is_refused(tmp_path: Path, path: str) -> None:
    (tmp_path / "secret.html").write_text("outside")
    store = ReportStore(tmp_path / "reports", max_reports=10, max_bytes=1 << 20)
    code, body, _ = report_page(store)(path)
    assert code == 400 and b"outside" not in body
    with pytest.raises(ReportNameError):
        store.path("..", "1", "w")


def test_the_page_handler_answers_by_status(tmp_path: Path) -> None:
    store = ReportStore(tmp_path, max_reports=10, max_bytes=1 << 20)
    page = report_page(store)
    assert page("/reports/m/1/w.html")[0] == 404
    store.pending("m", "1", "w")
    code, body, content_type = page("/reports/m/1/w.html")
    assert (code, content_type) == (202, "text/html; charset=utf-8") and b'http-equiv="refresh"' in body
    store.write("m", "1", "w", b"<html>the report</html>")
    assert page("/reports/m/1/w.html") == (200, b"<html>the report</html>", "text/html; charset=utf-8")
    store.fail("m", "1", "v", "ValueError: <no rows>")
    code, body, _ = page("/reports/m/1/v.html")
    assert code == 500 and b"ValueError: &lt;no rows&gt;" in body


def test_report_names_are_safe_and_distinct() -> None:
    ids = ["tabular/7@inferwatch.events-0:1200", "tabular/7@inferwatch.events-0:1200+3",
           "tabular/7@inferwatch.events-1:1200", "tabular/7@inferwatch.events-0:12003", "offline", "m/1@a b:c/d"]
    names = [report_name(i) for i in ids]
    assert names[:5] == ["inferwatch.events-0_1200", "inferwatch.events-0_1200.3", "inferwatch.events-1_1200",
                         "inferwatch.events-0_12003", "offline"]
    assert names[5].startswith("w-") and len(set(names)) == len(names)


def test_the_base_url_defaults_to_the_server_address() -> None:
    assert default_base_url(ServerConfig(host="127.0.0.1", port=9464)) == "http://127.0.0.1:9464"
    import socket

    assert default_base_url(ServerConfig(host="0.0.0.0", port=80)) == f"http://{socket.gethostname()}:80"
    assert default_base_url(ServerConfig(host="::1", port=80)) == "http://[::1]:80"


# -- config --------------------------------------------------------------------------------------------------
def test_reports_config_defaults_and_values() -> None:
    assert load_config_text(MINIMAL).reports.dir is None  # off unless a directory is given
    r = load_config_text(MINIMAL + "reports: {dir: /var/lib/inferwatch/reports, max_reports: 50, "
                                   "base_url: 'https://monitor.example/iw'}").reports
    assert (r.dir, r.max_reports, r.max_bytes, r.reference_rows, r.window_rows, r.base_url) == (
        "/var/lib/inferwatch/reports", 50, 2 << 30, 5000, 10_000, "https://monitor.example/iw")


@pytest.mark.parametrize(("text", "names"), [
    ("reports: {dir: r, max_reports: 0}", "reports.max_reports"),
    ("reports: {dir: r, max_bytes: -1}", "reports.max_bytes"),
    ("reports: {dir: r, window_rows: 0}", "reports.window_rows"),
    ("reports: {dir: r, base_url: 'ftp://x'}", "reports.base_url"),
    ("reports: {dir: r, max_report: 5}", "max_report"),
])
def test_bad_reports_config_names_the_key(text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_config_text(MINIMAL + text)


def test_reports_without_evidently_fail_at_start_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import monitor.config

    monkeypatch.setattr(monitor.config, "report_packages_problem", lambda: "evidently is not installed")
    with pytest.raises(ConfigError, match=r"evidently is not installed: pip install 'inferwatch\[reports\]'.*"
                                          r"at reports\.dir"):
        load_config_text(MINIMAL + "reports: {dir: r}")
    load_config_text(MINIMAL)  # reports off: nothing needed


def test_neither_the_daemon_nor_the_sidecar_imports_pandas_or_evidently() -> None:
    code = ("import sys, monitor.daemon, monitor.wiring, monitor.reports, monitor.cli, collectors.sidecar; "
            "print(sorted(m for m in ('pandas', 'evidently') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- the hook on a running pipeline --------------------------------------------------------------------------
def _wiring(tmp_path: Path, channel: MemoryChannel, registry: CollectorRegistry) -> Wiring:
    config = Config(models=[ModelConfig(name=MODEL, version=VERSION, profile=str(write_profile(tmp_path)))],
                    window=WindowConfig(size=400, max_seconds=3600, min_samples=30),
                    alerts=AlertsConfig(breaches=1, of=1, resolve_after=1),
                    reports=ReportsConfig(dir=str(tmp_path / "reports")))
    return build_pipeline(config, channels=[channel], registry=registry)


def _drifted_window(wiring: Wiring, registry: CollectorRegistry, with_labels: bool = False) -> None:
    """A clean window, then a drifted one (f1 shifted 2 sd); with labels, feedback on 300 of the drifted
    window's predictions (right 70 % of the time) is joined before the window closes."""
    rng = np.random.default_rng(5)
    topic = wiring.config.topics
    wiring.producer.send(topic.events, encode_batch(events(400, rng)))  # a clean window: no alert
    drifted = events(400, rng, shift=2.0, start=1_700_001_000.0)
    wiring.producer.send(topic.events, encode_batch(drifted[:300]))
    if with_labels:
        labels = [e.prediction if rng.random() < 0.7 else int(rng.integers(3)) for e in drifted[:300]]
        wiring.producer.send(topic.feedback, encode_batch([
            FeedbackEvent(request_id=e.request_id, time=e.time, model=MODEL, version=VERSION, label=int(label))
            for e, label in zip(drifted[:300], labels, strict=True)]))
        wait_until(lambda: _value(registry, "inferwatch_feedback_joined_total") >= 300, "the labels to be joined")
    wiring.producer.send(topic.events, encode_batch(drifted[300:]))


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.slow
def test_the_alert_links_the_report_and_is_sent_before_the_report_exists(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.reports.process import ProcessBuilder

    gate, building = threading.Event(), threading.Event()
    real = ProcessBuilder.__call__

    def gated(self, *args):  # type: ignore[no-untyped-def]  # the report is then built in the child, for real
        building.set()
        assert gate.wait(120), "the test never opened the gate"
        return real(self, *args)

    monkeypatch.setattr(ProcessBuilder, "__call__", gated)
    channel, registry = MemoryChannel(), CollectorRegistry()
    wiring = _wiring(tmp_path, channel, registry)
    assert wiring.reports is not None
    page = report_page(wiring.reports.store)
    try:
        wiring.start()
        _drifted_window(wiring, registry, with_labels=True)
        alert = wait_until(lambda: next((a for a in channel.alerts if a.status == "firing"), None), "the alert")
        name = report_name(alert.window_id)
        assert alert.links["report"] == f"http://127.0.0.1:9464/reports/{MODEL}/{VERSION}/{name}.html"
        wait_until(building.is_set, "the worker to start the report")
        path = f"/reports/{MODEL}/{VERSION}/{name}.html"
        assert page(path)[0] == 202  # the alert is out; the report is still being built
        assert _value(registry, "inferwatch_reports_pending") == 1
        gate.set()
        body = wait_until(lambda: (r := page(path))[0] == 200 and r[1], "the report to be written", timeout_s=300)
    finally:
        gate.set()
        wiring.close(timeout_s=60)
    text = body.decode()
    assert "f1" in text and "data drift" in text and "classification quality on" in text
    assert _value(registry, "inferwatch_reports_total", outcome="written") == 1
    assert _value(registry, "inferwatch_report_build_seconds_count") == 1
    assert _value(registry, "inferwatch_reports_pending") == 0


def test_a_report_that_fails_serves_why_and_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.reports.process import ProcessBuilder

    def broken(self, *args):  # type: ignore[no-untyped-def]
        raise RuntimeError("evidently ran out of luck")

    monkeypatch.setattr(ProcessBuilder, "__call__", broken)
    channel, registry = MemoryChannel(), CollectorRegistry()
    wiring = _wiring(tmp_path, channel, registry)
    assert wiring.reports is not None
    page = report_page(wiring.reports.store)
    try:
        wiring.start()
        _drifted_window(wiring, registry)
        alert = wait_until(lambda: next((a for a in channel.alerts if a.status == "firing"), None), "the alert")
        path = alert.links["report"].split("9464", 1)[1]
        body = wait_until(lambda: (r := page(path))[0] == 500 and r[1], "the failure page")
    finally:
        wiring.close()
    assert b"RuntimeError: evidently ran out of luck" in body
    assert _value(registry, "inferwatch_reports_total", outcome="failed") == 1
    assert _value(registry, "inferwatch_reports_total", outcome="written") == 0


def _alerted(i: int, profile: Profile) -> tuple[list[Alert], AlertedWindow]:
    window_id = f"{MODEL}/{VERSION}@ev-0:{i * 100}"
    x = np.random.default_rng(i).normal(size=(100, len(FEATURES)))
    window = ClosedWindow(key=f"{MODEL}/{VERSION}", index=i, window_id=window_id, n=100,
                          columns={"numeric": x, "prediction": np.zeros(100, np.int64)}, first_time=0.0,
                          last_time=1.0, reason="full")
    result = WindowResult(window_id=window_id, model=MODEL, version=VERSION, index=i, n_events=100, first_time=0.0,
                          last_time=1.0, closed_by="full", training_run=None, results={})
    alert = Alert(id=uuid.uuid4().hex, fingerprint="f", status="firing", severity="warning", model=MODEL,
                  version=VERSION, detector="feature_drift", window=i, window_id=window_id, window_start=0.0,
                  window_end=1.0, started_at=0.0)
    return [alert], AlertedWindow(result, window)


def test_a_full_queue_drops_the_oldest_job_and_its_url_says_so(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path))
    gate, started = threading.Event(), threading.Event()
    built: list[str] = []

    def slow(profile: Profile, job: object, *_: int) -> bytes:
        started.set()
        assert gate.wait(60)
        built.append(job.name)  # type: ignore[attr-defined]
        return b"<html>ok</html>"

    registry = CollectorRegistry()
    hook = ReportHook(ReportStore(tmp_path / "r", 10, 1 << 20), {f"{MODEL}/{VERSION}": profile}, registry,
                      base_url="http://d", queue_size=1, builder=slow)
    page = report_page(hook.store)
    first = _alerted(0, profile)
    hook.fired(*first)
    wait_until(started.is_set, "the worker to take the first job")
    assert hook.backlog == 1 and _value(registry, "inferwatch_reports_pending") == 1
    for i in (1, 2):  # the worker is busy with window 0: window 1 waits, then window 2 pushes it out
        hook.fired(*_alerted(i, profile))
    assert _value(registry, "inferwatch_reports_total", outcome="dropped") == 1
    gate.set()
    hook.close(timeout_s=60)
    names = [report_name(_alerted(i, profile)[1].result.window_id) for i in range(3)]
    assert built == [names[0], names[2]]
    code, body, _ = page(f"/reports/{MODEL}/{VERSION}/{names[1]}.html")
    assert code == 500 and b"queue was full" in body
    assert page(f"/reports/{MODEL}/{VERSION}/{names[2]}.html")[0] == 200
    assert hook.links(first[0][0]) == {"report": f"http://d/reports/{MODEL}/{VERSION}/{names[0]}.html"}


# -- offline -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_drift_report_writes_the_same_report_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(4)
    names = np.array(["f0", "f1", "f2"])
    x_ref, x_cur = rng.normal(size=(3000, 3)), rng.normal(size=(1500, 3))
    x_cur[:, 2] += 1.5
    labels = rng.integers(0, 2, size=1500)
    predictions = np.where(rng.random(1500) < 0.9, labels, 1 - labels)
    np.savez(tmp_path / "ref.npz", X=x_ref, feature_names=names, predictions=rng.integers(0, 2, size=3000))
    np.savez(tmp_path / "cur.npz", X=x_cur, feature_names=names, predictions=predictions, labels=labels)
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    code = main(["drift", "--reference", str(tmp_path / "ref.npz"), "--current", str(tmp_path / "cur.npz"),
                 "--report", str(out)])
    printed = capsys.readouterr().out
    assert code == 1 and f"wrote the Evidently report to {out}" in printed and "drift in f2" in printed
    assert f"accuracy {np.mean(labels == predictions):.3f} on 1500 labels" in printed
    page = out.read_text(encoding="utf-8")
    assert "f2" in page and "classification quality on 1500" in page


def test_a_reports_dir_that_cannot_be_made_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"reports\.dir"):
        ReportHook.from_config(ReportsConfig(dir=str(tmp_path / "file" / "reports")), ServerConfig(), {},
                               CollectorRegistry())


@pytest.mark.slow
def test_the_report_process_sends_back_failures_and_survives_its_own_death(tmp_path: Path) -> None:
    from monitor.reports.process import ProcessBuilder, ReportProcessError
    from monitor.reports.worker import ReportJob

    profile = load_profile(write_profile(tmp_path))
    builder = ProcessBuilder({f"{MODEL}/{VERSION}": profile})
    wrong = ReportJob(model=MODEL, version=VERSION, name="w1", window_id="w1", features=np.zeros((50, 2)),
                      predictions=np.zeros(50, np.int64), labels=None)  # 2 columns where the profile has 4
    try:
        with pytest.raises(ReportProcessError, match=r"ReportError: features of shape \(50, 2\)"):  # from the child
            builder(profile, wrong, 500, 500)
        assert builder.started == 1
        good = ReportJob(model=MODEL, version=VERSION, name="w2", window_id="w2",
                         features=np.random.default_rng(1).normal(size=(200, 4)),
                         predictions=np.zeros(200, np.int64), labels=None)
        outcome: list[object] = []
        thread = threading.Thread(target=lambda: outcome.append(_call(builder, profile, good)))
        thread.start()
        process = wait_until(lambda: builder._process, "the report process")
        process.kill()  # killed for memory, say: only this job fails
        thread.join(DEADLINE_S)
        assert isinstance(outcome[0], ReportProcessError) and "died" in str(outcome[0])
        assert b"w2" in builder(profile, good, 500, 500)  # the next job starts another child
        assert builder.started == 2
    finally:
        builder.close()


def _call(builder: object, profile: object, job: object) -> object:
    try:
        return builder(profile, job, 500, 500)  # type: ignore[operator]
    except Exception as exc:
        return exc
