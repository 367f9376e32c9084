"""``inferwatch_build_info``: which inferwatch and which Python a process runs, on the daemon's and the
sidecar's registries alike.

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> _ = build_info(registry)
>>> from monitor import __version__
>>> import platform
>>> registry.get_sample_value("inferwatch_build_info", {"version": __version__,
...                                                     "python": platform.python_version()})
1.0
"""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Info

from monitor import __version__

__all__ = ["build_info"]


def build_info(registry: CollectorRegistry) -> Info:
    """Make ``inferwatch_build_info{version, python} 1`` on ``registry``."""
    info = Info("inferwatch_build", "1, labelled with the inferwatch version and the Python version.",
                registry=registry)
    info.info({"version": __version__, "python": platform.python_version()})
    return info
