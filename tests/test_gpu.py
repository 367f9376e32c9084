"""GPU sampler: NVML absent here, so the 'unavailable' path runs for real; the mapping to base units is checked
against an object shaped like pynvml (the one fake allowed: no GPU can run on this machine)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from collectors.gpu import GpuSampler
from monitor.events import GpuStats
from tests.support import wait_until

PER_GPU = ("inferwatch_gpu_utilization_ratio", "inferwatch_gpu_memory_used_bytes", "inferwatch_gpu_memory_total_bytes",
           "inferwatch_gpu_power_watts", "inferwatch_gpu_temperature_celsius")


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception:
        return False
    return True


def _exported_per_gpu_samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith(PER_GPU)]


@pytest.mark.skipif(_nvml_works(), reason="this machine has a working NVML; the unavailable path needs none")
def test_without_nvml_gpus_are_reported_absent_never_zero(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    with caplog.at_level(logging.WARNING, logger="collectors.gpu"):
        sampler = GpuSampler(registry, interval_s=0.01)  # the real pynvml, which finds no driver here
    sampler.start()
    assert sampler.sample() == []
    assert not sampler.available and sampler.latest(0) is None
    assert registry.get_sample_value("inferwatch_gpu_available") == 0
    assert _exported_per_gpu_samples(registry) == []  # no zero utilisation/memory lines
    assert any("GPU telemetry unavailable" in r.getMessage() and "NVML" in r.getMessage() for r in caplog.records)
    sampler.close()


@pytest.mark.skipif(not _nvml_works(), reason="needs an NVIDIA driver (NVML); none on this machine")
def test_real_gpus_are_sampled_in_base_units() -> None:
    registry = CollectorRegistry()
    sampler = GpuSampler(registry, interval_s=0.05)
    sampler.start()
    stats = sampler.latest(0)
    assert stats is not None and 0 <= stats.utilization_ratio <= 1
    assert 0 < stats.memory_used_bytes <= stats.memory_total_bytes
    assert registry.get_sample_value("inferwatch_gpu_memory_total_bytes", {"gpu": "0"}) == stats.memory_total_bytes
    sampler.close()


@dataclass
class _Utilization:
    gpu: int
    memory: int


@dataclass
class _Memory:
    total: int
    free: int
    used: int


class NvmlError(Exception):
    pass


class FakeNvml:
    """pynvml's contract (see collectors.gpu.Nvml): percent, bytes, milliwatts, degrees Celsius; errors raise."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, devices: list[dict[str, Any]], init_error: Exception | None = None) -> None:
        self.devices = devices
        self.init_error = init_error
        self.calls: list[str] = []
        self.initialised = False

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not self.initialised:
            raise NvmlError("Uninitialized")
        return index

    def _device(self, handle: int, key: str) -> Any:
        self.calls.append(key)
        value = self.devices[handle][key]
        if isinstance(value, Exception):
            raise value
        return value

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> _Utilization:
        return _Utilization(gpu=self._device(handle, "util_percent"), memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Memory:
        used, total = self._device(handle, "used"), self._device(handle, "total")
        return _Memory(total=total, free=total - used, used=used)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return int(self._device(handle, "power_mw"))

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        if sensor != self.NVML_TEMPERATURE_GPU:
            raise NvmlError("InvalidArgument")
        return int(self._device(handle, "temp_c"))


H100 = {"util_percent": 37, "used": 12 * 2**30, "total": 80 * 2**30, "power_mw": 312_500, "temp_c": 54}
OLD_BOARD = {"util_percent": 100, "used": 1_000, "total": 4_000, "power_mw": NvmlError("NotSupported"),
             "temp_c": NvmlError("NotSupported")}


def test_nvml_readings_map_to_base_unit_gauges_and_events() -> None:
    registry = CollectorRegistry()
    sampler = GpuSampler(registry, nvml=FakeNvml([H100, OLD_BOARD]))
    got = sampler.sample()
    assert got == [
        GpuStats(index=0, utilization_ratio=0.37, memory_used_bytes=12 * 2**30, memory_total_bytes=80 * 2**30,
                 power_watts=312.5, temperature_celsius=54.0),
        GpuStats(index=1, utilization_ratio=1.0, memory_used_bytes=1_000, memory_total_bytes=4_000),
    ]
    assert sampler.latest(0) == got[0] and sampler.latest(2) is None
    value = registry.get_sample_value
    assert value("inferwatch_gpu_available") == 1
    assert value("inferwatch_gpu_utilization_ratio", {"gpu": "0"}) == pytest.approx(0.37)
    assert value("inferwatch_gpu_memory_used_bytes", {"gpu": "0"}) == 12 * 2**30
    assert value("inferwatch_gpu_memory_total_bytes", {"gpu": "0"}) == 80 * 2**30
    assert value("inferwatch_gpu_power_watts", {"gpu": "0"}) == 312.5
    assert value("inferwatch_gpu_temperature_celsius", {"gpu": "0"}) == 54
    # an unsupported reading is absent, not zero
    assert value("inferwatch_gpu_power_watts", {"gpu": "1"}) is None
    assert value("inferwatch_gpu_temperature_celsius", {"gpu": "1"}) is None


def test_a_failing_gpu_is_counted_and_its_gauges_withdrawn() -> None:
    registry = CollectorRegistry()
    nvml = FakeNvml([dict(H100)])
    sampler = GpuSampler(registry, nvml=nvml)
    sampler.sample()
    nvml.devices[0]["util_percent"] = NvmlError("GpuIsLost")
    assert sampler.sample() == []
    assert sampler.latest(0) is None
    assert _exported_per_gpu_samples(registry) == []
    assert registry.get_sample_value("inferwatch_gpu_sample_errors_total") == 1
    nvml.devices[0]["util_percent"] = 5
    assert [s.utilization_ratio for s in sampler.sample()] == [0.05]


@pytest.mark.parametrize(("nvml", "reason"), [
    (FakeNvml([], init_error=NvmlError("Driver Not Loaded")), "Driver Not Loaded"),
    (FakeNvml([]), "no GPU"),
])
def test_no_driver_or_no_device_is_unavailable(nvml: FakeNvml, reason: str) -> None:
    registry = CollectorRegistry()
    sampler = GpuSampler(registry, nvml=nvml)
    assert not sampler.available and sampler.reason is not None and reason in sampler.reason
    assert registry.get_sample_value("inferwatch_gpu_available") == 0
    assert sampler.sample() == [] and _exported_per_gpu_samples(registry) == []


def test_background_thread_samples_at_the_interval_until_closed() -> None:
    nvml = FakeNvml([dict(H100)])
    interval_s = 0.02
    sampler = GpuSampler(CollectorRegistry(), interval_s=interval_s, nvml=nvml)
    started = time.monotonic()
    sampler.start()  # one sample at once, then one per interval
    wait_until(lambda: nvml.calls.count("util_percent") >= 5, "five samples from the background thread")
    sampler.close()
    elapsed = time.monotonic() - started
    taken = nvml.calls.count("util_percent")
    # It never samples faster than the interval: after the first, the k-th sample waits k intervals. A lower bound
    # on the time taken, so it holds however slow the machine is (a busy loop would take thousands of samples).
    assert elapsed >= (taken - 1) * interval_s
    assert not any(t.name == "inferwatch-gpu-sampler" for t in threading.enumerate())  # stopped
    assert nvml.calls.count("util_percent") == taken
    assert not nvml.initialised and sampler.latest(0) is None


def test_run_can_be_bounded_for_tests() -> None:
    nvml = FakeNvml([dict(H100)])
    GpuSampler(CollectorRegistry(), interval_s=0.001, nvml=nvml).run(max_samples=3)
    assert nvml.calls.count("util_percent") == 3


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        GpuSampler(CollectorRegistry(), interval_s=0, nvml=FakeNvml([dict(H100)]))
