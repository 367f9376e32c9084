"""Reference profiles built from somewhere other than a data file: captured traffic (a JSON-lines file or a Kafka
topic range) and training runs (MLflow, W&B, a folder). ``inferwatch baseline --from-events`` and
``--from-run`` call these; ``--data`` is :func:`monitor.offline.build_profile`."""

from __future__ import annotations

from monitor.baselines.from_events import Captured, capture_rows, profile_from_events, read_events
from monitor.baselines.from_run import RunBaseline, baseline_from_run, choose_artifact

__all__ = ["Captured", "RunBaseline", "baseline_from_run", "capture_rows", "choose_artifact", "profile_from_events",
           "read_events"]
