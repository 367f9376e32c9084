"""W2: embedding drift with an MMD permutation test, inferwatch vs alibi-detect, side by side in one process.

Both detectors get the same seeded float32 embeddings (a reference and one current window with a small mean
shift), the same RBF bandwidth (our median heuristic, passed to alibi as ``sigma``) and the same number of
permutations, on the CPU.  alibi-detect computes in the dtype of its input, float32 here, so the headline ratio
compares it with ``MMDDetector(dtype="float32")``; ``dtype="float64"`` (our default) is shown beside it.  Both
build the reference kernel block once at construction, so ``test``/``predict`` is the per-window cost.

Run with the benchmark environment (peers are never imported by the product)::

    .venv-bench/bin/python benchmarks/w2_mmd.py            # 5,000 x 384 vs 1,000 x 384, 100 permutations
    .venv-bench/bin/python benchmarks/w2_mmd.py --quick    # 500 x 64 vs 100 x 64, 20 permutations (CI smoke)
    .venv-bench/bin/python benchmarks/w2_mmd.py --json     # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from detectors.mmd import MMDDetector, median_bandwidth

SEED = 0
SHIFT = 0.2  # mean shift added to the first SHIFTED_DIMS dimensions of the current window
SHIFTED_DIMS = 10


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls of ``fn`` and the last result (warm-up happens beforehand)."""
    result: Any = None
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run(quick: bool, repeats: int, peer_repeats: int, device: str = "cpu") -> dict[str, Any]:
    warnings.filterwarnings("ignore", category=FutureWarning)  # alibi's torch.jit.script deprecation
    logging.getLogger("alibi_detect").setLevel(logging.ERROR)
    from alibi_detect.cd import MMDDrift
    from alibi_detect.utils.pytorch.distance import squared_pairwise_distance
    from alibi_detect.utils.pytorch.kernels import sigma_median

    n, m, d, perms = (500, 100, 64, 20) if quick else (5000, 1000, 384, 100)
    rng = np.random.default_rng(SEED)
    x_ref = rng.normal(size=(n, d)).astype(np.float32)  # (n, d)
    x_cur = rng.normal(size=(m, d)).astype(np.float32)  # (m, d)
    x_cur[:, :SHIFTED_DIMS] += SHIFT
    sigma = median_bandwidth(x_ref)

    # Bandwidth convention: ours against alibi's own median heuristic on the same (at most 2,000) rows.
    rows = torch.from_numpy(x_ref[:2000].astype(np.float64))
    sigma_alibi = float(sigma_median(rows, rows, squared_pairwise_distance(rows, rows)).item())
    sigma_ours = median_bandwidth(x_ref[:2000])

    # Warm both code paths (alibi's TorchScript distance, torch's kernels) once on a small problem, the same
    # for both: a full-size warm-up would cost alibi another full predict and change nothing at that scale.
    MMDDrift(x_ref[:64], backend="pytorch", n_permutations=2, sigma=np.array([sigma]), device=device).predict(
        x_cur[:32]
    )
    MMDDetector(x_ref[:64], bandwidth=sigma, permutations=2, device=device, dtype="float32").test(x_cur[:32])

    rows_out: dict[str, dict[str, Any]] = {}
    for dtype in ("float32", "float64"):
        start = time.perf_counter()
        det = MMDDetector(x_ref, bandwidth=sigma, permutations=perms, alpha=0.05, device=device, dtype=dtype, seed=SEED)
        init_s = time.perf_counter() - start
        test_s, res = _timed(functools.partial(det.test, x_cur), repeats)
        rows_out[f"inferwatch {dtype}"] = {
            "init_s": init_s,
            "test_s": test_s,
            "mmd2": res.mmd2,
            "p_value": res.p_value,
            "drifted": res.drifted,
        }

    start = time.perf_counter()
    cd = MMDDrift(x_ref, backend="pytorch", p_val=0.05, n_permutations=perms, sigma=np.array([sigma]), device=device)
    init_s = time.perf_counter() - start

    def alibi_predict() -> dict[str, Any]:
        torch.manual_seed(SEED)  # alibi permutes with torch's global generator
        return cd.predict(x_cur)["data"]  # type: ignore[no-any-return]

    test_s, data = _timed(alibi_predict, peer_repeats)
    rows_out["alibi-detect float32"] = {
        "init_s": init_s,
        "test_s": test_s,
        "mmd2": float(data["distance"]),
        "p_value": float(data["p_val"]),
        "drifted": bool(data["is_drift"]),
    }

    alibi = rows_out["alibi-detect float32"]
    ours32, ours64 = rows_out["inferwatch float32"], rows_out["inferwatch float64"]
    return {
        "benchmark": "w2_mmd",
        "quick": quick,
        "n_reference": n,
        "n_current": m,
        "dim": d,
        "permutations": perms,
        "shift": f"+{SHIFT} in {SHIFTED_DIMS} dims",
        "sigma": sigma,
        "sigma_check": {"rows": int(rows.shape[0]), "ours": sigma_ours, "alibi": sigma_alibi},
        "repeats": repeats,
        "peer_repeats": peer_repeats,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "results": rows_out,
        "ratio_alibi_over_ours_float32": alibi["test_s"] / ours32["test_s"],
        "ratio_alibi_over_ours_float64": alibi["test_s"] / ours64["test_s"],
        "abs_diff_mmd2_float32": abs(ours32["mmd2"] - alibi["mmd2"]),
        "abs_diff_mmd2_float64": abs(ours64["mmd2"] - alibi["mmd2"]),
    }


def _print_table(r: dict[str, Any]) -> None:
    print(
        f"W2 MMD permutation test: reference {r['n_reference']} x {r['dim']}, current {r['n_current']} x {r['dim']} "
        f"({r['shift']}), {r['permutations']} permutations, sigma {r['sigma']:.6g}, CPU, "
        f"torch {r['torch']} with {r['torch_threads']} threads; median of {r['repeats']} (ours) and "
        f"{r['peer_repeats']} (alibi) calls after a small warm-up"
    )
    print(f"{'':22} {'init s':>8} {'test s':>9} {'MMD²':>14} {'p-value':>9} {'drifted':>8}")
    for name, row in r["results"].items():
        print(
            f"{name:22} {row['init_s']:8.3f} {row['test_s']:9.4f} {row['mmd2']:14.8e} {row['p_value']:9.4f} "
            f"{row['drifted']!s:>8}"
        )
    print(
        f"speed-up alibi/ours (test): {r['ratio_alibi_over_ours_float32']:.1f}x float32 vs float32, "
        f"{r['ratio_alibi_over_ours_float64']:.1f}x with ours in float64"
    )
    print(
        f"|MMD² ours - alibi|: {r['abs_diff_mmd2_float32']:.2e} (ours float32), "
        f"{r['abs_diff_mmd2_float64']:.2e} (ours float64)"
    )
    s = r["sigma_check"]
    print(
        f"median bandwidth on {s['rows']} rows: ours {s['ours']:.12g}, alibi sigma_median {s['alibi']:.12g} "
        f"(rel diff {abs(s['ours'] - s['alibi']) / s['alibi']:.1e})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a CI smoke test")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--device", default="cpu", help="torch device of both detectors, e.g. cuda (default cpu)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls of our test() (median reported)")
    parser.add_argument("--peer-repeats", type=int, default=3, help="timed calls of alibi's predict() (median)")
    args = parser.parse_args(argv)
    result = run(args.quick, args.repeats, args.peer_repeats, args.device)
    if args.json:
        json.dump(result, sys.stdout)
        print()
    else:
        _print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
