"""``inferwatch demo``: the demo models and the drivers that serve them under watch.

The CNN demo (:mod:`monitor.demo.cnn`) trains a small CNN on scikit-learn's digits and serves it through the
in-process collector; the LLM demo (:mod:`monitor.demo.llm`) serves a character-level GPT
(:mod:`monitor.demo.charlm`, trained on :mod:`monitor.demo.shakespeare`) from an OpenAI-compatible server
(:mod:`monitor.demo.llm_server`) through the HTTP sidecar. Both are watched by the same pipeline as
``inferwatch run`` (:func:`monitor.wiring.build_pipeline`).

The demo uses every other package; nothing but the CLI imports it. It needs ``inferwatch[torch]``.
"""

from __future__ import annotations

from monitor.demo.cnn import DemoAlert, DemoReport, DemoWindow, format_report, run_demo
from monitor.demo.llm import LLMDemoReport, LLMWindow, format_llm_report, run_llm_demo

__all__ = [
    "DemoAlert",
    "DemoReport",
    "DemoWindow",
    "LLMDemoReport",
    "LLMWindow",
    "format_llm_report",
    "format_report",
    "run_demo",
    "run_llm_demo",
]
