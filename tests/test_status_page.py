"""The status page on ``GET /``: watched models, their last windows with a verdict per detector, the alerts that
fire, with links; every value from events or config escaped; bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from monitor.alerts import Alert
from monitor.detection.base import Finding
from monitor.evaluation import DetectorFailure, WindowResult
from monitor.events import encode_batch
from monitor.status import StatusBoard, WatchedModelInfo
from tests.support import MODEL, VERSION, Daemon, events, running_daemon, wait_until


def _result(index: int, model: str = "digits", drifted: bool = False) -> WindowResult:
    return WindowResult(window_id=f"w{index}", model=model, version="3", index=index, n_events=200,
                        first_time=1_700_000_000.0 + index, last_time=1_700_000_060.0 + index, closed_by="full",
                        training_run=None, results={},
                        findings=(Finding("feature_drift", drifted, False, ("f1",) if drifted else (),
                                          "KS drift in f1" if drifted else "no drift"),
                                  Finding("prediction_drift", False, True, (), "too few predictions")),
                        failures=(DetectorFailure("embedding_drift", "ValueError: boom"),))


def _alert(**kw: object) -> Alert:
    fields: dict[str, object] = dict(id="a1", fingerprint="fp", status="firing", severity="critical", model="digits",
                                     version="3", detector="feature_drift", window=4, window_id="w4",
                                     window_start=1.0, window_end=2.0, started_at=1_700_000_100.0,
                                     summary="KS drift in f1",
                                     links={"dashboard": "", "report": "/reports/digits/3/w4.html", "snapshot": "",
                                            "training_run": "javascript:alert(1)"})
    fields.update(kw)
    return Alert(**fields)  # type: ignore[arg-type]


def test_the_page_shows_windows_verdicts_and_firing_alerts_with_their_links() -> None:
    board = StatusBoard([WatchedModelInfo("digits", "3", "digits.npz", "https://mlflow/runs/42")],
                        firing=lambda: [_alert()], dashboard_url="http://grafana/d/iw?var-model={model}")
    for i in range(3):
        board.add(_result(i, drifted=i == 2))
    page = board.page().decode()
    assert "digits/3" in page and "3 window(s) closed" in page
    assert page.index(">#2<") < page.index(">#1<") < page.index(">#0<")  # newest first
    assert '<td class="drift" title="KS drift in f1">drift</td>' in page
    assert '<td class="insufficient" title="too few predictions">insufficient</td>' in page
    assert '<td class="failed" title="ValueError: boom">failed</td>' in page
    assert "Alerts firing (1)" in page and '<a href="/reports/digits/3/w4.html">report</a>' in page
    assert 'href="https://mlflow/runs/42"' in page and 'href="http://grafana/d/iw?var-model=digits"' in page
    assert "javascript:" not in page  # a link that is not http(s) or site-relative never becomes an anchor
    assert "<script" not in page and "http://" not in page.split("<body>")[0]  # no external asset


def test_hostile_names_and_summaries_are_escaped_and_the_board_is_bounded() -> None:
    hostile = "<script>alert(1)</script>"
    board = StatusBoard([WatchedModelInfo("digits", "3", hostile)], keep=5,
                        firing=lambda: [_alert(summary=hostile, detector=hostile)])
    for i in range(50):
        board.add(_result(i))
    board.add(_result(99, model="unknown"))  # not a configured model: not shown, not kept
    page = board.page().decode()
    assert "<script>" not in page and "&lt;script&gt;" in page
    rows, counts, _ = board.snapshot()
    assert len(rows[("digits", "3")]) == 5 and counts[("digits", "3")] == 50 and ("unknown", "3") not in rows


def test_an_empty_daemon_says_so() -> None:
    page = StatusBoard([WatchedModelInfo("digits", "3", "p.npz")]).page().decode()
    assert "Nothing fires." in page and "No window has closed yet." in page and "no training run" in page


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path, "size: 300") as d:
        yield d


def test_the_daemon_serves_the_page_on_its_port(daemon: Daemon) -> None:
    code, body = daemon.request("GET", "/")
    assert code == 200 and b"No window has closed yet." in body
    rng = np.random.default_rng(3)
    for i, shift in enumerate((0.0, 2.0, 2.0)):
        batch = events(300, rng, shift=shift, start=1_700_000_000.0 + 1000 * i)
        assert daemon.request("POST", "/v1/events", encode_batch(batch), {"Content-Type": "application/json"})[0] == 202
    daemon.wait_metric("inferwatch_windows_closed_total", 3, model=MODEL, version=VERSION, reason="full")

    def firing_page() -> str | None:
        page = daemon.request("GET", "/")[1].decode()
        return page if "Alerts firing (1)" in page else None

    page = wait_until(firing_page, "the alert on the status page")
    assert f"{MODEL}/{VERSION}" in page and '<td class="drift"' in page and '<td class="ok"' in page
    assert daemon.metric("inferwatch_http_requests_total", path="/", code="200") >= 2


def test_pages_route_by_path_and_prefix_and_a_failing_page_answers_500() -> None:
    from prometheus_client import CollectorRegistry

    from monitor.server import DaemonServer

    def broken(path: str) -> tuple[int, bytes, str]:
        raise RuntimeError("no page today")

    server = DaemonServer("127.0.0.1", 0, CollectorRegistry(), ready=lambda: True,
                          pages={"/": lambda p: (200, b"home", "text/html"),
                                 "/reports/": lambda p: (200, p.encode(), "text/html"), "/broken": broken})
    server.start()
    try:
        d = Daemon(server.port)
        assert d.request("GET", "/") == (200, b"home")
        assert d.request("GET", "/reports/digits/3/w1.html?x=1") == (200, b"/reports/digits/3/w1.html")
        assert d.request("GET", "/reportsX")[0] == 404 and d.request("GET", "/index.html")[0] == 404
        assert d.request("GET", "/broken")[0] == 500
        assert d.request("GET", "/healthz")[0] == 200
    finally:
        server.close()
