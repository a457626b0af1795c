"""Benchmark: KD-tree KSG (spin_interp.mi.ksg_kdtree) against the O(n^2) reference.

For each dimension d, draws d independent pairs of unit Gaussians with correlation rho, prepares
them exactly as ``KSGEstimator`` does (standardise + seeded jitter), then times on the *same*
inputs:

* ``ksg_kdtree``   (scipy cKDTree, ``workers=1``)       -- best of ``--repeats`` runs (one
  run if it takes over 2 s)
* ``ksg_bruteforce`` (numpy, chunked to ~32 MiB blocks)  -- one run
* ``KSGEstimator.fit`` (validation + preprocessing + ksg_kdtree) -- best of ``--repeats``

and checks that both estimates are equal to within 1e-9. Wall-clock and CPU time (of this
process) are both reported: on a shared machine the CPU time is the steadier number. Everything
runs on one thread (OMP/BLAS threads are pinned to 1 before numpy is imported). Results are
printed as a table and written to ``benchmarks/results/bench_mi.json``.

    python benchmarks/bench_mi.py            # n = 20,000, d = 1, 2, 10 (~1-2 minutes)
    python benchmarks/bench_mi.py --quick    # n = 3,000
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402

from spin_interp.mi import (  # noqa: E402
    KSGEstimator,
    gaussian_mi,
    ksg_bruteforce,
    ksg_kdtree,
    ksg_preprocess,
)

RESULTS = Path(__file__).resolve().parent / "results" / "bench_mi.json"


def _blas_threads() -> list[dict[str, object]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - sklearn ships threadpoolctl
        return []
    return [
        {"api": i.get("internal_api"), "num_threads": i.get("num_threads")}
        for i in threadpool_info()
    ]


def _best_time(fn, repeats: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """(best wall seconds, best CPU seconds of this process, value); runs longer than 2 s are
    not repeated."""
    best, best_cpu, value = math.inf, math.inf, float("nan")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        value = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        best, best_cpu = min(best, wall), min(best_cpu, cpu)
        if wall > 2.0:
            break
    return best, best_cpu, value


def run(n: int, dims: list[int], rho: float, k: int, repeats: int, seed: int) -> list[dict]:
    rows = []
    for d in dims:
        rng = np.random.default_rng(seed + d)
        x = rng.standard_normal((n, d))
        y = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, d))
        xp, yp = ksg_preprocess(x, y, random_state=seed)
        t_kd, c_kd, mi_kd = _best_time(lambda xp=xp, yp=yp: ksg_kdtree(xp, yp, k), repeats)
        t_fit, c_fit, mi_fit = _best_time(
            lambda x=x, y=y: KSGEstimator(k=k, random_state=seed).fit(x, y).mi_, repeats
        )
        t_bf, c_bf, mi_bf = _best_time(lambda xp=xp, yp=yp: ksg_bruteforce(xp, yp, k), 1)
        row = {
            "n": n,
            "d": d,
            "rho": rho,
            "k": k,
            "true_mi": gaussian_mi([rho] * d),
            "mi_kdtree": mi_kd,
            "mi_fit": mi_fit,
            "mi_bruteforce": mi_bf,
            "abs_diff": abs(mi_kd - mi_bf),
            "equal_1e-9": bool(abs(mi_kd - mi_bf) <= 1e-9 and abs(mi_fit - mi_bf) <= 1e-9),
            "t_kdtree_s": t_kd,
            "t_fit_s": t_fit,
            "t_bruteforce_s": t_bf,
            "cpu_kdtree_s": c_kd,
            "cpu_fit_s": c_fit,
            "cpu_bruteforce_s": c_bf,
            "speedup": t_bf / t_kd,
            "speedup_cpu": c_bf / c_kd,
        }
        rows.append(row)
        print(
            f"d={d:>2}  kd {t_kd:7.3f}s  fit {t_fit:7.3f}s  brute {t_bf:7.2f}s  "
            f"speed-up {row['speedup']:6.1f}x (CPU time {row['speedup_cpu']:.1f}x)  "
            f"|diff| {row['abs_diff']:.1e}",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="n = 3000 instead of 20000")
    p.add_argument("--n", type=int, default=None, help="sample size (overrides --quick)")
    p.add_argument("--dims", type=int, nargs="+", default=[1, 2, 10])
    p.add_argument("--rho", type=float, default=0.5)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="timing repeats for the fast paths")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    n = args.n or (3000 if args.quick else 20_000)

    threads = _blas_threads()
    print(
        f"KSG benchmark: n={n}, dims={args.dims}, rho={args.rho}, k={args.k}; 1 thread "
        f"(cKDTree workers=1, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, "
        f"BLAS pools {threads}); load average {os.getloadavg()}",
        flush=True,
    )
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    rows = run(n, args.dims, args.rho, args.k, args.repeats, args.seed)
    total = time.perf_counter() - t0

    print()
    print(
        "|  d |      n | true MI | KSG (kd) | brute force | |diff| "
        "| kd s | fit s | brute s | speed-up (wall) | speed-up (CPU) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['d']:>2} | {r['n']:>6} | {r['true_mi']:.4f} | {r['mi_kdtree']:.6f} | "
            f"{r['mi_bruteforce']:.6f} | {r['abs_diff']:.1e} | {r['t_kdtree_s']:.3f} | "
            f"{r['t_fit_s']:.3f} | {r['t_bruteforce_s']:.2f} | {r['speedup']:.1f}x | "
            f"{r['speedup_cpu']:.1f}x |"
        )
    ok = all(r["equal_1e-9"] for r in rows)
    print(f"\nall estimates equal to 1e-9: {ok}; total {total:.1f}s")

    doc = {
        "benchmark": "bench_mi",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "threads": 1,
        "blas_threadpools": threads,
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "n": n,
        "all_equal_1e-9": ok,
        "total_s": total,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
