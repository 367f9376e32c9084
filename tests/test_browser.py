"""Headless Chromium opens what a person looks at — the status page and an alert's report — with no console
errors; a screenshot of each lands in ``docs/`` when ``INFERWATCH_SCREENSHOTS=1`` (else in the test's folder)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from monitor.events import encode_batch
from tests.browser import CHROMIUM, Browser, PageVisit, chromium
from tests.support import MODEL, VERSION, Daemon, events, running_daemon, wait_until

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install chromium "
                                                          "(make test installs it)")]

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _save(visit: PageVisit, name: str, tmp_path: Path) -> Path:
    folder = DOCS if os.environ.get("INFERWATCH_SCREENSHOTS") == "1" else tmp_path
    path = folder / name
    path.write_bytes(visit.png)
    return path


def test_the_status_page_renders_without_console_errors(tmp_path: Path, browser: Browser) -> None:
    with running_daemon(tmp_path, "size: 300") as daemon:
        rng = np.random.default_rng(3)
        for i, shift in enumerate((0.0, 0.0, 2.0, 2.0)):
            batch = events(300, rng, shift=shift, start=1_700_000_000.0 + 1000 * i)
            assert daemon.request("POST", "/v1/events", encode_batch(batch),
                                  {"Content-Type": "application/json"})[0] == 202
        daemon.wait_metric("inferwatch_windows_closed_total", 4, model=MODEL, version=VERSION, reason="full")
        visit = _visit_until(browser, daemon, "Alerts firing (1)")
    assert visit.errors == []
    assert f"{MODEL}/{VERSION}" in visit.text and "4 window(s) closed" in visit.text
    assert "feature_drift" in visit.text and "drift" in visit.text
    assert _save(visit, "status-page.png", tmp_path).stat().st_size > 10_000  # a page, not a blank image


def _visit_until(browser: Browser, daemon: Daemon, text: str) -> PageVisit:
    return wait_until(lambda: v if text in (v := browser.visit(f"http://127.0.0.1:{daemon.port}/")).text else None,
                      f"{text!r} on the status page")


def test_an_alerts_report_renders_its_drift_table_without_console_errors(tmp_path: Path, browser: Browser) -> None:
    pytest.importorskip("evidently", reason="reports need inferwatch[reports]")
    with running_daemon(tmp_path, "size: 300", extra=f"reports: {{dir: '{tmp_path / 'reports'}'}}") as daemon:
        rng = np.random.default_rng(3)
        for i, shift in enumerate((0.0, 2.0, 2.0)):
            batch = events(300, rng, shift=shift, start=1_700_000_000.0 + 1000 * i)
            assert daemon.request("POST", "/v1/events", encode_batch(batch),
                                  {"Content-Type": "application/json"})[0] == 202
        status = _visit_until(browser, daemon, "Alerts firing (1)")
        assert "report" in status.text
        page = daemon.request("GET", "/")[1].decode()
        link = _report_link(page)
        wait_until(lambda: daemon.request("GET", link)[0] == 200, "the report to be written", timeout_s=300)
        # Evidently renders the report in the page's own script: wait for its drift table to be drawn
        visit = browser.visit(f"http://127.0.0.1:{daemon.port}{link}", timeout_s=120,
                              settle="document.body.innerText.includes('f1') && "
                                     "document.body.innerText.toLowerCase().includes('drift')")
    assert visit.errors == []
    assert re.search(r"\bf1\s+num\s+Detected\b", visit.text), visit.text[:2000]  # the shifted feature's row
    assert not re.search(r"\bf0\s+num\s+Detected\b", visit.text)
    assert _save(visit, "report.png", tmp_path).stat().st_size > 10_000


def _report_link(page: str) -> str:
    """The site-relative path of the first report link on the status page."""
    found = re.search(r'href="https?://[^/"]+(/reports/[^"]+\.html)"', page)
    assert found, "no report link on the status page"
    return found.group(1)
