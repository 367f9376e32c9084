"""In-process capture around a torch image classifier.

The wrapper times the forward pass, computes a small per-sample summary of the input batch with a few
vectorised reductions, and hands detached tensors to the :class:`~collectors.producer.EventProducer`.
Turning tensors into events (softmax, ``tolist``, JSON) happens on the producer's thread, so the serving
thread pays for the summary and one non-blocking enqueue, never for I/O. Any failure in capture is
counted and logged, and the model's output is returned regardless (fail-open).

torch is imported lazily: importing :mod:`collectors` never requires it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from monitor.events import InferenceEvent, Latency

if TYPE_CHECKING:
    import torch

    from collectors.producer import EventProducer

log = logging.getLogger(__name__)

IMAGE_FEATURES: tuple[str, ...] = ("mean", "std", "min", "max", "dark_fraction", "bright_fraction", "edge_energy")


def require_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("this needs torch: pip install 'inferwatch[torch]'") from exc
    return torch


def image_summary(x: torch.Tensor) -> torch.Tensor:
    """Per-sample summary features of an image batch (B, C, H, W) or (B, H, W), in :data:`IMAGE_FEATURES` order.

    Intensities are summarised over all channels: mean, standard deviation, min, max, the fraction of
    pixels below 10% and above 90% of the batch-independent range [0, 1], and edge energy (mean absolute
    difference between neighbouring pixels, horizontally and vertically), which noise and blur move.
    Returns (B, 7) float32 on the input's device.
    """
    th = require_torch()
    if x.dim() == 3:
        x = x.unsqueeze(1)  # (B, 1, H, W)
    if x.dim() != 4:
        raise ValueError(f"image_summary expects (B, C, H, W) or (B, H, W), got shape {tuple(x.shape)}")
    x = x.detach().float()
    flat = x.flatten(1)  # (B, C*H*W)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)  # (B,)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)  # (B,)
    summary: torch.Tensor = th.stack([
        flat.mean(1), flat.std(1), flat.amin(1), flat.amax(1),
        (flat < 0.1).float().mean(1), (flat > 0.9).float().mean(1), (dx + dy) / 2,
    ], dim=1)  # (B, 7)
    return summary


@dataclass(frozen=True)
class _ClassifierCapture:
    """One forward pass, held as detached tensors until the producer thread converts it."""

    model: str
    version: str
    time: float
    latency_s: float
    device: str
    features: torch.Tensor  # (B, F)
    logits: torch.Tensor  # (B, K)
    feature_names: tuple[str, ...]
    request_ids: Sequence[str] | None
    attributes: dict[str, str]

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def events(self) -> list[InferenceEvent]:
        probs = self.logits.float().softmax(dim=1).cpu()  # (B, K)
        predictions = probs.argmax(dim=1).tolist()
        features = self.features.cpu().tolist()
        batch = len(predictions)
        ids = self.request_ids or [uuid.uuid4().hex for _ in range(batch)]
        latency = Latency(total_s=self.latency_s)
        return [
            InferenceEvent(request_id=ids[i], time=self.time, model=self.model, version=self.version,
                           task="classification", features=dict(zip(self.feature_names, features[i], strict=True)),
                           prediction=predictions[i], probabilities=[round(p, 6) for p in probs[i].tolist()],
                           latency=latency, batch_size=batch, device=self.device, attributes=self.attributes)
            for i in range(batch)
        ]


class ClassifierCollector:
    """Call it like the model: ``logits = collector(images)``.

    Parameters
    ----------
    model : the classifier (any callable returning logits of shape (B, K)).
    producer : where captures go.
    name, version : the model version events are keyed by.
    summarize : input batch -> (B, F) tensor of features; defaults to :func:`image_summary`.
    feature_names : names of the F summary columns.
    attributes : a bounded set of labels added to every event (pod, variant).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], producer: EventProducer, name: str,
                 version: str, summarize: Callable[[torch.Tensor], torch.Tensor] = image_summary,
                 feature_names: Sequence[str] = IMAGE_FEATURES, attributes: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.perf_counter, wall: Callable[[], float] = time.time) -> None:
        self.model = model
        self.producer = producer
        self.name = name
        self.version = version
        self.summarize = summarize
        self.feature_names = tuple(feature_names)
        self.attributes = dict(attributes or {})
        self.capture_errors = 0
        self._clock = clock
        self._wall = wall

    def __call__(self, x: torch.Tensor, request_ids: Sequence[str] | None = None) -> torch.Tensor:
        th = require_torch()
        started = self._clock()
        logits: torch.Tensor = self.model(x)
        latency = self._clock() - started
        try:
            with th.no_grad():
                features = self.summarize(x)
            self.producer.submit(_ClassifierCapture(
                model=self.name, version=self.version, time=self._wall(), latency_s=latency,
                device=str(x.device), features=features, logits=logits.detach(),
                feature_names=self.feature_names, request_ids=request_ids, attributes=self.attributes))
        except Exception:  # fail-open: serving goes on; the failure is counted and logged
            self.capture_errors += 1
            log.exception("capture failed for %s/%s; the prediction was returned unchanged", self.name,
                          self.version)
        return logits
