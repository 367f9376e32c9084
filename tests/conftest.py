"""Shared fixtures: one real Apache Kafka broker per test run, in a private run directory."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

KAFKA_SH = Path(__file__).resolve().parent.parent / "deploy" / "local" / "kafka.sh"
_START_TIMEOUT_S = 180  # includes a first-time jar fetch; the broker itself starts in ~5-10 s


def pytest_configure(config: pytest.Config) -> None:
    # kafka-python 3.0.12 loads its protocol schemas with the deprecated importlib.resources API.
    for message in ("read_text is deprecated", "open_text is deprecated"):
        config.addinivalue_line("filterwarnings", f"ignore:{message}:DeprecationWarning")


class KafkaBroker:
    """The test run's broker: ``deploy/local/kafka.sh`` driven with ``KAFKA_RUN_DIR=run_dir``.

    ``stop()`` and ``start()`` let chaos tests take the broker away and bring it back on the same port
    with the same data (``KAFKA_REUSE=1``), so clients can reconnect to :attr:`bootstrap`.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.bootstrap = ""

    def _run(self, command: str, reuse: bool = False) -> str:
        env = {**os.environ, "KAFKA_RUN_DIR": str(self.run_dir)}
        env.pop("KAFKA_PORT", None)
        env["KAFKA_REUSE"] = "1" if reuse else "0"
        try:
            done = subprocess.run(
                [str(KAFKA_SH), command],
                env=env,
                capture_output=True,
                text=True,
                timeout=_START_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
            pytest.fail(
                f"kafka.sh {command} timed out after {_START_TIMEOUT_S} s:\n{stderr or ''}", pytrace=False
            )
        if done.returncode != 0:
            pytest.fail(
                f"kafka.sh {command} failed (exit {done.returncode}), run dir {self.run_dir}:\n"
                f"stderr:\n{done.stderr}\nstdout:\n{done.stdout}",
                pytrace=False,
            )
        lines = done.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    def start(self) -> str:
        """Start the broker (first call: fresh; later calls: restart it with its data and port)."""
        address = self._run("start", reuse=bool(self.bootstrap))
        if self.bootstrap and address != self.bootstrap:
            pytest.fail(f"broker restarted at {address}, expected {self.bootstrap}", pytrace=False)
        if not address.startswith("127.0.0.1:"):
            pytest.fail(f"kafka.sh start printed no bootstrap address (got {address!r})", pytrace=False)
        self.bootstrap = address
        return address

    def stop(self) -> None:
        """Stop the broker cleanly (SIGTERM, SIGKILL after 30 s); a no-op if it is not running."""
        self._run("stop")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The broker of this test run, started once, stopped at the end; start failures fail loudly."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-run"))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """``127.0.0.1:PORT`` of this test run's broker."""
    return kafka_broker.bootstrap


@pytest.fixture
def broker(kafka_broker: KafkaBroker) -> Iterator[KafkaBroker]:
    """The session broker for a test that stops it (chaos, recovery): started again afterwards, whatever
    happened, so the tests after it find it up."""
    try:
        yield kafka_broker
    finally:
        kafka_broker.start()
