"""What each detector of a window result says, in one shape: for alert rules, logs and the demo."""

from __future__ import annotations

from monitor.detection import Finding
from monitor.evaluation import WindowResult

__all__ = ["Finding", "findings"]


def findings(r: WindowResult) -> list[Finding]:
    """One finding per detector that ran on this window (detectors without data are absent)."""
    return list(r.findings)
