"""A private Apache Kafka broker for the benchmarks that need one (``deploy/local/kafka.sh`` in a temporary
``KAFKA_RUN_DIR``), or the one given with ``--bootstrap``."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KAFKA_SH = Path(__file__).resolve().parents[1] / "deploy" / "local" / "kafka.sh"


@contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    """``bootstrap`` as given, or a private broker started and stopped with deploy/local/kafka.sh."""
    if bootstrap:
        yield bootstrap
        return
    run_dir = tempfile.mkdtemp(prefix="inferwatch-bench-kafka-")
    env = {**os.environ, "KAFKA_RUN_DIR": run_dir, "KAFKA_REUSE": "0"}
    env.pop("KAFKA_PORT", None)
    try:
        done = subprocess.run([str(KAFKA_SH), "start"], env=env, capture_output=True, text=True, timeout=240,
                              check=False)
        if done.returncode != 0:
            raise SystemExit(f"kafka.sh start failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        yield done.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([str(KAFKA_SH), "stop"], env=env, capture_output=True, timeout=60, check=False)
        shutil.rmtree(run_dir, ignore_errors=True)
