"""The one protocol every detector of a window implements, and the shapes it deals in.

A detector is a small class in its own module of this package:

* ``name``: what findings, metrics, alert rules and the results topic call it (``"feature_drift"``);
* ``needs``: the window columns it reads (``"numeric"``, ``"codes"``, ``"prediction"``, ``"probs"``,
  ``"embedding"``, ``"llm"``, ``"latency"``; ``"labels"`` and ``"acceptances"`` for joined feedback);
* ``build(model)``: an instance for one watched model, or None when the model's profile or the config gives it
  nothing to do (no embeddings in the profile, no SLO configured, ...);
* ``evaluate(inputs)``: the window and the reference in, a frozen result out (or None: no data this window);
* ``finding(result)``: what the result says, in the one shape alert rules, logs and printers read;
* ``samples(result)``: the values of its Prometheus gauges (declared in ``gauges``);
* ``details(result)``: lines a printer shows under the finding (a per-feature table, say);
* ``state()`` / ``restore(state)``: for a detector that carries something from window to window (a CUSUM, SLO
  burn-rate buckets), that state as plain JSON values and back, so that a restarted or rebalanced detector process
  goes on exactly where the last one stopped (the pipeline stores it with each window result).

:class:`DetectorBase` gives the optional parts (no gauges, no samples, no details, no state) their defaults.

The registry (:mod:`monitor.detection.registry`) lists the detector classes; :class:`~monitor.evaluation.WatchedModel`,
the offline ``drift`` command, the metrics export and the printers iterate over it. Adding a detector is one new
module and one line in the registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import numpy as np

from monitor.config import DetectConfig, WindowConfig
from monitor.profiles import Profile
from monitor.windows import ClosedWindow

__all__ = [
    "Detector",
    "DetectorBase",
    "DetectorClass",
    "Finding",
    "GaugeSpec",
    "Inputs",
    "JoinedFeedback",
    "ModelContext",
    "PeerWindow",
    "Sample",
]

R = TypeVar("R")


@dataclass(frozen=True)
class Evidence:
    """One feature's (or the model's, ``feature=""``) numbers behind a finding."""

    feature: str
    statistic: str  # what ``value`` is, e.g. "ks", "chi2", "p95_latency_s"
    value: float
    threshold: float | None = None  # the bound ``value`` (or the p-value) is compared with
    p_value: float | None = None
    effect: float | None = None
    effect_name: str = ""  # e.g. "wasserstein_sd", "cohens_h"


@dataclass(frozen=True)
class Finding:
    """What one detector says about one window: for alert rules, logs, the demo and ``inferwatch drift``."""

    detector: str
    drifted: bool
    insufficient: bool
    features: tuple[str, ...]
    summary: str
    evidence: tuple[Evidence, ...] = ()  # the numbers behind it, per feature, for alerts


@dataclass(frozen=True)
class GaugeSpec:
    """A Prometheus gauge a detector sets; it is labelled ``model``, ``version`` and then ``labels``.

    ``type="summary"`` is for quantiles of the last window: ``labels`` then ends with ``quantile`` (a label
    Prometheus reserves for summaries), and the metric is exposed as a summary of quantile samples only, without
    ``_sum`` and ``_count`` (the per-event histograms hold those)."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    type: Literal["gauge", "summary"] = "gauge"

    def __post_init__(self) -> None:
        if (self.type == "summary") != (self.labels[-1:] == ("quantile",)):
            raise ValueError(f"gauge {self.name}: the label 'quantile' must come last, and only in a summary")


@dataclass(frozen=True)
class Sample:
    """One value of a detector's gauge for the last window; ``labels`` in the gauge's ``labels`` order."""

    gauge: str
    value: float
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelContext:
    """What a detector may know about the model it watches: its profile and its config sections."""

    profile: Profile
    detect: DetectConfig
    window: WindowConfig
    peer: str | None = None  # the version this one's windows are compared with (models[].variant, compare_with)

    @property
    def n_classes(self) -> int:
        return len(self.profile.class_labels)


