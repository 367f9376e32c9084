"""Every benchmark runs at --quick size and prints one JSON object (a smoke test; timings are not asserted).

They run in .venv-bench, which holds the peer libraries (they pin numpy<2) beside inferwatch itself.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
NEEDS_KAFKA = {"e2e_throughput", "producer_throughput", "transport_clients"}
#: Run by hand only: failover kills and restarts detector processes and waits out a session timeout (~40 s).
BY_HAND = {"failover"}
BENCHMARKS = [pytest.param(p, id=p.stem, marks=[pytest.mark.kafka] if p.stem in NEEDS_KAFKA else [])
              for p in sorted((ROOT / "benchmarks").glob("*.py"))
              if not p.stem.startswith("_") and p.stem not in BY_HAND]  # _x.py: shared by the benchmarks

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", BENCHMARKS)
def test_benchmark_runs_quick_and_prints_json(script: Path, request: pytest.FixtureRequest) -> None:
    if not BENCH_PYTHON.exists():
        pytest.skip("the peer libraries live in .venv-bench: run `make bench-install` (make test does)")
    args = [str(BENCH_PYTHON), str(script), "--quick", "--json"]
    if script.stem in NEEDS_KAFKA:
        args += ["--bootstrap", request.getfixturevalue("kafka_bootstrap")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert isinstance(report, dict) and report
