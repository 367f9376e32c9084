"""W3: detection quality on seeded streams, inferwatch vs river's ADWIN, KSWIN and PageHinkley, in one process.

Every detector sees the same seeded float64 stream of scalar events:

- ``stationary``: N(0, 1) throughout (every alarm is false);
- ``mean_shift``: the mean jumps by +0.25 sd at the change point;
- ``variance``: the variance is multiplied by 1.5 (sd by sqrt(1.5)) at the change point;
- ``slow_drift``: the mean rises linearly from 0 to 0.5 sd over ``ramp`` events from the change point, then stays.

river's detectors run at their default parameters (KSWIN gets ``seed=`` only, so that its random sampling of
its window is reproducible), fed one event at a time with ``update(x)``; an alarm is counted every time
``drift_detected`` is True.  Ours work on non-overlapping windows of 1,000 events, each tested against a reference
sample of 20,000 events drawn from the pre-change distribution with ``detectors.ks.ks_2samp_columns``:

- ``KS windows``: an alarm when 2 consecutive windows have p < 0.01 (the run restarts after an alarm);
- ``KS + CUSUM``: ``detectors.cusum.CUSUM`` (defaults: k = 0.5, false_alarm_rate = 1e-3 per window) on
  ``z_from_p`` of the same windows' p-values.

A window's alarm is placed at its last event; windows are aligned with the change point.  Per detector and
stream the table gives false alarms (alarms before the change; all alarms on ``stationary``) per million
pre-change events, the detection delay (events from the change to the first alarm at or after it, or "missed"),
the delay that false alarms alone would give (1e6 / false alarms per million: a delay near it is luck, not
detection), and the process CPU time spent in the detector.

KSWIN costs about 0.5 ms of CPU per event (a scipy ``ks_2samp`` per event), which would be ~30 CPU minutes for four
million-event streams, so it is fed only the slice of each stream centred on the change point
(``kswin_events``, half before the change, half after); its rates are normalised by the events it saw.

Run with the benchmark environment (peers are never imported by the product)::

    .venv-bench/bin/python benchmarks/w3_detection_quality.py          # 1,000,000 events, change at 500,000
    .venv-bench/bin/python benchmarks/w3_detection_quality.py --quick  # 100,000 events, change at 50,000
    .venv-bench/bin/python benchmarks/w3_detection_quality.py --json   # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from detectors.cusum import CUSUM, z_from_p
from detectors.ks import ks_2samp_columns, sort_reference

SEED = 0
STREAMS = ("stationary", "mean_shift", "variance", "slow_drift")
WINDOW = 1000  # events per KS window
REFERENCE = 20_000  # reference events from the pre-change distribution
ALPHA = 0.01  # per-window KS level
CONSECUTIVE = 2  # drifted windows in a row before the KS detector alarms


@dataclass(frozen=True)
class Config:
    events: int
    change: int
    ramp: int
    kswin_events: int
    seed: int


FULL = Config(events=1_000_000, change=500_000, ramp=200_000, kswin_events=50_000, seed=SEED)
QUICK = Config(events=100_000, change=50_000, ramp=20_000, kswin_events=2_000, seed=SEED)


@dataclass(frozen=True)
class Run:
    """Alarms of one detector on one stream, as absolute event indices, over the events ``[start, stop)``."""

    alarms: np.ndarray
    start: int
    stop: int
    cpu_s: float


def make_stream(kind: str, cfg: Config, rng: np.random.Generator) -> np.ndarray:
    """One seeded stream of ``cfg.events`` scalars; the change (if any) starts at ``cfg.change``."""
    x = rng.standard_normal(cfg.events)  # (N,)
    after = slice(cfg.change, None)
    if kind == "mean_shift":
        x[after] += 0.25
    elif kind == "variance":
        x[after] *= math.sqrt(1.5)
    elif kind == "slow_drift":
        x[after] += 0.5 * np.minimum(np.arange(cfg.events - cfg.change) / cfg.ramp, 1.0)
    elif kind != "stationary":
        raise ValueError(f"unknown stream {kind!r}")
    return x


def run_river(factory: Callable[[], Any], stream: np.ndarray, start: int, stop: int) -> Run:
    detector = factory()
    alarms = []
    values = stream[start:stop].tolist()  # river takes Python floats
    t0 = time.process_time()
    for i, x in enumerate(values, start):
        detector.update(x)
        if detector.drift_detected:
            alarms.append(i)
    return Run(np.asarray(alarms, dtype=np.int64), start, stop, time.process_time() - t0)


def window_p_values(reference: np.ndarray, stream: np.ndarray) -> tuple[np.ndarray, float]:
    """KS p-value of every window of ``WINDOW`` events against the reference, and the CPU time it took."""
    t0 = time.process_time()
    ref_sorted = sort_reference(reference[:, None])  # (n, 1), sorted once
    windows = stream[: stream.shape[0] // WINDOW * WINDOW].reshape(-1, WINDOW)  # (W, WINDOW)
    p = np.array([ks_2samp_columns(ref_sorted, w[:, None]).p_value[0] for w in windows])  # (W,)
    return p, time.process_time() - t0


def run_ks_windows(p: np.ndarray, ks_cpu_s: float) -> Run:
    t0 = time.process_time()
    alarms, run = [], 0
    for w, drifted in enumerate(p < ALPHA):
        run = run + 1 if drifted else 0
        if run == CONSECUTIVE:
            alarms.append((w + 1) * WINDOW - 1)
            run = 0
    return Run(np.asarray(alarms, dtype=np.int64), 0, p.size * WINDOW, ks_cpu_s + time.process_time() - t0)


def run_ks_cusum(p: np.ndarray, ks_cpu_s: float) -> Run:
    t0 = time.process_time()
    windows = CUSUM().update_many(z_from_p(p))
    return Run((windows + 1) * WINDOW - 1, 0, p.size * WINDOW, ks_cpu_s + time.process_time() - t0)


def score(detector: str, kind: str, run: Run, cfg: Config) -> dict[str, Any]:
    change = run.stop if kind == "stationary" else cfg.change  # no change: every alarm is false
    pre_events = change - run.start
    false_alarms = int(np.count_nonzero(run.alarms < change))
    fa_per_million = 1e6 * false_alarms / pre_events
    after = run.alarms[run.alarms >= change]
    return {
        "detector": detector,
        "stream": kind,
        "events": run.stop - run.start,
        "pre_change_events": pre_events,
        "false_alarms": false_alarms,
        "false_alarms_per_million": fa_per_million,
        "delay_events": None if kind == "stationary" or after.size == 0 else int(after[0] - change),
        "chance_delay_events": 1e6 / fa_per_million if fa_per_million > 0 else None,
        "alarms_after_change": int(after.size) if kind != "stationary" else None,
        "cpu_s": run.cpu_s,
        "us_per_event": 1e6 * run.cpu_s / (run.stop - run.start),
    }


def run(cfg: Config) -> dict[str, Any]:
    import river
    from river import drift

    peers: dict[str, Callable[[], Any]] = {
        "river ADWIN": drift.ADWIN,
        "river KSWIN": lambda: drift.KSWIN(seed=cfg.seed),
        "river PageHinkley": drift.PageHinkley,
    }
    rows = []
    for index, kind in enumerate(STREAMS):
        rng = np.random.default_rng([cfg.seed, index])
        reference = rng.standard_normal(REFERENCE)  # (REFERENCE,) pre-change distribution
        stream = make_stream(kind, cfg, rng)  # (N,)
        for name, factory in peers.items():
            start, stop = 0, cfg.events
            if name == "river KSWIN":
                start, stop = cfg.change - cfg.kswin_events // 2, cfg.change + cfg.kswin_events // 2
            rows.append(score(name, kind, run_river(factory, stream, start, stop), cfg))
        p, ks_cpu_s = window_p_values(reference, stream)
        rows.append(score("inferwatch KS windows", kind, run_ks_windows(p, ks_cpu_s), cfg))
        rows.append(score("inferwatch KS + CUSUM", kind, run_ks_cusum(p, ks_cpu_s), cfg))
    return {
        "benchmark": "w3_detection_quality",
        "config": {**asdict(cfg), "window": WINDOW, "reference": REFERENCE, "alpha": ALPHA, "consecutive": CONSECUTIVE},
        "versions": {"numpy": np.__version__, "river": river.__version__, "python": sys.version.split()[0]},
        "notes": [
            f"river KSWIN is fed only events [{cfg.change - cfg.kswin_events // 2}, "
            f"{cfg.change + cfg.kswin_events // 2}) of each stream (about 0.5 ms/event); all others the full "
            f"{cfg.events} events",
            "cpu_s is process CPU time; the KS p-values of the windows are computed once and their cost is "
            "charged to both inferwatch rows",
        ],
        "results": rows,
    }


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _line(cells: tuple[str, ...], widths: tuple[int, ...]) -> str:
    """Two left-aligned text columns, then right-aligned numbers."""
    return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def print_table(result: dict[str, Any]) -> None:
    cfg = result["config"]
    print(
        f"W3 detection quality: {cfg['events']:,} events per stream, change at {cfg['change']:,} "
        f"(slow drift over {cfg['ramp']:,}), seed {cfg['seed']}; "
        f"numpy {result['versions']['numpy']}, river {result['versions']['river']}"
    )
    header = ("stream", "detector", "events", "false al.", "FA / 1M ev", "delay (ev)", "chance delay", "CPU s", "µs/ev")
    widths = (11, 22, 10, 9, 11, 11, 13, 7, 7)
    print(_line(header, widths))
    for row in result["results"]:
        if row["stream"] == "stationary":
            delay = "n/a"
        else:
            delay = "missed" if row["delay_events"] is None else _fmt(row["delay_events"])
        cells = (
            row["stream"],
            row["detector"],
            _fmt(row["events"]),
            _fmt(row["false_alarms"]),
            _fmt(row["false_alarms_per_million"], 1),
            delay,
            _fmt(row["chance_delay_events"]),
            _fmt(row["cpu_s"], 2),
            _fmt(row["us_per_event"], 2),
        )
        print(_line(cells, widths))
    for note in result["notes"]:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000-event streams, change at 50,000 (CI smoke)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    cfg = Config(base.events, base.change, base.ramp, base.kswin_events, args.seed)
    result = run(cfg)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
