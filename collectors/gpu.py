"""GPU telemetry from NVML: utilisation, memory, power and temperature per GPU, as gauges in base units.

A background thread samples every GPU each ``interval_s`` and sets, per GPU (label ``gpu``, the NVML index):

===========================================  ===========================================
``inferwatch_gpu_utilization_ratio``         busy fraction of the last sample period, 0..1
``inferwatch_gpu_memory_used_bytes``         device memory in use
``inferwatch_gpu_memory_total_bytes``        device memory installed
``inferwatch_gpu_power_watts``               board power draw (absent where not supported)
``inferwatch_gpu_temperature_celsius``       GPU core temperature (absent where not supported)
===========================================  ===========================================

and ``inferwatch_gpu_available`` (1 or 0). An absent GPU is reported as absent, never as zero: without NVML
(no driver, no ``nvidia-ml-py``) or without a GPU, ``inferwatch_gpu_available`` is 0, one log line says why,
no per-GPU gauge is exported and :meth:`GpuSampler.latest` returns None. A GPU whose read fails is
counted in ``inferwatch_gpu_sample_errors_total`` and its gauges are removed until it reads again.

NVML is reached through :class:`Nvml`, the handful of ``pynvml`` functions used here, so the mapping to base
units can be checked with an object of that shape where no GPU exists.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitor.events import GpuStats

log = logging.getLogger(__name__)


class Nvml(Protocol):
    """The subset of ``pynvml`` (nvidia-ml-py) the sampler calls; the ``pynvml`` module satisfies it.

    Units are NVML's: utilisation in percent (``.gpu``), memory in bytes (``.used``, ``.total``), power in
    milliwatts, temperature in degrees Celsius. Any call may raise (``pynvml.NVMLError`` and subclasses).
    """

    NVML_TEMPERATURE_GPU: int

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...


@dataclass(frozen=True)
class GpuMetrics:
    available: Gauge
    utilization: Gauge
    memory_used: Gauge
    memory_total: Gauge
    power: Gauge
    temperature: Gauge
    sample_errors: Counter


def gpu_metrics(registry: CollectorRegistry | None) -> GpuMetrics:
    """The GPU gauges on ``registry``."""
    return GpuMetrics(
        available=Gauge("inferwatch_gpu_available", "1 when NVML reports at least one GPU, else 0.",
                        registry=registry),
        utilization=Gauge("inferwatch_gpu_utilization_ratio", "GPU busy fraction over NVML's last sample period.",
                          ("gpu",), registry=registry),
        memory_used=Gauge("inferwatch_gpu_memory_used_bytes", "GPU memory in use.", ("gpu",), registry=registry),
        memory_total=Gauge("inferwatch_gpu_memory_total_bytes", "GPU memory installed.", ("gpu",),
                           registry=registry),
        power=Gauge("inferwatch_gpu_power_watts", "GPU board power draw.", ("gpu",), registry=registry),
        temperature=Gauge("inferwatch_gpu_temperature_celsius", "GPU core temperature.", ("gpu",),
                          registry=registry),
        sample_errors=Counter("inferwatch_gpu_sample_errors_total", "GPU reads that failed.", registry=registry),
    )


def _load_nvml() -> Nvml:
    try:
        module: Nvml = importlib.import_module("pynvml")
    except ImportError as exc:
        raise ImportError("GPU telemetry needs nvidia-ml-py: pip install nvidia-ml-py") from exc
    return module


class GpuSampler:
    """Sample NVML in a background thread; the latest reading per GPU is kept for events and gauges.

    Parameters
    ----------
    registry : CollectorRegistry
        Where the ``inferwatch_gpu_*`` gauges live.
    interval_s : float
        Seconds between samples.
    nvml : Nvml, optional
        The NVML binding; ``pynvml`` by default.
    clock : callable
        Clock of the sampling loop (monotonic seconds).

    Examples
    --------
    Whether or not this machine has a GPU, the availability gauge tells the truth and a missing GPU reads None:

    >>> from prometheus_client import CollectorRegistry
    >>> registry = CollectorRegistry()
    >>> sampler = GpuSampler(registry, interval_s=1.0)
    >>> sampler.start()
    >>> float(sampler.available) == registry.get_sample_value("inferwatch_gpu_available")
    True
    >>> sampler.latest(sampler.gpu_count) is None
    True
    >>> sampler.close()
    """

    def __init__(self, registry: CollectorRegistry, interval_s: float = 5.0, nvml: Nvml | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.metrics = gpu_metrics(registry)
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handles: list[Any] = []
        self._latest: dict[int, GpuStats] = {}
        self.reason: str | None = None  # why GPUs are unavailable, when they are
        self._nvml = self._init(nvml)

    def _init(self, nvml: Nvml | None) -> Nvml | None:
        try:
            binding = nvml if nvml is not None else _load_nvml()
            binding.nvmlInit()
        except Exception as exc:  # no library, no driver, no permission: all mean "no GPU telemetry"
            self._unavailable(f"NVML could not start ({type(exc).__name__}: {exc})")
            return None
        try:
            count = binding.nvmlDeviceGetCount()
            self._handles = [binding.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            self._shutdown(binding)
            self._unavailable(f"NVML could not list GPUs ({type(exc).__name__}: {exc})")
            return None
        if not self._handles:
            self._shutdown(binding)
            self._unavailable("NVML reports no GPU")
            return None
        self.metrics.available.set(1)
        log.info("GPU telemetry from NVML for %d GPU(s), every %g s", len(self._handles), self.interval_s)
        return binding

    def _unavailable(self, reason: str) -> None:
        self.reason = reason
        self.metrics.available.set(0)
        log.warning("GPU telemetry unavailable: %s; GPU gauges are not exported and events carry no GPU stats",
                    reason)

    @staticmethod
    def _shutdown(nvml: Nvml) -> None:
        try:
            nvml.nvmlShutdown()
        except Exception:
            log.debug("nvmlShutdown failed", exc_info=True)

    @property
    def available(self) -> bool:
        return self._nvml is not None

    @property
    def gpu_count(self) -> int:
        return len(self._handles)

    def latest(self, index: int) -> GpuStats | None:
        """The last successful reading of GPU ``index``, or None (no GPU, no NVML, or its last read failed)."""
        return self._latest.get(index)

    def sample(self) -> list[GpuStats]:
        """Read every GPU once, update the gauges and :meth:`latest`; return the readings that succeeded."""
        nvml = self._nvml
        if nvml is None:
            return []
        out: list[GpuStats] = []
        for index, handle in enumerate(self._handles):
            gpu = str(index)
            try:
                stats = self._read(nvml, index, handle)
            except Exception as exc:
                self.metrics.sample_errors.inc()
                self._latest.pop(index, None)
                for g in (self.metrics.utilization, self.metrics.memory_used, self.metrics.memory_total,
                          self.metrics.power, self.metrics.temperature):
                    self._remove(g, gpu)
                log.warning("reading GPU %d failed: %s: %s", index, type(exc).__name__, exc)
                continue
            self.metrics.utilization.labels(gpu=gpu).set(stats.utilization_ratio)
            self.metrics.memory_used.labels(gpu=gpu).set(stats.memory_used_bytes)
            self.metrics.memory_total.labels(gpu=gpu).set(stats.memory_total_bytes)
            for gauge, value in ((self.metrics.power, stats.power_watts),
                                 (self.metrics.temperature, stats.temperature_celsius)):
                if value is None:
                    self._remove(gauge, gpu)
                else:
                    gauge.labels(gpu=gpu).set(value)
            self._latest[index] = stats
            out.append(stats)
        return out

    @staticmethod
    def _read(nvml: Nvml, index: int, handle: Any) -> GpuStats:
        utilization = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        try:  # power and temperature are optional in NVML (NotSupported on some boards)
            power: float | None = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # mW -> W
        except Exception:
            power = None
        try:
            temperature: float | None = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        except Exception:
            temperature = None
        return GpuStats(index=index, utilization_ratio=min(max(utilization.gpu / 100.0, 0.0), 1.0),
                        memory_used_bytes=int(memory.used), memory_total_bytes=int(memory.total),
                        power_watts=power, temperature_celsius=temperature)

    @staticmethod
    def _remove(gauge: Gauge, gpu: str) -> None:
        with contextlib.suppress(KeyError):  # never set, or already removed
            gauge.remove(gpu)

    def start(self) -> None:
        """Start the sampling thread (a no-op when GPUs are unavailable)."""
        if self._nvml is None or self._thread is not None:
            return
        self.sample()
        self._thread = threading.Thread(target=self.run, name="inferwatch-gpu-sampler", daemon=True)
        self._thread.start()

    def run(self, max_samples: int | None = None) -> None:
        """The sampling loop: every ``interval_s`` until :meth:`close` (or ``max_samples`` samples)."""
        taken = 0
        next_at = self._clock() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - self._clock())):
            self.sample()
            taken += 1
            if max_samples is not None and taken >= max_samples:
                return
            next_at += self.interval_s

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and shut NVML down."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._nvml is not None:
            self._shutdown(self._nvml)
            self._nvml = None
        self._latest.clear()


__all__ = ["GpuMetrics", "GpuSampler", "Nvml", "gpu_metrics"]
