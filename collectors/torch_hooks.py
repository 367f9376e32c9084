"""In-process capture around a torch image classifier.

The wrapper times the forward pass (wall time, and GPU time from CUDA events on a GPU: see
:mod:`collectors.timing`), computes a small per-sample summary of the input batch with a few vectorised
reductions, optionally keeps a sampled penultimate-layer embedding (a forward hook on a named submodule) and a
sampled raw input (:class:`~collectors.redaction.PayloadPolicy`), and hands detached tensors to the
:class:`~collectors.producer.EventProducer`. Turning tensors into events (resolving GPU time, softmax,
``tolist``, base64, JSON) happens on the producer's thread, so the serving thread pays for the summary,
the sampled row copies and one non-blocking enqueue, never for I/O or a GPU synchronisation. Any failure in
capture is counted and logged, and the model's output is returned regardless (fail-open).

torch is imported lazily: importing :mod:`collectors` never requires it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter

from collectors.redaction import BernoulliSampler, PayloadPolicy
from collectors.timing import DeviceTimer, Timing
from monitor.events import MAX_EMBEDDING, GpuStats, InferenceEvent, Latency, Payload

if TYPE_CHECKING:
    import torch

    from collectors.gpu import GpuSampler
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
class HookMetrics:
    """Counters shared by the in-process hooks (make one set per registry with :func:`hook_metrics`)."""

    capture_errors: Counter
    gpu_timings: Counter
    embeddings: Counter


def hook_metrics(registry: CollectorRegistry | None) -> HookMetrics:
    """The hooks' counters on ``registry`` (None: unregistered counters, for a collector nobody scrapes)."""
    m = HookMetrics(
        capture_errors=Counter("inferwatch_collector_capture_errors_total",
                               "Captures that failed on the serving thread (the model's output was returned).",
                               ("model",), registry=registry),
        gpu_timings=Counter("inferwatch_collector_gpu_timings_total",
                            "CUDA event pairs resolved on the producer thread, by outcome; unresolved ones "
                            "missed the deadline and their events carry no gpu_s.", ("outcome",),
                            registry=registry),
        embeddings=Counter("inferwatch_collector_embeddings_sampled_total", "Events that carry an embedding.",
                           registry=registry),
    )
    for outcome in ("resolved", "unresolved"):
        m.gpu_timings.labels(outcome=outcome)
    return m


@dataclass(frozen=True)
class DeviceContext:
    """What the producer thread needs to finish a capture's latency and GPU fields."""

    metrics: HookMetrics
    gpu_timeout_s: float
    clock: Callable[[], float]
    gpu_sampler: GpuSampler | None

    def resolve(self, timing: Timing) -> tuple[float | None, GpuStats | None]:
        """GPU seconds of ``timing`` (None on the CPU or past the deadline) and the GPU's latest NVML sample.

        After this, the call's output tensors are safe to read from the calling thread's stream.
        """
        gpu_s = None
        if timing.gpu is not None:
            gpu_s = timing.gpu.resolve(timing.ended_at + self.gpu_timeout_s, clock=self.clock)
            self.metrics.gpu_timings.labels(outcome="unresolved" if gpu_s is None else "resolved").inc()
            timing.gpu.wait()  # the outputs were written on the serving thread's stream
        index = timing.gpu_index
        stats = self.gpu_sampler.latest(index) if self.gpu_sampler is not None and index is not None else None
        return gpu_s, stats


