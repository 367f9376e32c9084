"""Overhead of the ClassifierCollector hook on a CNN forward pass, on the CPU, hooked vs bare in the same run.

Two models at batch 64: the demo's digits CNN (untrained, 1x8x8 inputs) and a larger conv net on 3x32x32 inputs
(a realistic forward). Repetitions are interleaved (bare, hooked, hooked with a sampled penultimate embedding,
in a rotating order) so drift in the machine affects every arm alike. Reported per arm:

* added wall time, as a percentage of the bare forward's median (target <= 3 %);
* serving-thread CPU time per captured sample: ``time.thread_time`` around the call, median hooked minus median
  bare, divided by the batch size (target <= 10 µs);
* the producer thread's CPU time per event (converting, encoding, batching), read from its own CPU clock; it runs
  concurrently and is reported separately, not added to the serving cost.

torch runs with ``torch.set_num_threads(1)`` for stable numbers.

    .venv/bin/python benchmarks/hook_overhead.py            # 1,500 / 300 repetitions
    .venv/bin/python benchmarks/hook_overhead.py --quick    # 60 / 20 repetitions (smoke)
    .venv/bin/python benchmarks/hook_overhead.py --json     # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collectors.producer import EventProducer
from collectors.torch_hooks import ClassifierCollector
from monitor.transport import MemoryBus

BATCH = 64


def digits_cnn() -> nn.Module:
    return nn.Sequential(  # monitor.demo.cnn.train_cnn's shape, untrained
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),  # (B, 16, 8, 8)
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),  # (B, 32, 8, 8)
        nn.MaxPool2d(2),  # (B, 32, 4, 4)
        nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(),  # (B, 64): penultimate, index 7
        nn.Linear(64, 10),  # (B, 10)
    ).eval()


def cifar_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),  # (B, 32, 32, 32)
        nn.MaxPool2d(2),  # (B, 32, 16, 16)
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),  # (B, 64, 16, 16)
        nn.MaxPool2d(2),  # (B, 64, 8, 8)
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),  # (B, 128, 8, 8)
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 128)
        nn.Linear(128, 256), nn.ReLU(),  # (B, 256): penultimate, index 15
        nn.Linear(256, 10),  # (B, 10)
    ).eval()


def _measure(fn: Callable[[], Any]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w0, time.thread_time() - c0


def bench(name: str, model: nn.Module, shape: tuple[int, ...], penultimate: str, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    x = torch.rand(BATCH, *shape)  # (B, C, H, W)
    bus = MemoryBus()
    producer = EventProducer(bus.producer(), "events", capacity=10_000_000)
    hooked = ClassifierCollector(model, producer, name, "1")
    embedded = ClassifierCollector(model, producer, name, "1", embedding_layer=penultimate,
                                   embedding_sample_rate=0.1, seed=0)
    arms: dict[str, Callable[[], Any]] = {"bare": lambda: model(x), "hooked": lambda: hooked(x),
                                          "hooked+embedding": lambda: embedded(x)}
    wall: dict[str, list[float]] = {k: [] for k in arms}
    cpu: dict[str, list[float]] = {k: [] for k in arms}
    order = list(arms)
    with torch.inference_mode():
        for _ in range(max(5, repeats // 20)):  # warm-up
            for fn in arms.values():
                fn()
        producer.flush()
        clock_id = time.pthread_getcpuclockid(producer._thread.ident or 0)
        producer_cpu0 = time.clock_gettime(clock_id)
        for r in range(repeats):
            for k in order[r % 3:] + order[:r % 3]:
                w, c = _measure(arms[k])
                wall[k].append(w)
                cpu[k].append(c)
        producer.flush()
        producer_cpu = time.clock_gettime(clock_id) - producer_cpu0
    producer.close()
    embedded.close()
    captured = 2 * repeats * BATCH
    bare_wall, bare_cpu = statistics.median(wall["bare"]), statistics.median(cpu["bare"])
    out: dict[str, Any] = {"input": list(shape), "batch": BATCH, "repeats": repeats,
                           "bare_forward_ms": round(bare_wall * 1e3, 4)}
    for k in ("hooked", "hooked+embedding"):
        out[k] = {
            "forward_ms": round(statistics.median(wall[k]) * 1e3, 4),
            "added_wall_pct": round(100 * (statistics.median(wall[k]) - bare_wall) / bare_wall, 2),
            "serving_cpu_us_per_sample": round(1e6 * (statistics.median(cpu[k]) - bare_cpu) / BATCH, 3),
        }
    out["producer_cpu_us_per_event"] = round(1e6 * producer_cpu / captured, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(1)
    small, large = (60, 20) if args.quick else (1500, 300)
    report = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu",
        "targets": {"added_wall_pct": 3.0, "serving_cpu_us_per_sample": 10.0},
        "digits_cnn_8x8": bench("digits", digits_cnn(), (1, 8, 8), "7", small),
        "conv_net_32x32x3": bench("cifar", cifar_cnn(), (3, 32, 32), "15", large),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"torch {report['torch']}, {report['threads']} thread, CPU, batch {BATCH}")
    for key in ("digits_cnn_8x8", "conv_net_32x32x3"):
        r: dict[str, Any] = report[key]  # type: ignore[assignment]
        print(f"{key}: bare forward {r['bare_forward_ms']:.3f} ms (median of {r['repeats']}), "
              f"producer thread {r['producer_cpu_us_per_event']:.2f} µs CPU/event")
        for arm in ("hooked", "hooked+embedding"):
            a = r[arm]
            print(f"  {arm:17s} {a['forward_ms']:.3f} ms  +{a['added_wall_pct']:.2f} % wall  "
                  f"{a['serving_cpu_us_per_sample']:.3f} µs serving CPU/sample")


if __name__ == "__main__":
    main()
