"""A real MLflow tracking server for tests: ``mlflow server`` with a sqlite backend and a local artifact root on
127.0.0.1 (artifacts proxied through the server, as a shared deployment serves them).

Use it from a test module with ``from tests.mlflow_server import mlflow_server  # noqa: F401`` and a test
argument ``mlflow_server`` (the server's base URL, ``http://127.0.0.1:PORT``). One server per test module;
tests that need the ``mlflow`` command are skipped with the reason when it is not installed."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, wait_until

#: ``mlflow server`` starts in ~7 s alone; CI shares two cores with other work, so allow far more.
START_DEADLINE_S = 240.0


def mlflow_command() -> str | None:
    """The ``mlflow`` command of this interpreter's environment (the test extra installs it), else PATH's."""
    beside = Path(sys.executable).with_name("mlflow")
    return str(beside) if beside.exists() else shutil.which("mlflow")


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
        return bool(response.status == 200)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``mlflow server`` on a free port, yield its URL once /health answers, stop it at the end."""
    command = mlflow_command()
    if command is None:
        pytest.skip("needs the `mlflow` command (the tracking server): pip install -e '.[test]'")
    folder = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        [command, "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # its own group: it forks uvicorn
    try:
        # An exited server ends the wait at once instead of at the deadline.
        wait_until(lambda: process.poll() is not None or _healthy(url), f"mlflow server on {url} to answer /health",
                   timeout_s=START_DEADLINE_S, interval_s=0.5)
        if process.poll() is not None:
            raise AssertionError(f"mlflow server exited with {process.returncode}: "
                                 + (folder / "server.log").read_text(errors="replace")[-2000:])
        yield url
    finally:
        # `mlflow server` runs uvicorn as a child: signal the whole group this fixture started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        log.close()