@dataclass(frozen=True)
class _ClassifierCapture:
    """One forward pass, held as detached tensors until the producer thread converts it."""

    model: str
    version: str
    time: float
    timing: Timing
    features: torch.Tensor  # (B, F)
    logits: torch.Tensor  # (B, K)
    feature_names: tuple[str, ...]
    request_ids: Sequence[str] | None
    attributes: dict[str, str]
    context: DeviceContext
    embedding_rows: Sequence[int] = ()
    embeddings: torch.Tensor | None = None  # (len(embedding_rows), D)
    payload_rows: Sequence[int] = ()
    inputs: torch.Tensor | None = None  # (len(payload_rows), ...) copies of the sampled inputs
    payload: PayloadPolicy | None = None

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    def events(self) -> list[InferenceEvent]:
        gpu_s, gpu = self.context.resolve(self.timing)
        probs = self.logits.float().softmax(dim=1).cpu()  # (B, K)
        predictions = probs.argmax(dim=1).tolist()
        features = self.features.cpu().tolist()
        batch = len(predictions)
        ids = self.request_ids or [uuid.uuid4().hex for _ in range(batch)]
        embedding: dict[int, list[float]] = {}
        if self.embeddings is not None:
            embedding = dict(zip(self.embedding_rows, self.embeddings.float().cpu().tolist(), strict=True))
            self.context.metrics.embeddings.inc(len(embedding))
        payloads: dict[int, Payload] = {}
        if self.inputs is not None and self.payload is not None:
            # raw input as little-endian C-order bytes of the sample's tensor (dtype and shape as served)
            rows = self.inputs.cpu().contiguous()  # (P, ...)
            payloads = {i: self.payload.build(input_bytes=rows[j].numpy().tobytes())
                        for j, i in enumerate(self.payload_rows)}
        latency = Latency(total_s=self.timing.total_s, gpu_s=gpu_s)
        return [
            InferenceEvent(request_id=ids[i], time=self.time, model=self.model, version=self.version,
                           task="classification", features=dict(zip(self.feature_names, features[i], strict=True)),
                           embedding=embedding.get(i), prediction=predictions[i],
                           probabilities=[round(p, 6) for p in probs[i].tolist()], latency=latency,
                           batch_size=batch, device=self.timing.device, gpu=gpu, payload=payloads.get(i),
                           attributes=self.attributes)
            for i in range(batch)
        ]


