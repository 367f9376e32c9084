"""inferwatch: capture inference events beside deployed models, detect drift, alert."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
