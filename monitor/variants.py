"""Versions of one model served side by side (A/B, canary): which version is compared with which, what is kept of
each peer's last closed window, and which events say another variant than their version's.

The pipeline asks :class:`VariantWatch` for the peer window of a version whose window closed (its
``variant_comparison`` detector compares the two, :mod:`monitor.detection.variant_comparison`) and hands it every
closed window; only windows of versions that some version is compared with are kept, one per such version, as a
bounded copy (:func:`peer_window`): memory is ``max_rows`` rows per watched peer, whatever the window size.

>>> from monitor.config import ModelConfig
>>> models = [ModelConfig(name="m", version="1", profile="p", variant="control"),
...           ModelConfig(name="m", version="2", profile="p", variant="canary")]
>>> watch = VariantWatch(models, {"m/1": (("x",), ()), "m/2": (("x",), ())}, max_rows=100)
>>> watch.peer_version("m/2"), watch.peer_version("m/1")  # the control is compared with nothing
('1', None)
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from monitor.config import ModelConfig, variant_peers
from monitor.detection import PeerWindow
from monitor.events import InferenceEvent
from monitor.windows import ClosedWindow

__all__ = ["MISMATCH_REASONS", "VariantWatch", "peer_window"]

#: Why an event's ``attributes["variant"]`` disagrees with its version's configured variant: it names the variant
#: of another configured version of the model (traffic labelled for one version but reporting another), or a
#: variant no version of the model has.
MISMATCH_REASONS = ("other_variant", "unknown_variant")


def peer_window(window: ClosedWindow, names: Sequence[str], class_labels: Sequence[str],
                max_rows: int) -> PeerWindow:
    """What is kept of a closed window to compare a peer's next window with: at most ``max_rows`` rows (a uniform
    sample without replacement, seeded by the window id, so a replayed window keeps the same rows) of its
    features and total latencies, copied, and its predicted-class counts over all its rows."""
    n = window.n
    rows = np.arange(n) if n <= max_rows else \
        np.sort(np.random.default_rng(zlib.crc32(window.window_id.encode())).choice(n, max_rows, replace=False))
    features = np.array(window.features[rows], dtype=np.float64)  # (k, F) a copy, never the window's buffer
    latency = np.array(window.columns["latency"][rows, 0], dtype=np.float64)  # (k,)
    latency = latency[np.isfinite(latency)]
    predictions = window.predictions
    counts = np.bincount(predictions, minlength=len(class_labels)) if class_labels and predictions.size \
        else np.empty(0, dtype=np.int64)  # (K,)
    for array in (features, latency, counts):
        array.setflags(write=False)
    return PeerWindow(version=window.key.rsplit("/", 1)[1], window_id=window.window_id, n=n,
                      first_time=window.first_time, last_time=window.last_time, names=tuple(names),
                      features=features, class_labels=tuple(class_labels), class_counts=counts, latency=latency)


class VariantWatch:
    """The comparisons of the configured versions (:func:`monitor.config.variant_peers`) and the last closed window
    of every version some other version is compared with.

    Parameters
    ----------
    models : the configured models.
    columns : per model key, the profile's numeric feature names and class labels (the peer's names travel with
        its window, so versions that add or drop a feature are compared on the features they share).
    max_rows : rows kept of a peer's window (``detect.variants.max_rows``).
    """

    def __init__(self, models: Sequence[ModelConfig], columns: Mapping[str, tuple[Sequence[str], Sequence[str]]],
                 max_rows: int) -> None:
        self.peers = variant_peers(list(models))  # compared key -> peer key
        self._columns = {key: columns[key] for key in set(self.peers.values())}
        self._max_rows = max_rows
        self._last: dict[str, PeerWindow] = {}
        self._variant = {m.key: m.variant for m in models if m.variant is not None}
        self._variants = {m.name: {o.variant for o in models if o.name == m.name and o.variant is not None}
                          for m in models}

    def peer_version(self, key: str) -> str | None:
        """The version ``key``'s windows are compared with, or None."""
        peer = self.peers.get(key)
        return None if peer is None else peer.rsplit("/", 1)[1]

    def peer_window(self, key: str) -> PeerWindow | None:
        """The last closed window of ``key``'s peer version (None: not compared, or no peer window yet)."""
        peer = self.peers.get(key)
        return None if peer is None else self._last.get(peer)

    def closed(self, window: ClosedWindow) -> None:
        """Keep a bounded copy of ``window`` when another version is compared with its version."""
        columns = self._columns.get(window.key)
        if columns is not None:
            self._last[window.key] = peer_window(window, columns[0], columns[1], self._max_rows)

    def variant(self, key: str) -> str | None:
        """The configured variant of the version ``key``."""
        return self._variant.get(key)

    def mismatch(self, event: InferenceEvent) -> str | None:
        """Why the event's ``variant`` attribute disagrees with its version's configured variant
        (:data:`MISMATCH_REASONS`), or None: it agrees, it says none, or the version has no variant."""
        configured = self._variant.get(event.key)
        said = event.attributes.get("variant")
        if configured is None or said is None or said == configured:
            return None
        return "other_variant" if said in self._variants.get(event.model, ()) else "unknown_variant"