class ClassifierCollector:
    """Call it like the model: ``logits = collector(images)``.

    Parameters
    ----------
    model : the classifier (any callable returning logits of shape (B, K); an ``nn.Module`` when
        ``embedding_layer`` is given).
    producer : where captures go.
    name, version : the model version events are keyed by.
    summarize : input batch -> (B, F) tensor of features; defaults to :func:`image_summary`.
    feature_names : names of the F summary columns.
    attributes : a bounded set of labels added to every event (pod, variant).
    clock, wall : monotonic clock for latency, wall clock for event time.
    embedding_layer : dotted name of a submodule (``model.get_submodule``) whose output, flattened per sample,
        becomes the event's ``embedding``: typically the penultimate layer. None: no embeddings.
    embedding_sample_rate : fraction of samples (not batches) that carry an embedding, chosen by a generator
        seeded with ``seed``.
    payload : raw-input capture policy; None (or a zero rate) captures no input.
    gpu_sampler : NVML sampler whose latest reading of the serving GPU is attached to events.
    gpu_timeout_s : how long after the call the producer thread waits for its CUDA events.
    metrics : counters from :func:`hook_metrics`; unregistered ones by default.

    Examples
    --------
    >>> import torch
    >>> from collectors.producer import EventProducer
    >>> from monitor.transport import MemoryBus
    >>> producer = EventProducer(MemoryBus().producer(), "events")
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
    ...                             torch.nn.Linear(16, 10))
    >>> collector = ClassifierCollector(model, producer, "digits", "1", embedding_layer="2")
    >>> collector(torch.rand(4, 1, 8, 8)).shape
    torch.Size([4, 10])
    >>> producer.close()
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], producer: EventProducer, name: str,
                 version: str, summarize: Callable[[torch.Tensor], torch.Tensor] = image_summary,
                 feature_names: Sequence[str] = IMAGE_FEATURES, attributes: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.perf_counter, wall: Callable[[], float] = time.time, *,
                 embedding_layer: str | None = None, embedding_sample_rate: float = 1.0, seed: int = 0,
                 payload: PayloadPolicy | None = None, gpu_sampler: GpuSampler | None = None,
                 gpu_timeout_s: float = 1.0, metrics: HookMetrics | None = None) -> None:
        if gpu_timeout_s < 0:
            raise ValueError(f"gpu_timeout_s must be >= 0, got {gpu_timeout_s}")
        self.model = model
        self.producer = producer
        self.name = name
        self.version = version
        self.summarize = summarize
        self.feature_names = tuple(feature_names)
        self.attributes = dict(attributes or {})
        self.embedding_layer = embedding_layer
        self.embedding_sample_rate = embedding_sample_rate
        self.payload = payload
        self.metrics = metrics if metrics is not None else hook_metrics(None)
        self.metrics.capture_errors.labels(model=name)
        self.capture_errors = 0
        self._clock = clock
        self._wall = wall
        self._timer = DeviceTimer(clock)
        self._context = DeviceContext(self.metrics, gpu_timeout_s, clock, gpu_sampler)
        self._embedding_sampler = BernoulliSampler(embedding_sample_rate, seed)
        self._slot = threading.local()  # the hooked layer's output, per serving thread
        self._hook: Any = None
        if embedding_layer is not None:
            get_submodule = getattr(model, "get_submodule", None)
            if get_submodule is None:
                raise TypeError(f"embedding_layer={embedding_layer!r} needs a torch.nn.Module model, "
                                f"got {type(model).__name__}")
            try:
                layer = get_submodule(embedding_layer)
            except AttributeError as exc:
                raise ValueError(f"embedding_layer={embedding_layer!r} is not a submodule of the model") from exc
            self._hook = layer.register_forward_hook(self._keep_output)

    def _keep_output(self, module: Any, args: Any, output: Any) -> None:
        # Copy the sampled rows now: a later in-place op (ReLU(inplace=True)) may overwrite the layer's output.
        rows = getattr(self._slot, "rows", None)
        if rows:
            out = output[0] if isinstance(output, tuple) else output
            self._slot.output = out.detach().flatten(1)[rows]  # (E, D)

    def close(self) -> None:
        """Remove the embedding hook from the model."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def __call__(self, x: torch.Tensor, request_ids: Sequence[str] | None = None) -> torch.Tensor:
        th = require_torch()
        slot = self._slot
        embedding_rows = self._embedding_sampler.take(int(x.shape[0])) if self._hook is not None else []
        slot.rows, slot.output = embedding_rows, None
        started = self._timer.begin(x.device)
        try:
            logits: torch.Tensor = self.model(x)
        finally:
            slot.rows = None
        timing = self._timer.end(started)
        try:
            with th.no_grad():
                features = self.summarize(x)  # (B, F)
                embeddings = None
                if embedding_rows:
                    embeddings = slot.output  # (E, D), copied by the hook
                    if embeddings is None:
                        raise RuntimeError(f"layer {self.embedding_layer!r} did not run in the forward pass")
                    if embeddings.shape[1] > MAX_EMBEDDING:
                        raise ValueError(f"layer {self.embedding_layer!r} gives {embeddings.shape[1]} values per "
                                         f"sample; an event's embedding holds at most {MAX_EMBEDDING}")
                payload_rows = self.payload.select(int(x.shape[0])) if self.payload is not None else []
                inputs = x.detach()[payload_rows] if payload_rows else None  # (P, ...), a copy
            slot.output = None
            self.producer.submit(_ClassifierCapture(
                model=self.name, version=self.version, time=self._wall(), timing=timing, features=features,
                logits=logits.detach(), feature_names=self.feature_names, request_ids=request_ids,
                attributes=self.attributes, context=self._context, embedding_rows=embedding_rows,
                embeddings=embeddings, payload_rows=payload_rows, inputs=inputs, payload=self.payload))
        except Exception:  # fail-open: serving goes on; the failure is counted and logged
            slot.output = None
            self.capture_errors += 1
            self.metrics.capture_errors.labels(model=self.name).inc()
            log.exception("capture failed for %s/%s; the prediction was returned unchanged", self.name,
                          self.version)
        return logits