@dataclass
class JoinedFeedback:
    """Feedback joined to its inference since the last evaluation; the newest ``limit`` of each are kept."""

    limit: int
    y_true: list[int] = field(default_factory=list)
    y_pred: list[int] = field(default_factory=list)
    accepted: list[bool] = field(default_factory=list)

    def add_labels(self, y_true: Sequence[int], y_pred: Sequence[int]) -> None:
        self.y_true.extend(y_true)
        self.y_pred.extend(y_pred)
        del self.y_true[: -self.limit], self.y_pred[: -self.limit]

    def add_accepted(self, accepted: Sequence[bool]) -> None:
        self.accepted.extend(accepted)
        del self.accepted[: -self.limit]


@dataclass(frozen=True, eq=False)
class PeerWindow:
    """What is kept of the last closed window of a peer version (A/B, canary) to compare the next window of the
    version that watches it with: a bounded, read-only copy (a seeded uniform sample of at most ``max_rows`` rows
    of its features and latencies; class counts of the whole window), never the window's own buffers.

    ``features`` is (k, F) in ``names`` order (the peer profile's), ``class_counts`` (K,) in ``class_labels``
    order (empty without predictions), ``latency`` (j,) total latencies of the sampled rows that measured one."""

    version: str
    window_id: str
    n: int
    first_time: float
    last_time: float
    names: tuple[str, ...]
    features: np.ndarray
    class_labels: tuple[str, ...]
    class_counts: np.ndarray
    latency: np.ndarray


@dataclass(frozen=True)
class Inputs:
    """What a detector's ``evaluate`` gets: the closed window, joined feedback, and the results of the detectors
    evaluated before it on the same window (registry order), e.g. slow drift reads feature drift's; for a version
    compared with a peer, the peer's last closed window (None when none has closed yet)."""

    window: ClosedWindow
    feedback: JoinedFeedback
    earlier: Mapping[str, object]
    peer: PeerWindow | None = None

    def column(self, name: str) -> np.ndarray | None:
        """Rows of a column for the events that carried it (see :meth:`ClosedWindow.present`)."""
        return self.window.present(name)


class Detector(Protocol[R]):
    """One detector of one watched model (see the module docstring)."""

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]
    gauges: ClassVar[tuple[GaugeSpec, ...]]

    def evaluate(self, inputs: Inputs) -> R | None: ...

    @staticmethod
    def finding(result: R) -> Finding | None: ...

    @staticmethod
    def samples(result: R) -> Iterable[Sample]: ...

    @staticmethod
    def details(result: R) -> list[str]: ...

    def state(self) -> Any:
        """What this detector carries to its next window, as JSON values; None when nothing."""
        ...

    def restore(self, state: Any) -> None:
        """Continue from what :meth:`state` gave (in another process, maybe)."""
        ...


class DetectorClass(Protocol):
    """The class side of a detector: what the registry holds."""

    @property
    def name(self) -> str: ...

    @property
    def needs(self) -> tuple[str, ...]: ...

    @property
    def gauges(self) -> tuple[GaugeSpec, ...]: ...

    @classmethod
    def build(cls, model: ModelContext) -> Detector[Any] | None: ...

    @staticmethod
    def finding(result: Any) -> Finding | None: ...

    @staticmethod
    def samples(result: Any) -> Iterable[Sample]: ...

    @staticmethod
    def details(result: Any) -> list[str]: ...


class DetectorBase:
    """Defaults for the optional parts of :class:`Detector`."""

    gauges: ClassVar[tuple[GaugeSpec, ...]] = ()

    @staticmethod
    def samples(result: Any) -> Iterable[Sample]:
        return ()

    @staticmethod
    def details(result: Any) -> list[str]:
        return []

    def state(self) -> Any:
        return None

    def restore(self, state: Any) -> None:
        return None
