"""Every benchmark runs at --quick size and prints one JSON object (a smoke test; timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
BENCHMARKS = sorted((ROOT / "benchmarks").glob("w*.py"))

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_runs_quick_and_prints_json(script: Path) -> None:
    if not BENCH_PYTHON.exists():
        pytest.skip("the peer libraries live in .venv-bench: run `make bench-install` (make test does)")
    done = subprocess.run([str(BENCH_PYTHON), str(script), "--quick", "--json"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert isinstance(report, dict) and report
