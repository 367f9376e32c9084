"""Headless Chromium (Debian ``chromium``) driven over the DevTools protocol: open a page, wait until it has
loaded and rendered, collect every console error and uncaught exception, read the rendered text and take a
screenshot. No driver package: the protocol's JSON over one WebSocket (``websockets``' sync client)."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import DEADLINE_S, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageVisit:
    """What a visit saw: console errors (``console.error`` calls, uncaught exceptions, failed loads), the
    rendered text of the body, and a PNG screenshot."""

    url: str
    errors: list[str] = field(default_factory=list)
    text: str = ""
    png: bytes = b""


class Browser:
    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self._process = process
        self.port = port

    def visit(self, url: str, settle: str = "true", width: int = 1280, height: int = 900,
              timeout_s: float = DEADLINE_S) -> PageVisit:
        """Open ``url`` in a new tab; when it has loaded, wait until the JavaScript expression ``settle`` is true
        (a page that renders after load, like Evidently's), then read its text and screenshot it."""
        from websockets.sync.client import connect

        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            target = json.loads(response.read())
        visit = PageVisit(url)
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            session = _Session(ws, visit)
            for domain in ("Page", "Runtime", "Log"):
                session.call(f"{domain}.enable")
            session.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                         mobile=False)
            session.call("Page.navigate", url=url)
            session.wait_event("Page.loadEventFired", timeout_s)
            deadline = time.monotonic() + timeout_s
            while not session.evaluate(f"Boolean({settle})"):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{url}: {settle} did not become true within {timeout_s:.0f} s")
                session.pump(0.2)
            session.pump(0.5)  # late errors of the last render
            visit.text = str(session.evaluate("document.body.innerText"))
            shot = session.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            visit.png = base64.b64decode(shot["data"])
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/close/{target['id']}", timeout=5).close()
        return visit


class _Session:
    def __init__(self, ws: Any, visit: PageVisit) -> None:
        self._ws = ws
        self._visit = visit
        self._next = 0
        self._events: list[str] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=DEADLINE_S))
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._event(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_event(self, method: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while method not in self._events:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self._visit.url}: no {method} within {timeout_s:.0f} s")
            self.pump(0.2)

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                self._event(json.loads(self._ws.recv(timeout=left)))
            except TimeoutError:
                return

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method", ""), message.get("params", {})
        self._events.append(method)
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self._visit.errors.append("console.error: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self._visit.errors.append("exception: " + str(details.get("exception", {}).get("description")
                                                          or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self._visit.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium with a private profile, listening for DevTools on a port of its choosing."""
    assert CHROMIUM is not None, "chromium is not installed (apt-get install chromium; make test installs it)"
    with tempfile.TemporaryDirectory(prefix="inferwatch-chromium-") as profile:
        process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = Path(profile) / "DevToolsActivePort"
        try:
            port = int(wait_until(lambda: active.exists() and active.read_text().split("\n", 1)[0],
                                  "Chromium's DevTools port"))
            yield Browser(process, port)
        finally:
            process.terminate()
            try:
                process.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
