"""Evidently reports on alerting windows: built off the detection thread, kept on disk, served by the daemon.

* :mod:`~monitor.reports.evidently_report` — frames from profiles and windows, and the report itself (imports
  pandas and evidently on first use only).
* :mod:`~monitor.reports.store` — the reports directory: safe names, atomic writes, retention.
* :mod:`~monitor.reports.worker` — the alert hook and its worker, and the page handler.

Importing this package imports neither pandas nor evidently.
"""

from monitor.reports.store import ReportNameError, ReportStatus, ReportStore, report_name, safe_name
from monitor.reports.worker import ReportHook, ReportJob, ReportMetrics, default_base_url, report_page, window_sample

__all__ = ["ReportHook", "ReportJob", "ReportMetrics", "ReportNameError", "ReportStatus", "ReportStore",
           "default_base_url", "report_name", "report_page", "safe_name", "window_sample"]
